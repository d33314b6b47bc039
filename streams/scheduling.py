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

import time
from collections.abc import Iterable, Mapping, Sequence

import faust
from faust.types import TP

from streams.timers import DeadlineIndex, PartitionClock

TICK_RETRY_SECONDS = 5.0
"""A tick request not seen back by then (lost in a rebalance) is asked for again."""


class PartitionTimers:
    """Deadline timers of one agent over co-partitioned ``input_topics`` (see module doc)."""

    def __init__(
        self, app: faust.App, input_topics: Sequence[str], tick_topic: faust.TopicT
    ) -> None:
        self.app = app
        self.input_topics = tuple(input_topics)
        self.tick_topic = tick_topic
        self.deadlines = DeadlineIndex()
        self.clock = PartitionClock()
        self.next_offsets: dict[TP, int] = {}
        """Per input partition, the offset after the last processed message."""
        self.ticks_requested: dict[int, float] = {}

    def input_partitions(self, partition: int) -> list[TP]:
        return [TP(topic, partition) for topic in self.input_topics]

    def owned_partitions(self) -> list[int]:
        """Partition numbers this worker actively owns (those of the first input topic)."""
        first = self.input_topics[0]
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == first)

    def caught_up(self, tp: TP) -> bool:
        """Has this worker processed every message of the input partition the broker holds?"""
        highwater = self.app.consumer.highwater(tp)
        if highwater is None:
            return False
        # Before a partition's first message is processed, its committed offset is the position
        # (Faust keeps it per partition; there is no public accessor).
        committed = self.app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        position = self.next_offsets.get(tp) or committed or 0
        return bool(position >= highwater)

    def safe_time(self, partition: int) -> float:
        """Deadlines of the partition up to this time may fire now (see ``PartitionClock``)."""
        inputs = ((tp, self.caught_up(tp)) for tp in self.input_partitions(partition))
        return self.clock.horizon(inputs, time.time())

    def observe(self, tp: TP, event_time: float, now: float) -> None:
        """An input message with this event time was read."""
        self.clock.observe(tp, event_time, now)

    def processed(self, tp: TP, offset: int) -> None:
        """The input message at ``offset`` is fully processed."""
        self.next_offsets[tp] = offset + 1

    def tick_seen(self, partition: int) -> None:
        self.ticks_requested.pop(partition, None)

    async def request_ticks(self) -> None:
        """Ask the agent to fire timers on partitions whose earliest deadline is due."""
        now = time.time()
        for partition in self.owned_partitions():
            earliest = self.deadlines.earliest(partition)
            if earliest is None:
                continue
            requested_at = self.ticks_requested.get(partition)
            if requested_at is not None and now - requested_at < TICK_RETRY_SECONDS:
                continue  # the agent has not seen the previous tick yet
            if earliest <= self.safe_time(partition):
                self.ticks_requested[partition] = now
                await self.tick_topic.send(key=b"tick", value=b"", partition=partition)

    def reset(
        self, owned: Iterable[int], entries: Mapping[int, Iterable[tuple[float, str]]]
    ) -> None:
        """After a rebalance: keep only ``owned`` partitions, their index rebuilt from entries."""
        owned = set(owned)
        self.deadlines.keep_only(owned)
        for partition in owned:
            self.deadlines.rebuild(partition, entries.get(partition, ()))
        self.clock.keep_only(tp for partition in owned for tp in self.input_partitions(partition))
        for tp in list(self.next_offsets):
            if tp.partition not in owned:
                del self.next_offsets[tp]
        self.ticks_requested.clear()
