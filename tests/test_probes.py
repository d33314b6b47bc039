"""Lag and readiness as an operator sees them: a backlog shows as lag, and /readyz says 503 with
the reason whenever a worker cannot serve (no partition, broker gone, read model loading)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cartwatch_dev.chaos import PrivateStack
from pipeline_harness import Pipeline, Shop, Worker, parse_metrics

pytestmark = pytest.mark.integration

BACKLOG = 20_000


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
    return result


async def readyz(http: aiohttp.ClientSession, worker: Worker) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{worker.web_url}/readyz") as response:
        return response.status, await response.json()


async def consumer_lag(http: aiohttp.ClientSession, worker: Worker) -> dict[str, float]:
    async with http.get(f"{worker.web_url}/metrics") as response:
        samples = parse_metrics(await response.text())
    return {name: value for name, value in samples.items()
            if name.startswith("cartwatch_consumer_lag{")}


async def answering(http: aiohttp.ClientSession, worker: Worker) -> tuple[int, dict] | None:
    try:
        return await readyz(http, worker)
    except aiohttp.ClientConnectionError:
        assert worker.alive, worker.log()[-3000:]
        return None


async def test_a_backlog_shows_as_lag_and_loading_as_not_ready(pipeline: Pipeline) -> None:
    """A worker started on a backlog: /readyz is 503 naming the read model while it loads, the
    consumer lag counts the unprocessed messages, and both clear once it has caught up."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="1h")
    shop = Shop("s")
    await pipeline.send([shop.add(f"cart-{n}", "MUG") for n in range(BACKLOG)])
    worker = pipeline.worker("w1").start()
    async with aiohttp.ClientSession() as http:
        status, body = await poll(lambda: answering(http, worker), 90, "web server up")
        assert status == 503 and not body["ready"]
        assert not all(body["checks"].values())
        seen_lag = await poll(
            lambda: _positive(consumer_lag(http, worker)), 90, "a non-zero consumer lag")
        assert 0 < sum(seen_lag.values()) <= BACKLOG
        await poll(lambda: _caught_up(consumer_lag(http, worker)), 120, "lag back to 0")
        status, body = await poll(lambda: _ready(readyz(http, worker)), 120, "/readyz 200")
        assert body["checks"] == dict.fromkeys(body["checks"], True)
        # the backlog's 20,000 carts sit in the carts table's memtables, counted in the gauge
        async with http.get(f"{worker.web_url}/metrics") as response:
            samples = parse_metrics(await response.text())
        memtables = samples['cartwatch_rocksdb_memory_bytes{kind="memtables",table="carts"}']
        assert memtables > BACKLOG * 100
        # the line a person running `make run` waits for, once ready
        ready_line = f"cartwatch is ready: dashboard {worker.web_url}/cartwatch/dashboard/"
        await poll(lambda: asyncio.to_thread(lambda: ready_line in worker.log()), 10,
                   "the worker's ready line")
        assert worker.log().count("cartwatch is ready") == 1


async def _positive(lag: Awaitable[dict[str, float]]) -> dict[str, float] | None:
    values = await lag
    return values if sum(values.values()) > 0 else None


async def _caught_up(lag: Awaitable[dict[str, float]]) -> bool:
    values = await lag
    return len(values) == 2 * 4 and set(values.values()) == {0.0}


async def _ready(probe: Awaitable[tuple[int, dict]]) -> tuple[int, dict] | None:
    status, body = await probe
    return (status, body) if status == 200 else None


async def test_a_worker_without_partitions_is_not_ready(
    kafka_bootstrap: str, unique_names, tmp_path: Path
) -> None:
    """More workers than partitions: the idle one answers 503, ``partitions_assigned`` false."""
    pipeline = Pipeline(bootstrap=kafka_bootstrap, prefix=unique_names.prefix,
                        app_id=unique_names.app_id, workdir=tmp_path, partitions=1)
    await pipeline.create_topics()
    try:
        first = pipeline.worker("first").start()
        first.wait_ready()
        second = pipeline.worker("second").start()
        await poll(lambda: asyncio.to_thread(lambda: second.ready_count() > 0), 90,
                   "second worker's rebalance")
        first.wait_ready(after=1)
        idle, busy = (second, first) if not second.owned_partitions() else (first, second)
        assert busy.owned_partitions() == {0} and idle.owned_partitions() == set()
        async with aiohttp.ClientSession() as http:
            status, body = await readyz(http, idle)
            assert status == 503 and body["checks"]["partitions_assigned"] is False
            assert (await readyz(http, busy))[0] == 200
    finally:
        pipeline.stop_all()


async def test_a_worker_whose_broker_is_gone_is_not_ready(tmp_path: Path, unique_names) -> None:
    """The broker stopped (on a private stack): /readyz turns 503 naming the broker, /livez
    stays 200 (a broker outage must not make the orchestrator restart workers)."""
    stack = await asyncio.to_thread(PrivateStack(tmp_path / "stack", kafka=True).up)
    try:
        pipeline = Pipeline(bootstrap=stack.bootstrap, prefix=unique_names.prefix,
                            app_id=unique_names.app_id, workdir=tmp_path)
        await pipeline.create_topics()
        worker = pipeline.worker("w1").start()
        worker.wait_ready()
        await asyncio.to_thread(stack.stop_service, "kafka")
        async with aiohttp.ClientSession() as http:
            async def broker_unreachable() -> dict | None:
                status, body = await readyz(http, worker)
                return body if status == 503 else None
            body = await poll(broker_unreachable, 60, "/readyz 503 after the broker stopped")
            assert body["checks"]["broker_reachable"] is False
            async with http.get(f"{worker.web_url}/livez") as response:
                assert response.status == 200
        pipeline.stop_all()
    finally:
        stack.down()
