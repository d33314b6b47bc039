"""The batch path (``streams.batch``, ``streams.consumer``) with fakes: a partition's records go
into its checkpoint in order, the batch is acknowledged only after the checkpoint's outputs are
acknowledged by the broker and its state is written, a record that fails is dead-lettered
without stopping the batch, and a failing handler never stops the fetcher."""

import asyncio
from typing import Any

import faust
from faust.types import TP

from schemas.outputs import DeadLetter
from streams.batch import PartitionBatches
from streams.checkpoint import Checkpoint
from streams.consumer import InputBatch, deliver

from .test_checkpoint import FakeEvent, Journal, abandon, make_checkpoint

CARTS = TP("cart-events", 2)


class Record:
    """A fetched record (aiokafka's ``ConsumerRecord``)."""

    def __init__(self, offset: int, cart_id: str, fail: bool = False) -> None:
        self.topic, self.partition, self.offset = CARTS.topic, CARTS.partition, offset
        self.key, self.value = cart_id.encode(), b"{}"
        self.cart_id, self.fail = cart_id, fail


def make_batches(checkpoint: Checkpoint, journal: Journal,
                 lock: asyncio.Lock | None = None) -> PartitionBatches:
    async def process(checkpoint: Checkpoint, tp: TP, record: Any) -> None:
        journal.append(f"process {record.offset}")
        if record.fail:
            raise ValueError("a bug")
        await abandon(checkpoint, record.cart_id)

    async def fail(checkpoint: Checkpoint, tp: TP, record: Any, exc: Exception) -> None:
        journal.append(f"dead-letter {record.offset}")
        await checkpoint.send(record.key, DeadLetter(
            source_topic=tp.topic, partition=tp.partition, offset=record.offset,
            key_base64=None, value_base64=None, value_truncated=False, error=str(exc),
            error_kind="processing_failed", failed_at="2026-11-25T10:00:00Z"))

    return PartitionBatches(
        topics={CARTS.topic}, lock=lock or asyncio.Lock(),
        checkpoint_for=lambda partition: checkpoint, checkpoints=lambda: [checkpoint],
        process=process, fail=fail,
    )


async def test_a_batch_is_acknowledged_after_its_outputs_and_then_its_state() -> None:
    checkpoint, journal, producer, store = make_checkpoint()
    batches = make_batches(checkpoint, journal)
    await batches.handle(CARTS, [Record(10, "c-1"), Record(11, "c-2")],
                         FakeEvent(journal, "batch 10..11"))
    assert journal == ["process 10", "send abandoned c-1 p2", "process 11",
                       "send abandoned c-2 p2"]  # nothing written, nothing acknowledged yet
    flush = asyncio.create_task(batches.flush())
    await asyncio.sleep(0)
    assert not any(line.startswith(("write", "ack ")) for line in journal)
    for sent in producer.pending:
        sent.set_result(None)
    await flush
    assert journal[4:] == ["acked c-1", "acked c-2", "write ['c-1', 'c-2']",
                           "ack batch 10..11"]
    assert store.data[(2, "c-1")].status == "abandoned"


async def test_a_failed_output_leaves_the_batch_unacknowledged() -> None:
    checkpoint, journal, producer, store = make_checkpoint()
    batches = make_batches(checkpoint, journal)
    await batches.handle(CARTS, [Record(10, "c-1")], FakeEvent(journal, "batch 10"))
    producer.pending[0].set_exception(ConnectionError("broker gone"))
    try:
        await batches.flush()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the flush hid a failed output")
    assert not any(line.startswith(("write", "ack ")) for line in journal)
    assert store.data == {}


async def test_a_failing_record_is_dead_lettered_and_the_batch_goes_on() -> None:
    checkpoint, journal, producer, _ = make_checkpoint()
    batches = make_batches(checkpoint, journal)
    await batches.handle(CARTS, [Record(10, "c-1"), Record(11, "c-x", fail=True),
                                 Record(12, "c-2")], FakeEvent(journal, "batch 10..12"))
    assert journal[:6] == ["process 10", "send abandoned c-1 p2", "process 11",
                           "dead-letter 11", "send dead-letter c-x p2", "process 12"]
    for sent in producer.pending:
        sent.set_result(None)
    await batches.flush()
    assert journal[-1] == "ack batch 10..12"
    assert checkpoint.context.counters["out:dead_letter"] == 1


async def test_the_agent_and_a_batch_never_touch_a_partition_at_once() -> None:
    checkpoint, journal, _, _ = make_checkpoint()
    lock = asyncio.Lock()
    batches = make_batches(checkpoint, journal, lock)
    async with lock:  # the agent is processing a tick of the partition
        handled = asyncio.create_task(batches.handle(CARTS, [Record(10, "c-1")],
                                                     FakeEvent(journal, "batch 10")))
        await asyncio.sleep(0.01)
        assert journal == []
        journal.append("tick done")
    await handled
    assert journal[:2] == ["tick done", "process 10"]


async def test_begin_runs_once_before_a_batchs_records_under_the_lock() -> None:
    """The pipeline works out a batch's safe-time bound in ``begin``: it must see the
    partition before any record of the batch and never while the agent holds the lock."""
    checkpoint, journal, _, _ = make_checkpoint()
    lock = asyncio.Lock()
    batches = make_batches(checkpoint, journal, lock)
    batches.begin = lambda begun, tp: journal.append(
        f"begin {tp.topic}[{tp.partition}] locked={lock.locked()} same={begun is checkpoint}")
    await batches.handle(CARTS, [Record(10, "c-1"), Record(11, "c-2")],
                         FakeEvent(journal, "batch 10..11"))
    await batches.handle(CARTS, [Record(12, "c-3")], FakeEvent(journal, "batch 12"))

    assert [line for line in journal if line.startswith(("begin", "process"))] == [
        "begin cart-events[2] locked=True same=True", "process 10", "process 11",
        "begin cart-events[2] locked=True same=True", "process 12"]


async def test_a_failing_handler_never_stops_the_fetcher() -> None:
    class Broken:
        topics = {CARTS.topic}

        async def handle(self, tp: TP, records: Any, batch: Any) -> None:
            raise RuntimeError("a bug around the records")

        async def flush(self) -> None:
            pass

    journal = Journal()
    batch = FakeEvent(journal, "batch")
    assert await deliver(Broken(), CARTS, [Record(10, "c-1")], batch) is False  # type: ignore[arg-type]
    assert journal == []  # not acknowledged: read again after a restart or rebalance


async def test_a_batch_acknowledges_its_offset_range_as_faust_would_each_message() -> None:
    app = faust.App("batch-ack", broker="kafka://127.0.0.1:1", store="memory://")
    consumer: Any = app.consumer  # built, never started
    consumer._committed_offset[CARTS] = 7  # committed up to 7: acknowledgements below ignored
    batch = InputBatch(consumer, CARTS, 5, 9)
    consumer._unacked_messages.add(batch)
    assert batch.ack() and not batch.ack()  # once
    assert consumer._acked_index[CARTS] == {7, 8, 9}
    assert consumer._n_acked == 3
    assert batch not in consumer._unacked_messages  # a rebalance no longer waits for it
    assert consumer._new_offset(CARTS) == 10  # what Faust commits next



async def test_a_flush_before_a_rebalance_forgets_the_carts_kept_from_commits() -> None:
    checkpoint, journal, producer, store = make_checkpoint()
    batches = make_batches(checkpoint, journal)
    await batches.handle(CARTS, [Record(10, "c-1")], FakeEvent(journal, "batch 10"))
    producer.pending[0].set_result(None)
    await batches.flush()
    assert "write ['c-1']" in journal

    assert checkpoint.states == {}  # read again from the store once the partition is back
