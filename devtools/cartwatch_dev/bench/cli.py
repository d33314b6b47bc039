"""`cartwatch bench`: run every contender and measurement once, print the table, write JSON."""

from __future__ import annotations

import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from cartwatch_dev.bench.measurements import Bench, Scale
from cartwatch_dev.bench.processes import BenchError
from cartwatch_dev.bench.report import Report
from config.bootstrap import parse_bootstrap
from config.settings import SettingsError, load_settings

GROUPS = ("throughput", "live", "api", "timers", "memory", "recovery", "notifier", "read-model")
"""Parts of a run ``--only`` can pick; timers, memory and recovery share one worker."""


@click.command("bench")
@click.option("--quick", is_flag=True, help="Small inputs: proves the bench works (CI), "
              "its figures mean nothing.")
@click.option("--broker", default=None,
              help="kafka://host:port [default: CARTWATCH_BROKER / settings].")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-results.json"), show_default=True)
@click.option("--only", "only", multiple=True, type=click.Choice(GROUPS),
              help="Run only these groups (repeatable) [default: all]: throughput (a, b, b0, "
              "c, d, d2), live (j), api (k, k99), timers (e, f), memory (g), recovery (h), "
              "notifier (i), read-model (r.*, SQLite against PostgreSQL; no broker).")
@click.option("--abandonments", type=click.IntRange(min=100), default=None,
              help="Abandonments the read-model group feeds [default: 1,000,000; --quick "
              "20,000].")
@click.option("--state-dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where contenders keep state and logs [default: a temporary "
                                 "directory] (not --workdir: that is Faust's own option).")
def bench(quick: bool, broker: str | None, output: Path, only: tuple[str, ...],
          abandonments: int | None, workdir: Path | None) -> None:
    """Throughput against baselines and Quix Streams, timer precision, memory, recovery."""
    try:
        settings = load_settings()
        bootstrap = parse_bootstrap(broker or settings.broker)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    command = "cartwatch bench" + (" --quick" if quick else "") + "".join(
        f" --only {group}" for group in only) + (
        f" --abandonments {abandonments}" if abandonments else "")
    scale = Scale.named(quick)
    if abandonments:
        scale = replace(scale, read_model_abandonments=abandonments)
    groups = set(only or GROUPS)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    report = Report(mode="quick" if quick else "full", command=command)
    with tempfile.TemporaryDirectory(prefix="cartwatch-bench-", dir=workdir) as tmp:
        run = Bench(bootstrap, scale, Path(tmp), report,
                    say=lambda line: click.echo(f"== {line}", err=True), kafka=settings.kafka)
        try:
            if "throughput" in groups:
                run.throughput()
            if "live" in groups:
                run.live()
            if "api" in groups:
                run.api()
            timer_parts = groups & {"timers", "memory", "recovery"}
            if timer_parts:
                run.timers(timer_parts)
            if "notifier" in groups:
                run.notifier()
            if "read-model" in groups:
                run.read_model()
        except BenchError as exc:
            report.write_json(output)
            raise click.ClickException(f"{exc}\n(logs in {shlex.quote(tmp)})") from None
    report.write_json(output)
    click.echo(report.table())
    click.echo(f"machine: {report.machine}\nJSON: {output}")
    if not report.floors_hold():
        click.echo("some floors do not hold (marked NO)", err=True)
    sys.stdout.flush()
