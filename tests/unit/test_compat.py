"""The private Faust and aiokafka attributes cartwatch uses (``streams.compat``) still exist in
the installed libraries: an upgrade that removes one fails here, naming it."""

import asyncio
import importlib.metadata
import inspect
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import faust.transport.consumer as faust_consumer
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.subscription_state import TopicPartitionState
from faust.stores.rocksdb import Store
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Producer

from streams.compat import (
    CHECKED_AGAINST,
    PRIVATE_ATTRIBUTES,
    broker_known_until,
)


def missing(owner: object, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not hasattr(owner, name)]


def test_the_installed_versions_are_the_ones_checked() -> None:
    for package, version in CHECKED_AGAINST.items():
        installed = importlib.metadata.version(package)
        assert installed.startswith(version + "."), (
            f"{package} {installed} is installed, streams/compat.py was checked against "
            f"{version}.x: check its private attributes, then update CHECKED_AGAINST")


async def test_faust_private_attributes_exist(tmp_path: Path) -> None:
    app = faust.App("compat-check", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path))
    consumer = app.consumer  # built, never started: nothing connects
    store = app.Table("compat-check", partitions=1).data  # no database is opened
    found = {
        "faust.transport.drivers.aiokafka.Producer": missing(Producer, PRIVATE_ATTRIBUTES[
            "faust.transport.drivers.aiokafka.Producer"]),
        "faust.transport.consumer.Consumer (instance)": missing(consumer, PRIVATE_ATTRIBUTES[
            "faust.transport.consumer.Consumer (instance)"]),
        "faust.transport.drivers.aiokafka.Consumer (instance)": missing(
            consumer, PRIVATE_ATTRIBUTES["faust.transport.drivers.aiokafka.Consumer (instance)"]),
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread": missing(
            AIOKafkaConsumerThread, PRIVATE_ATTRIBUTES[
                "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread"]),
        "faust.stores.rocksdb.Store": missing(Store, PRIVATE_ATTRIBUTES[
            "faust.stores.rocksdb.Store"]),
        "faust.stores.rocksdb.Store (instance)": missing(store, PRIVATE_ATTRIBUTES[
            "faust.stores.rocksdb.Store (instance)"]),
        "faust.transport.consumer (module)": missing(faust_consumer, PRIVATE_ATTRIBUTES[
            "faust.transport.consumer (module)"]),
        "faust.sensors.monitor.Monitor (instance)": missing(app.monitor, PRIVATE_ATTRIBUTES[
            "faust.sensors.monitor.Monitor (instance)"]),
    }
    assert {owner: names for owner, names in found.items() if names} == {}


async def test_aiokafka_private_attributes_exist() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    try:
        names = PRIVATE_ATTRIBUTES["aiokafka.AIOKafkaConsumer (instance)"]
        assert missing(consumer, names) == []
        assert missing(Fetcher, PRIVATE_ATTRIBUTES["aiokafka.consumer.fetcher.Fetcher"]) == []
        assert "request.topics" in inspect.getsource(Fetcher._proc_fetch_request)
        # ShortPollConsumerThread sets the wait after construction: start() must read it
        assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
            AIOKafkaConsumer.start)
        state = TopicPartitionState(assignment=None)
        assert missing(state, PRIVATE_ATTRIBUTES[
            "aiokafka.consumer.subscription_state.TopicPartitionState (instance)"]) == []
        assert hasattr(consumer._client, "fetch_all_metadata")
        assert hasattr(consumer._client, "force_metadata_update")
    finally:
        await consumer.stop()


@pytest.mark.parametrize("owner", sorted(PRIVATE_ATTRIBUTES))
def test_every_listed_owner_is_checked(owner: str) -> None:
    checked = {"faust.transport.drivers.aiokafka.Producer",
               "faust.transport.consumer.Consumer (instance)",
               "faust.transport.drivers.aiokafka.Consumer (instance)",
               "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread",
               "faust.stores.rocksdb.Store", "faust.stores.rocksdb.Store (instance)",
               "aiokafka.AIOKafkaConsumer (instance)",
               "aiokafka.consumer.fetcher.Fetcher",
               "aiokafka.consumer.subscription_state.TopicPartitionState (instance)",
               "faust.transport.consumer (module)", "faust.sensors.monitor.Monitor (instance)"}
    assert owner in checked


async def test_the_broker_is_known_up_to_the_send_of_the_last_fetch_answered() -> None:
    """A response held up in the network (a partition healing) describes the broker when it
    answered, after the request's send: ``broker_known_until`` gives the send. A request still
    in flight proves nothing (a blackholed one looks like a long poll)."""
    tp = TopicPartition("in", 0)
    state = SimpleNamespace(timestamp=None)
    respond = asyncio.Event()

    class HeldFetcher:
        async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
            await respond.wait()  # the response arrives when the test says so
            state.timestamp = int(time.time() * 1000)  # aiokafka stamps the arrival
            return True

    client = SimpleNamespace(_fetcher=HeldFetcher(), assignment=lambda: {tp},
                             last_poll_timestamp=lambda tp: state.timestamp)
    consumer = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: client))
    assert broker_known_until(consumer, tp) is None  # nothing fetched yet (installs it)

    def fetch() -> asyncio.Future[Any]:
        return asyncio.ensure_future(client._fetcher._proc_fetch_request(
            SimpleNamespace(state_value=lambda tp: state), 1,
            SimpleNamespace(topics=[("in", [(0, 5, 1_000_000)])])))

    sent = time.time()
    first = fetch()
    await asyncio.sleep(0.3)
    assert broker_known_until(consumer, tp) is None  # in flight: nothing known yet
    respond.set()
    await first
    answered = broker_known_until(consumer, tp)
    assert answered is not None and sent <= answered < sent + 0.1
    assert state.timestamp / 1000 - answered > 0.25

    respond.clear()
    second = fetch()  # never answered: lost in a blackhole
    await asyncio.sleep(0.3)
    assert broker_known_until(consumer, tp) == answered
    respond.set()
    await second


async def test_the_workers_consumer_long_polls_the_short_fetch_wait() -> None:
    from streams.app import app
    from streams.compat import FETCH_MAX_WAIT

    thread = app.consumer._new_consumer_thread()
    client = thread._create_worker_consumer(app.transport)
    try:
        assert client._fetch_max_wait_ms == int(FETCH_MAX_WAIT * 1000) < 1500
    finally:
        await client.stop()
