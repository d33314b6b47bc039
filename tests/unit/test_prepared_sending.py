"""Prepared abandonments handed to the producer in bursts: a refused burst is not counted as
sent, so its carts are decided (and their abandonments sent) the ordinary way."""

import asyncio
from typing import Any, cast

from aiokafka.errors import KafkaTimeoutError

from streams import pipeline
from streams.recordbatches import SentBatch


class FakeBurst:
    def __init__(self, flushed: list[SentBatch] | None, messages: int) -> None:
        self.flushed, self.messages = flushed, messages

    async def flush(self) -> list[SentBatch]:
        if self.flushed is None:
            raise KafkaTimeoutError("no broker within the request timeout")
        return self.flushed


async def test_a_refused_burst_is_not_sent_and_not_counted() -> None:
    before = pipeline.counters["out:cart_abandoned"]
    assert await pipeline.send_burst(cast(Any, FakeBurst(None, 3)), {7: [1.0, 2.0, 3.0]}) is False
    assert pipeline.counters["out:cart_abandoned"] == before


async def test_a_taken_burst_makes_its_partitions_checkpoints_wait_for_it() -> None:
    before = pipeline.counters["out:cart_abandoned"]
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    assert await pipeline.send_burst(cast(Any, FakeBurst([SentBatch(7, future, 2)], 2)),
                                    {7: [1.0, 2.0]}) is True
    assert future in pipeline.checkpoint_for(7).sends
    assert pipeline.counters["out:cart_abandoned"] == before + 2
    pipeline.checkpoints.pop(7)
