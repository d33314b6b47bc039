"""Inactivity timers: a deadline index per partition and the safe time to fire up to.

Like Flink's timer service, each partition keeps a min-heap of (deadline, cart id), so a timer
tick looks at the earliest deadline only and costs nothing for carts that are not due. Entries
are never removed in place: a cart's state records the deadline its entry holds
(``CartState.scheduled_at``) and entries that no longer match are skipped when they surface.
"""

import heapq
import math
from collections.abc import Hashable, Iterable


class DeadlineIndex:
    """Min-heaps of ``(deadline, cart_id)``, one per assigned partition."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}

    def schedule(self, partition: int, deadline: float, cart_id: str) -> None:
        heapq.heappush(self._heaps.setdefault(partition, []), (deadline, cart_id))

    def earliest(self, partition: int) -> float | None:
        """The earliest deadline of ``partition``; O(1)."""
        heap = self._heaps.get(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, horizon: float, limit: int) -> list[tuple[float, str]]:
        """Remove and return up to ``limit`` entries due at ``horizon``, earliest first.

        Identical entries come out once: a stale entry becomes current again when the cart is
        rescheduled to the same deadline (a purchase read before the cart's events), and two
        copies decided in one batch would emit the same output twice.
        """
        heap = self._heaps.get(partition)
        due: list[tuple[float, str]] = []
        while heap and heap[0][0] <= horizon and len(due) < limit:
            entry = heapq.heappop(heap)
            if not due or due[-1] != entry:
                due.append(entry)
        return due

    def rebuild(self, partition: int, entries: Iterable[tuple[float, str]]) -> None:
        """Replace a partition's heap, e.g. from the table after a rebalance; O(n)."""
        heap = list(entries)
        heapq.heapify(heap)
        self._heaps[partition] = heap

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns."""
        keep = set(partitions)
        for partition in list(self._heaps):
            if partition not in keep:
                del self._heaps[partition]

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())


class PartitionClock:
    """Event-time progress of each input (topic, partition), which decides when to fire.

    A partition's safe time is the wall clock, held back by every input of the partition that
    still has unread messages: there, only the event time already processed is safe (Kafka
    Streams does the same across the co-partitioned inputs of a task). So a replayed backlog
    never fires a deadline while an earlier-stamped event for the cart is still unread.
    """

    def __init__(self) -> None:
        self._watermarks: dict[Hashable, float] = {}

    def observe(self, source: Hashable, event_time: float, now: float) -> None:
        """Advance an input's event time; the wall clock caps it against skewed producers."""
        watermark = min(event_time, now)
        if watermark > self._watermarks.get(source, -math.inf):
            self._watermarks[source] = watermark

    def horizon(self, sources: Iterable[tuple[Hashable, bool]], now: float) -> float:
        """The latest deadline that may fire now, given ``(input, caught_up)`` pairs."""
        horizon = now
        for source, caught_up in sources:
            if not caught_up:
                horizon = min(horizon, self._watermarks.get(source, -math.inf))
        return horizon

    def keep_only(self, sources: Iterable[Hashable]) -> None:
        """Forget inputs this worker no longer owns."""
        keep = set(sources)
        for source in list(self._watermarks):
            if source not in keep:
                del self._watermarks[source]
