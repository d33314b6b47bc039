"""What ``/metrics`` reports, gathered at scrape time from the worker's own state.

The operator imports no processor: ``WorkerMetrics`` holds what the processors expose (their
counters, the lifecycle's input positions and deadline index, the cart table, the consumer's
assignment and high watermarks) and is handed to the operator surface where the worker is
assembled (``streams.assembly``). Reminder counts come from the read model (which reads the
notification log of the whole cluster, so that family is the same on every worker).
"""

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Protocol

from faust.types import TP

from streams.operator.backends import ReadModelUnavailable
from streams.operator.feed import ReadModelFeed, SharedReadModel
from streams.operator.prometheus import Family, Histogram

TIMER_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400)


TRANSITIONS = {
    "cart_abandoned": "abandoned",
    "cart_reactivated": "reactivated",
    "cart_recovered": "recovered",
}


def counter_families(counters: dict[str, int]) -> list[Family]:
    """Families from the agent's counter names (``in:<topic>``, ``out:<type>``, ...)."""
    events_in = Family("cartwatch_events_in_total", "counter", "Input messages read, per topic")
    events_out = Family("cartwatch_events_out_total", "counter",
                        "Messages published, per output type")
    transitions = Family("cartwatch_state_transitions_total", "counter",
                         "Cart state transitions, per new state")
    dead = Family("cartwatch_dead_lettered_total", "counter",
                  "Input messages sent to the dead-letter topic")
    dead.add(counters.get("dead_lettered", 0))
    links = Family("cartwatch_link_requests_total", "counter",
                   "Requests of reminder cart links (/cartwatch/r/), per outcome: click "
                   "(recorded), robot, prefetch, not_get, refused (bad token), unrecorded "
                   "(the broker did not take the click)")
    for name, value in sorted(counters.items()):
        kind, _, detail = name.partition(":")
        if kind == "in":
            events_in.add(value, {"topic": detail})
        elif kind == "out":
            events_out.add(value, {"type": detail})
            if detail in TRANSITIONS:
                transitions.add(value, {"to": TRANSITIONS[detail]})
        elif kind == "link":
            links.add(value, {"outcome": detail})
    return [events_in, events_out, transitions, dead, links]


def feed_families(feed: ReadModelFeed | None, sizes: dict[str, int],
                  reminders: dict[str, int], reachable: bool = True) -> Iterable[Family]:
    lag = Family("cartwatch_read_model_lag", "gauge",
                 "Messages of the read model's topics not yet in the read model, per "
                 "partition this worker feeds")
    fed = Family("cartwatch_read_model_fed_total", "counter",
                 "Records this worker stored in the read model")
    available = Family("cartwatch_read_model_reachable", "gauge",
                       "1 while the read model's database answers (0: PostgreSQL is down or "
                       "unreachable; row counts and reminder totals are then left out)")
    available.add(int(reachable))
    loaded = Family("cartwatch_read_model_loaded", "gauge",
                    "1 once the read model holds what the topics held at start")
    undecodable = Family("cartwatch_read_model_undecodable_total", "counter",
                         "Messages the read model could not decode and skipped")
    rows = Family("cartwatch_read_model_rows", "gauge", "Rows in the read model, per table")
    sent = Family("cartwatch_reminders_total", "counter",
                  "Reminder attempts in the notification log, per status (whole cluster)")
    if feed is not None:
        status = feed.status()
        for (topic, partition), behind in sorted(status.lag.items()):
            lag.add(behind, {"topic": topic, "partition": str(partition)})
        loaded.add(int(status.loaded))
        undecodable.add(status.undecodable)
        fed.add(feed.fed)
    for table, count in sorted(sizes.items()):
        rows.add(count, {"table": table})
    for status_name in ("sent", "failed", "skipped", "deferred"):
        sent.add(reminders.get(status_name, 0), {"status": status_name})
    return [lag, loaded, undecodable, fed, available, rows, sent]


class InputPositions(Protocol):
    """Where the lifecycle agent stands in its input (``streams.scheduling.PartitionTimers``)."""

    @property
    def input_topics(self) -> Sequence[str]: ...

    def position(self, tp: TP) -> int: ...

    def __len__(self) -> int: ...


@dataclass
class WorkerMetrics:
    """The processors' state ``/metrics`` reads, given to the operator surface by the assembly.

    ``assigned`` and ``highwater`` are the consumer's (the partitions this worker actively owns
    and the broker's high watermark of one of them); ``timer_lag`` observes each abandonment's
    wall time of publication minus its deadline, through ``observe_abandonment``.
    """

    counters: Mapping[str, int]
    positions: InputPositions
    carts: Sized
    assigned: Callable[[], Iterable[TP]]
    highwater: Callable[[TP], int | None]
    rocksdb_memory: Callable[[], Mapping[tuple[str, str], int]] = dict
    """Native memory of the tables' RocksDBs per (table, kind) (``streams.app.rocksdb_memory``)."""
    timer_lag: Histogram = field(default_factory=lambda: Histogram(TIMER_LAG_BUCKETS))

    def observe_abandonment(self, deadline: float, published_at: float) -> None:
        self.timer_lag.observe(published_at - deadline)

    def consumer_lag(self) -> Family:
        """Per owned input partition: the high watermark minus the next offset to process."""
        family = Family("cartwatch_consumer_lag", "gauge",
                        "Input messages not yet processed by this worker, per partition")
        inputs = set(self.positions.input_topics)
        for tp in sorted(self.assigned()):
            if tp.topic not in inputs:
                continue
            highwater = self.highwater(tp)
            if highwater is None:
                continue
            family.add(max(0, highwater - self.positions.position(tp)),
                       {"topic": tp.topic, "partition": str(tp.partition)})
        return family

    async def collect(self, feed: ReadModelFeed | None,
                      shared: SharedReadModel | None) -> list[Family]:
        """Every family, read now."""
        carts = Family("cartwatch_carts_in_table", "gauge",
                       "Carts in this worker's table (its active partitions)")
        # Counting a RocksDB table walks its keys: do it off the event loop.
        carts.add(await asyncio.to_thread(len, self.carts))
        deadlines = Family("cartwatch_deadline_index_entries", "gauge",
                           "Entries in this worker's deadline index (including stale ones)")
        deadlines.add(len(self.positions))
        rocksdb = Family("cartwatch_rocksdb_memory_bytes", "gauge",
                         "Native memory held by the RocksDB of this worker's table partitions, "
                         "per table and kind (memtables, table_readers, block_cache)")
        for (table, kind), value in sorted(self.rocksdb_memory().items()):
            rocksdb.add(value, {"table": table, "kind": kind})
        sizes: dict[str, int] = {}
        reminders: dict[str, int] = {}
        reachable = True
        if shared is not None:
            try:
                sizes = await shared.run(lambda model: model.sizes())
                reminders = await shared.run(lambda model: model.notification_counts())
            except ReadModelUnavailable:
                sizes, reminders, reachable = {}, {}, False
        return [
            *counter_families(dict(self.counters)),
            self.consumer_lag(),
            self.timer_lag.family("cartwatch_timer_lag_seconds",
                                  "Abandonment published minus its deadline (timer lag)"),
            carts,
            deadlines,
            rocksdb,
            *feed_families(feed, sizes, reminders, reachable),
        ]
