"""Every use of a private Faust or aiokafka attribute, in one place.

cartwatch reaches below the libraries' public API where measurements or correctness asked for it
(a plain producer send instead of ``Topic.send``; the committed offsets Faust keeps; the RocksDB
of a table partition; the consumer's acknowledgements around a rebalance). Each access is a
function here, so an upgrade that renames one breaks in one module, and
``tests/unit/test_compat.py`` fails loudly, naming the attribute, before anything runs.

Checked against the versions ``constraints.txt`` pins: faust-streaming 0.15.x, aiokafka 0.14.x.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import faust
import faust.transport.consumer as faust_consumer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.web import Response

PageHandler = Callable[..., Awaitable[Response]]

CHECKED_AGAINST = {"faust-streaming": "0.15", "aiokafka": "0.14"}
"""Major.minor versions whose private attributes this module was written against."""

PRIVATE_ATTRIBUTES = {
    "faust.transport.drivers.aiokafka.Producer": ("_ensure_producer",),
    "faust.transport.consumer.Consumer (instance)": (
        "_committed_offset", "_acked_index", "_acked", "_n_acked", "_unacked_messages",
        "_read_offset", "_commit_every", "_wait_next_records", "_add_gap", "_waiting_for_ack",
        "_to_message", "_buffered_partitions", "scheduler", "_new_offset",
    ),
    "faust.transport.consumer (module)": ("ack_lock", "notify"),
    "faust.sensors.monitor.Monitor (instance)": ("stream_inbound_time",),
    "faust.transport.drivers.aiokafka.Consumer (instance)": ("_thread",),
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread": (
        "_ensure_consumer", "_create_worker_consumer"),
    "faust.stores.rocksdb.Store": ("_db_for_partition", "_iteritems"),
    "faust.stores.rocksdb.Store (instance)": ("_dbs",),
    "aiokafka.AIOKafkaConsumer (instance)": ("_client", "_fetcher", "_fetch_max_wait_ms"),
    "aiokafka.consumer.fetcher.Fetcher": ("_proc_fetch_request",),
    "aiokafka.consumer.subscription_state.TopicPartitionState (instance)": ("timestamp",),
}
"""What ``tests/unit/test_compat.py`` checks on the installed libraries."""


def use_consumer_class(app: faust.App, consumer_class: type) -> None:
    """Make this app's transport build its consumer from ``consumer_class`` (a subclass of the
    aiokafka driver's ``Consumer``)."""
    app.transport.Consumer = consumer_class  # type: ignore[misc]


def raw_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer under Faust's, for record batches sent directly."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]


FETCH_MAX_WAIT = 0.25
"""Seconds a fetch request of the worker's consumer waits at the broker for data (a long
poll). Faust's aiokafka driver hardcodes 1.5 s; the wall clock fires deadlines only up to the
send of the last fetch answered (``broker_known_until``), so on a quiet partition this wait is
added to the timer delay. Four requests a second per broker connection is nothing for Kafka."""


class ShortPollConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, its aiokafka consumer long-polling ``FETCH_MAX_WAIT``."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(FETCH_MAX_WAIT * 1000)  # read by start()
        return consumer


def broker_known_until(consumer: Any, tp: TP) -> float | None:
    """Up to when the end of ``tp`` that Faust's ``consumer`` knows is the broker's: the send
    time of the fetch request whose response last brought it (wall-clock seconds); None if
    nothing was fetched since ``tp`` was assigned.

    The send time, not the arrival: a response held up in the network (a partition that heals,
    a slow link) describes the broker as it was when it answered, which is after the request
    was sent but may be long before it arrives. aiokafka only records the arrival
    (``last_poll_timestamp``), so ``_fetch_times`` wraps its fetcher to note sends. (A request
    still in flight proves nothing: a blackholed one looks like a long poll.)
    """
    client: AIOKafkaConsumer = consumer._thread._ensure_consumer()
    if tp not in client.assignment():
        return None
    answered = _fetch_times(client).get(tp)
    if answered is not None:
        return answered
    arrived = client.last_poll_timestamp(tp)  # fetched before the wrapper was in place
    return None if arrived is None else arrived / 1000


_FETCH_TIMES = "_cartwatch_fetch_times"


def _fetch_times(client: AIOKafkaConsumer) -> dict[TopicPartition, float]:
    """Per partition, when the request was sent whose response last updated its highwater.

    Installed on the consumer's fetcher the first time it is asked for (idempotent): each
    fetch request's send time is kept for the partitions whose state its response updated
    (aiokafka stamps ``timestamp`` on exactly those).
    """
    fetcher = client._fetcher
    times: dict[TopicPartition, float] | None = getattr(fetcher, _FETCH_TIMES, None)
    if times is not None:
        return times
    sent: dict[TopicPartition, float] = {}
    original = fetcher._proc_fetch_request

    async def proc_fetch_request(assignment: Any, node_id: int, request: Any) -> Any:
        began = time.time()
        result = await original(assignment, node_id, request)
        for topic, partitions in request.topics:
            for partition, *_ in partitions:
                tp = TopicPartition(topic, partition)
                state = assignment.state_value(tp)
                if state is not None and (state.timestamp or 0) >= int(began * 1000):
                    sent[tp] = began
        return result

    fetcher._proc_fetch_request = proc_fetch_request
    setattr(fetcher, _FETCH_TIMES, sent)
    return sent


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp`` (``None`` before its first commit)."""
    return app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]


def acknowledged_offsets(consumer: Any, tp: TP) -> set[int]:
    """Offsets of ``tp`` acknowledged since Faust's last commit of it."""
    return consumer._acked_index.get(tp, set())


def forget_acknowledgements(consumer: Any, tps: Iterable[TP]) -> None:
    """Drop what was acknowledged of ``tps`` and not committed yet (they are read again)."""
    for tp in tps:
        consumer._acked.pop(tp, None)
        consumer._acked_index.pop(tp, None)


async def earliest_offsets(consumer: Any, partitions: Iterable[TP]) -> Mapping[TP, int]:
    """The first offsets of ``partitions``, through the consumer's thread."""
    return await consumer._thread.earliest_offsets(*partitions)


def seek(consumer: Any, tp: TP, offset: int) -> None:
    """Move the fetch position of ``tp`` without Faust's own bookkeeping."""
    consumer._thread.seek(tp, offset)


def table_partition_db(table: faust.Table, partition: int) -> Any:
    """The partition's RocksDB (``rocksdict.Rdict``), opened on first use as Faust's reads do."""
    return table.data._db_for_partition(partition)  # type: ignore[attr-defined]


def open_table_databases(table: Any) -> list[Any]:
    """The RocksDBs (``rocksdict.Rdict``) of the table partitions open in this worker, without
    opening any (none for a table kept in memory)."""
    return list(getattr(table.data, "_dbs", {}).values())


def table_stored_items(table: Any) -> Iterator[tuple[bytes, bytes]]:
    """The raw (key, value) bytes of a table's active partitions, undecoded: ``Table.items()``
    decodes inside its iterator, so one undecodable entry ended the whole iteration."""
    return cast(Iterator[tuple[bytes, bytes]], table.data._iteritems())


def restore_undecoded(table: Any) -> None:
    """Make Faust's restore of ``table`` hand on its changelog records undecoded.

    Not a private attribute, but a reliance on how the recovery works: it reads the changelog
    through a clone of ``table.changelog_topic`` that decodes each record with the topic's
    schema, and a record that schema cannot decode is thrown out of the recovery's queue and
    never counted, so the restore waits for its offset forever (the worker never gets ready).
    The RocksDB store writes the message's raw bytes anyway; with "raw" the record reaches the
    ``on_changelog_event`` hook (``streams.quarantine``) as it was. (Only RocksDB tables: the
    memory store would keep the bytes as values.) Writes are unchanged:
    ``Table.send_changelog`` passes the table's own (JSON) serializers explicitly. Call before
    the app starts (the recovery clones the topic then).
    """
    topic = table.changelog_topic
    # the topic's own attributes too: a clone passes them to its schema again
    topic.key_serializer = topic.value_serializer = "raw"
    topic.schema.key_serializer = topic.schema.value_serializer = "raw"


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Make the consumer fetch fresh metadata now (no public way to ask)."""
    await consumer._client.force_metadata_update()


async def cluster_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """Fresh metadata of every topic, through the consumer's own connection."""
    return await consumer._client.fetch_all_metadata()


def page(app: faust.App, path: str) -> Callable[[PageHandler], PageHandler]:
    """``app.page`` for function handlers ``(web, request, ...)``: Faust wraps them in a view
    (``View.from_handler``), but its annotations admit only view methods."""
    return cast(Callable[[PageHandler], PageHandler], app.page(path))


# -- the consumer's batch path (``streams.consumer.BatchingConsumer``) -------------------------
# Faust's fetcher (``Consumer._drain_messages``) hands every record to the conductor one at a
# time; the batch path takes a partition's fetched records at once and keeps Faust's bookkeeping
# (read offsets, gaps, acknowledgements, periodic commits) through the functions below.


async def fetch_records(consumer: Any, timeout: float) -> tuple[
        Mapping[TP, Sequence[Any]] | None, set[TP] | None]:
    """The next fetched records by partition, and the active partitions (Faust's fetch)."""
    return cast(tuple[Mapping[TP, Sequence[Any]] | None, set[TP] | None],
                await consumer._wait_next_records(timeout))


def deliverable(consumer: Any, tp: TP, active: set[TP] | None) -> bool:
    """Are the fetched records of ``tp`` handed on (Faust's ``getmany``: active partitions, or
    ones paused only because their stream buffer is full)?"""
    return active is None or tp in active or tp in consumer._buffered_partitions


def round_robin(consumer: Any, records: Mapping[TP, Sequence[Any]]) -> Iterable[tuple[TP, Any]]:
    """Records of several partitions interleaved, as Faust's consumer scheduler hands them on."""
    return cast(Iterable[tuple[TP, Any]], consumer.scheduler.iterate(records))


def read_offset(consumer: Any, tp: TP) -> int | None:
    """The offset of the last record of ``tp`` the fetcher handed on."""
    return cast(int | None, consumer._read_offset[tp])


def set_read_offset(consumer: Any, tp: TP, offset: int) -> None:
    consumer._read_offset[tp] = offset


async def add_gap(consumer: Any, tp: TP, first: int, last: int) -> None:
    """Offsets ``first..last`` of ``tp`` hold no records (Faust commits across them)."""
    await consumer._add_gap(tp, first, last)


async def commit_if_many_acked(consumer: Any) -> None:
    """Commit once ``broker_commit_every`` records were acknowledged, as Faust's fetcher does."""
    every = consumer._commit_every
    if every is not None and consumer._n_acked >= every:
        consumer._n_acked = 0
        await consumer.commit()


def track_pending(consumer: Any, pending: Any) -> None:
    """Count ``pending`` (an object with ``acked``) among the records a rebalance waits for
    (``Consumer.wait_empty``) until it is acknowledged."""
    consumer._unacked_messages.add(pending)


def mark_inbound(app: Any, tp: TP) -> None:
    """Tell the monitor ``tp`` just delivered records (else Faust logs "stream idle")."""
    app.monitor.stream_inbound_time[tp] = time.monotonic()


def ack_offsets(consumer: Any, tp: TP, first: int, last: int, pending: Any = None) -> int:
    """Acknowledge offsets ``first..last`` of ``tp`` at once, with the bookkeeping of
    ``Consumer.ack`` (under its lock); ``pending`` stops counting for ``wait_empty``.
    Returns how many offsets were newly acknowledged."""
    added = 0
    with faust_consumer.ack_lock:
        if pending is not None:
            consumer._unacked_messages.discard(pending)
        committed = consumer._committed_offset[tp]
        if committed is not None:
            first = max(first, committed)
        if first <= last:
            index = consumer._acked_index[tp]
            acked = consumer._acked[tp]
            for offset in range(first, last + 1):
                if offset not in index:
                    index.add(offset)
                    acked.append(offset)
                    added += 1
            consumer._n_acked += added
        faust_consumer.notify(consumer._waiting_for_ack)
    return added


def to_message(consumer: Any, tp: TP, record: Any) -> Any:
    """A fetched record as the Faust message its per-message path hands on."""
    return consumer._to_message(tp, record)
