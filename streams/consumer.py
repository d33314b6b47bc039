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

from collections.abc import Collection, Container, Iterable, Mapping

from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from streams.compat import acknowledged_offsets, earliest_offsets, seek


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
    """``seek_to_committed`` also rewinds partitions without a committed offset, and a rebalance
    commits what was processed before Faust forgets it."""

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit first: Faust drops the revoked partitions' acknowledgements *before* its
        revocation handler commits, so everything processed since the last periodic commit
        (every 2.8 s) was processed again after every rebalance, by the new owner and by this
        worker if it kept the partition."""
        await self.commit()
        await super().on_partitions_revoked(revoked)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        rewind = never_committed(committed, self.assignment(),
                                 self.app.tables.changelog_topics)
        if rewind:
            starts = await earliest_offsets(self, rewind)
            for tp in rewind:
                acknowledged = acknowledged_offsets(self, tp)
                seek(self, tp, first_unacknowledged(starts[tp], acknowledged))
        return committed
