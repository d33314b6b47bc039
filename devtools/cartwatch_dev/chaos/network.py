"""Network faults between the workers and the broker: resets, a blackhole, latency, loss.

Each scenario runs two workers on a private stack whose broker the workers reach only through
``FaultProxy`` (``PrivateStack(proxied=True)``), sends seeded live traffic straight to the
broker, injects its fault on the workers' connections while the traffic flows, and then asks
what a shop would: exactly the expected outputs, no reminder twice, both workers still running
and sharing the partitions (nobody restarted anything), and how long after the fault ended the
outputs came on time again (``recovery_time``).

The load keeps flowing for ``TAIL`` seconds after the fault, on every partition, so a worker
that stays stuck after the fault leaves abandonments missing and fails the scenario.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from cartwatch_dev.chaos.deployment import FAST_FAILOVER, INPUTS, Deployment, OutputLog
from cartwatch_dev.chaos.proxy import FaultProxy
from cartwatch_dev.chaos.report import ScenarioResult
from cartwatch_dev.chaos.scenarios import (
    CATCH_UP_SECONDS,
    Load,
    _judged,
    _parse,
    _wait_outputs,
    live_load,
)
from cartwatch_dev.chaos.stack import PrivateStack
from cartwatch_dev.chaos.workers import WorkerError, WorkerProcess
from cartwatch_dev.stack import clear_maildir
from config.kafka import client_options

FAULT_AT = 8.0
"""Seconds after the load starts: abandonments have been flowing for a while (the baseline)."""
TAIL = 12.0
"""Seconds of load after the fault ends: what shows a worker stuck after it."""
CARTS_PER_SECOND = 12
LATE_SLACK = 0.5
"""An output is late if it took this much longer than the slowest before the fault."""
RECOVERY_BOUND = 30.0
"""A worker not on time again this long after the fault ended counts as stuck."""
_PARTITIONER = DefaultPartitioner()
"""The load producer's: which partition a cart's messages go to."""
SESSION_TIMEOUT = float(FAST_FAILOVER["CARTWATCH_SESSION_TIMEOUT"].rstrip("s"))

Window = tuple[float, float]
Inject = Callable[[FaultProxy, Load, list[str]], Awaitable[Window]]
"""Injects the fault (noting it in the list) and returns its (start, end) wall-clock window."""


def recovery_time(log: OutputLog, load: Load, window: Window) -> float | None:
    """Seconds from the fault's end until the outputs flow normally again: every abandonment
    due before the end is out (the backlog), and one due after it came on time.

    On time means no later after its ``abandoned_at`` than the slowest one due before the
    fault (plus ``LATE_SLACK``). None if some expected abandonment never came (the exact-output
    check reports which) or none due after the fault came on time.
    """
    start, end = window
    first = log.first_emitted()
    if not load.expected.abandonment_ids <= set(first):
        return None
    delays = sorted((_parse(r.value["abandoned_at"]), r.timestamp) for r in first.values())
    baseline = max((emitted - due for due, emitted in delays if due < start), default=0.0)
    backlog = max((emitted for due, emitted in delays if due <= end), default=end)
    on_time = [emitted for due, emitted in delays
               if due > end and emitted - due <= baseline + LATE_SLACK]
    if not on_time:
        return None
    return max(0.0, backlog - end, min(on_time) - end)


async def _notification_history(deployment: Deployment, keys: list[tuple[str, int]]
                                 ) -> list[str]:
    """What the notifier logged (``notification-log``) about these reminders: the reason a
    missing one was skipped or failed."""
    wanted = set(keys)
    return [f"{r['abandonment_id']} step {r['step']}: {r['status']} "
            f"{r.get('reason') or r.get('error') or ''}".strip()
            for r in await deployment.notification_log()
            if (r.get("abandonment_id"), r.get("step")) in wanted]


def _sharing(workers: list[WorkerProcess], partitions: int) -> list[str]:
    """Problems with how the workers share the partitions after their latest rebalance:
    a worker that stayed out of the group (stuck) owns nothing, or still claims partitions
    the other took over."""
    owned = {worker.name: worker.owned_partitions() for worker in workers}
    problems = [f"{name} owns no partition" for name, mine in owned.items() if not mine]
    claimed = sum(len(mine) for mine in owned.values())
    if claimed != partitions or set().union(*owned.values()) != set(range(partitions)):
        problems.append(f"partitions not shared out exactly once: {owned}")
    return problems


async def _start_together(workers: list[WorkerProcess], partitions: int,
                          timeout: float = 120.0) -> None:
    """Start every worker at once (one rebalance instead of one per worker, which is most of
    a short test's time), then wait until each is ready and they share the partitions."""
    for worker in workers:
        worker.start()
    await asyncio.gather(*(worker.wait_ready(after=0, timeout=timeout) for worker in workers))
    deadline = time.monotonic() + timeout
    while _sharing(workers, partitions):
        if time.monotonic() > deadline:
            problems = _sharing(workers, partitions)
            raise WorkerError(f"workers never shared the partitions: {problems}")
        for worker in workers:
            if not worker.alive:
                raise WorkerError(f"worker {worker.name} exited:\n{worker.log()[-4000:]}")
        await asyncio.sleep(0.2)


async def _input_lag(deployment: Deployment) -> dict[str, int]:
    """Per input partition with a backlog, end offset minus the group's committed offset: a
    backlog left after the run means a worker stopped reading; none with outputs missing
    means input was skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=deployment.bootstrap,
                                group_id=deployment.app_id, enable_auto_commit=False,
                                **client_options(deployment.kafka))
    await consumer.start()
    try:
        tps = [TopicPartition(deployment.topic(name), number)
               for name in INPUTS for number in range(deployment.partitions)]
        ends = await consumer.end_offsets(tps)
        lag = {f"{tp.topic.rsplit('.', 1)[-1]}/{tp.partition}":
               ends[tp] - ((await consumer.committed(tp)) or 0) for tp in tps}
        return {name: behind for name, behind in lag.items() if behind}
    finally:
        await consumer.stop()


def _partitions_of(result: ScenarioResult, deployment: Deployment) -> dict[int, int]:
    """How many carts with a missing, unexpected or different output each partition holds."""
    verdict = result.verdict
    ids = set().union(*verdict.missing.values(), *verdict.unexpected.values(),
                      *verdict.different.values())
    carts = {abandonment.rsplit(":", 1)[0] for abandonment in ids}
    every = list(range(deployment.partitions))
    return dict(Counter(_PARTITIONER(cart.encode(), every, every) for cart in carts))


async def _network_scenario(stack: PrivateStack, workdir: Path, name: str, inject: Inject, *,
                            fault_seconds: float, abandon_after: float, seed: int,
                            workers: int = 2, must_rejoin: bool = False) -> ScenarioResult:
    """Start ``workers`` behind the proxy, send live load while ``inject`` runs, and judge.

    ``must_rejoin``: the fault outlasts the group session, so unless every worker rebalanced
    after it the fault was not felt and the run proves nothing."""
    proxy = stack.proxy
    assert proxy is not None, "network scenarios need PrivateStack(proxied=True)"
    proxy.clear()
    clear_maildir(stack.settings.maildir)  # the Maildir must hold this scenario's reminders only
    deployment = Deployment(stack.bootstrap, workdir / name,
                            prefix=f"{name}-{uuid.uuid4().hex[:8]}",
                            settings={"CARTWATCH_ABANDON_AFTER": str(abandon_after)},
                            mail=stack.smtp, worker_bootstrap=stack.worker_bootstrap)
    try:
        await deployment.create_topics()
        started = [deployment.worker(f"w{number}") for number in range(1, workers + 1)]
        await _start_together(started, deployment.partitions)
        span = FAULT_AT + fault_seconds + TAIL
        load = live_load(seed, int(CARTS_PER_SECOND * span), abandon_after, span=span)
        log = deployment.output_log()
        faults: list[str] = []
        lag: list[float] = []
        producing = asyncio.create_task(deployment.send_live(load.messages, lag))
        rebalances = {worker.name: worker.ready_count() for worker in started}
        try:
            await asyncio.sleep(max(0.0, load.start + FAULT_AT - time.time()))
            window = await inject(proxy, load, faults)
        finally:
            await asyncio.to_thread(proxy.clear)
            await producing
        await _wait_outputs(log, load.expected, timeout=RECOVERY_BOUND + 30.0)
        recovery = recovery_time(log, load, window)
        # Reminders decided while the workers were cut off or slow, and until they were on
        # time again, may lose a race with a follow-up: those are left to timing.
        disturbed_until = window[1] + (recovery or 0.0) + CATCH_UP_SECONDS
        result = await _judged(deployment, name, load, log, faults, lag[0] if lag else 0.0,
                               [(window[0], disturbed_until)])
        result.recovery = recovery
        if not result.ok:
            result.notes.append(f"input backlog after the run (uncommitted messages): "
                                f"{await _input_lag(deployment)}; partitions of the carts "
                                f"with outputs wrong: {_partitions_of(result, deployment)}")
        if result.missing_emails:
            history = await _notification_history(deployment, result.missing_emails[:5])
            result.notes.append(f"notification log of missing reminders: {history}")
        result.notes.append(
            f"{workers} workers via the proxy at {proxy.address} (broker {stack.bootstrap}); "
            f"{proxy.accepted} connections through it, {proxy.resets} reset")
        rebalances = {w.name: w.ready_count() - rebalances[w.name] for w in started}
        result.notes.append(f"rebalances per worker during and after the fault: {rebalances}")
        if must_rejoin and not all(rebalances.values()):
            result.failures.append("a worker never rejoined its group after the fault")
        exited = [worker.name for worker in started if not worker.alive]
        if exited:
            result.failures.append(f"workers exited: {exited}")
        else:
            result.failures.extend(_sharing(started, deployment.partitions))
        if recovery is None or recovery > RECOVERY_BOUND:
            result.failures.append(f"outputs not on time again within {RECOVERY_BOUND:.0f} s "
                                   f"of the fault's end")
        return result
    finally:
        proxy.clear()
        deployment.stop_all()


async def net_reset(stack: PrivateStack, workdir: Path, *, resets: int = 3,
                    every: float = 6.0, abandon_after: float = 3.0,
                    seed: int = 23) -> ScenarioResult:
    """Reset every worker connection (TCP RST both ways) ``resets`` times, ``every`` s apart."""

    async def inject(proxy: FaultProxy, load: Load, faults: list[str]) -> Window:
        times: list[float] = []
        for number in range(1, resets + 1):
            if number > 1:
                await asyncio.sleep(every)
            times.append(time.time())
            closed = await asyncio.to_thread(proxy.reset)
            faults.append(f"reset #{number} at +{times[-1] - load.start:.1f} s: "
                          f"{closed} connections")
        return times[0], times[-1]

    return await _network_scenario(stack, workdir, "net-reset", inject,
                                   fault_seconds=every * (resets - 1),
                                   abandon_after=abandon_after, seed=seed)


async def net_blackhole(stack: PrivateStack, workdir: Path, *, down_for: float = 10.0,
                        abandon_after: float = 3.0, seed: int = 29) -> ScenarioResult:
    """Forward nothing either way for ``down_for`` s, longer than the group session: the
    broker expires both workers, which must notice and rejoin once bytes flow again."""

    async def inject(proxy: FaultProxy, load: Load, faults: list[str]) -> Window:
        begun = time.time()
        await asyncio.to_thread(proxy.blackhole, True)
        await asyncio.sleep(down_for)  # the fault itself
        await asyncio.to_thread(proxy.blackhole, False)
        ended = time.time()
        faults.append(f"blackhole at +{begun - load.start:.1f} s for {ended - begun:.1f} s "
                      f"(session timeout {SESSION_TIMEOUT:.0f} s)")
        return begun, ended

    return await _network_scenario(stack, workdir, "net-blackhole", inject,
                                   fault_seconds=down_for, abandon_after=abandon_after,
                                   seed=seed, must_rejoin=down_for > SESSION_TIMEOUT)


async def _hold(proxy: FaultProxy, fault: str, level: float, seconds: float) -> Window:
    """Set the proxy's ``fault`` (``latency`` or ``loss``) to ``level`` for ``seconds``, then
    back to 0; returns when it began and ended."""
    begun = time.time()
    setattr(proxy, fault, level)
    await asyncio.sleep(seconds)  # the fault itself
    setattr(proxy, fault, 0.0)
    return begun, time.time()


async def net_latency(stack: PrivateStack, workdir: Path, *, latency: float = 0.5,
                      duration: float = 10.0, abandon_after: float = 3.0,
                      seed: int = 31) -> ScenarioResult:
    """Add ``latency`` s each way to every worker connection for ``duration`` s."""

    async def inject(proxy: FaultProxy, load: Load, faults: list[str]) -> Window:
        begun, ended = await _hold(proxy, "latency", latency, duration)
        faults.append(f"{latency * 1000:.0f} ms added each way at +{begun - load.start:.1f} s "
                      f"for {ended - begun:.1f} s")
        return begun, ended

    return await _network_scenario(stack, workdir, "net-latency", inject,
                                   fault_seconds=duration, abandon_after=abandon_after,
                                   seed=seed)


async def net_loss(stack: PrivateStack, workdir: Path, *, loss: float = 0.05,
                   duration: float = 15.0, abandon_after: float = 3.0,
                   seed: int = 37) -> ScenarioResult:
    """Emulated ``loss``: that fraction of chunks stalls 0.2-1 s, as a TCP retransmission does
    (a byte stream cannot drop a packet; see ``proxy``), for ``duration`` s."""

    async def inject(proxy: FaultProxy, load: Load, faults: list[str]) -> Window:
        begun, ended = await _hold(proxy, "loss", loss, duration)
        faults.append(f"{loss:.0%} emulated loss (chunk stalls of 0.2-1 s) at "
                      f"+{begun - load.start:.1f} s for {ended - begun:.1f} s")
        return begun, ended

    return await _network_scenario(stack, workdir, "net-loss", inject, fault_seconds=duration,
                                   abandon_after=abandon_after, seed=seed)
