"""Changelog records in record batches: how far the changelog holds the RocksDB is the offset
of the last record handed on, once its batch is acknowledged."""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka.producer.message_accumulator import BatchBuilder

from streams.tablewrites import TableWriter


class FakeBatchProducer:
    """aiokafka's batch API; small batches, so that ten records take several."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, BatchBuilder, asyncio.Future[object]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(batch_size=300, compression_type=0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, future))
        return future


def make_writer() -> tuple[TableWriter, FakeBatchProducer, list[tuple[str, int]]]:
    producer = FakeBatchProducer()
    persisted: list[tuple[str, int]] = []
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    table = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: "carts-changelog"),
        data=SimpleNamespace(set_persisted_offset=lambda tp, offset: persisted.append(
            (tp, offset))),
    )
    return TableWriter(cast(Any, app), cast(Any, table)), producer, persisted


async def test_the_persisted_offset_is_the_last_records_once_its_batch_is_acknowledged() -> None:
    writer, producer, persisted = make_writer()
    records = [(f"cart-{n}".encode(), b"x" * 60 if n != 4 else None) for n in range(10)]

    await writer.send_all(3, records)

    assert len(producer.sent) > 1  # the records did not fit in one batch
    assert {(topic, partition) for topic, partition, _, _ in producer.sent} == {
        ("carts-changelog", 3)}
    base = 100
    for _, _, batch, future in producer.sent:
        assert persisted == []  # not before the last batch is acknowledged
        future.set_result(SimpleNamespace(topic_partition="carts-changelog/3", offset=base))
        base += batch._relative_offset  # the records aiokafka numbered in the batch
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert base == 110
    assert persisted == [("carts-changelog/3", 109)]


async def test_a_failed_batch_persists_nothing() -> None:
    writer, producer, persisted = make_writer()
    await writer.send_all(0, [(b"cart-1", b"{}")])
    producer.sent[-1][3].set_exception(ConnectionError("broker gone"))
    await asyncio.sleep(0)
    assert persisted == []
