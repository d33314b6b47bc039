"""The Faust application, its topics and its tables, built from the settings.

Every topic is declared by the worker itself (Faust creates ``internal`` topics before it
subscribes), with the configured partition count: the input topics, the timer topic and the
cart table's changelog must be co-partitioned so that a cart's events, its timer ticks and its
state all live on the same partition number.
"""

import asyncio
import ctypes
from collections.abc import Callable, Iterable
from typing import Any

import faust

from config.kafka import broker_credentials
from config.settings import load_settings
from streams.compat import open_table_databases, use_consumer_class
from streams.consumer import RewindingConsumer
from streams.counters import worker_counters
from streams.lifecycle import CartState
from streams.quarantine import ChangelogGuard

settings = load_settings()

app = faust.App(
    settings.app_id,
    broker=settings.broker,
    # TLS and SASL of the worker's consumer, producer and topic creation (config.kafka)
    broker_credentials=broker_credentials(settings.kafka),
    store=settings.store_url,
    datadir=str(settings.data_dir),
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    key_serializer="raw",
    value_serializer="raw",
    web_port=settings.web_port,
    web_bind=settings.web_bind,
    web_host=settings.web_bind,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    # Record batches of up to 512 KiB (Faust's default is 16 KiB): aiokafka sends one batch per
    # partition per request, so many carts falling due at once went out one round trip per 16
    # KiB. Kafka's default message.max.bytes (1 MB) still admits each batch.
    producer_max_batch_size=512 * 1024,
    broker_commit_interval=settings.offset_commit_interval,
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.session_timeout / 4,
    table_standby_replicas=0,
    autodiscover=False,
)
# Records Faust drops at a rebalance are read again even on a partition never committed.
use_consumer_class(app, RewindingConsumer)


def table_options() -> dict[str, int]:
    """RocksDB options for a table: memory bounded per partition, whatever the number of carts.

    Faust's defaults (three 64 MiB memtables and a 2 GiB block cache per table partition) let a
    worker tracking 1.1M carts keep ~250 MB of freed memtables in its heap. Here each table
    partition holds at most two 8 MiB memtables (one being flushed) and an 8 MiB block cache;
    reads that miss it come from the OS page cache. Writes cost ~7 us either way, against
    ~300 us of Python per event, so ingest does not slow down.

    rocksdict applies these only when it creates a partition's database: on reopening, it takes
    the memtable options from the database's OPTIONS file and gives it an 8 MiB block cache, so
    state created by an older version keeps its memtable size until its data dir is recreated.
    A fresh dict per table, because Faust's store pops keys from the mapping it is given.
    """
    return {
        "write_buffer_size": 8 * 2**20,
        "max_write_buffer_number": 2,
        "block_cache_size": 8 * 2**20,
    }


ROCKSDB_MEMORY = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
}
"""RocksDB's own accounting of the native memory a database holds, per kind."""


def rocksdb_memory(tables: Iterable[Any]) -> dict[tuple[str, str], int]:
    """Bytes of native memory the open partitions of ``tables`` hold, per (table, kind).

    Most of a worker's memory outside Python is here, and it grows until every partition's
    memtables and block cache are full (``table_options`` bounds each), so an operator can tell
    that warm-up from a leak. A partition closed by a rebalance while this reads is skipped.
    """
    memory: dict[tuple[str, str], int] = {}
    for table in tables:
        for kind in ROCKSDB_MEMORY:
            memory[(table.name, kind)] = 0
        for db in open_table_databases(table):
            try:
                values = {kind: db.property_int_value(name) or 0
                          for kind, name in ROCKSDB_MEMORY.items()}
            except Exception:  # closed under us (rocksdict raises its own exception types)
                continue
            for kind, value in values.items():
                memory[(table.name, kind)] += value
    return memory


RELEASE_INTERVAL = 5.0
"""Seconds between returns of freed native memory to the OS (``release_freed_memory``)."""


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None under another C library (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _malloc_trim()


def release_freed_memory() -> None:
    """Give memory that glibc keeps after it was freed back to the OS.

    glibc returns freed memory only from the top of its heap. After a burst (100k abandonments
    serialized ahead of their deadline, flushed RocksDB memtables) the freed space sits below
    live allocations and stayed resident: a worker tracking 200k carts went from 172 to 318 MB
    RSS after 100k carts fell due, and ``malloc_trim`` brought it back to 202 MB.
    """
    if _trim is not None:
        _trim(0)


@app.timer(interval=RELEASE_INTERVAL)
async def release_freed_memory_periodically() -> None:
    """``release_freed_memory`` in a thread: it takes ~10 ms on a heap of a few hundred MB."""
    await asyncio.to_thread(release_freed_memory)


def _topic(name: str, retention: float | None = None) -> faust.TopicT:
    return app.topic(
        settings.topic(name),
        internal=True,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        retention=retention,
    )


cart_events_topic = _topic("cart_events")
purchase_events_topic = _topic("purchase_events")
timer_ticks_topic = _topic("timer_ticks", retention=3600.0)
abandoned_topic = _topic("abandoned")
recovered_topic = _topic("recovered")
reactivated_topic = _topic("reactivated")
dead_letter_topic = _topic("dead_letter")
reminders_sent_topic = _topic("reminders_sent")
"""Feedback from the notifier (keyed by cart_id): sets ``CartState.reminder_sent``."""
clicks_topic = _topic("clicks")
"""Counted clicks on reminder links (keyed by cart_id), written by the worker's web server
(``/cartwatch/r/<token>``): the cart lifecycle reads them for ``CartRecovered.attribution``."""
reminder_ticks_topic = _topic("reminder_ticks", retention=3600.0)
reminders_due_topic = _topic("reminders_due")
unsubscribes_topic = _topic("unsubscribes")
notification_log_topic = _topic("notification_log")
operator_notifications_topic = _topic("operator_notifications")

pipeline_source = app.topic(
    settings.topic("cart_events"),
    settings.topic("purchase_events"),
    settings.topic("timer_ticks"),
    settings.topic("reminders_sent"),
    settings.topic("clicks"),
    internal=True,
    partitions=settings.partitions,
    key_serializer="raw",
    value_serializer="raw",
)

carts_guard = ChangelogGuard("carts", CartState.from_dict, worker_counters)
"""Quarantines undecodable records of the carts changelog (``streams.quarantine``)."""
carts_table = app.Table(
    "carts",
    default=None,
    partitions=settings.partitions,
    help="Per-cart state (streams.lifecycle.CartState), keyed by cart_id",
    options=table_options(),
    on_changelog_event=carts_guard.on_changelog_event,
)
