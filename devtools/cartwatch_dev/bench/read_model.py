"""Figures r.*: the operator read model, SQLite against PostgreSQL, in one run (issue #18).

1. **Feed.** ``read_model_input.Synthetic`` abandonments (with their lines, customers, outcomes,
   log entries and created carts) as the JSON the feed consumes, gathered per topic into
   batches of the feed's ``BATCH_RECORDS``, decoded with the feed's ``DECODERS`` and written
   with ``write_batch`` into both stores, batch by batch. A batch is decoded once and its
   decode time counted for each store: a feeder's cost is decode + write. Generating the
   JSON is not timed.
2. **Keeping up.** The pipeline hands the feed, per input event, the load generator's mix of
   cart events (the feed reads them for "carts created") and outputs; the figure is the
   feeder's capacity at that mix (from its measured cost per record of each kind) over the
   pipeline's own rate: d (backlog replay) from the same run, or the README's last figure.
3. **Queries,** through the functions the operator API's handlers call (``streams.operator.web``:
   ``list_carts``, ``cart_detail``, ``insight_buckets``, ``export_page`` through
   ``paged_csv``), with varied parameters, one untimed warm-up each. PostgreSQL is
   ``VACUUM ANALYZE``d after the load first, as its autovacuum would have done by then.
   The product and customer searches' plans (``EXPLAIN``) are kept, and whether they use the
   trigram indexes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cartwatch_dev.bench.api_load import percentile
from cartwatch_dev.bench.read_model_input import (
    KINDS,
    LAST,
    Facts,
    Synthetic,
    product_name,
    sku,
)
from cartwatch_dev.bench.report import Figure, Report
from cartwatch_dev.loadgen import LoadSpec, generate_traffic
from streams.operator import query as q
from streams.operator.backends import ReadModelStore
from streams.operator.feed import BATCH_RECORDS, DECODERS
from streams.operator.insights import PERIODS, Period
from streams.operator.pgstore import PostgresReadModel

BACKENDS = {"sqlite": "SQLite", "pg": "PostgreSQL"}
PIPELINE_D = 9_516.0
"""Events/s of d, the batch worker replaying a backlog: README, #14 run 1 (the faster run),
used when the same run did not measure d."""
PIPELINE_LIVE = 1_020.0
"""Events/s of j, the live rate one worker kept up with: README, 2026-12-03."""
SEARCH_FLOOR_MS = 200.0
"""Search p99 on PostgreSQL (issue #18), meant at 1M abandonments."""
QUERY_KINDS: dict[str, str] = {
    "list": "cart list, first page (50, filters varied)",
    "list.deep": "cart list, deep page by offset= (40-90 % in)",
    "list.after": "cart list, deep page by after= (the previous page's next; 40-90 % in)",
    "keyset.deep": "export page after a deep keyset (500 abandonments)",
    "search.product": "search product contains (SKU or name word)",
    "search.customer": "search customer contains (name, email or phone)",
    "cart": "one cart's detail",
    "insights": "insights (day or week, a store or all, 30 days or all time)",
}


@dataclass
class Feed:
    """Seconds spent per kind of record: decoding (shared) and writing (per backend)."""

    records: Counter[str] = field(default_factory=Counter)
    decode_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    write_s: dict[str, dict[str, float]] = field(default_factory=dict)
    undecodable: int = 0

    def seconds(self, backend: str, kind: str | None = None) -> float:
        kinds = KINDS if kind is None else (kind,)
        return sum(self.decode_s[k] + self.write_s[backend][k] for k in kinds)

    def per_record(self, backend: str, kind: str) -> float:
        return self.seconds(backend, kind) / max(self.records[kind], 1)


def feed(stores: dict[str, ReadModelStore], data: Synthetic) -> Feed:
    """Every record of ``data`` into every store, in per-topic batches of ``BATCH_RECORDS``."""
    result = Feed(write_s={name: dict.fromkeys(KINDS, 0.0) for name in stores})
    pending: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    offsets: Counter[str] = Counter()

    def flush(kind: str) -> None:
        values, decode = pending[kind], DECODERS[kind]
        started = time.perf_counter()
        decoded = [decode(value) for value in values]
        records = [record for record in decoded if record is not None]
        result.decode_s[kind] += time.perf_counter() - started
        result.undecodable += len(decoded) - len(records)
        result.records[kind] += len(values)
        offsets[kind] += len(values)
        positions = {(f"bench.{kind}", 0): offsets[kind]}
        for name, store in stores.items():
            started = time.perf_counter()
            store.write_batch(records, positions)
            result.write_s[name][kind] += time.perf_counter() - started
        values.clear()

    for kind, value in data.records():
        pending[kind].append(value)
        if len(pending[kind]) >= BATCH_RECORDS:
            flush(kind)
    for kind in KINDS:
        if pending[kind]:
            flush(kind)
    return result


def expected_sizes(data: Synthetic) -> dict[str, int]:
    """Rows each table must hold once ``data`` is fed (to check both stores hold it all)."""
    sizes = Counter[str]()
    for index in range(data.abandonments):
        facts = data.facts(index)
        sizes["abandonments"] += 1
        sizes["lines"] += len(facts.products)
        sizes["notifications"] += facts.log_steps
        sizes["carts"] += facts.sequence == 1
    return dict(sizes)


@dataclass(frozen=True)
class PipelineMix:
    """Records the feed reads per input event of the pipeline (load generator's traffic)."""

    per_event: dict[str, float]

    @classmethod
    def measure(cls, log_entries_per_abandonment: float) -> PipelineMix:
        """From the throughput figures' load (seed 1), at 2,000 carts; the notification log
        is the notifier's, so it is taken from the synthetic input, per abandonment."""
        traffic = generate_traffic(LoadSpec(seed=1, carts=2_000).ending_before(time.time()))
        events = len(traffic.messages)
        expected = {k: len(v) for k, v in traffic.expected().as_json().items()}
        per_event = {
            "cart_events": sum(m.topic == "cart_events" for m in traffic.messages) / events,
            "abandoned": expected["abandonment_ids"] / events,
            "recovered": expected["recovered_ids"] / events,
            "reactivated": expected["reactivated_ids"] / events,
        }
        per_event["notification_log"] = per_event["abandoned"] * log_entries_per_abandonment
        return cls(per_event)

    def capacity(self, feed: Feed, backend: str) -> float:
        """Input events/s of the pipeline whose records this feeder keeps up with."""
        seconds = sum(share * feed.per_record(backend, kind)
                      for kind, share in self.per_event.items())
        return 1 / seconds


# -- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One timed call: a query kind and what it asks."""

    kind: str
    call: Callable[[ReadModelStore], object]


def probes(data: Synthetic, repetitions: int, seed: int = 7) -> dict[str, list[Probe]]:
    """``repetitions`` varied calls per query kind, the same for every backend."""
    import random

    from streams.operator import web

    rng = random.Random(seed)
    n = data.abandonments

    def some() -> Facts:
        return data.facts(rng.randrange(n))

    def stores() -> tuple[str, ...]:
        return () if rng.random() < 0.5 else (some().store_id,)

    def statuses() -> tuple[str, ...]:
        return rng.choice(((), ("abandoned",), ("recovered",), ("abandoned", "reactivated")))

    def listing(query: q.CartQuery) -> Callable[[ReadModelStore], object]:
        return lambda model: web.list_carts(model, query)

    def product_term() -> str:
        facts = some()
        number = rng.choice(facts.products)
        if rng.random() < 0.5:
            return sku(number).lower()
        return rng.choice(product_name(number).split()).lower()

    def customer_term() -> str:
        customer = next(f.customer for f in iter(some, None) if f.customer is not None)
        roll = rng.random()
        if roll < 0.4:
            return rng.choice(LAST)
        if roll < 0.7 or customer.phone is None:
            return customer.email.split("@")[0]
        return customer.phone[-9:]  # "2345 6789": digits across the space

    def deep_key() -> tuple[float, str]:
        facts = data.facts(int(n * rng.uniform(0.1, 0.6)))
        return facts.abandoned_at, facts.abandonment_id

    def keyset(after: tuple[float, str]) -> Callable[[ReadModelStore], object]:
        return lambda model: web.export_page(model, q.CartQuery(), after)

    def detail(cart_id: str) -> Callable[[ReadModelStore], object]:
        return lambda model: web.cart_detail(model, cart_id)

    def insights(query: q.CartQuery, period: Period) -> Callable[[ReadModelStore], object]:
        return lambda model: web.insight_buckets(model, query, period)

    last_day = max(data.facts(n - 1).abandoned_at, 0.0)
    made: dict[str, list[Probe]] = {kind: [] for kind in QUERY_KINDS}
    for _ in range(repetitions):
        made["list"].append(Probe("list", listing(q.CartQuery(stores(), statuses()))))
        made["list.deep"].append(Probe("list.deep", listing(q.CartQuery(
            stores=(), offset=int(n * rng.uniform(0.4, 0.9))))))
        made["keyset.deep"].append(Probe("keyset.deep", keyset(deep_key())))
        made["search.product"].append(Probe("search.product", listing(q.CartQuery(
            stores(), product=product_term()))))
        made["search.customer"].append(Probe("search.customer", listing(q.CartQuery(
            stores(), customer=customer_term()))))
        made["cart"].append(Probe("cart", detail(some().cart_id)))
        since = last_day - 30 * 86_400 if rng.random() < 0.5 else None
        made["insights"].append(Probe("insights", insights(
            q.CartQuery(stores(), since=since), rng.choice(PERIODS))))
    deep = random.Random(seed + 1)  # apart, so the other kinds ask what they asked before
    for _ in range(repetitions):
        facts = data.facts(int(n * deep.uniform(0.4, 0.9)))
        made["list.after"].append(Probe("list.after", listing(q.CartQuery(
            after=(facts.abandoned_at, facts.abandonment_id)))))
    return made


def latencies(model: ReadModelStore, calls: list[Probe], budget_s: float) -> list[float]:
    """Seconds of each call after one untimed warm-up; stops early (after at least 3) once
    ``budget_s`` is spent."""
    calls[0].call(model)
    spent, found = 0.0, []
    for probe in calls:
        started = time.perf_counter()
        probe.call(model)
        found.append(time.perf_counter() - started)
        spent += found[-1]
        if spent > budget_s and len(found) >= 3:
            break
    return found


def explain(model: ReadModelStore, backend: str, query: q.CartQuery) -> dict[str, Any]:
    """The plans of a search's page and count queries, and the indexes they name."""
    plans = {}
    for name, (statement, params) in (("page", q.list_sql(query)),
                                      ("count", q.match_keys_sql(query))):
        if backend == "pg":
            rows = model.query("EXPLAIN " + statement, params)
            plans[name] = "\n".join(row[0] for row in rows)
        else:
            rows = model.query("EXPLAIN QUERY PLAN " + statement, params)
            plans[name] = "\n".join(row[3] for row in rows)
    text = "\n".join(plans.values())
    return {"plans": plans, "trigram_index": "_trgm" in text,
            "full_scan": "Seq Scan" in text or any(
                line.strip().startswith("SCAN a") or line.strip().startswith("SCAN l")
                for line in text.splitlines())}


def csv_export(model: ReadModelStore) -> dict[str, float]:
    """The full CSV export (every abandonment, one line per SKU) as the API streams it:
    ``export_page`` page by page through ``paged_csv``. RSS is sampled after each page."""
    from streams.operator import web
    from streams.operator.export import CART_COLUMNS, paged_csv

    query = q.CartQuery()
    rows = 0
    rss_start = rss_peak = _rss()

    async def pages() -> AsyncIterator[list[list[str]]]:
        nonlocal rows, rss_peak
        after: tuple[float, str] | None = None
        while True:
            page, after = web.export_page(model, query, after)
            rows += len(page)
            rss_peak = max(rss_peak, _rss())
            yield page
            if after is None:
                return

    async def run() -> int:
        size = 0
        async for chunk in paged_csv([name for name, _ in CART_COLUMNS], pages()):
            size += len(chunk.encode())
        return size

    started = time.perf_counter()
    size = asyncio.run(run())
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "rows": rows, "rows_per_s": round(rows / seconds),
            "mb": round(size / 2**20, 1), "rss_growth_mb": round((rss_peak - rss_start) / 2**20, 1)}


def _rss() -> int:
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- the run ----------------------------------------------------------------------------------


@dataclass
class ReadModelRun:
    """Stores to measure (``sqlite``, ``pg``; a missing one is reported as not measured)."""

    data: Synthetic
    stores: dict[str, ReadModelStore]
    report: Report
    say: Callable[[str], None]
    repetitions: int = 100
    budget_s: float = 20.0
    """Seconds of timed calls per query kind and backend before stopping early."""
    missing: dict[str, str] = field(default_factory=dict)
    """Backend -> why it is not measured."""

    def run(self) -> dict[str, Any]:
        n = self.data.abandonments
        self.say(f"r: feeding {n:,} abandonments into {', '.join(self.stores)}")
        started = time.monotonic()
        fed = feed(self.stores, self.data)
        self.say(f"r: fed {sum(fed.records.values()):,} records in "
                 f"{time.monotonic() - started:.0f} s")
        checks: dict[str, Any] = {"abandonments": n, "records": dict(fed.records),
                                  "undecodable": fed.undecodable,
                                  "expected_sizes": expected_sizes(self.data),
                                  "missing": self.missing}
        mix = PipelineMix.measure(fed.records["notification_log"] / n)
        pipeline = self.report.value("d")
        source = "d of this run" if pipeline else "d of the README (#14, run 1)"
        pipeline = pipeline or PIPELINE_D
        live = self.report.value("j") or PIPELINE_LIVE
        checks["pipeline"] = {"events_per_s": pipeline, "source": source,
                              "live_events_per_s": live, "records_per_event": mix.per_event,
                              "abandonments_per_s": round(pipeline * mix.per_event["abandoned"],
                                                          1)}
        checks["decode_per_s"] = {kind: round(fed.records[kind] / fed.decode_s[kind])
                                  for kind in KINDS if fed.decode_s[kind]}
        for store in self.stores.values():
            if isinstance(store, PostgresReadModel):
                store.db.execute("VACUUM ANALYZE")
        made = probes(self.data, self.repetitions)
        results: dict[str, Any] = {}
        for backend, store in self.stores.items():
            results[backend] = self._backend(backend, store, fed, mix, pipeline, live, made)
        checks["backends"] = results
        self._figures(results)
        self.report.checks["read_model"] = checks
        self.report.tables.append(comparison(results, n))
        return checks

    def _backend(self, backend: str, store: ReadModelStore, fed: Feed, mix: PipelineMix,
                 pipeline: float, live: float, made: dict[str, list[Probe]]) -> dict[str, Any]:
        total = sum(fed.records.values())
        seconds = fed.seconds(backend)
        capacity = mix.capacity(fed, backend)
        result: dict[str, Any] = {
            "sizes": store.sizes(),
            "feed": {"seconds": round(seconds, 1), "records_per_s": round(total / seconds),
                     "abandonments_per_s": round(self.data.abandonments / seconds),
                     "per_kind_per_s": {kind: round(1 / fed.per_record(backend, kind))
                                        for kind in KINDS if fed.records[kind]},
                     "capacity_events_per_s": round(capacity),
                     "capacity_abandonments_per_s": round(
                         capacity * mix.per_event["abandoned"]),
                     "x_pipeline": round(capacity / pipeline, 2),
                     "x_live": round(capacity / live, 2)},
            "queries": {},
        }
        for kind, calls in made.items():
            self.say(f"r: {BACKENDS[backend]} {QUERY_KINDS[kind]}")
            found = latencies(store, calls, self.budget_s)
            result["queries"][kind] = {
                "n": len(found), "p50_ms": round(1000 * percentile(found, 0.5), 2),
                "p99_ms": round(1000 * percentile(found, 0.99), 2),
                "max_ms": round(1000 * max(found), 2)}
        sample = self.data.facts(self.data.abandonments // 2)
        customer = next(f.customer for i in range(self.data.abandonments)
                        if (f := self.data.facts(i)).customer is not None)
        result["explain"] = {
            "search.product": explain(store, backend, q.CartQuery(
                product=sku(sample.products[0]).lower())),
            "search.customer": explain(store, backend, q.CartQuery(
                customer=customer.email.split("@")[0])),
        }
        self.say(f"r: {BACKENDS[backend]} full CSV export")
        result["export"] = csv_export(store)
        return result

    def _figures(self, results: dict[str, Any]) -> None:
        n = f"{self.data.abandonments / 1e6:.2g}M" if self.data.abandonments >= 1e6 else (
            f"{self.data.abandonments:,}")
        for backend, name in BACKENDS.items():
            if backend not in results:
                self.report.add(Figure(f"r.feed.{backend}", f"{name} read model", None, "",
                                       note=f"not measured: {self.missing.get(backend, '?')}"))
                continue
            found = results[backend]
            fed = found["feed"]
            self.report.add(Figure(
                f"r.feed.{backend}", f"{name} feeder: decode + write_batch, {n} abandonments",
                float(fed["records_per_s"]), "records/s",
                note=f"{fed['abandonments_per_s']:,} abandonments/s with their records"))
            self.report.add(Figure(
                f"r.keep.{backend}", f"{name} feeder capacity / pipeline d, at the pipeline's "
                "mix of records", float(fed["x_pipeline"]), "x", floor=">= 1",
                ok=fed["x_pipeline"] >= 1,
                note=f"{fed['capacity_events_per_s']:,} events/s; {fed['x_live']:.1f} x the "
                "live rate j"))
            for kind, label in QUERY_KINDS.items():
                timing = found["queries"][kind]
                search = kind.startswith("search.")
                floor = backend == "pg" and search
                self.report.add(Figure(
                    f"r.{kind}.{backend}", f"{name} {label}: p99", timing["p99_ms"], "ms",
                    floor=f"< {SEARCH_FLOOR_MS:.0f} ms" if floor else "",
                    ok=timing["p99_ms"] < SEARCH_FLOOR_MS if floor else None,
                    note=f"p50 {timing['p50_ms']} ms, n={timing['n']}" + (
                        "; trigram index used" if search and found["explain"][kind][
                            "trigram_index"] else "; no index" if search and found["explain"][
                            kind]["full_scan"] else "")))
            export = found["export"]
            self.report.add(Figure(
                f"r.export.{backend}", f"{name} full CSV export ({export['rows']:,} lines)",
                export["seconds"], "s",
                note=f"{export['rows_per_s']:,} lines/s, {export['mb']} MB, RSS +"
                f"{export['rss_growth_mb']} MB"))


def comparison(results: dict[str, Any], abandonments: int) -> str:
    """SQLite and PostgreSQL side by side, as a Markdown table."""
    names = [name for backend, name in BACKENDS.items() if backend in results]
    found = [results[backend] for backend in BACKENDS if backend in results]
    rows = [f"| read model, {abandonments:,} abandonments | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names)]

    def row(label: str, cells: Iterator[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    row("feeder records/s (abandonments/s)", (
        f"{r['feed']['records_per_s']:,} ({r['feed']['abandonments_per_s']:,})" for r in found))
    row("feeder capacity at the pipeline's mix: events/s (x d, x live)", (
        f"{r['feed']['capacity_events_per_s']:,} ({r['feed']['x_pipeline']:.2f}, "
        f"{r['feed']['x_live']:.1f})" for r in found))
    for kind, label in QUERY_KINDS.items():
        row(f"{label}: p50 / p99 ms", (
            f"{r['queries'][kind]['p50_ms']:g} / {r['queries'][kind]['p99_ms']:g}"
            for r in found))
    row("search plans use a trigram index (product, customer)", (
        f"{'yes' if r['explain']['search.product']['trigram_index'] else 'no'}, "
        f"{'yes' if r['explain']['search.customer']['trigram_index'] else 'no'}"
        for r in found))
    row("full CSV export: s (lines/s, RSS growth)", (
        f"{r['export']['seconds']:g} ({r['export']['rows_per_s']:,}/s, "
        f"+{r['export']['rss_growth_mb']} MB)" for r in found))
    return "\n".join(rows) + "\n"
