"""The commit order at-least-once rests on, with fakes for the producer, store and timers:
outputs acknowledged by the broker, then state written, then input events acknowledged."""

import asyncio
from collections.abc import Awaitable, Mapping

from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered, DeadLetter
from streams.checkpoint import CACHED_CARTS, COMMIT_EVENTS, Checkpoint, CheckpointContext
from streams.lifecycle import CartState, apply_event, on_deadline

from .factories import HOUR, T0, added, make_settings

SETTINGS = make_settings(abandon_after=HOUR)
TOPICS = {CartAbandoned: "abandoned", CartReactivated: "reactivated",
          CartRecovered: "recovered", DeadLetter: "dead-letter"}


class Journal(list[str]):
    """What happened, in order, across every fake."""


class FakeProducer:
    """Records sends; each send's acknowledgement is a future the test resolves (or fails)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.pending: list[asyncio.Future[object]] = []

    async def send(self, topic: str, key: bytes, value: bytes,
                   partition: int) -> Awaitable[object]:
        self.journal.append(f"send {topic} {key.decode()} p{partition}")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self.journal.append(f"acked {key.decode()}"))
        self.pending.append(future)
        return future


class FakeStore:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.data: dict[tuple[int, str], CartState] = {}

    def get(self, partition: int, cart_id: str) -> CartState | None:
        return self.data.get((partition, cart_id))

    async def write(self, partition: int, changes: Mapping[str, CartState | None]) -> None:
        self.journal.append(f"write {sorted(changes)}")
        for cart_id, state in changes.items():
            if state is None:
                self.data.pop((partition, cart_id), None)
            else:
                self.data[(partition, cart_id)] = state


class FakeEvent:
    def __init__(self, journal: Journal, name: str) -> None:
        self.journal, self.name = journal, name

    def ack(self) -> bool:
        self.journal.append(f"ack {self.name}")
        return True


class FakeDeadlines:
    def __init__(self) -> None:
        self.scheduled: list[tuple[int, float, str]] = []

    def schedule(self, partition: int, deadline: float, cart_id: str) -> None:
        self.scheduled.append((partition, deadline, cart_id))


class FakePrepared:
    def __init__(self) -> None:
        self.discarded: list[tuple[int, str]] = []

    def discard(self, partition: int, cart_id: str) -> None:
        self.discarded.append((partition, cart_id))


def make_checkpoint(partition: int = 2) -> tuple[Checkpoint, Journal, FakeProducer, FakeStore]:
    journal = Journal()
    producer, store = FakeProducer(journal), FakeStore(journal)
    context = CheckpointContext(settings=SETTINGS, store=store, producer=producer,
                                deadlines=FakeDeadlines(), prepared=FakePrepared(),
                                output_topics=TOPICS, clock=lambda: T0 + 2 * HOUR)
    return Checkpoint(partition, context), journal, producer, store


async def abandon(checkpoint: Checkpoint, cart_id: str) -> None:
    """Fold an add and fire the cart's deadline: one abandonment output, one state change."""
    transition = apply_event(checkpoint.load(cart_id), added(cart_id=cart_id, when=T0),
                             SETTINGS, checkpoint.partition)
    await checkpoint.apply(cart_id, transition)
    state = checkpoint.states[cart_id]
    assert state is not None
    await checkpoint.apply(cart_id, on_deadline(state, T0 + HOUR, SETTINGS))


async def test_commit_awaits_outputs_then_writes_state_then_acknowledges_events() -> None:
    checkpoint, journal, producer, store = make_checkpoint()
    await abandon(checkpoint, "c-1")
    checkpoint.events.append(FakeEvent(journal, "e-1"))
    commit = asyncio.create_task(checkpoint.commit())
    await asyncio.sleep(0)  # let the commit run up to its first wait
    assert journal == ["send abandoned c-1 p2"]  # nothing written or acked before the broker
    producer.pending[0].set_result(None)
    await commit
    assert journal == ["send abandoned c-1 p2", "acked c-1", "write ['c-1']", "ack e-1"]
    assert store.data[(2, "c-1")].status == "abandoned"


async def test_a_failed_output_writes_no_state_and_acknowledges_nothing() -> None:
    checkpoint, journal, producer, store = make_checkpoint()
    await abandon(checkpoint, "c-1")
    checkpoint.events.append(FakeEvent(journal, "e-1"))
    producer.pending[0].set_exception(ConnectionError("broker gone"))
    try:
        await checkpoint.commit()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the commit hid a failed output")
    assert not any(line.startswith(("write", "ack ")) for line in journal)
    assert store.data == {}


async def test_each_changed_cart_is_written_once_per_commit_and_state_read_once() -> None:
    checkpoint, journal, producer, store = make_checkpoint()
    for n in range(3):
        transition = apply_event(checkpoint.load("c-1"), added(cart_id="c-1", sku=f"s{n}"),
                                 SETTINGS, 2)
        await checkpoint.apply("c-1", transition)
        checkpoint.events.append(FakeEvent(journal, f"e-{n}"))
    await checkpoint.commit()
    assert journal == ["write ['c-1']", "ack e-0", "ack e-1", "ack e-2"]
    assert len(store.data[(2, "c-1")].lines) == 3
    assert not checkpoint.changed and checkpoint.events == []


async def test_sends_made_for_the_partition_elsewhere_are_awaited_too() -> None:
    checkpoint, journal, producer, _ = make_checkpoint()
    burst: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    burst.add_done_callback(lambda _: journal.append("burst acked"))
    checkpoint.sent([burst])
    await abandon(checkpoint, "c-1")
    producer.pending[0].set_result(None)
    commit = asyncio.create_task(checkpoint.commit())
    await asyncio.sleep(0)
    assert "write ['c-1']" not in journal
    burst.set_result(None)
    await commit
    assert journal.index("burst acked") < journal.index("write ['c-1']")


async def test_outputs_go_to_the_checkpoints_partition_and_are_counted() -> None:
    checkpoint, journal, producer, _ = make_checkpoint(partition=3)
    await abandon(checkpoint, "c-1")
    await abandon(checkpoint, "c-2")
    assert journal == ["send abandoned c-1 p3", "send abandoned c-2 p3"]
    assert checkpoint.context.counters["out:cart_abandoned"] == 2


async def test_an_abandonment_is_observed_when_the_broker_acknowledges_it_not_at_commit() -> None:
    checkpoint, journal, producer, _ = make_checkpoint()
    observed: list[tuple[float, float]] = []
    checkpoint.context.abandon_observers.append(lambda *pair: observed.append(pair))
    await abandon(checkpoint, "c-1")
    await abandon(checkpoint, "c-2")

    producer.pending[0].set_result(None)
    producer.pending[1].set_exception(ConnectionError("broker gone"))
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration

    assert observed == [(T0 + HOUR, T0 + 2 * HOUR)]  # the clock at the acknowledgement
    assert not any(line.startswith(("write", "ack ")) for line in journal)  # no commit yet


def test_due_after_commit_events() -> None:
    checkpoint, journal, _, _ = make_checkpoint()
    checkpoint.events.extend(FakeEvent(journal, str(n)) for n in range(COMMIT_EVENTS - 1))
    assert not checkpoint.due()
    checkpoint.events.append(FakeEvent(journal, "last"))
    assert checkpoint.due()


class CountingStore(FakeStore):
    """Counts the reads that reach the store."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.reads: list[str] = []

    def get(self, partition: int, cart_id: str) -> CartState | None:
        self.reads.append(cart_id)
        return super().get(partition, cart_id)


def counting_checkpoint() -> tuple[Checkpoint, CountingStore]:
    journal = Journal()
    store = CountingStore(journal)
    context = CheckpointContext(settings=SETTINGS, store=store, producer=FakeProducer(journal),
                                deadlines=FakeDeadlines(), prepared=FakePrepared(),
                                output_topics=TOPICS)
    return Checkpoint(2, context), store


async def fold_added(checkpoint: Checkpoint, cart_id: str, when: float) -> None:
    transition = apply_event(checkpoint.load(cart_id), added(cart_id=cart_id, when=when),
                             SETTINGS, checkpoint.partition)
    await checkpoint.apply(cart_id, transition)


async def test_a_committed_cart_is_folded_on_without_reading_the_store_again() -> None:
    checkpoint, store = counting_checkpoint()
    await fold_added(checkpoint, "c-1", T0)
    await checkpoint.commit()

    await fold_added(checkpoint, "c-1", T0 + 60)

    assert store.reads == ["c-1"]
    assert checkpoint.changed == {"c-1"}
    state = checkpoint.states["c-1"]
    assert state is not None and state.lines["sku-1"]["quantity"] == 2
    await checkpoint.commit()
    assert store.data[(2, "c-1")].lines["sku-1"]["quantity"] == 2


async def test_beyond_the_cache_the_carts_read_first_are_read_again() -> None:
    checkpoint, store = counting_checkpoint()
    for n in range(CACHED_CARTS + 2):
        await fold_added(checkpoint, f"c-{n}", T0)
    await checkpoint.commit()
    assert len(checkpoint.states) == CACHED_CARTS and not checkpoint.changed
    store.reads.clear()

    for n in (0, 1, 2, CACHED_CARTS + 1):
        checkpoint.load(f"c-{n}")

    assert store.reads == ["c-0", "c-1"]
