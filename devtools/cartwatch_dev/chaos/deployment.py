"""A private cartwatch deployment on a real broker: its topics, workers, producer and outputs.

Every scenario gets its own topic prefix and consumer group, so scenarios never see each
other's data and can run on a shared cluster.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata

from cartwatch_dev.chaos.workers import WorkerProcess, worker_environment
from cartwatch_dev.loadgen.ledger import ReminderRule
from config.kafka import KafkaSettings, client_options
from config.settings import TopicNames
from streams.compat import refresh_metadata

if TYPE_CHECKING:
    from cartwatch_dev.chaos.stack import MailSink
from cartwatch_dev.loadgen.model import Message

INPUTS = ("cart_events", "purchase_events")
OUTPUTS = ("abandoned", "reactivated", "recovered", "dead_letter")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Input topics accept messages up to this size (Kafka 2.3's default is 1000012 bytes), so a
producer can hand cartwatch a hostile 1 MB message and the worker must dead-letter it."""
REMINDERS = ReminderRule(steps=(0.5,), require_consent=False)
"""The workers' reminder policy, and what the email check expects of them: one reminder, 0.5 s
after the abandonment, to every customer with an address; the load's follow-ups come 1.5 s or
more after it (with a 3 s time to abandon), so which carts get one is known."""
STORED_TABLES = ("carts", "reminder_plans", "notifier_contacts", "notifier_deliveries")
"""The tables whose values carry a format version (``streams.stored``)."""
FAST_FAILOVER = {"CARTWATCH_SESSION_TIMEOUT": "6s"}
"""A killed worker's partitions move once its group session expires; 6 s is the broker's
smallest allowed session (group.min.session.timeout.ms)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Output:
    """One record read from an output topic, with the time the broker got it (CreateTime)."""

    topic: str
    """Logical name: ``abandoned``, ``reactivated``, ``recovered`` or ``dead_letter``."""
    value: dict[str, Any]
    timestamp: float


@dataclass
class OutputLog:
    """Every record of the output topics, read afresh from the beginning on each ``reread``.

    No long-lived consumer: one that lived through a broker restart is itself a thing under
    test (aiokafka's kept reporting the topics as unknown), and the verdict must not rest on it.
    """

    bootstrap: str
    topics: Mapping[str, str]
    """Kafka topic name -> logical name."""
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    records: list[Output] = field(default_factory=list)

    async def reread(self, timeout: float = 60.0) -> None:
        """Replace the records by a fresh read of every output up to its end offset."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES, **client_options(self.kafka),
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer, self.topics)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            records: list[Output] = []
            deadline = time.monotonic() + timeout
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"output topics not read to their end in {timeout} s")
                batch = await consumer.getmany(timeout_ms=200)
                for tp, batch_records in batch.items():
                    records.extend(
                        Output(self.topics[tp.topic], json.loads(r.value), r.timestamp / 1000)
                        for r in batch_records if r.offset < ends[tp]
                    )
            self.records = records
        finally:
            await consumer.stop()

    def of(self, topic: str) -> list[Output]:
        return [record for record in self.records if record.topic == topic]

    def ids(self, topic: str) -> set[str]:
        return {record.value["abandonment_id"] for record in self.of(topic)}

    def duplicates(self) -> int:
        """Output records beyond the first with the same (type, abandonment_id)."""
        counts = Counter(
            (record.topic, record.value["abandonment_id"])
            for record in self.records if record.topic != "dead_letter"
        )
        return sum(count - 1 for count in counts.values())

    def first_emitted(self) -> dict[str, Output]:
        """The first ``cart_abandoned`` record of each abandonment."""
        first: dict[str, Output] = {}
        for record in self.of("abandoned"):
            first.setdefault(record.value["abandonment_id"], record)
        return first


@dataclass
class Deployment:
    """Settings, topics and workers of one scenario; workers are real processes."""

    bootstrap: str
    workdir: Path
    prefix: str
    partitions: int = 4
    settings: dict[str, str] = field(default_factory=dict)
    """Extra ``CARTWATCH_*`` settings for every worker (e.g. ``CARTWATCH_ABANDON_AFTER``)."""
    mail: MailSink | None = None
    """With a mail server, the workers run the notifier and send reminders there."""
    workers: list[WorkerProcess] = field(default_factory=list)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """How this process and the workers connect to ``bootstrap`` (TLS, SASL)."""
    worker_bootstrap: str | None = None
    """Where the workers connect, if not ``bootstrap`` (a fault-injecting proxy): this
    process's producer and output reader stay direct, so only the workers suffer the fault."""

    @property
    def app_id(self) -> str:
        return f"cartwatch-{self.prefix}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{getattr(TopicNames(), name)}"

    async def create_topics(self, timeout: float = 30.0) -> None:
        """Create inputs and outputs up front: a worker must find its inputs when it subscribes,
        and an output log subscribing first must not auto-create outputs with one partition."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                    **client_options(self.kafka))
        await admin.start()
        try:
            big = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
            new = [NewTopic(self.topic(n), self.partitions, 1, topic_configs=big) for n in INPUTS]
            new += [NewTopic(self.topic(n), self.partitions, 1) for n in OUTPUTS]
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            errors = [(name, code) for name, code, *_ in response.topic_errors if code != 0]
            if errors:
                raise RuntimeError(f"creating topics failed (topic, Kafka error code): {errors}")
            names = [topic.name for topic in new]
            deadline = time.monotonic() + timeout
            while not topics_led(await admin.describe_topics(names), names, self.partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics {names} have no leaders after {timeout} s")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    def worker(self, name: str) -> WorkerProcess:
        """A new (not yet started) worker with its own data dir, web port and log."""
        env = worker_environment(
            bootstrap=self.worker_bootstrap or self.bootstrap, app_id=self.app_id,
            prefix=self.prefix, partitions=self.partitions, data_dir=self.workdir / name / "data",
            web_port=free_port(), kafka=self.kafka,
        )
        env.update(FAST_FAILOVER)
        if self.mail is not None:
            env.update(self._notifier_settings(self.mail))
        env.update(self.settings)
        worker = WorkerProcess(name=name, env=env, workdir=self.workdir / name)
        self.workers.append(worker)
        return worker

    def _notifier_settings(self, mail: MailSink) -> dict[str, str]:
        """The notifier on, sending ``REMINDERS`` to ``mail``."""
        config = self.workdir / "cartwatch.toml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        steps = ", ".join(f'{{after = "{after}s"}}' for after in REMINDERS.steps)
        assert REMINDERS.frequency_cap is not None  # TOML has no null to switch it off
        config.write_text(
            "[notifier]\nretry_initial = \"0.2s\"\nretry_max = \"1s\"\n"
            "[notifier.reminders]\n"
            f"require_marketing_consent = {str(REMINDERS.require_consent).lower()}\n"
            f"cancel_on_reactivation = {str(REMINDERS.cancel_on_reactivation).lower()}\n"
            f'frequency_cap = "{REMINDERS.frequency_cap}s"\n'
            f"steps = [{steps}]\n"
        )
        return {
            "CARTWATCH_CONFIG": str(config),
            "CARTWATCH_NOTIFIER_ENABLED": "true",
            "CARTWATCH_LINK_SECRET": secrets.token_hex(16),
            "CARTWATCH_SMTP_HOST": mail.host,
            "CARTWATCH_SMTP_PORT": str(mail.port),
        }

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    def output_log(self) -> OutputLog:
        return OutputLog(self.bootstrap, {self.topic(name): name for name in OUTPUTS},
                         self.kafka)

    async def notification_log(self) -> list[dict[str, Any]]:
        """Every record of the notifier's execution log (none if it never logged)."""
        topic = self.topic("notification_log")
        log = OutputLog(self.bootstrap, {topic: "notification_log"}, self.kafka)
        try:
            await log.reread()
        except RuntimeError:  # the topic does not exist: nothing was logged
            return []
        return [record.value for record in log.records]

    def producer(self) -> AIOKafkaProducer:
        """A producer that may send the large hostile messages the input topics accept."""
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
            max_request_size=MAX_MESSAGE_BYTES, request_timeout_ms=60_000,
            **client_options(self.kafka),
        )

    async def send(self, messages: Iterable[tuple[str, bytes | None, bytes | None]]) -> None:
        """Produce ``(logical topic, key, value)`` in order, as fast as possible, all acked."""
        producer = self.producer()
        await producer.start()
        try:
            futures = [await producer.send(self.topic(topic), value, key=key)
                       for topic, key, value in messages]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def send_live(self, messages: Sequence[Message], lag: list[float]) -> None:
        """Send each message when the wall clock reaches its ``sent_at``, as a shop would.

        Appends the producer's worst lag behind schedule to ``lag`` (it must stay far below
        the time to abandon, or the expectations computed from ``sent_at`` do not hold).
        """
        producer = self.producer()
        await producer.start()
        worst = 0.0
        try:
            pending: list[asyncio.Future[RecordMetadata]] = []
            for message in messages:
                ahead = message.sent_at - time.time()
                if ahead > 0:
                    if pending:  # flush what is due before sleeping
                        await asyncio.gather(*pending)
                        pending.clear()
                    await asyncio.sleep(message.sent_at - time.time())
                worst = max(worst, time.time() - message.sent_at)
                pending.append(await producer.send(
                    self.topic(message.topic), message.value, key=message.key))
            await asyncio.gather(*pending)
        finally:
            lag.append(worst)
            await producer.stop()


async def stored_versions(deployment: Deployment, table: str,
                          timeout: float = 30.0) -> Counter[int]:
    """How many values of each format version (``"v"``, 0 when absent) ``table``'s changelog
    holds, read from its start to its end (tombstones left out; no changelog: empty).

    A rolling upgrade's evidence that both releases really wrote the same table."""
    consumer = AIOKafkaConsumer(bootstrap_servers=deployment.bootstrap, enable_auto_commit=False,
                                **client_options(deployment.kafka))
    versions: Counter[int] = Counter()
    await consumer.start()
    try:
        topic = f"{deployment.app_id}-{table}-changelog"
        await refresh_metadata(consumer)
        if not consumer.partitions_for_topic(topic):
            return versions
        partitions = await _partitions(consumer, [topic])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog {topic} not read to its end in {timeout} s")
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                versions.update(json.loads(r.value).get("v", 0) for r in records
                                if r.offset < ends[tp] and r.value is not None)
        return versions
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (which must exist)."""
    await refresh_metadata(consumer)
    found: list[TopicPartition] = []
    for topic in topics:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise RuntimeError(f"topic {topic} does not exist")
        found.extend(TopicPartition(topic, number) for number in sorted(numbers))
    return found


def topics_led(described: list[dict[str, Any]], names: list[str], partitions: int) -> bool:
    """Do all ``names`` exist (per ``describe_topics``) with ``partitions`` partitions, each led?"""
    ready = {
        topic["topic"]
        for topic in described
        if topic["error_code"] == 0
        and len(topic["partitions"]) == partitions
        and all(p["error_code"] == 0 and p["leader"] >= 0 for p in topic["partitions"])
    }
    return ready == set(names)
