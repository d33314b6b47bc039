"""`cartwatch loadgen`: publish seeded shopping traffic to the configured cluster."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click

from config.settings import SettingsError, load_settings
from config.stack import parse_bootstrap
from streams.loadgen.model import LoadSpec, expected_outcomes, generate
from streams.loadgen.produce import Progress, produce


@click.command("loadgen")
@click.option("--seed", default=1, show_default=True, help="Same seed, same traffic.")
@click.option("--carts", default=10_000, show_default=True)
@click.option("--stores", default=3, show_default=True)
@click.option("--catalog", default=200, show_default=True, help="Products in the catalog.")
@click.option("--rate", type=float, default=None, help="Messages per second [default: max].")
@click.option("--abandon-probability", type=click.FloatRange(0, 1), default=0.4,
              show_default=True)
@click.option("--purchase-recover-probability", "recover_probability",
              type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="An abandoned cart is bought later.")
@click.option("--reactivate-probability", type=click.FloatRange(0, 1), default=0.2,
              show_default=True)
@click.option("--duplicate-probability", type=click.FloatRange(0, 1), default=0.01,
              show_default=True)
@click.option("--late-probability", type=click.FloatRange(0, 1), default=0.01,
              show_default=True)
@click.option("--span", type=float, default=3_600.0, show_default=True,
              help="Seconds of event time over which sessions start.")
@click.option("--broker", default=None,
              help="kafka://host:port[;...] [default: CARTWATCH_BROKER / settings].")
@click.option("--expect", "expect_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the expected abandonment/recovery ids here (JSON).")
def loadgen(
    seed: int, carts: int, stores: int, catalog: int, rate: float | None,
    abandon_probability: float, recover_probability: float, reactivate_probability: float,
    duplicate_probability: float, late_probability: float, span: float,
    broker: str | None, expect_path: Path | None,
) -> None:
    """Publish realistic cart sessions, timed so that every deadline has passed now.

    Purchases are whatever is not abandoned or emptied. The abandon time is the worker's
    (CARTWATCH_ABANDON_AFTER), so --expect lists what that worker must emit.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    spec = LoadSpec(
        seed=seed, carts=carts, stores=stores, catalog=catalog,
        abandon_probability=abandon_probability, recover_probability=recover_probability,
        reactivate_probability=reactivate_probability,
        duplicate_probability=duplicate_probability, late_probability=late_probability,
        abandon_after=settings.abandon_after, span=span,
    ).ending_before(time.time())
    messages = generate(spec)
    if expect_path is not None:
        expect_path.write_text(json.dumps(expected_outcomes(spec, messages).as_json()))
    topics = {name: settings.topic(name) for name in ("cart_events", "purchase_events")}
    bootstrap = parse_bootstrap(broker or settings.broker)
    click.echo(f"{len(messages):,} messages for {carts:,} carts -> {bootstrap}", err=True)
    progress = Progress(len(messages))
    asyncio.run(produce(bootstrap, messages, topics, rate=rate, on_sent=progress.advance,
                        kafka=settings.kafka))
    progress.close()
