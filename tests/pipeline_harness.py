"""Run real cartwatch workers against the test broker, feed them events, read their outputs.

Workers are separate `cartwatch worker` processes, as in production, so a test can restart,
kill -9 or double them. Every test gets its own topics and consumer group (`unique_names`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from cartwatch_dev.chaos.workers import (  # READY_LINE: for the tests
    READY_LINE,  # noqa: F401
    WorkerProcess,
    worker_environment,
)
from kafka_helpers import create_topics, free_ports

from config.kafka import KafkaSettings, client_options

PARTITIONS = 4
INPUT_TOPICS = ("cart-events", "purchase-events")
OUTPUT_TOPICS = ("cart-abandoned", "cart-reactivated", "cart-recovered", "cartwatch-dead-letter")


@dataclass
class Worker(WorkerProcess):
    """One `cartwatch worker` process (``cartwatch_dev.chaos.workers``), with a blocking wait."""

    def wait_ready(self, timeout: float = 60.0, after: int = 0) -> None:  # type: ignore[override]
        """Wait until the worker owns partitions with recovered state (its ``after``+1-th time)."""
        self.wait_ready_blocking(after, timeout)


@dataclass(frozen=True)
class Located:
    """One output record with where it was read: topic (logical name), partition, offset."""

    topic: str
    partition: int
    offset: int
    record: dict[str, Any]


class Outputs(dict[str, list[dict[str, Any]]]):
    """Records read per logical topic; ``located`` keeps each with its partition and offset."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.located: list[Located] = []

    def misplaced(self, input_partitions: Mapping[str, int]) -> list[str]:
        """Outputs not on their cart's input partition number, or out of order for their cart.

        cartwatch promises both: every output of a cart is written to the partition number of
        the cart's input partition, and a cart's abandonments appear in the order of their
        sequence numbers (``<cart>:1`` before ``<cart>:2``) on each output topic.
        """
        problems = []
        last_sequence: dict[tuple[str, str], int] = {}
        for item in sorted(self.located, key=lambda o: (o.topic, o.partition, o.offset)):
            cart, abandonment = item.record.get("cart_id"), item.record.get("abandonment_id")
            if cart not in input_partitions or abandonment is None:
                continue
            if item.partition != input_partitions[cart]:
                problems.append(f"{item.topic} {abandonment} on partition "
                                f"{item.partition}, input on {input_partitions[cart]}")
            sequence = int(abandonment.rsplit(":", 1)[1])
            if sequence < last_sequence.get((item.topic, cart), 0):
                problems.append(f"{item.topic} {abandonment} after :"
                                f"{last_sequence[(item.topic, cart)]}")
            last_sequence[(item.topic, cart)] = sequence
        return problems


@dataclass
class Pipeline:
    """A test's cartwatch deployment: settings, topics, workers, and its producer/consumer."""

    bootstrap: str
    prefix: str
    app_id: str
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    partitions: int = PARTITIONS
    input_partitions: dict[str, int] = field(default_factory=dict)
    """The partition of the latest message sent with each key (a cart id)."""
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """How the test's clients and its workers connect (TLS, SASL); plaintext by default."""

    def client_options(self) -> dict[str, Any]:
        """Connection keyword arguments of an aiokafka client of this test's cluster."""
        return {"bootstrap_servers": self.bootstrap, **client_options(self.kafka)}

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    async def create_topics(self) -> None:
        await create_topics(
            self.bootstrap, [self.topic(name) for name in INPUT_TOPICS], self.partitions,
            kafka=self.kafka,
        )

    def changelog(self, table: str) -> str:
        """The changelog topic Faust gives a table of this deployment."""
        return f"{self.app_id}-{table}-changelog"

    async def write_changelogs(
        self, records: Mapping[str, Iterable[tuple[bytes, bytes | None, int]]]
    ) -> dict[str, list[int]]:
        """Create the named tables' changelog topics (compacted) and write ``(key, value,
        partition)`` records into them, before a worker restores them. Returns the offsets
        written, per table, in order."""
        topics = {table: self.changelog(table) for table in records}
        await create_topics(self.bootstrap, topics.values(), self.partitions,
                            config={"cleanup.policy": "compact"}, kafka=self.kafka)
        producer = AIOKafkaProducer(acks="all", **self.client_options())
        await producer.start()
        offsets: dict[str, list[int]] = {table: [] for table in records}
        try:
            for table, table_records in records.items():
                for key, value, partition in table_records:
                    sent = await (await producer.send(topics[table], value, key=key,
                                                      partition=partition))
                    offsets[table].append(sent.offset)
        finally:
            await producer.stop()
        return offsets

    def worker(self, name: str, **overrides: str) -> Worker:
        """A new (not yet started) worker with its own data dir and web port."""
        env = worker_environment(
            bootstrap=self.bootstrap, app_id=self.app_id, prefix=self.prefix,
            partitions=self.partitions, data_dir=self.workdir / name / "data",
            web_port=free_ports(1)[0], kafka=self.kafka,
        )
        env.update(self.settings)
        env.update(overrides)
        worker = Worker(name=name, env=env, workdir=self.workdir / name)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)

    async def send(self, messages: Iterable[tuple[str, bytes | None, bytes]]) -> None:
        """Produce ``(topic, key, value)`` messages in order and wait until all are stored.

        Remembers the partition each key went to (``input_partitions``), so a test can check
        that a cart's outputs are on its input partition's number.
        """
        producer = AIOKafkaProducer(acks="all", **self.client_options())
        await producer.start()
        try:
            futures = [
                (key, await producer.send(self.topic(topic), value, key=key))
                for topic, key, value in messages
            ]
            for key, future in futures:
                metadata = await future
                if key is not None:
                    self.input_partitions[key.decode()] = metadata.partition
        finally:
            await producer.stop()

    async def wait_committed(
        self, timeout: float = 30.0, topics: Iterable[str] = INPUT_TOPICS
    ) -> None:
        """Wait until the workers committed every message of ``topics`` (the inputs by default).

        Every partition of every topic counts: a partition with messages but no commit at all is
        behind, the way a never-committed partition is re-read from its start by the next owner.
        """
        admin = AIOKafkaAdminClient(**self.client_options())
        consumer = AIOKafkaConsumer(**self.client_options())
        await admin.start()
        await consumer.start()
        try:
            partitions = await topic_partitions(admin, [self.topic(t) for t in topics])
            deadline = time.monotonic() + timeout
            while True:
                committed = await admin.list_consumer_group_offsets(self.app_id)
                ends = await consumer.end_offsets(partitions)
                behind = uncommitted(committed, ends)
                if not behind:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"inputs not committed in {timeout} s: {behind}")
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()
            await admin.close()

    async def collect(
        self,
        done: Callable[[dict[str, list[dict[str, Any]]]], bool],
        timeout: float = 60.0,
        settle: float = 0.0,
        topics: Iterable[str] = OUTPUT_TOPICS,
    ) -> Outputs:
        """Read ``topics`` (the outputs by default) from the start until ``done(outputs)`` or
        the deadline.

        ``settle`` keeps reading that long after ``done`` held, to catch unexpected extras.
        """
        topics = tuple(topics)
        consumer = AIOKafkaConsumer(
            *(self.topic(name) for name in topics),
            **self.client_options(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        outputs = Outputs({name: [] for name in topics})
        names = {self.topic(name): name for name in topics}
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            settle_until: float | None = None
            while time.monotonic() < (settle_until or deadline):
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        value = json.loads(record.value)
                        outputs[names[tp.topic]].append(value)
                        outputs.located.append(
                            Located(names[tp.topic], tp.partition, record.offset, value)
                        )
                if settle_until is None and done(outputs):
                    settle_until = time.monotonic() + settle
            return outputs
        finally:
            await consumer.stop()


async def topic_partitions(admin: AIOKafkaAdminClient, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (which must exist), as the broker describes them."""
    described = await admin.describe_topics(topics)
    missing = [topic["topic"] for topic in described if topic["error_code"]]
    assert not missing, f"no such topics: {missing}"
    return [TopicPartition(topic["topic"], partition["partition"])
            for topic in described for partition in topic["partitions"]]


def uncommitted(
    committed: Mapping[TopicPartition, Any], ends: Mapping[TopicPartition, int]
) -> dict[TopicPartition, tuple[int | None, int]]:
    """Partitions whose committed offset is short of their end: ``{tp: (committed, end)}``.

    A partition missing from ``committed`` has no commit, so it is behind unless it is empty.
    """
    behind: dict[TopicPartition, tuple[int | None, int]] = {}
    for tp, end in ends.items():
        position = committed[tp].offset if tp in committed else None
        if end > 0 and (position is None or position < end):
            behind[tp] = (position, end)
    return behind


def partition_for(key: str, partitions: int = PARTITIONS) -> int:
    """The partition the producer's default partitioner (Kafka's murmur2) gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``{'name{labels}': value}``."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def at(base: datetime, seconds: float) -> str:
    return (base + timedelta(seconds=seconds)).isoformat()


@dataclass
class Shop:
    """Builds contract events for one store, with unique event ids and times from ``base``."""

    store_id: str
    base: datetime = field(default_factory=lambda: datetime.now(UTC))
    counter: int = 0

    def _event(self, cart_id: str, event_type: str, offset: float, **fields: Any) -> dict:
        self.counter += 1
        return {
            "event_id": f"{self.store_id}-{self.counter}",
            "type": event_type,
            "cart_id": cart_id,
            "store_id": self.store_id,
            "occurred_at": at(self.base, offset),
            **fields,
        }

    def add(self, cart_id: str, sku: str, offset: float = 0, quantity: int = 1,
            price: str = "10.00", **fields: Any) -> tuple[str, bytes, bytes]:
        item = {"sku": sku, "name": f"Product {sku}", "quantity": quantity,
                "unit_price": price, "currency": "EUR"}
        return cart_message(self._event(cart_id, "item_added", offset, item=item, **fields))

    def cart_event(self, cart_id: str, event_type: str, offset: float = 0,
                   **fields: Any) -> tuple[str, bytes, bytes]:
        return cart_message(self._event(cart_id, event_type, offset, **fields))

    def purchase(self, cart_id: str, offset: float = 0, total: str = "10.00",
                 order_id: str | None = None) -> tuple[str, bytes, bytes]:
        event = self._event(cart_id, "order_completed", offset)
        event.update(order_id=order_id or f"order-{cart_id}", total=total, currency="EUR")
        return "purchase-events", cart_id.encode(), json.dumps(event).encode()


def cart_message(event: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
    return "cart-events", str(event["cart_id"]).encode(), json.dumps(event).encode()


def ids(records: Iterable[Mapping[str, Any]], field_name: str = "abandonment_id") -> set[str]:
    return {record[field_name] for record in records}
