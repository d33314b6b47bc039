"""The benchmark itself: pre-load the input once, run each contender on it, measure.

Throughput (a-d) is measured from the first to the last event a contender processed, each with
a fresh consumer group on the same pre-loaded topics. The timer figures (e-h) come from one
real cartwatch worker tracking ``tracked_carts`` carts: ``silent_carts`` more go silent at
once (e), then its timer tick cost (f) and memory (g) are read, then it is restarted (h).
The notifier figure (i) is measured by ``cartwatch_dev.bench.notifier_run``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cartwatch_dev.bench import live, processes
from cartwatch_dev.bench.contenders import ContenderConfig
from cartwatch_dev.bench.notifier_run import NotifierRun
from cartwatch_dev.bench.processes import BenchError, Process, poll
from cartwatch_dev.bench.read_model_input import Synthetic
from cartwatch_dev.bench.report import Figure, Report
from cartwatch_dev.loadgen import (
    Expected,
    LoadSpec,
    Message,
    compare,
    generate_traffic,
    silent_carts,
)
from cartwatch_dev.loadgen.ledger import Kind
from cartwatch_dev.loadgen.model import Topic
from cartwatch_dev.loadgen.produce import Progress, produce, produce_live
from config.kafka import KafkaSettings, client_options

PARTITIONS = 4
INPUTS: dict[Topic, str] = {"cart_events": "cart-events", "purchase_events": "purchase-events"}
OUTPUTS: dict[str, Kind] = {"cart-abandoned": "abandoned", "cart-recovered": "recovered",
                            "cart-reactivated": "reactivated"}
MB = 2**20
LIVE_ABANDON_AFTER = 30.0
"""Time to abandon in the live steps: carts are abandoned and comebacks arrive within one."""
BENCH_POSTGRES = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                  "shared_buffers": "512MB"}
"""The read model's PostgreSQL as a deployment would run it: durable, with a cache (the test
server's are off and 32 MB)."""
API_ABANDON_AFTER = 3.0
"""Time to abandon under the API load: carts are abandoned, and written into the read model
the requests read, all through the run."""


@dataclass(frozen=True)
class Scale:
    """How big a run is: ``full`` for the figures, ``quick`` to prove the bench works in CI."""

    throughput_carts: int
    silent_carts: int
    tracked_carts: int
    silent_after: float
    """Time to abandon of the silent carts: the worker must have read them all by then."""
    timeout: float
    """Deadline of each step (a contender's run, an ingest, a recovery)."""
    notifier_emails: int
    """Due reminders the notifier worker sends into the bench's SMTP sink (figure i)."""
    live_rates: tuple[float, ...]
    """Rising input rates (events/s) of the live steps (figure j), each held ``live_seconds``."""
    live_seconds: float
    api_rate: float
    """Events/s the worker reads while its operator API is under load (figure k)."""
    api_seconds: float
    api_clients: int
    read_model_abandonments: int
    """Abandonments fed into both read models before their queries are timed (figures r)."""
    read_model_repetitions: int
    """Timed calls per query kind and backend (fewer when a kind's 20 s are spent)."""

    @classmethod
    def named(cls, quick: bool) -> Scale:
        if quick:
            return cls(throughput_carts=700, silent_carts=2_000, tracked_carts=20_000,
                       silent_after=20.0, timeout=90.0, notifier_emails=300,
                       live_rates=(100.0, 200.0), live_seconds=5.0,
                       api_rate=100.0, api_seconds=8.0, api_clients=4,
                       read_model_abandonments=20_000, read_model_repetitions=30)
        return cls(throughput_carts=28_000, silent_carts=100_000, tracked_carts=1_000_000,
                   silent_after=90.0, timeout=900.0, notifier_emails=5_000,
                   live_rates=(1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0),
                   live_seconds=60.0, api_rate=500.0, api_seconds=60.0, api_clients=8,
                   read_model_abandonments=1_000_000, read_model_repetitions=100)


@dataclass
class Bench:
    """One run: its broker, its private topic prefix, its working directory."""

    bootstrap: str
    scale: Scale
    workdir: Path
    report: Report
    say: Callable[[str], None]
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """How every client and process of the run connects to ``bootstrap``."""

    def __post_init__(self) -> None:
        self.run_id = f"bench-{uuid.uuid4().hex[:8]}"

    def prefix(self, part: str) -> str:
        return f"{self.run_id}.{part}."

    # -- throughput -------------------------------------------------------------------------

    def throughput(self) -> None:
        prefix = self.prefix("tp")
        spec = LoadSpec(seed=1, carts=self.scale.throughput_carts).ending_before(time.time())
        traffic = generate_traffic(spec)
        messages, expected = traffic.messages, traffic.expected()
        self.say(f"throughput input: {len(messages):,} messages, {spec.carts:,} carts")
        asyncio.run(self._load(prefix, messages))
        topics = tuple(prefix + name for name in INPUTS.values())
        runs = [
            ("a", "raw aiokafka consume -> JSON -> produce", "passthrough", {}),
            ("b", "naive Faust agent, one table write per event", "faust_naive", {}),
            ("b0", "Faust agent doing nothing per event (any agent's ceiling)", "faust_naive",
             {"BENCH_FAUST_BARE": "1"}),
            ("c", "Quix Streams, per-cart state in RocksDB", "quix", {}),
        ]
        for key, label, module, extra in runs:
            if module == "quix" and self.kafka.security_protocol != "PLAINTEXT":
                self.report.add(Figure(key, label, None, "events/s", note="not measured: "
                                       "the Quix contender connects in plaintext only"))
                continue
            if module == "quix" and importlib.util.find_spec("quixstreams") is None:
                self.report.add(Figure(key, label, None, "events/s",
                                       note="not measured: quixstreams not installed "
                                       "(pip install 'cartwatch[bench]')"))
                continue
            self.say(f"{key}: {label}")
            rate = self._contender(key, module, topics, len(messages), prefix, extra)
            self.report.add(Figure(key, label, rate, "events/s"))
        self.say("d0: cartwatch worker, Faust's per-event path")
        rate = self._cartwatch_throughput(prefix, len(messages), spec, expected, "d0", "off",
                                          CARTWATCH_BATCH_INPUT="false")
        self.report.add(Figure("d0", "d reading through Faust's stream, one event at a time",
                               rate, "events/s"))
        self.say("d: cartwatch worker")
        rate = self._cartwatch_throughput(prefix, len(messages), spec, expected, "d", "off",
                                          CARTWATCH_BATCH_INPUT="true")
        self.report.add(Figure("d", "cartwatch pipeline, RocksDB state (1 worker)", rate,
                               "events/s", floor=">= b0"))
        self.say("d2: cartwatch worker with its operator read model")
        prefix = self.prefix("tp2")  # its own outputs: the read model reads them all
        asyncio.run(self._load(prefix, messages))
        rate = self._cartwatch_throughput(prefix, len(messages), spec, expected, "d2", "sqlite",
                                          CARTWATCH_BATCH_INPUT="true")
        self.report.add(Figure("d2", "d, the worker also keeping the operator read model",
                               rate, "events/s"))
        self.report.ratio("d/a", "d", "a")
        self.report.ratio("d/b", "d", "b")
        self.report.ratio("d/c", "d", "c")
        self.report.ratio("3b/b0", "b", "b0", times=3)
        self.report.ratio("d/b0", "d", "b0")
        self.report.ratio("d0/b0", "d0", "b0")
        ratio_b0 = self.report.ratios["d/b0"]
        figure_d = next(figure for figure in self.report.figures if figure.key == "d")
        figure_d.ok = None if ratio_b0 is None else ratio_b0 >= 1.0
        if ratio_b0 is not None:
            figure_d.note = f"{ratio_b0:.2f} x b0, a Faust agent that does nothing"

    def _contender(
        self, key: str, module: str, topics: tuple[str, ...], expect: int, prefix: str,
        extra: dict[str, str],
    ) -> float:
        workdir = self.workdir / key
        config = ContenderConfig(
            bootstrap=self.bootstrap, topics=topics, group=f"{self.run_id}-{key}",
            expect=expect, result=workdir / "result.json", workdir=workdir,
            output_topic=prefix + "passthrough", partitions=PARTITIONS, kafka=self.kafka,
        )
        env = config.to_env() | {"BENCH_WEB_PORT": str(_free_port())} | extra
        process = processes.contender(key, f"cartwatch_dev.bench.contenders.{module}", env, workdir)
        process.start()
        try:
            result = processes.wait_result(process, config.result, self.scale.timeout)
        finally:
            process.stop()
        return result["count"] / max(result["last_at"] - result["first_at"], 1e-6)

    def _worker(self, name: str, prefix: str, **settings: str) -> Process:
        env = {
            "CARTWATCH_BROKER": f"kafka://{self.bootstrap}",
            "CARTWATCH_APP_ID": f"{self.run_id}-{name}",
            "CARTWATCH_TOPIC_PREFIX": prefix,
            "CARTWATCH_PARTITIONS": str(PARTITIONS),
            "CARTWATCH_DATA_DIR": str(self.workdir / name / "data"),
            "CARTWATCH_WEB_PORT": str(_free_port()),
            **self.kafka.environment(),
            **settings,
        }
        return processes.cartwatch_worker(name, env, self.workdir / name)

    def _wait_inputs(self, worker: Process, count: int) -> tuple[float, int, float]:
        """Poll the worker's counters until it read ``count`` inputs.

        Returns when and at what count it was first seen reading, and when it was done.
        """
        url = f"http://127.0.0.1:{worker.env['CARTWATCH_WEB_PORT']}"
        first: tuple[float, int] | None = None

        def done() -> bool:
            nonlocal first
            worker.check_alive()
            try:
                read = sum(v for k, v in processes.counters(url).items() if k.startswith("in:"))
            except OSError:
                return False  # the web server is not up yet
            if first is None and read > 0:
                first = (time.time(), read)
            return read >= count

        poll(done, self.scale.timeout, f"{worker.name} to read {count:,} inputs", 0.05)
        assert first is not None
        stamps = processes.counters(url)
        if "in_first_ms" in stamps and "in_last_ms" in stamps:
            # the worker's own times of its first and last input: a batch of thousands of
            # events may keep its web server from answering until it is done
            return stamps["in_first_ms"] / 1000, 1, stamps["in_last_ms"] / 1000
        return first[0], first[1], time.time()

    def _cartwatch_throughput(
        self, prefix: str, count: int, spec: LoadSpec, expected: Expected, key: str,
        read_model: str, **settings: str,
    ) -> float:
        """A worker's rate on the pre-loaded input; ``read_model`` "off" is a pipeline-only
        worker, as a deployment that serves the operator API from other workers runs them.

        Its outputs are judged against the load's ledger (ids and each abandoned cart's
        contents) into ``checks["<key>_outputs"]``: all zero when correct.
        """
        worker = self._worker(key, prefix, CARTWATCH_ABANDON_AFTER=str(spec.abandon_after),
                              CARTWATCH_READ_MODEL=read_model, **settings)
        worker.start()
        try:
            first_at, first_count, last_at = self._wait_inputs(worker, count)
            found = asyncio.run(self._outputs(prefix, expected))
        finally:
            worker.stop()
        verdict = compare(expected, found)
        self.report.checks[f"{key}_outputs"] = {
            "expected": {k: len(v) for k, v in expected.as_json().items() if k.endswith("_ids")},
            **verdict.counts(),
            "problems": verdict.problems(),
        }
        return (count - first_count) / max(last_at - first_at, 1e-6)

    async def _outputs(self, prefix: str, expected: Expected) -> dict[Kind, list[dict[str, Any]]]:
        """Read the worker's outputs until they hold every id the ledger expects, or the
        deadline."""
        names = {prefix + name: kind for name, kind in OUTPUTS.items()}
        found: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in OUTPUTS.values()}
        missing = {kind: set(expected.of(kind)) for kind in OUTPUTS.values()}
        async for topic, value, _ in _read(self.bootstrap, names, min(self.scale.timeout, 120),
                                           self.kafka):
            found[names[topic]].append(value)
            missing[names[topic]].discard(value["abandonment_id"])
            if not any(missing.values()):
                break
        return found

    async def _load(self, prefix: str, messages: Iterable[Message], total: int = 0) -> None:
        await create_topics(self.bootstrap, [prefix + name for name in INPUTS.values()],
                            self.kafka)
        topics = {logical: prefix + name for logical, name in INPUTS.items()}
        progress = Progress(total or len(messages))  # type: ignore[arg-type]
        await produce(self.bootstrap, messages, topics, on_sent=progress.advance,
                      kafka=self.kafka)
        progress.close()

    def _live_publisher(self, topics: dict[Topic, str]) -> live.Publish:
        """Publishes messages live to ``topics`` (``live.hold``'s ``publish``)."""

        async def publish(messages: list[Message], on_sent: Callable[[int], None]) -> int:
            return await produce_live(self.bootstrap, messages, topics, on_sent=on_sent,
                                      kafka=self.kafka)

        return publish

    # -- live rate --------------------------------------------------------------------------

    def live(self) -> None:
        """Figure j: the highest steady rate one worker keeps up with (``bench.live``)."""
        scale, prefix = self.scale, self.prefix("live")
        topics = {logical: prefix + name for logical, name in INPUTS.items()}
        asyncio.run(create_topics(self.bootstrap, list(topics.values()), self.kafka))
        worker = self._worker("j", prefix, CARTWATCH_ABANDON_AFTER=str(LIVE_ABANDON_AFTER),
                              CARTWATCH_READ_MODEL="off", CARTWATCH_BATCH_INPUT="true")
        url = f"http://127.0.0.1:{worker.env['CARTWATCH_WEB_PORT']}"
        worker.start()

        processed, publish = _inputs_read(url), self._live_publisher(topics)

        steps: list[live.Step] = []
        try:
            poll(lambda: worker.check_alive() or processes.ready_count(worker) > 0,
                 scale.timeout, "the live worker to be ready")
            poll(lambda: worker.check_alive() or _answers(processed), scale.timeout,
                 "the live worker's web server")
            for number, target in enumerate(scale.live_rates):
                messages = live.upcoming_messages(target, scale.live_seconds,
                                                  seed=100 + number,
                                                  abandon_after=LIVE_ABANDON_AFTER)
                self.say(f"j: {target:,.0f} events/s for {scale.live_seconds:.0f} s "
                         f"({len(messages):,} messages)")
                step = asyncio.run(live.hold(messages, target, publish, processed,
                                             baseline=processed()))
                steps.append(step)
                self.say(f"j: published {step.rate:,.0f} events/s, at most "
                         f"{step.max_lag:.2f} s behind")
                if not step.sustained:
                    break
        finally:
            worker.stop()
        self.report.checks["j_steps"] = [
            {"target": s.target, "published_per_s": round(s.rate), "max_lag_s": round(
                s.max_lag, 2), "sustained": s.sustained} for s in steps]
        best = live.highest_sustained(steps)
        label = (f"live rate kept up with (under {live.MAX_LAG:.0f} s behind for "
                 f"{scale.live_seconds:.0f} s)")
        last = steps[-1] if steps else None
        note = ("the fastest step was kept up with: the producer or the steps end here"
                if last is not None and last.sustained else
                f"next step {last.rate:,.0f}/s fell {last.max_lag:.1f} s behind"
                if last is not None else "no step ran")
        self.report.add(Figure("j", label, None if best is None else best.rate, "events/s",
                               note=note))

    # -- the operator API under load --------------------------------------------------------

    def api(self) -> None:
        """Figures k and k99: the operator API's requests/s and p99 latency with
        ``api_clients`` requests always in flight from another process
        (``bench.api_load``), while the worker reads live events, abandons carts and writes
        them into the read model the requests read."""
        scale, prefix = self.scale, self.prefix("api")
        topics = {logical: prefix + name for logical, name in INPUTS.items()}
        asyncio.run(create_topics(self.bootstrap, list(topics.values()), self.kafka))
        worker = self._worker("k", prefix, CARTWATCH_ABANDON_AFTER=str(API_ABANDON_AFTER))
        url = f"http://127.0.0.1:{worker.env['CARTWATCH_WEB_PORT']}"
        result_path = self.workdir / "k-client" / "result.json"
        client = processes.Process(
            "k-client", [sys.executable, "-m", "cartwatch_dev.bench.api_load", "--url", url,
                         "--seconds", str(scale.api_seconds), "--concurrency",
                         str(scale.api_clients), "--output", str(result_path)],
            processes.environment({}), self.workdir / "k-client")

        processed, publish = _inputs_read(url), self._live_publisher(topics)

        worker.start()
        try:
            poll(lambda: worker.check_alive() or processes.ready_count(worker) > 0,
                 scale.timeout, "the API worker to be ready")
            poll(lambda: worker.check_alive() or _answers(lambda: _ok(url + "/readyz")),
                 scale.timeout, "the API worker's /readyz to say 200 (read model loaded)")
            messages = live.live_messages(scale.api_rate, scale.api_seconds, time.time() + 1.0,
                                          seed=300, abandon_after=API_ABANDON_AFTER)
            self.say(f"k: {scale.api_clients} API clients for {scale.api_seconds:.0f} s while "
                     f"the worker reads {scale.api_rate:,.0f} events/s")
            client.start()
            step = asyncio.run(live.hold(messages, scale.api_rate, publish, processed,
                                         baseline=processed()))
            answers = processes.wait_result(client, result_path, scale.timeout)
        finally:
            client.stop()
            worker.stop()
        self.report.checks["k_api"] = {**answers, "events": {
            "target": step.target, "published_per_s": round(step.rate),
            "max_lag_s": round(step.max_lag, 2), "sustained": step.sustained}}
        failed = answers["failed"]
        load = (f"{answers['concurrency']} clients in another process, the worker reading "
                f"{step.rate:,.0f} events/s")
        self.report.add(Figure(
            "k", f"operator API requests/s ({load})", float(answers["requests_per_s"]),
            "requests/s", note=f"{failed} failed; the worker at most {step.max_lag:.1f} s "
            "behind its input" + ("" if step.sustained else " (fell behind)")))
        self.report.add(Figure(
            "k99", "operator API p99 latency under that load", answers["p99_ms"], "ms",
            note=f"p50 {answers['p50_ms']} ms; per endpoint in checks.k_api"))

    # -- timers, memory, recovery -----------------------------------------------------------

    def timers(self, parts: Collection[str] = ("timers", "memory", "recovery")) -> None:
        """One worker tracking many carts: timer precision and tick cost (``timers``), its
        memory (``memory``), its restart (``recovery``); ``parts`` picks which."""
        scale, prefix = self.scale, self.prefix("timer")
        self.say(f"loading {scale.tracked_carts:,} tracked carts")
        asyncio.run(self._load(
            prefix, silent_carts(scale.tracked_carts, time.time(), prefix="tracked",
                                 store_id="tracked"),
            total=scale.tracked_carts,
        ))
        worker = self._worker(
            "timers", prefix, CARTWATCH_ABANDON_AFTER="1d",
            CARTWATCH_STORE_ABANDON_AFTER=f"silent={scale.silent_after}s",
        )
        worker.start()
        try:
            first_at, first_count, last_at = self._wait_inputs(worker, scale.tracked_carts)
            self.report.checks["tracked_ingest_events_per_s"] = round(
                (scale.tracked_carts - first_count) / max(last_at - first_at, 1e-6))
            if "timers" in parts:
                self._precision(worker, prefix)
                self._tick_cost(worker)
            if "memory" in parts:
                rss = worker.rss_bytes() / MB
                self.report.add(Figure("g", f"worker RSS, {self._tracked()} tracked carts",
                                       rss, "MB", floor="<= 400 MB", ok=rss <= 400))
            if "recovery" in parts:
                self._recovery(worker)
        finally:
            worker.stop()

    def _tracked(self) -> str:
        total = self.scale.tracked_carts + self.scale.silent_carts
        return f"{total / 1e6:.2g}M" if total >= 1e6 else f"{total:,}"

    def _precision(self, worker: Process, prefix: str) -> None:
        scale = self.scale
        self.say(f"e: {scale.silent_carts:,} carts go silent at once")
        silent_at = time.time()
        asyncio.run(self._load(
            prefix, silent_carts(scale.silent_carts, silent_at, store_id="silent"),
            total=scale.silent_carts,
        ))
        _, _, read_at = self._wait_inputs(worker, scale.tracked_carts + scale.silent_carts)
        due = silent_at + scale.silent_after
        if read_at > due:
            raise BenchError(f"the worker read the silent carts {read_at - due:.1f} s after "
                             "their deadline; raise Scale.silent_after")
        delays = asyncio.run(self._delays(prefix, due))
        label = f"timer delay, {scale.silent_carts:,} carts silent at once"
        if len(delays) < scale.silent_carts:
            raise BenchError(f"only {len(delays)} of {scale.silent_carts} abandonments arrived")
        delays.sort()
        p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
        self.report.add(Figure("e.p50", f"{label}: p50", statistics.median(delays), "s"))
        self.report.add(Figure("e.p99", f"{label}: p99", p99, "s", floor="<= 1 s", ok=p99 <= 1))
        self.report.add(Figure("e.max", f"{label}: max", delays[-1], "s"))

    async def _delays(self, prefix: str, due: float) -> list[float]:
        """Deadline to abandoned message (its broker timestamp), per silent cart."""
        delays: list[float] = []
        timeout = due - time.time() + self.scale.timeout
        topic = {prefix + "cart-abandoned": "abandoned"}
        async for _, value, timestamp_ms in _read(self.bootstrap, topic, timeout, self.kafka):
            if value["store_id"] == "silent":
                deadline = datetime.fromisoformat(value["abandoned_at"]).timestamp()
                delays.append(timestamp_ms / 1000 - deadline)
                if len(delays) >= self.scale.silent_carts:
                    break
        return delays

    def _tick_cost(self, worker: Process) -> None:
        url = f"http://127.0.0.1:{worker.env['CARTWATCH_WEB_PORT']}"
        label = f"timer tick cost, {self._tracked()} tracked carts, none due"
        before = processes.counters(url)
        if "ticks" not in before:
            self.report.add(Figure("f", label, None, "ms",
                                   note="not measured: the worker does not count its ticks"))
            return
        after = poll(lambda: (c := processes.counters(url))["ticks"] >= before["ticks"] + 20
                     and c, 60, "20 timer ticks", 0.2)
        ticks = after["ticks"] - before["ticks"]
        mean_ms = (after["tick_ns"] - before["tick_ns"]) / ticks / 1e6
        self.report.add(Figure("f", label, mean_ms, "ms", floor="< 5 ms", ok=mean_ms < 5,
                               note=f"max {after['tick_ns_max'] / 1e6:.2f} ms since start"))

    def _recovery(self, worker: Process) -> None:
        self.say("h: restart")
        worker.stop()
        seen = processes.ready_count(worker)
        started = time.monotonic()
        worker.start()
        poll(lambda: worker.check_alive() or processes.ready_count(worker) > seen,
             self.scale.timeout, "the restarted worker to recover")
        seconds = time.monotonic() - started
        self.report.add(Figure("h", f"restart recovery, {self._tracked()} carts", seconds, "s",
                               floor="<= 60 s", ok=seconds <= 60))

    # -- the operator read model ------------------------------------------------------------

    def read_model(self) -> None:
        """Figures r: both read-model backends fed and queried (``bench.read_model``); the
        PostgreSQL server is the bench's own (``stack.postgres``), with durable settings."""
        # Imported here, not at the top: the rolling upgrade runs the previous release's
        # `cartwatch` with these dev tools, and its streams package has no read-model backends.
        from cartwatch_dev.bench.read_model import ReadModelRun
        from cartwatch_dev.stack import postgres
        from streams.operator.backends import ReadModelStore
        from streams.operator.pgstore import PostgresReadModel
        from streams.operator.store import ReadModel

        stores: dict[str, ReadModelStore] = {
            "sqlite": ReadModel(self.workdir / "read-model.sqlite3")}
        missing: dict[str, str] = {}
        server = None
        try:
            if postgres.bin_dir() is None:
                missing["pg"] = "PostgreSQL is not installed (apt-get install postgresql)"
            else:
                server = postgres.start(self.workdir / "postgres", BENCH_POSTGRES)
                url = postgres.create_database(server, "read_model")
                stores["pg"] = PostgresReadModel(url, server.app_password)
            ReadModelRun(Synthetic(self.scale.read_model_abandonments), stores, self.report,
                         self.say, repetitions=self.scale.read_model_repetitions,
                         missing=missing).run()
        finally:
            for store in stores.values():
                store.close()
            if server is not None:
                postgres.stop(server)

    # -- notifier ---------------------------------------------------------------------------

    def notifier(self) -> None:
        emails = self.scale.notifier_emails
        self.say(f"i: notifier, {emails:,} reminders into the bench's SMTP sink")
        run = NotifierRun(self.bootstrap, self.run_id, self.prefix("notify"), emails,
                          self.scale.timeout, self.say, self.kafka)
        result = run.measure(lambda env: self._worker("i", run.prefix, **env), _free_port())
        self.report.checks["i_emails"] = result.checks
        rate = result.rate
        note = f"{emails:,} emails, each once" if result.exactly_once else (
            "NOT exactly once: see checks.i_emails")
        self.report.add(Figure("i", "notifier throughput into a local SMTP server", rate,
                               "emails/s", floor=">= 500 emails/s",
                               ok=None if rate is None else rate >= 500 and result.exactly_once,
                               note=note))


async def _read(
    bootstrap: str, topics: Iterable[str], timeout: float, kafka: KafkaSettings
) -> Any:
    """Yield ``(topic, JSON value, timestamp ms)`` from the start of ``topics`` until timeout."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **client_options(kafka))
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    yield tp.topic, json.loads(record.value), record.timestamp
    finally:
        await consumer.stop()


async def create_topics(bootstrap: str, names: list[str], kafka: KafkaSettings) -> None:
    """Create the run's input topics and wait for their leaders (a worker must see them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])

        async def led() -> bool:
            described = await admin.describe_topics(names)
            return all(t["error_code"] == 0 and len(t["partitions"]) == PARTITIONS
                       and all(p["leader"] >= 0 for p in t["partitions"]) for t in described)

        deadline = time.monotonic() + 30
        while not await led():
            if time.monotonic() > deadline:
                raise BenchError(f"topics {names} have no leaders after 30 s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def _answers(check: Callable[[], object]) -> bool:
    """Does ``check`` run without a connection error (a web server that is up)?"""
    try:
        check()
    except OSError:
        return False
    return True


def _inputs_read(url: str) -> Callable[[], int]:
    """Counts every input the worker at ``url`` has read (``live.hold``'s ``processed``)."""
    return lambda: sum(v for k, v in processes.counters(url).items() if k.startswith("in:"))


def _ok(url: str) -> None:
    """Raise unless ``url`` answers 200 (urlopen raises on 4xx and 5xx)."""
    with urlopen(url, timeout=5):
        pass


def _free_port() -> int:
    """A port nothing listens on right now, for a worker's web server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
