"""The app's Kafka consumer: Faust's, except that seeking to committed offsets also rewinds the
partitions that have none.

Around a rebalance Faust drops records it has fetched but not yet given to an agent (flow
stopped, partition paused, queues cleared, generation changed) and relies on "seek to committed"
to read them again. aiokafka's ``seek_to_committed`` moves only the partitions whose committed
offset is above 0: one never committed keeps the fetcher's position, past the dropped records,
which are then never read. (A broker restart lost a due reminder that way: the first record of a
``reminders-due`` partition, written while its owner was rebalancing.) Here such a partition goes
back to its first offset, as if committed there; redelivered records are the usual
at-least-once repeats.
"""

from collections.abc import Collection, Iterable, Mapping

from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP


def never_committed(committed: Mapping[TP, int | None], assigned: Iterable[TP],
                    changelogs: Collection[str] = ()) -> list[TP]:
    """The partitions ``seek_to_committed`` left where they were (no committed offset, or 0)
    that are still assigned (a partition revoked meanwhile cannot be sought). Table changelogs
    are never committed: table recovery positions them itself."""
    still = set(assigned)
    return [tp for tp, offset in committed.items()
            if not offset and tp in still and tp.topic not in changelogs]


class RewindingConsumer(Consumer):
    """``seek_to_committed`` rewinds partitions without a committed offset to their beginning."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        rewind = never_committed(committed, self.assignment(),
                                 self.app.tables.changelog_topics)
        if rewind:
            await self._thread.seek_to_beginning(*rewind)
        return committed
