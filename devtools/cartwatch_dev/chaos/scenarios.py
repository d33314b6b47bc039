"""The fault scenarios: real workers, a real broker, seeded load with known expectations.

Each scenario publishes traffic from the load generator (``cartwatch_dev.loadgen``), whose ledger
says which abandonments (with their carts), recoveries and reactivations a correct pipeline
emits and which reminders it sends, injects
its faults while the traffic flows, reads every output topic, and returns a
``ScenarioResult``: expected versus seen, duplicates, and how late the deadlines fired.

Traffic is live: each message is sent when the wall clock reaches its event time, as a shop
would, so deadlines fall due while faults happen. A fault that stops the producer too (the
broker restart) gets a quiet window instead: carts with a message inside it are left out, so
the expectations never depend on how long the outage lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cartwatch_dev.chaos.deployment import (
    REMINDERS,
    STORED_TABLES,
    Deployment,
    OutputLog,
    stored_versions,
)
from cartwatch_dev.chaos.emails import judge_emails
from cartwatch_dev.chaos.hostile import hostile_messages
from cartwatch_dev.chaos.report import ScenarioResult
from cartwatch_dev.chaos.soak import (
    SAMPLE_EVERY,
    Rebalance,
    Sample,
    judge,
    parse_metrics,
    plot,
    rss_and_fds,
    scrape,
    write_csv,
)
from cartwatch_dev.chaos.stack import PrivateStack
from cartwatch_dev.chaos.workers import WorkerProcess
from cartwatch_dev.loadgen.ledger import KINDS, Expected
from cartwatch_dev.loadgen.model import LoadSpec, Message, generate_traffic

SETTLE_SECONDS = 3.0
"""After everything expected arrived, keep reading this long to catch extras and duplicates."""
REBALANCE_SLACK = 2.0
"""Allowed on top of the measured rebalance time: timer resolution, tick round trip, load."""
CATCH_UP_SECONDS = 2.0
"""After a worker owns its partitions again, how long its backlog (abandonments and purchases
that fell due meanwhile) may take to reach the notifier: a reminder due in an outage is
decided about then, so a follow-up before it may win."""
EVENT_TIME = {"abandoned": "abandoned_at", "recovered": "recovered_at",
              "reactivated": "reactivated_at"}
"""The field that holds when an output's transition happened, per output kind."""


def caught_up_blackouts(blackouts: Sequence[tuple[float, float]],
                        published: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Each outage's window, extended to when the workers had caught up with it.

    A step due in an outage is decided once the notifier has read the transitions that fell
    due meanwhile, and a backlog can take longer than ``CATCH_UP_SECONDS`` after the worker
    owns its partitions again. ``published`` holds (event time, publication time) of the
    outputs: the last one whose transition happened in the window and was published late
    tells when the lifecycle had caught up, and the notifier's hop comes on top of that. A
    purchase made before then cancels the step, as it would any step decided after it: a
    reminder for a bought cart is worse than none.
    """
    outputs = list(published)
    extended = []
    for start, end in blackouts:
        caught_up = max((at for happened, at in outputs if start <= happened <= end),
                        default=end - CATCH_UP_SECONDS)
        extended.append((start, max(end, caught_up + CATCH_UP_SECONDS)))
    return extended


BROKER_RECONNECT_SECONDS = 10.0
"""After the broker is back, how long the workers may take to reconnect and catch up."""


@dataclass(frozen=True)
class Load:
    """Live traffic and what it must produce."""

    spec: LoadSpec
    messages: list[Message]
    expected: Expected

    @property
    def carts(self) -> int:
        return len({message.key for message in self.messages})

    @property
    def start(self) -> float:
        return self.spec.start


def live_load(
    seed: int, carts: int, abandon_after: float, span: float, *, lead: float = 2.0,
    quiet: tuple[float, float] | None = None,
) -> Load:
    """Sessions starting within ``span`` s from ``lead`` s from now, in event time = wall time.

    ``quiet`` (seconds after the start) drops every cart with a message inside that window.
    """
    spec = LoadSpec(seed=seed, carts=carts, abandon_after=abandon_after, span=span,
                    start=time.time() + lead)
    traffic = generate_traffic(spec)
    if quiet is not None:
        low, high = spec.start + quiet[0], spec.start + quiet[1]
        traffic = traffic.without(
            {m.key.decode() for m in traffic.messages if low <= m.sent_at <= high})
    return Load(spec, traffic.messages, traffic.expected())


def _parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


async def _wait_outputs(log: OutputLog, expected: Expected, timeout: float) -> None:
    """Poll until every expected output arrived (or the deadline), then read a while longer."""
    deadline = time.monotonic() + timeout
    await log.reread()
    while time.monotonic() < deadline and not (
        log.ids("abandoned") >= expected.abandonment_ids
        and log.ids("recovered") >= expected.recovered_ids
        and log.ids("reactivated") >= expected.reactivated_ids
    ):
        await asyncio.sleep(1.0)
        await log.reread()
    await asyncio.sleep(SETTLE_SECONDS)
    await log.reread()


def _result(name: str, load: Load, log: OutputLog, faults: list[str], lag: float,
            blackouts: list[tuple[float, float]] | None = None) -> ScenarioResult:
    delays = [record.timestamp - _parse(record.value["abandoned_at"])
              for record in log.first_emitted().values()]
    published = [(_parse(record.value[field]), record.timestamp)
                 for kind, field in EVENT_TIME.items() for record in log.of(kind)]
    return ScenarioResult(
        name=name, faults=faults, carts=load.carts, messages=len(load.messages),
        expected=load.expected,
        outputs={kind: [record.value for record in log.of(kind)] for kind in KINDS},
        duplicate_outputs=log.duplicates(),
        dead_letters=Counter(r.value["error_kind"] for r in log.of("dead_letter")),
        max_delay=max(delays, default=None), producer_lag=lag,
        blackouts=caught_up_blackouts(blackouts or (), published),
    )


async def _run_live(
    deployment: Deployment, load: Load, name: str,
    inject: Callable[[list[str], list[tuple[float, float]]], Awaitable[None]], timeout: float,
) -> ScenarioResult:
    """Send ``load`` live while ``inject`` runs its faults (noting them, and the windows in
    which no worker could decide a reminder); then collect and judge."""
    log = deployment.output_log()
    faults: list[str] = []
    blackouts: list[tuple[float, float]] = []
    lag: list[float] = []
    producing = asyncio.create_task(deployment.send_live(load.messages, lag))
    try:
        await inject(faults, blackouts)
    finally:
        await producing
    await _wait_outputs(log, load.expected, timeout)
    return await _judged(deployment, name, load, log, faults, lag[0] if lag else 0.0,
                         blackouts)


async def _judged(deployment: Deployment, name: str, load: Load, log: OutputLog,
                  faults: list[str], lag: float, blackouts: list[tuple[float, float]],
                  timeout: float = 30.0) -> ScenarioResult:
    """The result, with the reminders judged when the workers send any."""
    result = _result(name, load, log, faults, lag, blackouts)
    if deployment.mail is None:
        return result
    unknown = await _unknown_outcomes(deployment)
    deadline = time.monotonic() + timeout
    while True:
        judge_emails(result, REMINDERS, deployment.mail.maildir, unknown)
        if result.emails == result.emails_expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
        result = _result(name, load, log, faults, lag, blackouts)
    await asyncio.sleep(SETTLE_SECONDS)  # a duplicate would come late
    result = _result(name, load, log, faults, lag, blackouts)
    judge_emails(result, REMINDERS, deployment.mail.maildir, await _unknown_outcomes(deployment))
    return result


async def _unknown_outcomes(deployment: Deployment) -> dict[tuple[str, int], float]:
    """(abandonment, step) -> when the notifier logged it skipped because a crash left its
    send's outcome unknown (at most once: it is not sent again)."""
    return {(record["abandonment_id"], record["step"]): _parse(record["at"])
            for record in await deployment.notification_log()
            if record.get("status") == "skipped" and record.get("reason") == "outcome_unknown"}


async def _start(worker: WorkerProcess) -> float:
    before = worker.ready_count()
    worker.start()
    return await worker.wait_ready(after=before)


async def kill9(deployment: Deployment, *, carts: int = 600, kills: int = 5,
                abandon_after: float = 3.0, seed: int = 7) -> ScenarioResult:
    """kill -9 the worker ``kills`` times under load, restarting it each time."""
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    worker = deployment.worker("w1")
    await _start(worker)
    rng = random.Random(seed)
    load = live_load(seed, carts, abandon_after, span=12.0 * kills)

    async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
        await asyncio.sleep(max(0.0, load.start - time.time()))
        for number in range(1, kills + 1):
            await asyncio.sleep(rng.uniform(1.0, 4.0))  # under load, at a random moment
            killed_at = time.time()
            worker.kill()
            ready_at = await _start(worker)
            blackouts.append((killed_at, ready_at + CATCH_UP_SECONDS))
            faults.append(f"kill -9 #{number} at +{killed_at - load.start:.1f} s; "
                          f"restarted, owning partitions again after "
                          f"{ready_at - killed_at:.1f} s")

    return await _run_live(deployment, load, "kill9", inject, timeout=90.0)


async def rebalance(deployment: Deployment, *, carts: int = 400, abandon_after: float = 3.0,
                    seed: int = 11) -> ScenarioResult:
    """Two workers; kill -9 one under load. Its partitions and timers move to the survivor,
    and no deadline fires later than the rebalance took (plus ``REBALANCE_SLACK``)."""
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    first, second = deployment.worker("w1"), deployment.worker("w2")
    await _start(first)
    before = first.ready_count()
    await _start(second)
    await first.wait_ready(after=before)  # the rebalance that split the partitions
    load = live_load(seed, carts, abandon_after, span=20.0)
    measured: dict[str, float] = {}

    async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
        await asyncio.sleep(max(0.0, load.start + 8.0 - time.time()))
        victim, survivor = first, second
        moved = victim.owned_partitions()
        before = survivor.ready_count()
        killed_at = time.time()
        victim.kill()
        ready_at = await survivor.wait_ready(after=before)
        blackouts.append((killed_at, ready_at + CATCH_UP_SECONDS))
        measured["rebalance"] = ready_at - killed_at
        owned = survivor.owned_partitions()
        faults.append(f"kill -9 of {victim.name} (partitions {sorted(moved)}) at "
                      f"+{killed_at - load.start:.1f} s; {survivor.name} owned "
                      f"{sorted(owned)} with rebuilt timers {measured['rebalance']:.1f} s later")
        measured["all_moved"] = float(owned == set(range(deployment.partitions)))

    result = await _run_live(deployment, load, "rebalance", inject, timeout=60.0)
    result.delay_bound = measured["rebalance"] + REBALANCE_SLACK
    if not measured["all_moved"]:
        result.failures.append("the survivor does not own every partition")
    return result


async def broker_restart(workdir: Path, *, carts: int = 500, abandon_after: float = 3.0,
                         down_for: float = 3.0, seed: int = 13) -> ScenarioResult:
    """Stop the broker under load and start it again; the workers carry on by themselves.

    Runs on a private stack (never restart a broker others use). Carts with a message in the
    outage window are left out of the traffic (a shop cannot publish either), so late
    publishing does not change what the pipeline must emit.
    """
    outage_at, window = 8.0, 25.0
    stack = PrivateStack(workdir / "stack", smtp=True)
    await asyncio.to_thread(stack.up)  # the stack's readiness checks run their own event loop
    try:
        deployment = Deployment(stack.bootstrap, workdir, prefix="broker-restart",
                                settings={"CARTWATCH_ABANDON_AFTER": str(abandon_after)},
                                mail=stack.smtp)
        try:
            await deployment.create_topics()
            workers = [deployment.worker("w1"), deployment.worker("w2")]
            await _start(workers[0])
            before = workers[0].ready_count()
            await _start(workers[1])
            await workers[0].wait_ready(after=before)
            load = live_load(seed, carts, abandon_after, span=outage_at + window + 8.0,
                             quiet=(outage_at - 1.0, outage_at + window))

            async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
                await asyncio.sleep(max(0.0, load.start + outage_at - time.time()))
                stopped_at = time.time()
                await asyncio.to_thread(stack.stop_service, "kafka")
                await asyncio.sleep(down_for)  # the outage itself
                await asyncio.to_thread(stack.start_service, "kafka")
                back_at = time.time()
                # the workers reconnect by themselves, some seconds after the broker is back
                blackouts.append((stopped_at, back_at + BROKER_RECONNECT_SECONDS))
                faults.append(f"broker stopped at +{stopped_at - load.start:.1f} s, "
                              f"back {back_at - stopped_at:.1f} s later")

            result = await _run_live(deployment, load, "broker-restart", inject, timeout=60.0)
            result.notes.append(f"private stack at {stack.bootstrap}; carts active in the "
                                f"outage window left out of the traffic")
            exited = [w.name for w in workers if not w.alive]
            if exited:
                result.failures.append(f"workers exited: {exited}")
            return result
        finally:
            deployment.stop_all()
    finally:
        await asyncio.to_thread(stack.down)


async def hostile_input(deployment: Deployment, *, carts: int = 200, abandon_after: float = 3.0,
                        seed: int = 17) -> ScenarioResult:
    """Recorded good traffic with every kind of bad message interleaved, replayed by one worker:
    each bad one is dead-lettered with its reason, the worker keeps running, the good ones
    give exactly the expected outputs."""
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    spec = LoadSpec(seed=seed, carts=carts, abandon_after=abandon_after,
                    span=10.0).ending_before(time.time())
    traffic = generate_traffic(spec)
    good = traffic.messages
    load = Load(spec, good, traffic.expected())
    bad = hostile_messages(time.time())
    step = max(1, len(good) // (len(bad) + 1))
    mixed: list[tuple[str, bytes | None, bytes | None]] = []
    # one bad message after every ``step`` good ones, the rest at the end
    for index, message in enumerate(good):
        if index % step == 0 and index // step < len(bad):
            hostile = bad[index // step]
            mixed.append((hostile.topic, hostile.key, hostile.value))
        mixed.append((message.topic, message.key, message.value))
    mixed.extend((h.topic, h.key, h.value) for h in bad[len(mixed) - len(good):])
    log = deployment.output_log()
    worker = deployment.worker("w1")
    # The whole backlog first: a worker caught up with a half-sent backlog would rightly
    # fire its deadlines by the wall clock, long after the recorded events.
    await deployment.send(mixed)
    await _start(worker)
    deadline = time.monotonic() + 60.0
    await log.reread()
    while len(log.of("dead_letter")) < len(bad) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        await log.reread()
    await _wait_outputs(log, load.expected, timeout=60.0)
    result = _result("hostile-input", load, log,
                     [f"{len(bad)} hostile messages: " + ", ".join(h.label for h in bad)], 0.0)
    result.dead_letters_expected = Counter(h.kind for h in bad)
    result.max_delay = None  # a backlog replay: every deadline was already due
    if not worker.alive:
        result.failures.append("the worker exited")
    reasonless = [r.value for r in log.of("dead_letter") if not r.value.get("error")]
    if reasonless:
        result.failures.append(f"{len(reasonless)} dead letters without a reason")
    return result


async def smtp_outage(deployment: Deployment, mail_stack: PrivateStack, *, carts: int = 400,
                      abandon_after: float = 3.0, down_for: float = 10.0,
                      seed: int = 19) -> ScenarioResult:
    """Stop the SMTP server under load and start it again: the reminders due meanwhile wait,
    retried with backoff, and each is delivered once when it is back."""
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    deployment.mail = mail_stack.smtp
    await _start(deployment.worker("w1"))
    load = live_load(seed, carts, abandon_after, span=25.0)

    async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
        # No blackout: the worker decides the reminders on time and retries sending them.
        await asyncio.sleep(max(0.0, load.start + 8.0 - time.time()))
        stopped_at = time.time()
        await asyncio.to_thread(mail_stack.stop_service, "smtp")
        await asyncio.sleep(down_for)
        await asyncio.to_thread(mail_stack.start_service, "smtp")
        faults.append(f"SMTP server stopped at +{stopped_at - load.start:.1f} s, "
                      f"back {time.time() - stopped_at:.1f} s later")

    return await _run_live(deployment, load, "smtp-outage", inject, timeout=60.0)


OLD_READS_NEW = "newer than this worker's"
"""What a worker logs (``streams.stored``, once per format) when it reads a record of a newer
release than its own: in a rolling upgrade, the previous release's worker must log it."""


async def rolling_upgrade(deployment: Deployment, old_release: Mapping[str, str], *,
                          carts: int = 500, abandon_after: float = 3.0, seed: int = 29
                          ) -> ScenarioResult:
    """A rolling upgrade under load, with the previous release's worker started with the
    environment ``old_release`` adds (e.g. ``PYTHONPATH`` at that release's source tree).

    ``w1`` (previous release) owns every partition; ``w2`` (current) joins and takes half of
    them, restoring what the previous release wrote; ``w2`` is stopped and started again
    (SIGTERM, as when a new instance is rescheduled or the upgrade paused), so the previous
    release takes back partitions whose state the current one wrote; then ``w1`` is stopped
    with SIGTERM and started on the current release with its data directory, as the upgrade's
    last step. Each step waits for the rebalance it causes.

    The result's ``stored_versions`` are the format versions each table's changelog holds, and
    a note says whether ``w1`` logged reading the current release's records (``OLD_READS_NEW``),
    so a caller can check that the two releases really read each other's state."""
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    first, second = deployment.worker("w1"), deployment.worker("w2")
    current = dict(first.env)
    first.env.update(old_release)
    await _start(first)
    load = live_load(seed, carts, abandon_after, span=40.0)

    async def step(at: float, what: str, act: Callable[[], Awaitable[object]],
                   watched: WorkerProcess, faults: list[str],
                   blackouts: list[tuple[float, float]]) -> None:
        """At ``at`` s into the load, ``act``, and wait for the rebalance ``watched`` sees."""
        await asyncio.sleep(max(0.0, load.start + at - time.time()))
        before, began = watched.ready_count(), time.time()
        await act()
        await watched.wait_ready(after=before)
        done = time.time()
        blackouts.append((began, done + CATCH_UP_SECONDS))
        owners = ", ".join(f"{w.name} {sorted(w.owned_partitions())}"
                           for w in (first, second) if w.alive)
        faults.append(f"{what} at +{began - load.start:.1f} s; {done - began:.1f} s later: "
                      f"{owners}")

    async def upgrade_w1() -> None:
        first.env = current
        await _start(first)

    async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
        await step(6.0, "w2 (current) joins", lambda: _start(second), first, faults, blackouts)
        await step(14.0, "w2 stopped (SIGTERM)", lambda: asyncio.to_thread(second.stop), first,
                   faults, blackouts)
        await step(18.0, "w2 started again", lambda: _start(second), first, faults, blackouts)
        await step(26.0, "w1 (previous) stopped (SIGTERM)",
                   lambda: asyncio.to_thread(first.stop), second, faults, blackouts)
        await step(28.0, "w1 started on the current release", upgrade_w1, second, faults,
                   blackouts)

    result = await _run_live(deployment, load, "rolling-upgrade", inject, timeout=60.0)
    for table in STORED_TABLES:
        versions = result.stored_versions[table] = await stored_versions(deployment, table)
        result.notes.append(f"{table} changelog: " + ", ".join(
            f"{count} of format {version}" for version, count in sorted(versions.items())))
    read_new = [line for line in first.log().splitlines() if OLD_READS_NEW in line]
    result.notes.append("w1 (previous release) read the current release's records: "
                        + ("; ".join(line.split("] ", 3)[-1] for line in read_new) or "never"))
    exited = [worker.name for worker in (first, second) if not worker.alive]
    if exited:
        result.failures.append(f"workers exited: {exited}")
    return result


SOAK_ACTIONS = ("w2 joins", "kill -9 w2", "w2 joins", "w2 leaves (SIGTERM)")
"""The rebalances of a soak, in turn: a worker joining, one dying, one leaving cleanly."""


async def _sample_workers(workers: list[WorkerProcess], start: float, samples: list[Sample],
                          stop: asyncio.Event) -> None:
    """Sample every running worker each ``SAMPLE_EVERY`` s until ``stop`` is set."""
    number = 0
    while not stop.is_set():
        at = time.time() - start
        for worker in workers:
            if not worker.alive or worker.process is None:
                continue
            pid = worker.process.pid
            rss, fds = rss_and_fds(pid)
            text = await asyncio.to_thread(scrape, worker.web_url)
            lag, partitions, timer_sum, timer_count, rocksdb = (
                parse_metrics(text) if text is not None else (None, 0, None, None, None))
            samples.append(Sample(number, at, worker.name, pid, rss, fds, lag, partitions,
                                  timer_sum, timer_count, rocksdb))
        number += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


async def soak(deployment: Deployment, *, minutes: float = 3.0, carts_per_second: float = 4.0,
               abandon_after: float = 3.0, seed: int = 23, out_dir: Path | None = None
               ) -> ScenarioResult:
    """Steady live load for ``minutes`` with a rebalance every few minutes (``SOAK_ACTIONS`` in
    turn, a third of the run apart, 5 minutes at most); the long-lived worker ``w1`` and the
    lags are sampled throughout and judged by ``soak.judge``, besides the usual exact outputs
    and reminders. Writes ``soak.csv`` and ``soak.png`` to ``out_dir`` (the deployment's dir)."""
    span = minutes * 60.0
    warmup = min(300.0, span / 3)
    every = max(50.0, min(300.0, span / 3))
    out_dir = out_dir or deployment.workdir
    out_dir.mkdir(parents=True, exist_ok=True)
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    first, second = deployment.worker("w1"), deployment.worker("w2")
    await _start(first)
    load = live_load(seed, int(carts_per_second * span), abandon_after, span=span)
    samples: list[Sample] = []
    rebalances: list[Rebalance] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_workers([first, second], load.start, samples, stop))

    async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
        number = 0
        # the last one leaves time for its recovery to show in the samples under load
        while (number + 1) * every <= span - 20.0:
            await asyncio.sleep(max(0.0, load.start + (number + 1) * every - time.time()))
            action = SOAK_ACTIONS[number % len(SOAK_ACTIONS)]
            before, began = first.ready_count(), time.time()
            if action == "w2 joins":
                await _start(second)
            elif action == "kill -9 w2":
                second.kill()
            else:
                await asyncio.to_thread(second.stop)
            await first.wait_ready(after=before)
            done = time.time()
            blackouts.append((began, done + CATCH_UP_SECONDS))
            rebalances.append(Rebalance(began - load.start, done - load.start, action))
            faults.append(f"{action} at +{began - load.start:.0f} s, "
                          f"rebalanced {done - began:.1f} s later")
            number += 1

    try:
        result = await _run_live(deployment, load, "soak", inject, timeout=90.0)
    finally:
        stop.set()
        await sampler
    verdict = judge(samples, rebalances, warmup=warmup, partitions=2 * deployment.partitions,
                    long_lived=first.name)
    csv_path, png_path = out_dir / "soak.csv", out_dir / "soak.png"
    write_csv(samples, csv_path)
    plot(samples, rebalances, warmup, png_path,
         f"cartwatch soak: {minutes:g} min, {load.carts} carts, {len(rebalances)} rebalances")
    result.failures.extend(verdict.problems)
    if not first.alive:
        result.failures.append("w1 exited")
    growth = verdict.rss_growth
    fds = [s.fds for s in samples if s.worker == first.name and s.at >= warmup]
    result.notes.append(
        f"w1 RSS after the {warmup:.0f} s warm-up "
        + ("?" if growth is None or verdict.rss_start is None or verdict.rss_end is None else
           f"{verdict.rss_start / 2**20:.0f} -> {verdict.rss_end / 2**20:.0f} MiB "
           f"({growth:+.1%})")
        + ("" if verdict.rocksdb_start is None or verdict.rocksdb_end is None else
           f", RocksDB's share {verdict.rocksdb_start / 2**20:.0f} -> "
           f"{verdict.rocksdb_end / 2**20:.0f} MiB")
        + (f"; open fds {fds[0]} -> {fds[-1]}" if fds else "")
        + "; lags near zero again "
        + ", ".join("never" if back is None else f"{back:.0f} s" for back in verdict.recoveries)
        + " after each rebalance")
    result.notes.append(f"{len(samples)} samples: {csv_path}, {png_path}")
    return result
