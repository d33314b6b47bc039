"""Input events a partition batch at a time, below Faust's stream.

Faust's per-message path (conductor, stream iterator, event, acknowledgement) costs more than
an agent that does nothing can afford: cartwatch's consumer (``streams.consumer``) hands each
partition's fetched cart and purchase events to ``PartitionBatches.handle`` at once instead. A
batch is processed under the pipeline's lock (the agent, which still reads the timer ticks and
the notifier's feedback, takes the same lock, so the two never touch a partition's state at the
same time), into the partition's ``Checkpoint``; the batch itself is the checkpoint's one
"event": it acknowledges the batch's offset range once the checkpoint's outputs are
acknowledged by the broker and its state written (``Checkpoint.commit``'s order).

A record that fails is dead-lettered (``processing_failed``) and the batch goes on; nothing
here imports Faust, so the order is unit-tested with fakes (``tests/unit/test_batch.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from streams.checkpoint import Acknowledgeable, Checkpoint

log = logging.getLogger(__name__)


class Partition(Protocol):
    """A topic partition (Faust's ``TP``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


Process = Callable[[Checkpoint, Any, Any], Awaitable[None]]
"""Process one record of a partition: ``(checkpoint, tp, record)``."""
Fail = Callable[[Checkpoint, Any, Any, Exception], Awaitable[None]]
"""Dead-letter a record whose processing raised: ``(checkpoint, tp, record, exception)``."""


class PartitionBatches:
    """The pipeline's handler of per-partition input batches (see the module doc)."""

    def __init__(
        self,
        topics: Collection[str],
        lock: asyncio.Lock,
        checkpoint_for: Callable[[int], Checkpoint],
        checkpoints: Callable[[], Iterable[Checkpoint]],
        process: Process,
        fail: Fail,
        finish: Callable[[Checkpoint], Awaitable[None]] | None = None,
        begin: Callable[[Checkpoint, Any], None] | None = None,
    ) -> None:
        self.topics: Collection[str] = frozenset(topics)
        self.lock = lock
        self.checkpoint_for = checkpoint_for
        self.checkpoints = checkpoints
        self.process = process
        self.fail = fail
        self.finish = finish
        """Called once after a batch's records (the pipeline fires what they made due)."""
        self.begin = begin
        """Called with ``(checkpoint, tp)`` before a batch's records, under the lock (the
        pipeline works out once what holds the partition's safe time back)."""

    async def handle(self, tp: Partition, records: Sequence[Any],
                     batch: Acknowledgeable) -> None:
        """Process ``records`` in order into the partition's checkpoint; ``batch`` is
        acknowledged when that checkpoint commits (outputs, then state, then acks)."""
        async with self.lock:
            checkpoint = self.checkpoint_for(tp.partition)
            if self.begin is not None:
                self.begin(checkpoint, tp)
            process = self.process
            for record in records:
                try:
                    await process(checkpoint, tp, record)
                except Exception as exc:  # a bug costs one event, never the batch
                    log.exception("processing %s[%d]@%d failed", tp.topic, tp.partition,
                                  record.offset)
                    await self.fail(checkpoint, tp, record, exc)
            if self.finish is not None:
                await self.finish(checkpoint)
            checkpoint.events.append(batch)
            if checkpoint.due():
                await checkpoint.commit()

    async def flush(self) -> None:
        """Commit every checkpoint with work in it, and forget the carts they keep (before a
        rebalance revokes partitions: one may come back after another worker changed it)."""
        async with self.lock:
            for checkpoint in list(self.checkpoints()):
                if checkpoint.events or checkpoint.changed or checkpoint.sends:
                    await checkpoint.commit()
                checkpoint.forget_committed()
