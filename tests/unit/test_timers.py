"""DeadlineIndex (per-partition min-heaps) and PartitionClock (event-time horizon)."""

import heapq
import math
import time
import tracemalloc
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from faust.types import TP
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streams.scheduling import PartitionTimers
from streams.timers import (
    BUCKET_SECONDS,
    DeadlineIndex,
    PartitionClock,
    StagedDeadlines,
    event_safe_time,
)

# --- DeadlineIndex ---------------------------------------------------------------------------


def index_with(partition, *entries):
    index = DeadlineIndex()
    for deadline, cart_id in entries:
        index.schedule(partition, deadline, cart_id)
    return index


def test_empty_index():
    index = DeadlineIndex()

    assert len(index) == 0
    assert index.earliest(0) is None
    assert index.pop_due(0, math.inf, 10) == []


def test_earliest_is_the_smallest_deadline_of_that_partition_only():
    index = index_with(1, (30.0, "c"), (10.0, "a"), (20.0, "b"))
    index.schedule(2, 5.0, "other")

    assert index.earliest(1) == 10.0
    assert index.earliest(2) == 5.0
    assert index.earliest(3) is None
    assert len(index) == 4


def test_pop_due_returns_a_twice_scheduled_entry_once():
    """A stale entry that became current again must not be decided twice in one batch."""
    index = index_with(0, (50.0, "a"), (10.0, "a"), (50.0, "a"), (50.0, "b"))
    assert index.pop_due(0, 60.0, 10) == [(10.0, "a"), (50.0, "a"), (50.0, "b")]
    assert len(index) == 0


def test_pop_due_returns_due_entries_earliest_first_and_respects_the_horizon():
    index = index_with(0, (30.0, "c"), (10.0, "a"), (20.0, "b"), (40.0, "d"))

    assert index.pop_due(0, 29.9, 10) == [(10.0, "a"), (20.0, "b")]
    assert index.pop_due(0, 29.9, 10) == []
    assert index.earliest(0) == 30.0
    assert index.pop_due(0, 30.0, 10) == [(30.0, "c")]  # a deadline at the horizon is due
    assert len(index) == 1


def test_pop_due_respects_the_limit():
    index = index_with(0, *[(float(i), f"cart-{i}") for i in range(5)])

    assert index.pop_due(0, 100.0, 2) == [(0.0, "cart-0"), (1.0, "cart-1")]
    assert index.pop_due(0, 100.0, 0) == []
    assert index.pop_due(0, 100.0, 2) == [(2.0, "cart-2"), (3.0, "cart-3")]
    assert index.pop_due(0, 100.0, 2) == [(4.0, "cart-4")]
    assert len(index) == 0


def test_pop_due_leaves_other_partitions_alone():
    index = index_with(0, (1.0, "a"))
    index.schedule(1, 1.0, "b")

    assert index.pop_due(0, 5.0, 10) == [(1.0, "a")]
    assert index.earliest(1) == 1.0


def test_same_cart_may_hold_several_entries():
    # stale entries are skipped by the caller, not removed in place
    index = index_with(0, (50.0, "a"), (10.0, "a"))

    assert index.pop_due(0, 100.0, 10) == [(10.0, "a"), (50.0, "a")]


def test_equal_deadlines_come_out_in_cart_id_order():
    index = index_with(0, (5.0, "b"), (5.0, "a"), (5.0, "c"))

    assert index.pop_due(0, 5.0, 10) == [(5.0, "a"), (5.0, "b"), (5.0, "c")]


def test_rebuild_replaces_a_partitions_heap():
    index = index_with(0, (1.0, "old"))
    index.schedule(1, 7.0, "kept")

    index.rebuild(0, [(30.0, "c"), (10.0, "a"), (20.0, "b")])

    assert index.earliest(0) == 10.0
    assert len(index) == 4
    assert index.pop_due(0, 100.0, 10) == [(10.0, "a"), (20.0, "b"), (30.0, "c")]
    assert index.earliest(1) == 7.0


def test_rebuild_accepts_any_iterable_and_new_partitions():
    index = DeadlineIndex()

    index.rebuild(4, ((float(d), f"c{d}") for d in (3, 1, 2)))
    index.rebuild(5, [])

    assert index.pop_due(4, 2.0, 10) == [(1.0, "c1"), (2.0, "c2")]
    assert index.earliest(5) is None


def test_keep_only_forgets_partitions_no_longer_owned():
    index = DeadlineIndex()
    for partition in range(4):
        index.schedule(partition, float(partition), f"c{partition}")

    index.keep_only([1, 3, 9])

    assert len(index) == 2
    assert [index.earliest(p) for p in range(4)] == [None, 1.0, None, 3.0]
    index.keep_only([])
    assert len(index) == 0


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    deadlines=st.lists(st.floats(0, 1e9, allow_nan=False), max_size=60),
    horizon=st.floats(0, 1e9, allow_nan=False),
    limit=st.integers(0, 70),
)
def test_pop_due_matches_sorting(deadlines, horizon, limit):
    entries = [(deadline, f"c{i}") for i, deadline in enumerate(deadlines)]
    index = index_with(0, *entries)

    popped = index.pop_due(0, horizon, limit)

    assert popped == sorted(entry for entry in entries if entry[0] <= horizon)[:limit]
    assert len(index) == len(entries) - len(popped)


class HeapModel:
    """The plain heap of ``(deadline, cart_id)`` tuples the packed index must behave like."""

    def __init__(self):
        self.heap = []

    def schedule(self, deadline, cart_id):
        heapq.heappush(self.heap, (deadline, cart_id))

    def earliest(self):
        return self.heap[0][0] if self.heap else None

    def pop_due(self, horizon, limit):
        due = []
        while self.heap and self.heap[0][0] <= horizon and len(due) < limit:
            entry = heapq.heappop(self.heap)
            if not due or due[-1] != entry:
                due.append(entry)
        return due


# deadlines a few buckets apart and inside one bucket, repeated, and infinite
DEADLINES = st.one_of(
    st.floats(0, 5 * BUCKET_SECONDS, allow_nan=False),
    st.sampled_from([0.0, 59.5, BUCKET_SECONDS, 130.0, 1e9, math.inf]),
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), DEADLINES, st.sampled_from("abcde")),
        st.tuples(st.just("pop"), DEADLINES, st.integers(0, 8)),
        st.tuples(st.just("rebuild"), st.lists(st.tuples(DEADLINES, st.sampled_from("xyz")))),
    ),
    max_size=80,
)


def replay_against_the_model(index, operations):
    """Apply ``operations`` to ``index`` and to a plain heap; every answer must be the same."""
    model = HeapModel()
    for operation in operations:
        if operation[0] == "schedule":
            _, deadline, cart_id = operation
            index.schedule(0, deadline, cart_id)
            model.schedule(deadline, cart_id)
        elif operation[0] == "pop":
            _, horizon, limit = operation
            assert index.pop_due(0, horizon, limit) == model.pop_due(horizon, limit)
        else:
            index.rebuild(0, operation[1])
            model.heap = list(operation[1])
            heapq.heapify(model.heap)
        assert index.earliest(0) == model.earliest()
        assert len(index) == len(model.heap)
    assert index.pop_due(0, math.inf, 10**6) == model.pop_due(math.inf, 10**6)
    assert len(index) == 0


@hypothesis_settings(max_examples=300, deadline=None)
@given(operations=OPERATIONS)
def test_packed_buckets_behave_like_one_heap(operations):
    """Entries move between packed buckets and the heap in front; nothing may change order."""
    replay_against_the_model(DeadlineIndex(), operations)


@hypothesis_settings(max_examples=300, deadline=None)
@given(operations=OPERATIONS)
def test_staged_deadlines_behave_like_one_heap(operations):
    """Grouped by deadline, entries come out as from a heap of tuples, duplicates once (staged
    entries are never rebuilt: a rebalance clears them)."""
    replay_against_the_model(StagedDeadlines(),
                             [operation for operation in operations if operation[0] != "rebuild"])


def test_staged_deadlines_count_and_forget_partitions():
    staged = StagedDeadlines()
    for partition, deadline, cart_id in [(0, 5.0, "a"), (0, 5.0, "b"), (1, 5.0, "c")]:
        staged.schedule(partition, deadline, cart_id)

    assert len(staged) == 3
    staged.keep_only([1])
    assert len(staged) == 1
    assert staged.earliest(0) is None
    assert staged.pop_due(1, 5.0, 10) == [(5.0, "c")]


def test_a_burst_due_at_once_comes_out_in_one_group():
    """100k carts due at the same instant: one group, not 100k heap pops (why it exists)."""
    staged = StagedDeadlines()
    for i in range(100_000):
        staged.schedule(0, 1000.0, f"cart-{i:06d}")
    staged.schedule(0, 2000.0, "later")

    due = staged.pop_due(0, 1500.0, 10**6)
    assert len(due) == 100_000 and due[0] == (1000.0, "cart-000000")
    assert staged.earliest(0) == 2000.0 and len(staged) == 1


def test_ids_keep_their_characters_when_packed():
    ids = ["ünïcødé-🛒", "x" * 200, "a,b;c", ""]
    index = index_with(3, *[(1e9 + i, cart_id) for i, cart_id in enumerate(ids)])

    assert index.pop_due(3, math.inf, 10) == [(1e9 + i, cart_id) for i, cart_id in enumerate(ids)]


def test_a_tracked_cart_costs_a_few_dozen_bytes():
    """The 1M-cart memory floor: no tuple, float and str object per tracked cart."""
    ids = [f"tracked-1-{i}" for i in range(100_000)]
    tracemalloc.start()
    try:
        index = DeadlineIndex()
        for i, cart_id in enumerate(ids):
            index.schedule(i % 4, 1e9 + i * 0.01, cart_id)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(index) == len(ids)
    assert used / len(ids) < 40  # a heap of (float, str) tuples holds ~170 bytes per cart


# --- PartitionClock --------------------------------------------------------------------------


CART, PURCHASE = ("cart-events", 0), ("purchase-events", 0)


def test_all_inputs_caught_up_gives_the_wall_clock():
    clock = PartitionClock()

    assert clock.horizon([(CART, True), (PURCHASE, True)], now=1000.0) == 1000.0
    assert clock.horizon([], now=1000.0) == 1000.0


def test_an_input_never_read_and_behind_holds_everything_back():
    clock = PartitionClock()

    assert clock.horizon([(CART, False), (PURCHASE, True)], now=1000.0) == -math.inf


def test_an_input_with_a_backlog_holds_the_horizon_at_its_event_time():
    clock = PartitionClock()
    clock.observe(CART, 100.0, now=1000.0)
    clock.observe(CART, 300.0, now=1000.0)

    # a backlog is being replayed: the wall clock must not fire deadlines early
    assert clock.horizon([(CART, False), (PURCHASE, True)], now=1000.0) == 300.0


def test_the_horizon_follows_the_message_read_even_when_its_time_is_earlier():
    """Read again after a seek back (or stamped late): what is still to be processed at 200
    must not see deadlines up to 300 fired before it."""
    clock = PartitionClock()
    clock.observe(CART, 300.0, now=1000.0)
    clock.observe(CART, 200.0, now=1000.0)

    assert clock.horizon([(CART, False)], now=1000.0) == 200.0


def test_a_forgotten_input_holds_everything_back_until_read_again():
    clock = PartitionClock()
    clock.observe(CART, 300.0, now=1000.0)

    clock.forget(CART)

    assert clock.horizon([(CART, False)], now=1000.0) == -math.inf


def test_the_slowest_input_with_a_backlog_wins():
    clock = PartitionClock()
    clock.observe(CART, 500.0, now=1000.0)
    clock.observe(PURCHASE, 200.0, now=1000.0)

    assert clock.horizon([(CART, False), (PURCHASE, False)], now=1000.0) == 200.0
    assert clock.horizon([(CART, False), (PURCHASE, True)], now=1000.0) == 500.0


def test_event_time_is_capped_by_the_wall_clock():
    clock = PartitionClock()
    clock.observe(CART, 5000.0, now=1000.0)  # a producer with a fast clock

    assert clock.horizon([(CART, False)], now=4000.0) == 1000.0


def test_clock_keep_only_forgets_inputs():
    clock = PartitionClock()
    clock.observe(CART, 10.0, now=100.0)
    clock.observe(PURCHASE, 20.0, now=100.0)

    clock.keep_only([PURCHASE])

    assert clock.horizon([(CART, False)], now=100.0) == -math.inf
    assert clock.horizon([(PURCHASE, False)], now=100.0) == 20.0


def test_rebuild_indexes_owned_partitions_with_deadlines_only() -> None:
    timers = PartitionTimers(cast(faust.App, None), ("in",), cast(Any, None))
    timers.deadlines.schedule(3, 5.0, "lost")  # a partition given away in the rebalance
    indexed = timers.rebuild({0, 1}, [("a", 0, 20.0), ("b", 1, 10.0), ("c", 2, 5.0),
                                      ("d", 0, None), ("e", 0, 15.0)])
    assert indexed == 3
    assert timers.pop_due(0, 100.0, 10) == [(15.0, "e"), (20.0, "a")]
    assert timers.pop_due(1, 100.0, 10) == [(10.0, "b")]
    assert timers.pop_due(2, 100.0, 10) == [] and timers.pop_due(3, 100.0, 10) == []


class FakeConsumer:
    """What ``PartitionTimers`` asks of Faust's consumer: highwaters, and (through the aiokafka
    consumer under it) when a fetch response last brought them."""

    def __init__(self, highwaters: dict[TP, int], fetched_at: float) -> None:
        self.highwaters = highwaters
        self.fetched_at = fetched_at
        self._committed_offset: dict[TP, int] = {}
        self._thread = self
        self._fetcher = SimpleNamespace(_proc_fetch_request=None)  # never fetches

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)

    def _ensure_consumer(self) -> "FakeConsumer":
        return self

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def last_poll_timestamp(self, tp: TP) -> int:
        return int(self.fetched_at * 1000)


def timers_reading(highwater: int, fetched_at: float = math.inf
                   ) -> tuple[PartitionTimers, TP]:
    tp = TP("cart-events", 0)
    consumer = FakeConsumer({tp: highwater}, fetched_at)
    app = cast(faust.App, type("App", (), {"consumer": consumer})())
    return PartitionTimers(app, ("cart-events",), cast(Any, None)), tp


class RevokedConsumer(FakeConsumer):
    """aiokafka after a rebalance took every partition away, before Faust's assignor is told:
    it holds nothing, and its ``highwater`` asserts ("Partition is not assigned")."""

    def assignment(self) -> set[TP]:
        return set()

    def highwater(self, tp: TP) -> int | None:
        raise AssertionError("Partition is not assigned")


def test_a_partition_revoked_before_faust_is_told_is_behind_and_raises_nothing() -> None:
    """The timer task asks about the partitions Faust's assignor still lists; one aiokafka no
    longer holds is behind (nothing fires by the wall clock), instead of crashing the worker."""
    tp = TP("cart-events", 0)
    app = cast(faust.App, type("App", (), {"consumer": RevokedConsumer({tp: 10}, math.inf)})())
    timers = PartitionTimers(app, ("cart-events",), cast(Any, None))
    timers.processed(tp, 9)

    assert not timers.caught_up(tp)
    assert timers.fire_horizon(0) < time.time() - 1e6  # nothing known to be safe


def test_the_wall_clock_fires_only_up_to_the_last_fetch_response() -> None:
    """Cut off from the broker, the worker still looks caught up (the end it knows is the last
    one fetched): no deadline may fire by the wall clock past the moment the broker last
    answered, or carts
    whose purchase waits unread at the broker are abandoned (the net-blackhole scenario)."""
    answered = time.time() - 10.0  # the broker last answered 10 s ago
    timers, tp = timers_reading(highwater=10, fetched_at=answered)
    timers.processed(tp, 9)
    assert timers.caught_up(tp)

    assert timers.fire_horizon(0) == pytest.approx(answered, abs=0.001)
    # An event being processed proves its own time: the event path is not held back.
    assert timers.safe_time(0) > answered + 9.0


def test_a_message_being_processed_is_not_yet_caught_up() -> None:
    timers, tp = timers_reading(highwater=10)
    timers.processed(tp, 9)  # read to the end once (e.g. before a seek back)
    assert timers.caught_up(tp)

    timers.observe(tp, 4, event_time=100.0, now=1000.0)  # read again from offset 4

    assert not timers.caught_up(tp)
    assert timers.safe_time(0) == 100.0


def test_a_seek_back_forgets_the_position_and_event_time_read_past_it() -> None:
    timers, tp = timers_reading(highwater=10)
    timers.observe(tp, 9, event_time=900.0, now=1000.0)
    timers.processed(tp, 9)

    timers.seek_starting()
    timers.rewound({TP("cart-events", 0): 4, TP("unrelated", 0): 0})

    # Back at offset 4: behind, and nothing is known to be safe until it is read again.
    assert not timers.caught_up(tp)
    assert timers.safe_time(0) == -math.inf
    timers.observe(tp, 4, event_time=500.0, now=1000.0)
    assert timers.safe_time(0) == 500.0


def test_a_seek_that_reads_nothing_again_leaves_the_input_caught_up() -> None:
    """Everything was acknowledged (just not committed yet): the consumer resumes at the end,
    no message comes to say so, and the partition's timers must still fire."""
    timers, tp = timers_reading(highwater=10)
    timers.processed(tp, 9)

    timers.rewound({tp: 10})

    assert timers.caught_up(tp)
    assert timers.safe_time(0) > 1e9  # the wall clock


def test_an_input_read_again_before_the_seek_returns_keeps_what_it_read() -> None:
    """Faust's fetcher may deliver records from the new position before the seek returns: the
    position and time they set stand (moved back behind them, nothing would move it on)."""
    timers, tp = timers_reading(highwater=10)
    timers.processed(tp, 9)
    timers.seek_starting()
    timers.observe(tp, 9, event_time=900.0, now=1000.0)  # read again at once
    timers.processed(tp, 9)

    timers.rewound({tp: 4})

    assert timers.caught_up(tp)


# --- the safe time of a batch's records -------------------------------------------------------


def timers_of_two_inputs(highwaters: dict[TP, int]) -> PartitionTimers:
    app = cast(faust.App, type("App", (), {"consumer": FakeConsumer(highwaters, math.inf)})())
    return PartitionTimers(app, ("cart-events", "purchase-events"), cast(Any, None))


def test_an_input_behind_holds_back_the_batches_of_the_other() -> None:
    carts, purchases = TP("cart-events", 0), TP("purchase-events", 0)
    timers = timers_of_two_inputs({carts: 100, purchases: 10})
    timers.observe(purchases, 3, event_time=250.0, now=1000.0)
    timers.processed(purchases, 3)

    assert timers.held_back_by_others(carts) == 250.0  # purchases 4..9 are still unread
    assert timers.held_back_by_others(purchases) == -math.inf  # no cart event read yet
    timers.processed(purchases, 9)
    assert timers.held_back_by_others(carts) == math.inf  # caught up: only the batch counts


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(),
                          st.lists(st.floats(0.0, 2000.0), min_size=1, max_size=5)),
                max_size=8),
       st.integers(0, 5), st.integers(0, 5))
def test_a_batch_computes_the_safe_time_of_each_record_as_safe_time_would(
        batches: list[tuple[bool, list[float]]], carts_beyond: int, purchases_beyond: int
) -> None:
    """Worked out once per batch (``held_back_by_others``), the safe time of each record is
    ``safe_time``'s after the record is observed, whatever either input's position, event
    times (beyond the wall clock too) and end (``*_beyond`` records past those read: the
    fetch that brought a batch knew an end past it)."""
    carts, purchases = TP("cart-events", 0), TP("purchase-events", 0)
    read = {tp: sum(len(times) for of_carts, times in batches if of_carts == (tp == carts))
            for tp in (carts, purchases)}
    timers = timers_of_two_inputs({carts: read[carts] + carts_beyond,
                                   purchases: read[purchases] + purchases_beyond})
    offsets = {carts: 0, purchases: 0}
    now = 1000.0
    for of_carts, times in batches:
        tp = carts if of_carts else purchases
        held_back = timers.held_back_by_others(tp)
        for event_time in times:
            offset = offsets[tp]
            offsets[tp] += 1
            timers.observe(tp, offset, event_time, now)
            expected = min(timers.clock.horizon(
                ((input_tp, timers.caught_up(input_tp))
                 for input_tp in timers.input_partitions(0)), now), now)
            assert event_safe_time(held_back, event_time, now) == expected
            timers.processed(tp, offset)
