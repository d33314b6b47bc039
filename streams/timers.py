"""Inactivity timers: a deadline index per partition and the safe time to fire up to.

Like Flink's timer service, each partition keeps a min-heap of (deadline, cart id), so a timer
tick looks at the earliest deadline only and costs nothing for carts that are not due. Entries
are never removed in place: a cart's state records the deadline its entry holds
(``CartState.scheduled_at``) and entries that no longer match are skipped when they surface.

A worker holds an entry for every cart it tracks, so entries that are not due soon are kept
packed (see ``_PartitionDeadlines``): about 12 bytes plus the id's UTF-8 bytes each, instead of
~170 bytes for a heap of ``(float, str)`` tuples (a tuple, a float and a str per cart).
"""

import heapq
import math
from array import array
from collections.abc import Callable, Hashable, Iterable

BUCKET_SECONDS = 60.0
"""Width of a packed bucket of deadlines. Wider means fewer buckets (each costs ~300 bytes) but
more entries unpacked at once when the earliest bucket falls due."""


class _Bucket:
    """Entries whose deadlines share one ``BUCKET_SECONDS`` window, packed, in no order."""

    __slots__ = ("deadlines", "lengths", "ids", "earliest")

    def __init__(self) -> None:
        self.deadlines = array("d")
        self.lengths = array("I")
        """UTF-8 length of each id, in ``ids``."""
        self.ids = bytearray()
        self.earliest = math.inf

    def add(self, deadline: float, key: str) -> None:
        encoded = key.encode()
        self.deadlines.append(deadline)
        self.lengths.append(len(encoded))
        self.ids += encoded
        if deadline < self.earliest:
            self.earliest = deadline

    def unpack(self) -> list[tuple[float, str]]:
        ids, start = self.ids, 0
        entries: list[tuple[float, str]] = []
        append = entries.append
        for deadline, length in zip(self.deadlines, self.lengths, strict=True):
            end = start + length
            append((deadline, ids[start:end].decode()))
            start = end
        return entries


_Appenders = tuple[Callable[[float], None], Callable[[int], None], Callable[[bytes], None]]
"""The ``append`` of a bucket's deadlines and lengths and the ``extend`` of its ids."""


def _bucket_of(deadline: float) -> float:
    """The bucket number of a deadline (infinite deadlines get a bucket of their own)."""
    return deadline // BUCKET_SECONDS if math.isfinite(deadline) else deadline


class _PartitionDeadlines:
    """One partition's deadlines: a small heap in front of packed buckets.

    ``head`` is a heap of tuples holding every entry of the buckets up to ``head_bucket``;
    later buckets stay packed in ``buckets`` (ordered by the heap ``order``) until the head is
    empty and the earliest of them is due. So head entries all come before packed ones, the
    earliest deadline is known in O(1), and only entries about to fire exist as objects.
    """

    __slots__ = ("head", "head_bucket", "buckets", "order", "packed")

    def __init__(self) -> None:
        self.head: list[tuple[float, str]] = []
        self.head_bucket = -math.inf
        self.buckets: dict[float, _Bucket] = {}
        self.order: list[float] = []
        self.packed = 0

    def add(self, deadline: float, key: str) -> None:
        number = _bucket_of(deadline)
        if number <= self.head_bucket:
            heapq.heappush(self.head, (deadline, key))
            return
        bucket = self.buckets.get(number)
        if bucket is None:
            bucket = self.buckets[number] = _Bucket()
            heapq.heappush(self.order, number)
        bucket.add(deadline, key)
        self.packed += 1

    def earliest(self) -> float | None:
        if self.head:
            return self.head[0][0]
        if self.order:
            return self.buckets[self.order[0]].earliest
        return None

    def unpack_next(self, horizon: float) -> bool:
        """Move the earliest packed bucket to the (empty) head if it holds a due entry."""
        if not self.order or self.buckets[self.order[0]].earliest > horizon:
            return False
        number = heapq.heappop(self.order)
        bucket = self.buckets.pop(number)
        self.head = bucket.unpack()
        heapq.heapify(self.head)
        self.head_bucket = number
        self.packed -= len(self.head)
        return True

    def __len__(self) -> int:
        return len(self.head) + self.packed


class DeadlineIndex:
    """Min-heaps of ``(deadline, cart_id)``, one per assigned partition, mostly packed."""

    def __init__(self) -> None:
        self._partitions: dict[int, _PartitionDeadlines] = {}

    def schedule(self, partition: int, deadline: float, cart_id: str) -> None:
        deadlines = self._partitions.get(partition)
        if deadlines is None:
            deadlines = self._partitions[partition] = _PartitionDeadlines()
        deadlines.add(deadline, cart_id)

    def earliest(self, partition: int) -> float | None:
        """The earliest deadline of ``partition``; O(1)."""
        deadlines = self._partitions.get(partition)
        return None if deadlines is None else deadlines.earliest()

    def pop_due(self, partition: int, horizon: float, limit: int) -> list[tuple[float, str]]:
        """Remove and return up to ``limit`` entries due at ``horizon``, earliest first.

        Identical entries come out once: a stale entry becomes current again when the cart is
        rescheduled to the same deadline (a purchase read before the cart's events), and two
        copies decided in one batch would emit the same output twice.
        """
        due: list[tuple[float, str]] = []
        deadlines = self._partitions.get(partition)
        if deadlines is None:
            return due
        while len(due) < limit:
            head = deadlines.head
            if not head and not deadlines.unpack_next(horizon):
                break
            head = deadlines.head
            while head and head[0][0] <= horizon and len(due) < limit:
                entry = heapq.heappop(head)
                if not due or due[-1] != entry:
                    due.append(entry)
            if head:
                break  # the rest is not due, or the limit is reached
        return due

    def rebuild(self, partition: int, entries: Iterable[tuple[float, str]]) -> None:
        """Replace a partition's heap, e.g. from the table after a rebalance; O(n)."""
        deadlines = self._partitions[partition] = _PartitionDeadlines()
        # Recovery runs this over every tracked cart: bucket appenders are looked up once per
        # bucket, and each bucket's earliest deadline is found once at the end.
        appenders: dict[float, _Appenders] = {}
        for deadline, cart_id in entries:
            append = appenders.get(deadline // BUCKET_SECONDS)
            if append is None:
                number = _bucket_of(deadline)
                append = appenders.get(number)
                if append is None:
                    bucket = deadlines.buckets[number] = _Bucket()
                    heapq.heappush(deadlines.order, number)
                    append = appenders[number] = (
                        bucket.deadlines.append,
                        bucket.lengths.append,
                        bucket.ids.extend,
                    )
            encoded = cart_id.encode()
            append[0](deadline)
            append[1](len(encoded))
            append[2](encoded)
        for bucket in deadlines.buckets.values():
            bucket.earliest = min(bucket.deadlines)
            deadlines.packed += len(bucket.deadlines)

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns."""
        keep = set(partitions)
        for partition in list(self._partitions):
            if partition not in keep:
                del self._partitions[partition]

    def __len__(self) -> int:
        return sum(len(deadlines) for deadlines in self._partitions.values())


class StagedDeadlines:
    """Entries due soon (``PartitionTimers.stage``), grouped by deadline.

    Carts often fall due together (a campaign's traffic, a batch import, the benchmark's 100k
    silent carts). In a heap of ``(deadline, cart_id)`` tuples each pop of equal deadlines
    compares cart ids, and popping 25k entries that way took most of a burst's time at the
    deadline. Grouped, the due entries come out a group at a time; ids are sorted within a
    group only when it is popped, so the order is the same as ``DeadlineIndex``'s.
    """

    def __init__(self) -> None:
        self._groups: dict[int, dict[float, list[str]]] = {}
        self._order: dict[int, list[float]] = {}
        """Per partition, a min-heap of the deadlines that have a group."""
        self._count = 0

    def schedule(self, partition: int, deadline: float, cart_id: str) -> None:
        groups = self._groups.setdefault(partition, {})
        group = groups.get(deadline)
        if group is None:
            groups[deadline] = [cart_id]
            heapq.heappush(self._order.setdefault(partition, []), deadline)
        else:
            group.append(cart_id)
        self._count += 1

    def earliest(self, partition: int) -> float | None:
        order = self._order.get(partition)
        return order[0] if order else None

    def pop_due(self, partition: int, horizon: float, limit: int) -> list[tuple[float, str]]:
        """Remove and return up to ``limit`` entries due at ``horizon``, earliest first,
        identical entries once (as ``DeadlineIndex.pop_due``)."""
        due: list[tuple[float, str]] = []
        order, groups = self._order.get(partition), self._groups.get(partition)
        while order and order[0] <= horizon and len(due) < limit:
            deadline = order[0]
            group = groups.pop(deadline) if groups is not None else []
            heapq.heappop(order)
            self._count -= len(group)
            ids = sorted(group) if len(group) > 1 else group
            taken = 0
            for cart_id in ids:
                if len(due) >= limit:
                    break
                taken += 1
                if not due or due[-1] != (deadline, cart_id):
                    due.append((deadline, cart_id))
            for cart_id in ids[taken:]:  # beyond the limit: left for the next call
                self.schedule(partition, deadline, cart_id)
        return due

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns."""
        keep = set(partitions)
        for partition in list(self._groups):
            if partition not in keep:
                self._count -= sum(len(group) for group in self._groups.pop(partition).values())
                self._order.pop(partition, None)

    def __len__(self) -> int:
        return self._count


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
        """The input's event time is that of the message being read; the wall clock caps it
        against skewed producers.

        The latest message, not the largest time seen: after the consumer seeks back (a
        rebalance, records dropped and read again) the clock follows the messages read again,
        so a deadline never fires by the time of a message that is to be read again. An input
        whose times go back and forth only makes its deadlines fire later, never earlier.
        """
        self._watermarks[source] = min(event_time, now)

    def forget(self, source: Hashable) -> None:
        """The input is read again from an earlier position: its event time is unknown."""
        self._watermarks.pop(source, None)

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


def event_safe_time(held_back: float, event_time: float, now: float) -> float:
    """The safe time while an input event at ``event_time`` is processed, given how the
    partition's other inputs hold it back (``PartitionTimers.held_back_by_others``).

    The same as ``PartitionTimers.safe_time`` once the event is observed: the input being
    read is behind (its own message is not processed yet), so it holds the safe time at the
    event's time, capped by the wall clock as ``PartitionClock.observe`` caps it; the wall
    clock caps the whole.
    """
    return min(held_back, event_time, now)
