"""The app's Kafka consumer: Faust's, except that seeking to committed offsets also rewinds the
partitions that have none.

Around a rebalance Faust drops records it has fetched but not yet given to an agent (flow
stopped, partition paused, queues cleared, generation changed) and relies on "seek to committed"
to read them again. aiokafka's ``seek_to_committed`` moves only the partitions whose committed
offset is above 0: one never committed keeps the fetcher's position, past the dropped records,
which are then never read. (A broker restart lost a due reminder that way: the first record of a
``reminders-due`` partition, written while its owner was rebalancing.) Here such a partition goes
back to where a commit would have put it: its first offset that this consumer has not
acknowledged. Going back to the very beginning instead re-read everything processed since the
worker started, at every seek (three times the input in the two-worker operator test).
"""

import asyncio
import logging
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP
from mode import Service

from streams.compat import (
    ShortPollConsumerThread,
    ack_offsets,
    acknowledged_offsets,
    add_gap,
    commit_if_many_acked,
    deliverable,
    earliest_offsets,
    fetch_records,
    forget_acknowledgements,
    mark_inbound,
    read_offset,
    round_robin,
    seek,
    set_read_offset,
    to_message,
    track_pending,
)

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 0.25
"""Seconds a fetch waits for records; a seek waits for it (``RewindingConsumer._positions``)."""


class InputBatch:
    """A partition's fetched records, acknowledged as one offset range (the shape of the
    Faust event ``Checkpoint`` acknowledges). Until then a rebalance waits for it
    (``Consumer.wait_empty``)."""

    __slots__ = ("consumer", "tp", "first", "last", "acked", "refcount", "__weakref__")

    def __init__(self, consumer: Any, tp: TP, first: int, last: int) -> None:
        self.consumer, self.tp, self.first, self.last = consumer, tp, first, last
        self.acked = False
        self.refcount = 1  # read by Faust's "wait_empty: waiting for" log line

    def ack(self) -> bool:
        if self.acked:
            return False
        self.acked = True
        ack_offsets(self.consumer, self.tp, self.first, self.last, self)
        return True

    def __repr__(self) -> str:
        return f"<InputBatch {self.tp.topic}[{self.tp.partition}]@{self.first}..{self.last}>"


class SeekListener(Protocol):
    """Told when a seek to committed offsets begins, then the position (next offset to read)
    of every partition it moved, as each is sought."""

    def seek_starting(self) -> None: ...

    def rewound(self, positions: Mapping[TP, int]) -> None: ...


class BatchHandler(Protocol):
    """Takes the fetched records of ``topics`` a partition at a time
    (``streams.batch.PartitionBatches``)."""

    topics: Collection[str]

    async def handle(self, tp: TP, records: Sequence[Any], batch: InputBatch) -> None:
        """Process ``records`` (in offset order) and acknowledge ``batch`` once their outputs
        and state are committed."""

    async def flush(self) -> None:
        """Commit every partition's work now (a rebalance is about to revoke partitions)."""


async def deliver(handler: BatchHandler, tp: TP, records: Sequence[Any],
                  batch: InputBatch) -> bool:
    """Hand a batch to ``handler``; a failure is logged, never raised: the fetcher goes on.
    (The handler dead-letters a record that fails; this catches what fails around them.)"""
    try:
        await handler.handle(tp, records, batch)
    except Exception:
        log.exception("the batch %r failed; it stays unacknowledged (read again after a "
                      "restart or rebalance)", batch)
        return False
    return True


def never_committed(committed: Mapping[TP, int | None], assigned: Iterable[TP],
                    changelogs: Collection[str] = ()) -> list[TP]:
    """The partitions ``seek_to_committed`` left where they were (no committed offset, or 0)
    that are still assigned (a partition revoked meanwhile cannot be sought). Table changelogs
    are never committed: table recovery positions them itself."""
    still = set(assigned)
    return [tp for tp, offset in committed.items()
            if not offset and tp in still and tp.topic not in changelogs]


def first_unacknowledged(start: int, acknowledged: Container[int]) -> int:
    """The offset a commit would have stored: the first from ``start`` not acknowledged."""
    position = start
    while position in acknowledged:
        position += 1
    return position


class RewindingConsumer(Consumer):
    """``seek_to_committed`` also rewinds partitions without a committed offset, a rebalance
    commits what was processed before Faust forgets it, and no seek overlaps a fetched batch
    (``_drain_messages``).

    With a ``batches`` handler (``use_batches``), the records of its topics skip Faust's
    per-message path (conductor, stream, event): the fetcher hands each partition's fetched
    records to the handler at once. Faust's consumer group, offset commits, rebalancing and
    table changelogs are unchanged; records of other topics go through Faust as before.
    """

    batches: ClassVar[BatchHandler | None] = None
    seek_listeners: ClassVar[list[SeekListener]] = []
    """Told which partitions were sought back to their committed offsets (``on_seek``)."""

    def _tell_seek_listeners(self, positions: Mapping[TP, int]) -> None:
        for listener in self.seek_listeners:
            listener.rewound(positions)

    def _new_consumer_thread(self) -> ShortPollConsumerThread:
        """Long polls of ``compat.FETCH_MAX_WAIT``: the timers trust the wall clock only up to
        the last fetch answered (``PartitionTimers.fire_horizon``)."""
        return ShortPollConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit first: Faust drops the revoked partitions' acknowledgements *before* its
        revocation handler commits, so everything processed since the last periodic commit
        (every 2.8 s) was processed again after every rebalance, by the new owner and by this
        worker if it kept the partition. A batch in flight is waited for and its checkpoint
        committed before that."""
        if self.batches is not None:
            await self.batches.flush()
        await self.commit()
        self._sought.difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Every assigned partition waits for a seek again, kept ones too: aiokafka starts a
        new assignment's positions afresh, and a seek made between the revocation and this
        assignment (of records fetched while the flow was stopped) set positions of the old
        one."""
        self._sought.difference_update(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._positions = asyncio.Lock()
        """Held while a batch is fetched and handed on, and while partitions are sought: see
        ``_drain_messages``."""
        self._sought: set[TP] = set()
        """Partitions sought to their committed offsets since they were assigned: only their
        records are handed on (``_positioned``) and only their offsets committed
        (``_new_offset``)."""

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``, once it was sought to its committed offset.

        Faust forgets a partition's committed offset when it is revoked and learns it again
        only in the seek that ends the rebalance; meanwhile it commits any run of
        acknowledged offsets. Records acknowledged without being processed (Faust's streams
        acknowledge the events they skip during a rebalance) then carried the commit past
        records never read: a kill -9 test lost cart events that way.
        """
        if tp not in self._sought:
            return None
        return super()._new_offset(tp)

    async def perform_seek(self) -> None:
        """Seek to committed offsets, never while fetched records are being handed on."""
        async with self._positions:
            await super().perform_seek()

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Seek (table recovery positions its changelogs), never while records are handed on."""
        async with self._positions:
            await super().seek_wait(partitions)

    async def _drain_messages(self, fetcher: Service) -> None:  # type: ignore[override]
        """Faust's fetch loop, except that a seek never overlaps a batch.

        Faust fetches a batch, then hands its records on one by one while table recovery seeks
        partitions from another task. Records of that batch handed on after a seek, read before
        it, move the partition's read offset past the records the seek is about to read again,
        and Faust then drops those as already read: a rebalance lost reminders and cart events
        that way. Here a batch is fetched and handed on under ``_positions``, which every seek
        takes too, so a batch lies wholly before a seek or wholly after it.
        """
        try:
            while not (self.should_stop or fetcher.should_stop):
                if not self.flow_active:  # wait outside the lock: recovery seeks meanwhile
                    await self.wait(self.can_resume_flow.wait())
                    continue
                self.diag.set_flag(CONSUMER_FETCHING)
                async with self._positions:
                    records, active = await fetch_records(self, FETCH_TIMEOUT)
                    if records and not self.should_stop:
                        if self.flow_active:
                            await self._deliver_all(records, active)
                        else:  # as Faust's getmany: records fetched while stopped are read again
                            try:
                                await super().perform_seek()
                            except Exception as exc:
                                log.warning("exception performing seek when flow not active %r",
                                            exc)
                self.diag.unset_flag(CONSUMER_FETCHING)
                await self.sleep(0)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver_all(self, records: Mapping[TP, Sequence[Any]],
                           active: set[TP] | None) -> None:
        """Hand on a fetched batch: a batch handler's partitions a partition at a time, the
        others record by record, interleaved as Faust does. Stops when a rebalance begins
        (Faust then seeks back to the committed offsets)."""
        generation = self.app.consumer_generation_id
        handler = self.batches
        singles: dict[TP, Sequence[Any]] = {}
        for tp, fetched in records.items():
            if not deliverable(self, tp, active):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if not self._positioned(tp):
                continue
            if handler is not None and tp.topic in handler.topics:
                if not self._flowing(generation):
                    return
                await self._deliver_batch(handler, tp, fetched)
            else:
                singles[tp] = fetched
        for count, (tp, record) in enumerate(round_robin(self, singles)):
            if not self._flowing(generation):
                return
            if count and not count % 100:
                await asyncio.sleep(0)
            await self._deliver_one(tp, record)

    def _positioned(self, tp: TP) -> bool:
        """May records of ``tp`` be handed on: has it been sought to its committed offset
        since it was assigned (table changelogs: always, their recovery positions them)?

        Faust resumes a rebalance's partitions before the seek that ends it, and records
        fetched meanwhile came from wherever aiokafka stood, past records dropped around the
        rebalance (fetched as the flow stopped). Those were folded first, and the records the
        seek then read again after them: one cart's events out of offset order (a quantity
        change before the line it changed, in the rolling-upgrade test). Dropped here, they are
        read again from the committed offset, in order."""
        return tp in self._sought or tp.topic in self.app.tables.changelog_topics

    def _flowing(self, generation: int) -> bool:
        return self.flow_active and self.app.consumer_generation_id == generation

    async def _deliver_batch(self, handler: BatchHandler, tp: TP,
                             fetched: Sequence[Any]) -> None:
        last_read = read_offset(self, tp)
        records = fetched if last_read is None else [
            record for record in fetched if record.offset >= last_read]
        if not records:
            return
        first, last = records[0].offset, records[-1].offset
        if last_read and first - last_read > 1:
            await add_gap(self, tp, last_read + 1, first)
        await commit_if_many_acked(self)
        batch = InputBatch(self, tp, first, last)
        track_pending(self, batch)
        mark_inbound(self.app, tp)
        try:
            await deliver(handler, tp, records, batch)
        finally:
            set_read_offset(self, tp, last)

    async def _deliver_one(self, tp: TP, record: Any) -> None:
        """Faust's own path for one record (``Consumer._drain_messages``)."""
        message = to_message(self, tp, record)
        offset = message.offset
        last_read = read_offset(self, tp)
        if last_read is not None and offset < last_read:
            return
        if last_read and offset - last_read > 1 and self.app.topics.acks_enabled_for(
                message.topic):
            await add_gap(self, tp, last_read + 1, offset)
        await commit_if_many_acked(self)
        await self.wait_first(self.callback(message), self.suspend_flow.wait())
        set_read_offset(self, tp, offset)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        for listener in self.seek_listeners:
            listener.seek_starting()
        committed = await super().seek_to_committed()
        # Tell the timers at once: the fetcher reads from the new positions from now on, and a
        # record read again must find its partition's position already moved back.
        assigned = self.assignment()
        self._tell_seek_listeners({TP(tp.topic, tp.partition): offset
                                   for tp, offset in committed.items()
                                   if offset and tp in assigned})
        rewind = never_committed(committed, assigned, self.app.tables.changelog_topics)
        if rewind:
            starts = await earliest_offsets(self, rewind)
            for tp in rewind:
                position = first_unacknowledged(starts[tp], acknowledged_offsets(self, tp))
                seek(self, tp, position)
                self._tell_seek_listeners({tp: position})
        # What follows the new positions is read again: an acknowledgement from before (of a
        # record processed, or skipped by a stream during the rebalance) must not commit it.
        sought = {TP(tp.topic, tp.partition) for tp in assigned
                  if tp.topic not in self.app.tables.changelog_topics}
        forget_acknowledgements(self, sought)
        self._sought |= sought
        return committed


def on_seek(listener: SeekListener) -> None:
    """Call ``listener`` with the partitions each seek to committed offsets moved back, and
    where to (``{partition: next offset read}``).

    Faust seeks after a rebalance's recovery (having already resumed the partitions, so
    records past the committed offsets may have been processed once) and whenever it drops
    fetched records; whatever an agent derived from its reading position must follow.
    """
    RewindingConsumer.seek_listeners.append(listener)


def use_batches(handler: BatchHandler | None) -> None:
    """Send the records of ``handler.topics`` to ``handler`` in per-partition batches (None:
    Faust's per-message path for every topic)."""
    RewindingConsumer.batches = handler
