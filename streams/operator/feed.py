"""Feeds the read model from Kafka: the output topics (and the inputs, to count carts).

How depends on where the read model lives:

- **SQLite or memory** (``ReadModelFeed`` alone): each worker keeps its own copy, so it reads
  *every* partition with a plain aiokafka consumer without a consumer group, and can answer
  any query alone.
- **PostgreSQL** (one database for all workers): the workers that feed
  (``operator.read_model_feeder``, default on) form one consumer group, so the partitions are
  spread over them and each message is read once across the cluster. Workers that do not feed
  only query the database.

Either way the offsets live in the database, written in the same transaction as the rows
they produced, and never in Kafka: a worker or feeder that starts, or is given a partition
in a rebalance, resumes exactly where the database says. Every write is an idempotent upsert
and offsets only move forward, so a batch written twice (a feeder killed between its write
and its next fetch, or one still writing a partition it just lost) changes nothing: the
database is exactly-once across crashes and rebalances. Topics that do not exist yet (the
notification log before the notifier first runs) are picked up when they appear.
"""

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any, Concatenate, ParamSpec, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError
from mode import Service

from config.bootstrap import parse_bootstrap
from config.kafka import client_options
from config.settings import Settings
from schemas.events import CartEvent
from schemas.notifications import LinkClick, NotificationLogEntry, OperatorNotification
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.compat import cluster_metadata
from streams.operator.backends import ReadModelStore, ReadModelUnavailable
from streams.operator.retention import PURGE_INTERVAL, Retention

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

DISCOVERY_INTERVAL = 5.0
"""Seconds between looks for new topics and partitions."""
BATCH_RECORDS = 2000
RETRY_PAUSES = (0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to store a batch while the database is unavailable (the last
pause repeats): the feed waits for the database and resumes with the same batch."""
HANDOVER_WAIT = 10.0
"""Seconds a revocation waits for the batch being written, so the partition's next owner
starts from offsets that include it (longer, and the next owner reads some of it again)."""


def feeder_group(settings: Settings) -> str:
    """The consumer group of the workers feeding a PostgreSQL read model."""
    return f"{settings.app_id}-read-model-feeders"


def _contract(model: Any) -> Callable[[bytes | None], object | None]:
    def decode(value: bytes | None) -> object | None:
        try:
            return model.model_validate_json(value or b"")
        except ValueError:
            return None

    return decode


DECODERS: dict[str, Callable[[bytes | None], object | None]] = {
    "abandoned": _contract(CartAbandoned),
    "reactivated": _contract(CartReactivated),
    "recovered": _contract(CartRecovered),
    "cart_events": _contract(CartEvent),
    "notification_log": _contract(NotificationLogEntry),
    "operator_notifications": _contract(OperatorNotification),
    "clicks": _contract(LinkClick),
}


def feed_topics(settings: Settings) -> dict[str, str]:
    """Full topic name -> decoder name, for the topics the read model is built from."""
    names = ("abandoned", "reactivated", "recovered", "notification_log",
             "operator_notifications", "clicks")
    topics = {settings.topic(name): name for name in names}
    if settings.operator.track_created_carts:
        topics[settings.topic("cart_events")] = "cart_events"
    return topics


class SharedReadModel:
    """The read model behind a lock, used from worker threads so neither SQLite nor a
    PostgreSQL round trip ever blocks the loop."""

    def __init__(self, model: ReadModelStore) -> None:
        self.model = model
        self._lock = threading.Lock()

    async def run(self, function: Callable[Concatenate[ReadModelStore, P], T],
                  *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(model, *args)`` in a thread, one call at a time."""
        def locked() -> T:
            with self._lock:
                return function(self.model, *args, **kwargs)

        return await asyncio.to_thread(locked)


@dataclass
class FeedStatus:
    """How far the feed is, for the metrics and the readiness probe."""

    loaded: bool
    lag: dict[tuple[str, int], int]
    undecodable: int


class ReadModelFeed(Service):
    """Consumes the feed topics into the shared read model for as long as the worker runs."""

    def __init__(
        self, settings: Settings, shared: SharedReadModel | None, **kwargs: Any
    ) -> None:
        """Without ``shared`` (``read_model = "off"``) nothing is read; the consumer still
        answers ``broker_reachable`` for the readiness probe."""
        super().__init__(**kwargs)
        self.settings = settings
        self.shared = shared
        self.topics = feed_topics(settings) if shared is not None else {}
        operator = settings.operator
        self.in_group = shared is not None and operator.postgresql
        """The read model is shared by the cluster: fed by a consumer group of feeders."""
        self.feeds = shared is not None and (not operator.postgresql or operator.read_model_feeder)
        self.consumer: AIOKafkaConsumer | None = None
        self.positions: dict[tuple[str, int], int] = {}
        self.undecodable = 0
        self.fed = 0
        """Records this worker stored in the read model."""
        self._targets: dict[tuple[str, int], int] | None = None
        self._writing = asyncio.Lock()
        self.loaded = asyncio.Event()

    async def on_start(self) -> None:
        if self.shared is None:
            self.loaded.set()
        elif not self.in_group:
            self.positions = dict((await self.shared.run(lambda model: model.offsets())).positions)
        feeding_group = self.in_group and self.feeds
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=parse_bootstrap(self.settings.broker),
            client_id=f"{self.settings.app_id}-operator-feed",
            group_id=feeder_group(self.settings) if feeding_group else None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_RECORDS,
            # A feeder group sees topics created later (the notification log) this soon.
            metadata_max_age_ms=int(DISCOVERY_INTERVAL * 1000),
            **client_options(self.settings.kafka),
        )
        await self.consumer.start()
        if feeding_group:
            self.consumer.subscribe(pattern=topic_pattern(self.topics),
                                    listener=_Handover(self))

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        if not self.topics:
            return
        if not self.in_group:
            await self._consume_every_partition()
        elif self.feeds:
            await self._consume_as_feeder()

    async def _consume_every_partition(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        assigned: set[TopicPartition] = set()
        next_discovery = 0.0
        loop = asyncio.get_running_loop()
        while not self.should_stop:
            if loop.time() >= next_discovery:
                assigned = await self._discover(assigned)
                next_discovery = loop.time() + DISCOVERY_INTERVAL
            if not assigned:
                await self.sleep(0.5)
                continue
            try:
                batch = await consumer.getmany(timeout_ms=500)
            except ConsumerStoppedError:  # on_stop stopped it under this task: stopping
                return
            if batch:
                await self._write(batch)
            self._check_loaded(self.positions)

    async def _consume_as_feeder(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            try:
                batch = await consumer.getmany(timeout_ms=500)
            except ConsumerStoppedError:
                return
            async with self._writing:
                # A rebalance between the fetch and here took these partitions away: their
                # new owner reads them from the stored offsets.
                owned = consumer.assignment()
                batch = {tp: messages for tp, messages in batch.items() if tp in owned}
                if batch:
                    await self._write(batch)

    async def finish_writing(self) -> None:
        """Wait (up to ``HANDOVER_WAIT``) until the batch being written is stored."""
        try:
            await asyncio.wait_for(self._writing.acquire(), HANDOVER_WAIT)
        except TimeoutError:
            log.warning("read model feed: handing partitions over while a batch is still "
                        "being written (the next owner may read some of it again)")
            return
        self._writing.release()

    async def resume(self, assigned: set[TopicPartition]) -> None:
        """Position newly assigned partitions where the database's offsets say."""
        consumer = self.consumer
        assert consumer is not None and self.shared is not None
        stored = await self._until_stored(lambda model: model.offsets().positions)
        if stored is None:
            return
        unread = []
        for tp in assigned:
            position = stored.get((tp.topic, tp.partition))
            if position is None:
                unread.append(tp)
            else:
                consumer.seek(tp, position)
                self.positions[(tp.topic, tp.partition)] = position
        if unread:
            # Not seek_to_beginning: it waits for the fetcher, which waits for this rebalance.
            for tp, first in (await consumer.beginning_offsets(unread)).items():
                consumer.seek(tp, first)
        log.info("read model feed: feeding %d partitions", len(assigned))

    @Service.task
    async def _watch_loading(self) -> None:
        """With a shared database: loaded once its offsets reach what the topics held when
        this worker started, whichever feeders wrote them."""
        if not self.in_group or not self.topics:
            return
        while not self.should_stop and not self.loaded.is_set():
            if self._targets is None:
                found = await self._existing_partitions()
                if found is not None:
                    await self._take_targets(*found)
            else:
                stored = await self._once(lambda model: model.offsets().positions)
                if stored is not None:
                    self._check_loaded(stored)
            await self.sleep(1.0)

    @Service.task
    async def _retention(self) -> None:
        """Purge rows older than ``operator.retention_days``, now and every PURGE_INTERVAL.
        With a shared database every worker sweeps; a lock lets one at a time do the work."""
        retention = Retention.configured(self.settings.operator)
        if retention is None or self.shared is None:
            return
        while not self.should_stop:
            try:
                await retention.sweep(self.shared.run)
            except ReadModelUnavailable:
                pass  # the store logged it; the next sweep purges what this one did not
            except Exception:  # a failed sweep must not stop the feed
                log.exception("read model retention: the sweep failed")
            await self.sleep(PURGE_INTERVAL)

    async def _existing_partitions(self) -> tuple[set[str], set[TopicPartition]] | None:
        """The cluster's topics, and the partitions of the feed topics among them (None when
        the cluster cannot be asked now)."""
        consumer = self.consumer
        assert consumer is not None
        try:
            # ``consumer.topics()`` returns names only; the partitions come with the metadata.
            cluster = await asyncio.wait_for(cluster_metadata(consumer), 10.0)
        except Exception as exc:  # broker unreachable or slow: try again next round
            log.warning("read model feed: cannot read cluster metadata: %s", exc)
            return None
        existing = cluster.topics()
        wanted = {
            TopicPartition(topic, partition)
            for topic in self.topics
            if topic in existing
            for partition in cluster.partitions_for_topic(topic) or ()
        }
        return existing, wanted

    async def _take_targets(self, existing: set[str], wanted: set[TopicPartition]) -> None:
        """What the topics hold now: the read model is loaded once it holds as much."""
        if self._targets is None and self.settings.topic("abandoned") in existing:
            assert self.consumer is not None
            ends = await self.consumer.end_offsets(list(wanted))
            self._targets = {(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def _discover(self, assigned: set[TopicPartition]) -> set[TopicPartition]:
        """Assign every partition of the feed topics that exist; keep positions of known ones."""
        consumer = self.consumer
        assert consumer is not None
        found = await self._existing_partitions()
        if found is None:
            return assigned
        existing, wanted = found
        if wanted == assigned:
            return assigned
        current = {tp: await consumer.position(tp) for tp in assigned}
        consumer.assign(list(wanted))
        unread = []
        for tp in wanted:
            position = current.get(tp, self.positions.get((tp.topic, tp.partition)))
            if position is None:
                unread.append(tp)
            else:
                consumer.seek(tp, position)
        if unread:
            # One call for all: each call waits for the fetcher's next round (up to its 0.5 s
            # fetch wait), so a call per partition kept a fresh deployment's feed 14 s from
            # loading.
            await consumer.seek_to_beginning(*unread)
        await self._take_targets(existing, wanted)
        log.info("read model feed: reading %d partitions of %d topics",
                 len(wanted), len({tp.topic for tp in wanted}))
        return wanted

    async def _write(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        records: list[object] = []
        offsets: dict[tuple[str, int], int] = {}
        for tp, messages in batch.items():
            decode = DECODERS[self.topics[tp.topic]]
            for message in messages:
                record = decode(message.value)
                if record is None:
                    self.undecodable += 1
                else:
                    records.append(record)
            offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
        def store(model: ReadModelStore) -> bool:
            model.write_batch(records, offsets)
            return True

        if not await self._until_stored(store):  # stopping while the database is down
            return
        self.fed += len(records)
        self.positions.update(offsets)

    async def _once(self, function: Callable[[ReadModelStore], T]) -> T | None:
        """``function(model)``; None while the database is unavailable."""
        assert self.shared is not None
        try:
            return await self.shared.run(function)
        except ReadModelUnavailable:
            return None

    async def _until_stored(self, function: Callable[[ReadModelStore], T]) -> T | None:
        """``function(model)``, retried while the database is unavailable (the store logs when
        it is lost and when it is back); None only if the worker stops meanwhile."""
        assert self.shared is not None
        for attempt in count():
            try:
                result = await self.shared.run(function)
            except ReadModelUnavailable:
                if self.should_stop:
                    return None
                await self.sleep(RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)])
                continue
            return result
        raise AssertionError("unreachable")

    def _check_loaded(self, positions: Mapping[tuple[str, int], int]) -> None:
        """The read model is loaded once it holds what the topics held when the feed began."""
        if self.loaded.is_set() or self._targets is None:
            return
        if all(positions.get(key, 0) >= end for key, end in self._targets.items()):
            log.info("read model feed: loaded (%d partitions)", len(self._targets))
            self.loaded.set()

    def status(self) -> FeedStatus:
        """Lag per partition: the broker's high watermark minus what the read model holds."""
        lag: dict[tuple[str, int], int] = {}
        if self.consumer is not None:
            for tp in self.consumer.assignment():
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    key = (tp.topic, tp.partition)
                    lag[key] = max(0, highwater - self.positions.get(key, 0))
        return FeedStatus(self.loaded.is_set(), lag, self.undecodable)

    async def broker_reachable(self, timeout: float = 3.0) -> bool:
        """A metadata round trip to the cluster within ``timeout`` seconds."""
        if self.consumer is None:
            return False
        try:
            await asyncio.wait_for(self.consumer.topics(), timeout)
        except Exception:  # any failure to reach the cluster means "not ready"
            return False
        return True


def topic_pattern(topics: Iterable[str]) -> str:
    """A subscription pattern matching exactly ``topics``: a group subscribed by pattern is
    given the partitions of those created later too."""
    return "^(?:" + "|".join(re.escape(topic) for topic in sorted(topics)) + ")$"


class _Handover(ConsumerRebalanceListener):
    """A feeder's side of a rebalance: finish the batch being written before partitions go,
    start new ones at the database's offsets."""

    def __init__(self, feed: ReadModelFeed) -> None:
        self.feed = feed

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.feed.finish_writing()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.feed.resume(assigned)
