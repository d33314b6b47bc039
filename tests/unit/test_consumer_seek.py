"""Faust's seek to committed offsets (after a rebalance, or when it dropped fetched records)
reaches every partition of the app's consumer, also those never committed."""

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.app import app
from streams.consumer import first_unacknowledged, never_committed


class FakeConsumerThread:
    """aiokafka behind Faust: ``seek_to_committed`` moves only partitions committed above 0."""

    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self.committed = committed
        self.positions = {tp: 1 for tp in committed}  # the fetcher went past offset 0
        self.revoked: set[TopicPartition] = set()

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.positions[tp] = offset
        return dict(self.committed)

    async def earliest_offsets(self, *partitions: TopicPartition) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in partitions}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp not in self.revoked, "aiokafka refuses to seek an unassigned partition"
        self.positions[tp] = offset

    def assignment(self) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in self.committed} - {
            TP(tp.topic, tp.partition) for tp in self.revoked}


def app_consumer(thread: FakeConsumerThread):  # noqa: ANN201
    consumer = object.__new__(app.transport.Consumer)  # what the worker's app creates
    consumer._thread = thread
    consumer._read_offset = {}
    consumer._committed_offset = {}
    consumer._acked_index = {}
    consumer._positions = asyncio.Lock()
    consumer._acked = {}
    consumer._sought = set()
    consumer.app = app
    return consumer


async def test_a_partition_never_committed_is_read_again_from_its_beginning():
    never, zero, committed = (TopicPartition("reminders-due", n) for n in range(3))
    thread = FakeConsumerThread({never: None, zero: 0, committed: 5})

    await app_consumer(thread).perform_seek()

    # The record a rebalance dropped on the never-committed partition is read again.
    assert thread.positions == {never: 0, zero: 0, committed: 5}


async def test_a_never_committed_partition_resumes_after_what_it_acknowledged():
    tp = TopicPartition("cart-events", 0)
    thread = FakeConsumerThread({tp: None})
    thread.positions[tp] = 9  # fetched up to 8; 5 and later were dropped, never processed
    consumer = app_consumer(thread)
    consumer._acked_index = {TP("cart-events", 0): {0, 1, 2, 3, 4, 6}}

    await consumer.perform_seek()

    # What a commit would have stored: records 0-4 are not read a second time, 5 is read again.
    assert thread.positions == {tp: 5}


async def test_a_partition_revoked_during_the_seek_is_left_alone():
    kept, revoked = TopicPartition("reminders-due", 0), TopicPartition("reminders-due", 1)
    thread = FakeConsumerThread({kept: None, revoked: None})
    thread.revoked.add(revoked)

    await app_consumer(thread).perform_seek()

    assert thread.positions == {kept: 0, revoked: 1}


def test_first_unacknowledged_offset():
    assert first_unacknowledged(0, set()) == 0
    assert first_unacknowledged(3, {3, 4, 6}) == 5
    assert first_unacknowledged(10, {3, 4}) == 10


def test_never_committed_partitions():
    a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)

    assert never_committed({a: None, b: 0, c: 3}, {a, b, c}) == [a, b]
    assert never_committed({a: None, b: 0}, {b}) == [b]
    changelog = TP("app-carts-changelog", 0)
    assert never_committed({a: None, changelog: None}, {a, changelog},
                           {"app-carts-changelog"}) == [a]


async def test_a_rebalance_commits_before_faust_forgets_the_revoked_acknowledgements(
    monkeypatch,
):
    """The hand-over: what this worker processed is committed while Faust still holds the
    acknowledgements of the partitions it is about to lose (Faust's own revocation handler
    drops them first, then commits nothing of them)."""
    tp = TP("cart-events", 3)
    consumer = app_consumer(FakeConsumerThread({}))
    consumer._acked_index = {tp: {0, 1, 2}}
    journal: list[str] = []

    async def commit(*args: object, **kwargs: object) -> bool:
        journal.append(f"commit with acks {sorted(consumer._acked_index.get(tp, ()))}")
        return True

    async def faust_revoke(self: object, revoked: set[TP]) -> None:
        consumer._acked_index.pop(tp, None)
        journal.append("faust forgot the acks")

    monkeypatch.setattr(consumer, "commit", commit)
    monkeypatch.setattr(type(consumer).__mro__[1], "on_partitions_revoked", faust_revoke)

    await consumer.on_partitions_revoked({tp})

    assert journal == ["commit with acks [0, 1, 2]", "faust forgot the acks"]


async def test_every_partition_sought_is_told_to_the_seek_listeners(monkeypatch):
    """The agents' timers learn where each partition is read from now (see
    ``PartitionTimers.rewound``); a partition revoked meanwhile was not sought."""
    never, committed, revoked = (TopicPartition("cart-events", n) for n in range(3))
    thread = FakeConsumerThread({never: None, committed: 5, revoked: 7})
    thread.revoked.add(revoked)
    consumer = app_consumer(thread)
    consumer._acked_index = {TP("cart-events", 0): {0, 1, 2}}
    told: list[dict[TP, int]] = []
    listener = SimpleNamespace(seek_starting=lambda: told.append({}),
                               rewound=lambda tps: told.append(dict(tps)))
    monkeypatch.setattr(type(consumer), "seek_listeners", [listener])

    await consumer.perform_seek()

    # where each now reads from, told as each is sought: the committed offset, then after what
    # was acknowledged for the partition never committed
    assert told == [{}, {TP("cart-events", 1): 5}, {TP("cart-events", 0): 3}]


async def test_a_seek_waits_for_the_batch_being_handed_on():
    """Records fetched before a seek and handed on after it would move the read offset past
    the records the seek reads again, and Faust would drop those as read (lost reminders)."""
    tp = TopicPartition("cart-abandoned", 0)
    thread = FakeConsumerThread({tp: 7})
    consumer = app_consumer(thread)
    consumer._stopped, consumer._crashed = asyncio.Event(), asyncio.Event()
    consumer.flow_active = True
    consumer.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
    happened: list[str] = []
    handing_on, release = asyncio.Event(), asyncio.Event()
    original = thread.seek_to_committed

    async def seek_to_committed() -> dict[TopicPartition, int | None]:
        happened.append("seek")
        return await original()

    async def fetch(timeout: float) -> tuple[dict, None]:
        if happened:
            consumer._stopped.set()
            return {}, None
        return {TP(tp.topic, tp.partition): ["record 7", "record 8"]}, None

    async def deliver_all(records: dict, active: None) -> None:
        happened.append("handing on")
        handing_on.set()
        await release.wait()
        happened.append("handed on")

    thread.seek_to_committed = seek_to_committed
    consumer._wait_next_records = fetch
    consumer._deliver_all = deliver_all
    drain = asyncio.create_task(consumer._drain_messages(SimpleNamespace(should_stop=False)))
    await asyncio.wait([drain, asyncio.create_task(handing_on.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    assert not drain.done(), drain.exception()
    seek = asyncio.create_task(consumer.perform_seek())
    for _ in range(20):  # let the seek run as far as it can
        await asyncio.sleep(0)
    release.set()
    await seek
    await drain

    assert happened == ["handing on", "handed on", "seek"]


async def test_nothing_is_committed_before_the_seek_and_earlier_acknowledgements_are_forgotten():
    """Between an assignment and its seek Faust does not know the committed offset and would
    commit any acknowledged run, such as the events a stream skipped (and acknowledged)
    during the rebalance: the commit jumped past records never processed."""
    tp = TopicPartition("cart-events", 0)
    key = TP(tp.topic, tp.partition)
    consumer = app_consumer(FakeConsumerThread({tp: 407}))
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._gap = defaultdict(IntervalTree)
    consumer._acked = defaultdict(list, {key: [407, 408, 433]})
    consumer._acked_index = defaultdict(set, {key: {407, 408, 433}})

    assert consumer._new_offset(key) is None

    await consumer.perform_seek()
    assert consumer._new_offset(key) is None  # 407 onwards is read again
    consumer._acked[key].extend([407, 408, 409])
    assert consumer._new_offset(key) == 410


def delivering_consumer(thread: FakeConsumerThread, handed: list[tuple[str, int]]):  # noqa: ANN201
    """A consumer whose fetched records are handed on into ``handed`` (topic, offset)."""
    consumer = app_consumer(thread)
    consumer.flow_active = True
    consumer.highwater = lambda tp: None
    consumer.batches = SimpleNamespace(topics={"cart-events"})
    consumer.scheduler = SimpleNamespace(
        iterate=lambda records: ((tp, r) for tp, rs in records.items() for r in rs))

    async def deliver_batch(handler: object, tp: TP, fetched: list) -> None:
        handed.extend((tp.topic, record.offset) for record in fetched)

    async def deliver_one(tp: TP, record: SimpleNamespace) -> None:
        handed.append((tp.topic, record.offset))

    consumer._deliver_batch = deliver_batch
    consumer._deliver_one = deliver_one
    return consumer


def fetched(topic: str, *offsets: int) -> dict[TP, list[SimpleNamespace]]:
    return {TP(topic, 0): [SimpleNamespace(offset=offset) for offset in offsets]}


async def test_no_record_is_handed_on_before_the_seek_that_ends_its_rebalance(monkeypatch):
    """Faust resumes a rebalance's partitions before it seeks them to their committed offsets:
    records fetched in between came from wherever aiokafka stood, and folding them before the
    records the seek read again put one cart's events out of order (the rolling-upgrade test).
    Changelogs are read before that seek (table recovery) and are always handed on."""
    events = TopicPartition("cart-events", 0)
    changelog = sorted(app.tables.changelog_topics)[0]
    handed: list[tuple[str, int]] = []
    consumer = delivering_consumer(FakeConsumerThread({events: 431}), handed)

    async def assigned_in_faust(self: object, assigned: set[TP], generation_id: int = 0) -> None:
        pass

    monkeypatch.setattr(FaustConsumer, "on_partitions_assigned", assigned_in_faust)
    consumer._sought = {TP("cart-events", 0)}  # sought in an earlier generation
    await consumer.on_partitions_assigned({TP("cart-events", 0)}, 2)

    await consumer._deliver_all(fetched("cart-events", 445, 446), None)
    await consumer._deliver_all(fetched(changelog, 7), None)
    assert handed == [(changelog, 7)]

    await consumer.perform_seek()
    await consumer._deliver_all(fetched("cart-events", 431, 432), None)
    assert handed == [(changelog, 7), ("cart-events", 431), ("cart-events", 432)]
