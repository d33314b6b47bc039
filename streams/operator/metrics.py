"""What ``/metrics`` reports, gathered at scrape time from the worker's own state.

Counters come from the processors (``streams.counters.worker_counters``), lag from the
consumer's high watermarks against the offsets the agent has processed, state sizes from the
cart table and the deadline index, reminder counts from the read model (which reads the
notification log of the whole cluster, so that family is the same on every worker).
"""

import asyncio
from collections.abc import Iterable

from streams import pipeline
from streams.app import app, carts_table
from streams.compat import committed_offset
from streams.counters import worker_counters
from streams.operator.feed import ReadModelFeed, SharedReadModel
from streams.operator.prometheus import Family, Histogram
from streams.operator.store import ReadModel

timer_lag = Histogram((0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400))
"""Wall time an abandonment was published minus its deadline, observed by this worker."""

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


def consumer_lag() -> Family:
    """Per owned input partition: the broker's high watermark minus the next offset to process."""
    family = Family("cartwatch_consumer_lag", "gauge",
                    "Input messages not yet processed by this worker, per partition")
    timers = pipeline.timers
    for tp in sorted(app.assignor.assigned_actives()):
        if tp.topic not in timers.input_topics:
            continue
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            continue
        # As in ``PartitionTimers.caught_up``: before the first message, the committed offset.
        committed = committed_offset(app, tp)
        position = timers.next_offsets.get(tp) or committed or 0
        family.add(max(0, highwater - position),
                   {"topic": tp.topic, "partition": str(tp.partition)})
    return family


def feed_families(feed: ReadModelFeed | None, sizes: dict[str, int],
                  reminders: dict[str, int]) -> Iterable[Family]:
    lag = Family("cartwatch_read_model_lag", "gauge",
                 "Messages of the read model's topics not yet in this worker's read model")
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
    for table, count in sorted(sizes.items()):
        rows.add(count, {"table": table})
    for status_name in ("sent", "failed", "skipped", "deferred"):
        sent.add(reminders.get(status_name, 0), {"status": status_name})
    return [lag, loaded, undecodable, rows, sent]


async def collect(feed: ReadModelFeed | None, shared: SharedReadModel | None) -> list[Family]:
    """Every family, read now."""
    carts = Family("cartwatch_carts_in_table", "gauge",
                   "Carts in this worker's table (its active partitions)")
    # Counting a RocksDB table walks its keys: do it off the event loop.
    carts.add(await asyncio.to_thread(len, carts_table))
    deadlines = Family("cartwatch_deadline_index_entries", "gauge",
                       "Entries in this worker's deadline index (including stale ones)")
    deadlines.add(len(pipeline.timers))
    sizes: dict[str, int] = {}
    reminders: dict[str, int] = {}
    if shared is not None:
        sizes = await shared.run(ReadModel.sizes)
        reminders = await shared.run(ReadModel.notification_counts)
    return [
        *counter_families(dict(worker_counters)),
        consumer_lag(),
        timer_lag.family("cartwatch_timer_lag_seconds",
                         "Abandonment published minus its deadline (timer lag)"),
        carts,
        deadlines,
        *feed_families(feed, sizes, reminders),
    ]
