"""``cartwatch chaos``: run the fault scenarios against a real broker and print the report."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import click

from cartwatch_dev.chaos.deployment import Deployment
from cartwatch_dev.chaos.disk import CannotMount, disk_full
from cartwatch_dev.chaos.network import net_blackhole, net_latency, net_loss, net_reset
from cartwatch_dev.chaos.releases import ReleaseUnavailable, upgrade_from_previous_release
from cartwatch_dev.chaos.report import ScenarioResult, render
from cartwatch_dev.chaos.scenarios import (
    broker_restart,
    hostile_input,
    kill9,
    rebalance,
    smtp_outage,
    soak,
)
from cartwatch_dev.chaos.stack import PrivateStack
from cartwatch_dev.stack.kafka import broker_reachable
from config.bootstrap import parse_bootstrap
from config.kafka import KafkaSettings
from config.settings import SettingsError, load_settings
from streams.kafka_check import KafkaAccessError, check_cluster

ON_DEPLOYMENT: dict[str, Callable[[Deployment], Awaitable[ScenarioResult]]] = {
    "kill9": kill9,
    "rebalance": rebalance,
    "hostile-input": hostile_input,
    "disk-full": disk_full,
    "rolling-upgrade": upgrade_from_previous_release,
}
WITH_MAIL = ("kill9", "rebalance", "soak", "disk-full", "rolling-upgrade")
NETWORK: dict[str, Callable[[PrivateStack, Path], Awaitable[ScenarioResult]]] = {
    "net-reset": net_reset,
    "net-blackhole": net_blackhole,
    "net-latency": net_latency,
    "net-loss": net_loss,
}
"""On one private stack whose broker the workers reach only through the fault proxy."""
SCENARIOS = (*ON_DEPLOYMENT, "smtp-outage", "broker-restart", *NETWORK)
"""What ``cartwatch chaos`` runs by default; the soak only when asked (it takes minutes)."""
CHOICES = (*SCENARIOS, "soak")


async def run_scenarios(names: list[str], bootstrap: str | None, workdir: Path,
                        kafka: KafkaSettings | None = None, minutes: float = 3.0
                        ) -> list[str]:
    """Run ``names`` in order; returns the report lines of each as soon as it is done.

    ``kafka``: how to connect to ``bootstrap`` (a private stack is always plaintext)."""
    results: list[ScenarioResult] = []
    not_run: list[str] = []
    private: PrivateStack | None = None
    networked: PrivateStack | None = None
    if bootstrap is None and any(n != "broker-restart" and n not in NETWORK for n in names):
        private = PrivateStack(workdir / "shared-stack")
        await asyncio.to_thread(private.up)
        bootstrap = private.bootstrap
        kafka = None
    try:
        for name in names:
            click.echo(f"running {name} ...", err=True)
            if name == "broker-restart":
                results.append(await broker_restart(workdir / name))
                click.echo(render(results[-1:]), err=True)
                continue
            if name in NETWORK:
                if networked is None:
                    networked = PrivateStack(workdir / "net-stack", smtp=True, proxied=True)
                    await asyncio.to_thread(networked.up)
                results.append(await NETWORK[name](networked, workdir))
                click.echo(render(results[-1:]), err=True)
                continue
            assert bootstrap is not None
            deployment = Deployment(bootstrap, workdir / name,
                                    prefix=f"chaos-{name}-{uuid.uuid4().hex[:8]}",
                                    kafka=kafka or KafkaSettings())
            await deployment.create_topics()
            # each scenario its own mail server, so its Maildir holds only its reminders
            mail = PrivateStack(workdir / name / "mail-stack", kafka=False, smtp=True)
            await asyncio.to_thread(mail.up)
            try:
                if name == "smtp-outage":
                    results.append(await smtp_outage(deployment, mail))
                elif name == "soak":
                    deployment.mail = mail.smtp
                    results.append(await soak(deployment, minutes=minutes, out_dir=workdir))
                else:
                    deployment.mail = mail.smtp if name in WITH_MAIL else None
                    results.append(await ON_DEPLOYMENT[name](deployment))
            except (CannotMount, ReleaseUnavailable) as exc:  # say so, judge the others
                not_run.append(f"{name}: not run: {exc}")
                click.echo(not_run[-1], err=True)
                continue
            finally:
                deployment.stop_all()
                await asyncio.to_thread(mail.down)
            click.echo(render(results[-1:]), err=True)
    finally:
        for stack in (private, networked):
            if stack is not None:
                await asyncio.to_thread(stack.down)
    return [render(results), *not_run, "", "ALL OK: nothing lost, no duplicate email" if all(
        result.ok for result in results) else "FAILED"]


def _answers(bootstrap: str, kafka: KafkaSettings) -> bool:
    """Does a broker answer with these settings? One that refuses them stops the command."""
    if kafka.security_protocol == "PLAINTEXT":
        return broker_reachable(bootstrap)
    try:
        return asyncio.run(check_cluster(bootstrap, kafka, [])) is not None
    except KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("chaos")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(CHOICES),
              help="Run only these (repeatable) [default: all but soak].")
@click.option("--minutes", type=click.FloatRange(min=1.0), default=3.0, show_default=True,
              help="How long the soak scenario's load runs.")
@click.option("--broker", default=None,
              help="kafka://host:port for the scenarios that do not restart the broker "
                   "[default: the configured broker if it answers, else a private stack].")
@click.option("--out-dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Where worker logs and data go [default: a new temporary directory].")
def chaos(scenarios: tuple[str, ...], broker: str | None, workdir: Path | None,
          minutes: float) -> None:
    """Inject faults into real workers under seeded load and report what was lost or repeated.

    kill -9 a worker 5 times, kill one of two workers (rebalance), hostile input, stop the
    SMTP server for a while, stop and restart the broker (always on a private stack: a broker
    others use is never restarted), and network faults between the workers and the broker
    (connection resets, a blackhole longer than the session, 500 ms latency, emulated 5 %
    loss; on a private stack whose workers connect through a fault-injecting proxy), and a
    full data directory (a small tmpfs filled under load; mounting it needs root), and a
    rolling upgrade from the previous release (its code from this checkout's git history).
    Reminders go to a private SMTP server per scenario.
    ``--scenario soak --minutes N``: steady load with a rebalance every few minutes, RSS, open
    descriptors and lags sampled every 10 s into soak.csv and soak.png in the out dir.
    Exits non-zero unless every scenario emitted exactly the expected outputs.
    """
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # outages are the point here
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    address = parse_bootstrap(broker or settings.broker)
    bootstrap: str | None = address  # None: a private stack is started
    if not _answers(address, settings.kafka):
        if broker:
            raise click.ClickException(f"no Kafka broker answers at {broker}")
        click.echo(f"no broker at {bootstrap}: starting a private stack", err=True)
        bootstrap = None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="cartwatch-chaos-"))
    click.echo(f"cartwatch chaos: workers' logs in {workdir}", err=True)
    lines = asyncio.run(run_scenarios(list(scenarios or SCENARIOS), bootstrap, workdir,
                                      settings.kafka, minutes))
    click.echo("\n".join(lines))
    if lines[-1] != "ALL OK: nothing lost, no duplicate email":
        raise SystemExit(1)
