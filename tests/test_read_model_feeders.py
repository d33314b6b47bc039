"""A PostgreSQL read model fed by a consumer group of workers, through a kill -9 and an outage.

Two workers feed one database. The test holds a lock on the ``lines`` table so that both
feeders are provably in the middle of a batch (their transactions open, rows half written),
kills one with SIGKILL, then stops the database while the other still has its batch and a
backlog (which rolls the killed feeder's transaction back, as the server does once it notices
a client gone), and starts it again. In the end every abandonment is in the database once, with its
lines, and the stored offsets are the topic's end offsets: nothing lost, nothing doubled.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cartwatch_dev.stack import postgres
from kafka_helpers import create_topics
from pipeline_harness import Pipeline
from test_operator import poll

from streams.operator.query import COUNT_LIMIT
from tests.unit.test_operator_readmodel import abandoned

pytestmark = [pytest.mark.integration]

RECORDS = 4000
LINES = (("MUG-1", "Blue mug", 1, "12.50"), ("TEA-2", "Green tea", 3, "4.99"))


@pytest.fixture
def database_server(postgres_server: postgres.PostgresServer,
                    tmp_path: Any) -> Iterator[postgres.PostgresServer]:
    """A server of this test's own, since the test stops it (``postgres_server`` only brings
    the session's rule: skipped where PostgreSQL is not installed, except in CI)."""
    server = postgres.start(tmp_path / "own-postgres")
    try:
        yield server
    finally:
        postgres.stop(server)


def connect(server: postgres.PostgresServer, url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, password=server.app_password, autocommit=True)


def scalar(db: psycopg.Connection[Any], statement: str) -> Any:
    row = db.execute(statement).fetchone()
    assert row is not None
    return row[0]


async def produce_abandonments(pipeline: Pipeline, topic: str) -> dict[int, int]:
    """RECORDS abandonments on ``topic``, as the pipeline publishes them; end offsets."""
    await create_topics(pipeline.bootstrap, [topic], pipeline.partitions)
    producer = AIOKafkaProducer(acks="all", linger_ms=20, **pipeline.client_options())
    await producer.start()
    try:
        futures = [await producer.send(
            topic, abandoned(f"cart-{n}", lines=LINES).model_dump_json().encode(),
            key=f"cart-{n}".encode()) for n in range(RECORDS)]
        for future in futures:
            await future
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**pipeline.client_options())
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in range(pipeline.partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


async def test_feeders_killed_mid_batch_and_a_database_outage_lose_and_double_nothing(
    pipeline: Pipeline, database_server: postgres.PostgresServer
) -> None:
    server = database_server
    url = postgres.create_database(server, "readmodel")
    topic = pipeline.topic("cart-abandoned")
    ends = await produce_abandonments(pipeline, topic)
    assert sum(ends.values()) == RECORDS
    pipeline.settings.update(CARTWATCH_READ_MODEL=url,
                             CARTWATCH_READ_MODEL_PASSWORD=server.app_password)

    from streams.operator.pgstore import PostgresReadModel  # the schema, before the lock

    PostgresReadModel(url, server.app_password).close()
    holder = connect(server, url)
    watcher = connect(server, url)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE lines IN EXCLUSIVE MODE")

    def feeders_waiting() -> int:
        return int(scalar(watcher, "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                          " = 'cartwatch-read-model' AND wait_event_type = 'Lock'"))

    first = pipeline.worker("first").start()
    second = pipeline.worker("second").start()

    async def both_mid_batch() -> Any:
        return feeders_waiting() == 2 or feeders_waiting()

    await poll(both_mid_batch, 120, "both feeders inside a batch")
    assert scalar(watcher, "SELECT count(*) FROM abandonments") == 0  # nothing committed yet

    first.stop(signal.SIGKILL)
    watcher.close()
    # The outage ends every session: the lock holder's, the survivor's (its batch is rolled
    # back, it keeps the batch and retries), and the killed feeder's, which the server would
    # otherwise end once it noticed the client gone: its half-written batch is rolled back.
    postgres.stop(server)
    holder.close()

    async with aiohttp.ClientSession() as http:
        async def refused_with_the_reason() -> Any:
            async with http.get(second.web_url + "/readyz") as ready:
                checks = (await ready.json())["checks"]
            async with http.get(second.web_url + "/cartwatch/api/carts/") as carts:
                answer = await carts.json()
            return (ready.status == 503 and checks["read_model_reachable"] is False
                    and carts.status == 503 and "unavailable" in answer["error"]) or (
                ready.status, checks, carts.status, answer)

        await poll(refused_with_the_reason, 30, "/readyz and the API refusing with the reason")
        postgres.start_again(server)

        with connect(server, url) as db:
            async def fed_to_the_end() -> Any:
                stored = dict(db.execute(
                    "SELECT partition, next_offset FROM offsets WHERE topic = %s",
                    (topic,)).fetchall())
                return stored == ends or stored

            await poll(fed_to_the_end, 120, "the offsets at the topic's end")
            assert scalar(db, "SELECT count(*) FROM abandonments") == RECORDS
            assert scalar(db, "SELECT count(DISTINCT cart_id) FROM abandonments") == RECORDS
            assert scalar(db, "SELECT count(*) FROM lines") == RECORDS * len(LINES)
            assert scalar(db, "SELECT sum(quantity) FROM lines") == RECORDS * 4

        async def ready_again() -> Any:
            async with http.get(second.web_url + "/readyz") as ready:
                return ready.status == 200 or await ready.json()

        await poll(ready_again, 30, "/readyz ready again")
        async with http.get(second.web_url + "/cartwatch/api/carts/",
                            params={"limit": "1"}) as carts:
            page = await carts.json()
            # more than the API counts: it says "at least COUNT_LIMIT"
            assert carts.status == 200 and (page["total"], page["total_exact"]) == (
                COUNT_LIMIT, False)
    assert "reachable again" in second.log()
