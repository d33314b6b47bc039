"""Feeds this worker's read model from Kafka: every partition of the topics it reads.

A plain aiokafka consumer without a consumer group, so each worker reads *all* partitions
(not the share the group gives it) and can answer any query alone. Offsets are stored in the
read model with the rows they produced, not committed to Kafka. Topics that do not exist yet
(the notification log before the notifier first runs) are picked up when they appear.
"""

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError
from mode import Service

from config.bootstrap import parse_bootstrap
from config.kafka import client_options
from config.settings import Settings
from schemas.events import CartEvent
from schemas.notifications import LinkClick, NotificationLogEntry, OperatorNotification
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.compat import cluster_metadata
from streams.operator.backends import ReadModelStore

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

DISCOVERY_INTERVAL = 5.0
"""Seconds between looks for new topics and partitions."""
BATCH_RECORDS = 2000


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
        self.consumer: AIOKafkaConsumer | None = None
        self.positions: dict[tuple[str, int], int] = {}
        self.undecodable = 0
        self._targets: dict[tuple[str, int], int] | None = None
        self.loaded = asyncio.Event()

    async def on_start(self) -> None:
        if self.shared is None:
            self.loaded.set()
        else:
            self.positions = dict((await self.shared.run(lambda model: model.offsets())).positions)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=parse_bootstrap(self.settings.broker),
            client_id=f"{self.settings.app_id}-operator-feed",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_RECORDS,
            **client_options(self.settings.kafka),
        )
        await self.consumer.start()

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        if not self.topics:
            return
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
            self._check_loaded(assigned)

    async def _discover(self, assigned: set[TopicPartition]) -> set[TopicPartition]:
        """Assign every partition of the feed topics that exist; keep positions of known ones."""
        consumer = self.consumer
        assert consumer is not None
        try:
            # ``consumer.topics()`` returns names only; the partitions come with the metadata.
            cluster = await asyncio.wait_for(cluster_metadata(consumer), 10.0)
        except Exception as exc:  # broker unreachable or slow: try again next round
            log.warning("read model feed: cannot read cluster metadata: %s", exc)
            return assigned
        existing = cluster.topics()
        wanted = {
            TopicPartition(topic, partition)
            for topic in self.topics
            if topic in existing
            for partition in cluster.partitions_for_topic(topic) or ()
        }
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
        if self._targets is None and self.settings.topic("abandoned") in existing:
            ends = await consumer.end_offsets(list(wanted))
            self._targets = {(tp.topic, tp.partition): end for tp, end in ends.items()}
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
        assert self.shared is not None
        await self.shared.run(lambda model: model.write_batch(records, offsets))
        self.positions.update(offsets)

    def _check_loaded(self, assigned: set[TopicPartition]) -> None:
        """The read model is loaded once it holds what the topics held when the feed began."""
        if self.loaded.is_set() or self._targets is None:
            return
        if all(self.positions.get(key, 0) >= end for key, end in self._targets.items()):
            log.info("read model feed: loaded (%d partitions)", len(assigned))
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
