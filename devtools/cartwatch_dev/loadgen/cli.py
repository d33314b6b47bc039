"""`cartwatch loadgen`: publish seeded shopping traffic to the configured cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path

import click

from cartwatch_dev.loadgen.model import LoadSpec, generate_traffic, topic_names
from cartwatch_dev.loadgen.produce import Progress, produce, produce_live
from cartwatch_dev.loadgen.shoppers import Shoppers, continuous, dress
from config.bootstrap import parse_bootstrap
from config.settings import SettingsError, load_settings


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
@click.option("--identified-probability", type=click.FloatRange(0, 1), default=0.7,
              show_default=True, help="The shopper is logged in: every cart event names them "
              "(others give an address at checkout only).")
@click.option("--consent-probability", type=click.FloatRange(0, 1), default=0.6,
              show_default=True, help="A shopper with an address opts in to marketing email.")
@click.option("--consent/--no-consent", default=True, show_default=True,
              help="Send customer.marketing_consent (--no-consent: leave it out, so the "
              "default reminder policy emails nobody).")
@click.option("--cart-urls/--no-cart-urls", default=True, show_default=True,
              help="Send cart_url with every cart event.")
@click.option("--live", is_flag=True, help="Publish sessions as they happen, from now on, "
              "--carts of them starting within every --span seconds, until Ctrl-C or "
              "--duration (default: a backlog whose deadlines have all passed).")
@click.option("--duration", type=float, default=None, help="With --live: stop after this many "
              "seconds.")
@click.option("--expect", "expect_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Write the expected outputs here (JSON: ids and each abandoned cart).")
def loadgen(
    seed: int, carts: int, stores: int, catalog: int, rate: float | None,
    abandon_probability: float, recover_probability: float, reactivate_probability: float,
    duplicate_probability: float, late_probability: float, span: float,
    identified_probability: float, consent_probability: float, consent: bool,
    cart_urls: bool, live: bool, duration: float | None, broker: str | None,
    expect_path: Path | None,
) -> None:
    """Publish realistic cart sessions, timed so that every deadline has passed now, or
    --live as they happen.

    Purchases are whatever is not abandoned or emptied. The abandon time is the worker's
    (CARTWATCH_ABANDON_AFTER), so --expect lists what that worker must emit. Shoppers carry
    an address, a marketing opt-in and a cart link as shops send them, so a worker with
    reminders enabled sends some.
    """
    if live and expect_path is not None:
        raise click.UsageError("--expect needs a backlog; it cannot be used with --live")
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
    )
    shoppers = Shoppers(identified_probability=identified_probability,
                        consent_probability=consent_probability, consent=consent,
                        cart_urls=cart_urls)
    topics = topic_names(settings.topic)
    bootstrap = parse_bootstrap(broker or settings.broker)
    if live:
        start = time.time() + 1.0
        until = None if duration is None else start + duration
        click.echo(f"live: {carts:,} carts starting every {span:g} s -> {bootstrap}; "
                   "Ctrl-C stops", err=True)
        live_messages = dress(continuous(replace(spec, start=start)), shoppers)
        count = 0

        def counted(sent: int) -> None:
            nonlocal count
            count += sent

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a live run ends
            asyncio.run(produce_live(bootstrap, live_messages, topics, until=until,
                                     kafka=settings.kafka,
                                     on_sent=counted))
        click.echo(f"{count:,} messages sent", err=True)
        return
    traffic = generate_traffic(spec.ending_before(time.time()))
    messages = list(dress(traffic.messages, shoppers))
    if expect_path is not None:
        expect_path.write_text(json.dumps(traffic.expected().as_json()))
    click.echo(f"{len(messages):,} messages for {carts:,} carts -> {bootstrap}", err=True)
    progress = Progress(len(messages))
    asyncio.run(produce(bootstrap, messages, topics, rate=rate, on_sent=progress.advance,
                        kafka=settings.kafka))
    progress.close()
