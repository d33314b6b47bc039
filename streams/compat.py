"""Every use of a private Faust or aiokafka attribute, in one place.

cartwatch reaches below the libraries' public API where measurements or correctness asked for it
(a plain producer send instead of ``Topic.send``; the committed offsets Faust keeps; the RocksDB
of a table partition; the consumer's acknowledgements around a rebalance). Each access is a
function here, so an upgrade that renames one breaks in one module, and
``tests/unit/test_compat.py`` fails loudly, naming the attribute, before anything runs.

Checked against the versions ``constraints.txt`` pins: faust-streaming 0.15.x, aiokafka 0.14.x.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from faust.types import TP
from faust.web import Response

PageHandler = Callable[..., Awaitable[Response]]

CHECKED_AGAINST = {"faust-streaming": "0.15", "aiokafka": "0.14"}
"""Major.minor versions whose private attributes this module was written against."""

PRIVATE_ATTRIBUTES = {
    "faust.transport.drivers.aiokafka.Producer": ("_ensure_producer",),
    "faust.transport.consumer.Consumer (instance)": ("_committed_offset", "_acked_index"),
    "faust.transport.drivers.aiokafka.Consumer (instance)": ("_thread",),
    "faust.stores.rocksdb.Store": ("_db_for_partition",),
    "aiokafka.AIOKafkaConsumer (instance)": ("_client",),
}
"""What ``tests/unit/test_compat.py`` checks on the installed libraries."""


def use_consumer_class(app: faust.App, consumer_class: type) -> None:
    """Make this app's transport build its consumer from ``consumer_class`` (a subclass of the
    aiokafka driver's ``Consumer``)."""
    app.transport.Consumer = consumer_class  # type: ignore[misc]


def raw_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer under Faust's, for record batches sent directly."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp`` (``None`` before its first commit)."""
    return app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]


def acknowledged_offsets(consumer: Any, tp: TP) -> set[int]:
    """Offsets of ``tp`` acknowledged since Faust's last commit of it."""
    return consumer._acked_index.get(tp, set())


async def earliest_offsets(consumer: Any, partitions: Iterable[TP]) -> Mapping[TP, int]:
    """The first offsets of ``partitions``, through the consumer's thread."""
    return await consumer._thread.earliest_offsets(*partitions)


def seek(consumer: Any, tp: TP, offset: int) -> None:
    """Move the fetch position of ``tp`` without Faust's own bookkeeping."""
    consumer._thread.seek(tp, offset)


def table_partition_db(table: faust.Table, partition: int) -> Any:
    """The partition's RocksDB (``rocksdict.Rdict``), opened on first use as Faust's reads do."""
    return table.data._db_for_partition(partition)  # type: ignore[attr-defined]


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Make the consumer fetch fresh metadata now (no public way to ask)."""
    await consumer._client.force_metadata_update()


async def cluster_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """Fresh metadata of every topic, through the consumer's own connection."""
    return await consumer._client.fetch_all_metadata()


def page(app: faust.App, path: str) -> Callable[[PageHandler], PageHandler]:
    """``app.page`` for function handlers ``(web, request, ...)``: Faust wraps them in a view
    (``View.from_handler``), but its annotations admit only view methods."""
    return cast(Callable[[PageHandler], PageHandler], app.page(path))
