"""Wall-clock timers for an agent whose state is a Faust table: index, safe time, tick requests.

Shared by the cart lifecycle agent and the reminder scheduler. Faust tables may only be written
inside stream iteration, so a timer cannot act by itself: a wall-clock ``app.timer`` only *asks*
for a tick by sending an empty message to the agent's own tick topic (co-partitioned with its
inputs), and the agent, on reading it, pops the due keys from the ``DeadlineIndex`` and writes.

Responsibilities of ``PartitionTimers``:
- the per-partition deadline index and the event-time clock of the agent's inputs;
- which input offsets the agent has processed, hence whether an input partition is caught up;
- the safe time up to which deadlines may fire (held back by unread input, see
  ``PartitionClock``);
- asking for ticks on owned partitions whose earliest deadline is safe to fire;
- forgetting what belongs to partitions lost in a rebalance.
"""

import math
import time
from collections.abc import Iterable, Mapping, Sequence

import faust
from faust.types import TP

from streams.compat import broker_known_until, committed_offset
from streams.timers import DeadlineIndex, PartitionClock, StagedDeadlines

TICK_RETRY_SECONDS = 5.0
"""A tick request not seen back by then (lost in a rebalance) is asked for again."""


class PartitionTimers:
    """Deadline timers of one agent over co-partitioned ``input_topics`` (see module doc)."""

    def __init__(
        self,
        app: faust.App,
        input_topics: Sequence[str],
        tick_topic: faust.TopicT,
        prepare_ahead: float = 0.0,
        grace: float = 0.0,
    ) -> None:
        self.app = app
        self.input_topics = tuple(input_topics)
        self.tick_topic = tick_topic
        self.prepare_ahead = prepare_ahead
        """How long before their deadline entries move to ``staged`` (0: never)."""
        self.grace = grace
        """Seconds the wall clock must be past a deadline before it fires with no event to
        prove it (``fire_horizon``): the end of a partition is known from the last fetch, so a
        message produced just before a deadline may not be known yet when it passes."""
        self.deadlines = DeadlineIndex()
        self.staged = StagedDeadlines()
        """Entries the agent took out of ``deadlines`` to prepare for (see ``stage``)."""
        self.clock = PartitionClock()
        self.next_offsets: dict[TP, int] = {}
        """Per input partition, the offset after the last processed message."""
        self.ticks_requested: dict[int, float] = {}
        self.read_since_seek: set[TP] = set()
        """Inputs read since the consumer's latest seek began (``seek_starting``)."""

    def input_partitions(self, partition: int) -> list[TP]:
        return [TP(topic, partition) for topic in self.input_topics]

    def owned_partitions(self) -> list[int]:
        """Partition numbers this worker actively owns (those of the first input topic)."""
        first = self.input_topics[0]
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == first)

    def position(self, tp: TP) -> int:
        """The offset of the next message of input partition ``tp`` this worker will process.

        Before a partition's first message is processed, that is its committed offset (Faust
        keeps it per partition; there is no public accessor)."""
        return self.next_offsets.get(tp) or committed_offset(self.app, tp) or 0

    def caught_up(self, tp: TP) -> bool:
        """Has this worker processed every message of the input partition the broker holds?"""
        highwater = self.highwater(tp)
        return highwater is not None and self.position(tp) >= highwater

    def highwater(self, tp: TP) -> int | None:
        """The broker's high watermark of ``tp`` as the consumer last saw it; None if not known
        or if the consumer no longer holds ``tp``.

        A rebalance takes a partition from aiokafka's subscription (in the consumer's thread)
        before Faust's assignor, which ``owned_partitions`` asks, is told, and aiokafka's
        ``highwater`` asserts on a partition it does not hold: a timer task or a scrape of
        ``/metrics`` asking in between must get "not known", not an exception. Asked, not
        checked first against ``assignment()``: that builds a set of every assigned partition
        per call, and the notifier asks per event (a tenth of its worker's time, py-spy).
        """
        try:
            return self.app.consumer.highwater(tp)
        except (AssertionError, AttributeError):  # not held (under python -O, where the
            return None  # assertion is gone, aiokafka reads .highwater of None instead)

    def earliest(self, partition: int) -> float | None:
        """The partition's earliest deadline, staged or not; O(1)."""
        waiting, staged = self.deadlines.earliest(partition), self.staged.earliest(partition)
        if waiting is None or staged is None:
            return staged if waiting is None else waiting
        return min(waiting, staged)

    def pop_due(self, partition: int, horizon: float, limit: int) -> list[tuple[float, str]]:
        """Remove and return up to ``limit`` entries due at ``horizon``, staged ones first."""
        due = self.staged.pop_due(partition, horizon, limit)
        if len(due) < limit:
            due += self.deadlines.pop_due(partition, horizon, limit - len(due))
        return due

    def stage(self, partition: int, limit: int) -> list[tuple[float, str]]:
        """Move up to ``limit`` entries due within ``prepare_ahead`` to ``staged``; return them
        so that the agent prepares what they will emit."""
        if self.prepare_ahead <= 0:
            return []
        entries = self.deadlines.pop_due(partition, time.time() + self.prepare_ahead, limit)
        for deadline, key in entries:
            self.staged.schedule(partition, deadline, key)
        return entries

    def to_stage(self, partition: int) -> bool:
        earliest = self.deadlines.earliest(partition)
        return (
            self.prepare_ahead > 0
            and earliest is not None
            and earliest <= time.time() + self.prepare_ahead
        )

    def __len__(self) -> int:
        """Entries tracked, staged or not."""
        return len(self.deadlines) + len(self.staged)

    def safe_time(self, partition: int) -> float:
        """Deadlines of the partition up to this time may fire now (see ``PartitionClock``)."""
        inputs = ((tp, self.caught_up(tp)) for tp in self.input_partitions(partition))
        return self.clock.horizon(inputs, time.time())

    def held_back_by_others(self, reading: TP) -> float:
        """The safe time of ``reading``'s partition as its *other* inputs hold it back (``inf``
        when they do not), for a batch of ``reading``'s records (``event_safe_time``).

        ``safe_time`` asks the consumer whether each input is caught up, for every event (a
        fifth of the batch worker's time went there, in building ``TP``s and asking aiokafka,
        py-spy). Within a batch of one input nothing that this depends on moves: the other
        inputs' positions and event times change only when their own records are processed
        (under the pipeline's lock, as the batch is) or sought (never during a batch:
        ``RewindingConsumer._drain_messages``), and the input being read is never caught up
        before its batch's last record is processed. Only the broker's end of another input
        may move meanwhile, as it may between any fetch and its processing: the batch then
        runs as if it had been processed the moment it began.
        """
        others = ((tp, self.caught_up(tp)) for tp in self.input_partitions(reading.partition)
                  if tp.topic != reading.topic)
        return self.clock.horizon(others, math.inf)

    def fire_horizon(self, partition: int) -> float:
        """Deadlines up to this time may fire on the wall clock alone (no event proving that
        time has passed): the safe time, ``grace`` behind the wall clock, and never past the
        moment up to which the broker's end of each caught-up input is known.

        "Caught up" compares the position with the end of the partition *as of the last fetch
        response*; while the broker cannot be reached (a network partition) that end goes stale
        and the worker would look caught up forever, firing deadlines by the wall clock while
        the purchases and new lines that cancel them wait unread at the broker. So the wall
        clock counts only up to the send of the last fetch answered
        (``compat.broker_known_until``); the consumer long-polls ``compat.FETCH_MAX_WAIT``, so
        a quiet healthy partition is known up to at most twice that ago. (Trusting a request in
        flight instead, a blackholed one looked like a long poll for the 2.5 s of Faust's own
        wait, and a cart still filling was abandoned.) An input event is different: its own
        time is proof, and capping the event path too holds events back in their carts' pending
        lists (tried: under 500 ms latency reactivations went missing), so ``safe_time`` is
        left uncapped.
        """
        horizon = min(self.safe_time(partition), time.time() - self.grace)
        for tp in self.input_partitions(partition):
            known = broker_known_until(self.app.consumer, tp) if self.caught_up(tp) else None
            if known is not None:
                horizon = min(horizon, known)
        return horizon

    def observe(self, tp: TP, offset: int, event_time: float, now: float) -> None:
        """The input message at ``offset``, with this event time, is being processed: until
        ``processed`` it is not, so the partition is not caught up before it."""
        self.next_offsets[tp] = offset
        self.clock.observe(tp, event_time, now)
        self.read_since_seek.add(tp)

    def processed(self, tp: TP, offset: int) -> None:
        """The input message at ``offset`` is fully processed."""
        self.next_offsets[tp] = offset + 1

    def seek_starting(self) -> None:
        """The consumer begins a seek to committed offsets (``consumer.on_seek``)."""
        self.read_since_seek = set()

    def rewound(self, positions: Mapping[TP, int]) -> None:
        """The consumer sought partitions back to these positions (next offset to read): what
        was read past them is read again, so neither the offsets processed nor the event time
        read there count any more; each input is where the seek put it (a seek that re-reads
        nothing leaves it at its end, caught up) until its next message says otherwise.

        An input already read again since the seek began is left alone: Faust's fetcher runs
        in a thread of its own and may deliver records from the new position before the seek
        returns, and moving the position back behind them, with no message left to move it
        forward, would hold the partition's timers forever.
        """
        for tp, position in positions.items():
            key = TP(tp.topic, tp.partition)
            if tp.topic in self.input_topics and key not in self.read_since_seek:
                self.next_offsets[key] = position
                self.clock.forget(key)

    def tick_seen(self, partition: int) -> None:
        self.ticks_requested.pop(partition, None)

    async def request_ticks(self) -> None:
        """Ask the agent to fire timers on partitions whose earliest deadline is due, or to
        prepare for those due within ``prepare_ahead``."""
        now = time.time()
        for partition in self.owned_partitions():
            earliest = self.earliest(partition)
            if earliest is None:
                continue
            requested_at = self.ticks_requested.get(partition)
            if requested_at is not None and now - requested_at < TICK_RETRY_SECONDS:
                continue  # the agent has not seen the previous tick yet
            if self.to_stage(partition) or earliest <= self.fire_horizon(partition):
                await self.request_tick(partition)

    async def request_tick(self, partition: int) -> None:
        self.ticks_requested[partition] = time.time()
        await self.tick_topic.send(key=b"tick", value=b"", partition=partition)

    def rebuild(self, owned: Iterable[int],
                scheduled: Iterable[tuple[str, int, float | None]]) -> int:
        """After a rebalance: the index of the ``owned`` partitions from every stored
        ``(key, partition, deadline)`` (the agent's table, read once); keys of other partitions
        or without a deadline are left out. Returns the entries indexed.

        Both timed agents (the cart lifecycle and the reminder scheduler) rebuild this way.
        """
        owned = set(owned)
        entries: dict[int, list[tuple[float, str]]] = {partition: [] for partition in owned}
        for key, partition, deadline in scheduled:
            if partition in owned and deadline is not None:
                entries[partition].append((deadline, key))
        self.reset(owned, entries)
        return sum(len(found) for found in entries.values())

    def reset(
        self, owned: Iterable[int], entries: Mapping[int, Iterable[tuple[float, str]]]
    ) -> None:
        """After a rebalance: keep only ``owned`` partitions, their index rebuilt from entries."""
        owned = set(owned)
        self.deadlines.keep_only(owned)
        self.staged.keep_only(())
        for partition in owned:
            self.deadlines.rebuild(partition, entries.get(partition, ()))
        self.clock.keep_only(tp for partition in owned for tp in self.input_partitions(partition))
        for tp in list(self.next_offsets):
            if tp.partition not in owned:
                del self.next_offsets[tp]
        self.ticks_requested.clear()
