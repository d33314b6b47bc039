"""Inactivity timers: a deadline index per partition and the safe time to fire up to.

Like Flink's timer service, each partition keeps a min-heap of (deadline, cart id), so a timer
tick looks at the earliest deadline only and costs nothing for carts that are not due. Entries
are never removed in place: a cart's state records the deadline its entry holds
(``CartState.scheduled_at``) and entries that no longer match are skipped when they surface.
"""

import heapq
from collections.abc import Iterable


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
        """Remove and return up to ``limit`` entries due at ``horizon``, earliest first."""
        heap = self._heaps.get(partition)
        due: list[tuple[float, str]] = []
        while heap and heap[0][0] <= horizon and len(due) < limit:
            due.append(heapq.heappop(heap))
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
    """Event-time progress of each partition, which decides when a deadline may fire.

    A deadline fires once the partition's processed event time passed it, or, when the partition
    has caught up with its end, once the wall clock passed it. So a replayed backlog never
    declares a cart abandoned while a later event for it is still unread.
    """

    def __init__(self) -> None:
        self._watermarks: dict[int, float] = {}

    def observe(self, partition: int, event_time: float, now: float) -> float:
        """Advance the partition's event time (capped by the wall clock against skewed
        producers) and return it."""
        watermark = max(min(event_time, now), self._watermarks.get(partition, float("-inf")))
        self._watermarks[partition] = watermark
        return watermark

    def watermark(self, partition: int) -> float:
        return self._watermarks.get(partition, float("-inf"))

    def horizon(self, partition: int, now: float, caught_up: bool) -> float:
        """The latest deadline that may fire now."""
        watermark = self.watermark(partition)
        return max(watermark, now) if caught_up else watermark

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns."""
        keep = set(partitions)
        for partition in list(self._watermarks):
            if partition not in keep:
                del self._watermarks[partition]
