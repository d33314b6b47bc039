"""Writes to a Faust table below its table API: the entry into the table's RocksDB partition,
its changelog record straight to the producer.

Faust's ``table[key] = value`` queues the changelog record through ``Topic.send_soon`` (a
buffer, a ``FutureMessage``, ``Topic.publish_message``, sensors) and ``Topic.send`` costs about
ten times a plain producer send (measured). The bytes written here are those of the table's
own codecs and the partition is the one Faust would use, so changelog recovery, standby
replicas and Faust's own reads of the table work unchanged. Like Faust's writes, the records
are not awaited by default: Faust flushes the producer before it commits input offsets, so an
offset is never committed ahead of the state it produced.
"""

import asyncio
from collections.abc import Iterable
from functools import partial
from typing import Any, cast

import faust
from aiokafka.structs import RecordMetadata

from streams.compat import raw_producer, table_partition_db
from streams.recordbatches import BatchSender


class TableWriter:
    """One table's RocksDB partitions and changelog, written as Faust's table writes them."""

    def __init__(self, app: faust.App, table: faust.Table) -> None:
        self._app = app
        self._table = table
        self._changelog = table.changelog_topic.get_topic_name()

    def db(self, partition: int) -> Any:
        """The partition's RocksDB (``rocksdict.Rdict``), opened on first use."""
        return table_partition_db(self._table, partition)

    def encode_key(self, key: Any) -> bytes:
        """The key as the table's codec writes it."""
        encoded = self._app.serializers.dumps_key(None, key, serializer=self._table.key_serializer)
        assert encoded is not None
        return encoded

    def encode(self, key: Any, value: Any) -> tuple[bytes, bytes | None]:
        """Key and value as the table's codecs write them (``None`` stays a deletion)."""
        value_bytes = None if value is None else self._app.serializers.dumps_value(
            None, value, serializer=self._table.value_serializer)
        return self.encode_key(key), value_bytes

    async def send(self, partition: int, key: bytes,
                   value: bytes | None) -> "asyncio.Future[RecordMetadata]":
        """Hand a changelog record to the producer; the future completes on the broker's
        acknowledgement. ``track`` the last of a batch so that recovery knows about it."""
        sent = await self._app.producer.send(self._changelog, key, value, partition, None, None)
        return cast("asyncio.Future[RecordMetadata]", sent)  # a Future, annotated Awaitable

    async def send_all(self, partition: int,
                       records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Hand changelog records to the producer in record batches (``streams.recordbatches``:
        a third of the cost of ``send`` each), and remember how far the changelog holds the
        RocksDB once the last is acknowledged, as ``track`` does."""
        sender = BatchSender(raw_producer(self._app))
        for key, value in records:
            sender.add(self._changelog, partition, key, value)
        sent = await sender.flush()
        if sent:
            last = sent[-1]
            last.future.add_done_callback(partial(self._persisted_batch, last.records))

    def track(self, sent: "asyncio.Future[RecordMetadata]") -> None:
        """Once ``sent`` is acknowledged, remember how far the changelog holds the RocksDB, as
        Faust's table does, so that recovery after a restart only reads the changelog beyond
        it (a RocksDB write: once per batch is enough)."""
        sent.add_done_callback(self._persisted)

    async def put(self, partition: int, key: Any,
                  value: Any) -> "asyncio.Future[RecordMetadata]":
        """Write one entry (``None`` deletes it); returns its changelog record's future."""
        key_bytes, value_bytes = self.encode(key, value)
        db = self.db(partition)
        if value_bytes is None:
            db.delete(key_bytes)
        else:
            db.put(key_bytes, value_bytes)
        sent = await self.send(partition, key_bytes, value_bytes)
        self.track(sent)
        return sent

    def _persisted(self, sent: "asyncio.Future[RecordMetadata]") -> None:
        self._persisted_batch(1, sent)

    def _persisted_batch(self, records: int, sent: "asyncio.Future[Any]") -> None:
        """``sent``'s metadata is that of its batch's first record, ``records`` long."""
        if not sent.cancelled() and sent.exception() is None:
            metadata = sent.result()
            self._table.data.set_persisted_offset(metadata.topic_partition,
                                                  metadata.offset + records - 1)
