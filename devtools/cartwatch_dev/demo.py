"""`cartwatch demo`: see cartwatch work in five minutes, on this machine, with no setup.

It starts the local stack (or reuses the one running), runs a worker whose times are short
enough to watch (carts abandoned after 20 s, reminders 10 s and 40 s later), feeds it endless
realistic shopping traffic whose shoppers opt in to marketing as real ones do, and prints where
to look: the operator dashboard, and the subject of every reminder the stack's mail server
receives. Ctrl-C stops the worker and the traffic; the stack keeps running for the next demo.

The plan (settings, worker environment, what to print) is made by pure functions below; the
shell around them starts processes and talks to Kafka, the worker's API and the Maildir.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import aiohttp
import click
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cartwatch_dev.chaos.workers import WorkerError, WorkerProcess
from cartwatch_dev.loadgen.model import LoadSpec, topic_names
from cartwatch_dev.loadgen.produce import produce_live
from cartwatch_dev.loadgen.shoppers import Shoppers, continuous, dress
from cartwatch_dev.stack import StackError, StackState, status, up
from cartwatch_dev.stack.settings import SettingsError, StackSettings
from config.durations import parse_duration
from config.settings import TopicNames

STORES: dict[str, str] = {
    "store-0": "Corner Tea Shop",
    "store-1": "Blue Mug Ceramics",
    "store-2": "Trail & Sock Co",
}
"""The demo's shops: the load generator's store ids, with names the emails can show."""
PARTITIONS = 4
TOPIC_ALREADY_EXISTS = 36
STATUS_EVERY = 10.0
"""Seconds between two status lines."""


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo sets up, decided before anything starts."""

    abandon_after: float = 20.0
    reminders: tuple[float, ...] = (10.0, 40.0)
    carts_per_minute: int = 30
    prefix: str = "demo"
    web_port: int = 6066
    workdir: Path = Path(".cartwatch/demo")
    seed: int = 1
    shoppers: Shoppers = field(default_factory=Shoppers)

    @property
    def app_id(self) -> str:
        return f"cartwatch-{self.prefix}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def dashboard_url(self) -> str:
        return f"{self.web_url}/cartwatch/dashboard/"

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{getattr(TopicNames(), name)}"

    def load(self, start: float) -> LoadSpec:
        """A round of ``carts_per_minute`` sessions a minute, around the worker's abandon time."""
        return LoadSpec(seed=self.seed, carts=self.carts_per_minute, stores=len(STORES),
                        span=60.0, abandon_after=self.abandon_after, start=start)


def parse_steps(text: str) -> tuple[float, ...]:
    """``"10s,40s"`` -> (10.0, 40.0): reminder delays after the abandonment, increasing."""
    try:
        steps = tuple(parse_duration(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not steps or list(steps) != sorted(set(steps)) or steps[0] <= 0:
        raise click.BadParameter(f"{text!r}: give increasing delays such as 10s,40s")
    return steps


def _seconds(value: float) -> str:
    return f"{value:g}s"


def demo_config(plan: DemoPlan) -> str:
    """The worker's TOML settings: the reminder sequence, consent required, the shops' names.

    The last step uses the ``last-chance`` template, the others ``reminder``; consent stays
    required (as in production), which the demo's shoppers satisfy by opting in.
    """
    templates = ["reminder"] * (len(plan.reminders) - 1) + ["last-chance"]
    if len(plan.reminders) == 1:
        templates = ["reminder"]
    steps = ", ".join(f'{{after = "{_seconds(after)}", template = "{template}"}}'
                      for after, template in zip(plan.reminders, templates, strict=True))
    lines = [
        "# Written by `cartwatch demo`; rewritten at every start.",
        "[notifier]",
        'retry_initial = "0.5s"',
        'retry_max = "5s"',
        "",
        "[notifier.reminders]",
        f"steps = [{steps}]",
        "require_marketing_consent = true",
        'from_address = "reminders@shop.example"',
        'discount_code = "COMEBACK10"',
        f'unsubscribe_url = "{plan.web_url}/cartwatch/unsubscribe/"',
    ]
    for store_id, name in STORES.items():
        lines += ["", f"[notifier.stores.{store_id}]", f'store_name = "{name}"',
                  f'from_name = "{name}"',
                  f'shop_url = "https://{store_id}.{plan.shoppers.url_domain}/"']
    return "\n".join(lines) + "\n"


def worker_environment(plan: DemoPlan, state: StackState, base: Mapping[str, str]
                       ) -> dict[str, str]:
    """The worker's environment: ``base`` without the caller's own ``CARTWATCH_*`` settings
    (the demo must not pick up a production config), then the demo's."""
    workdir = plan.workdir.resolve()
    env = {key: value for key, value in base.items() if not key.startswith("CARTWATCH_")}
    env.update(
        CARTWATCH_BROKER=f"kafka://{state.bootstrap}",
        CARTWATCH_APP_ID=plan.app_id,
        CARTWATCH_TOPIC_PREFIX=f"{plan.prefix}.",
        CARTWATCH_PARTITIONS=str(PARTITIONS),
        CARTWATCH_DATA_DIR=str(workdir / "data"),
        CARTWATCH_WEB_PORT=str(plan.web_port),
        CARTWATCH_ABANDON_AFTER=_seconds(plan.abandon_after),
        CARTWATCH_TIMER_RESOLUTION="0.1",
        CARTWATCH_CONFIG=str(workdir / "cartwatch.toml"),
        CARTWATCH_NOTIFIER_ENABLED="true",
        CARTWATCH_LINK_SECRET_FILE=str(workdir / "link-secret"),
    )
    if state.smtp_address:
        host, _, port = state.smtp_address.rpartition(":")
        env.update(CARTWATCH_SMTP_HOST=host, CARTWATCH_SMTP_PORT=port)
    else:  # the stack sends mail to a remote server (CARTWATCH_SMTP_HOST): use it as told
        for name in ("CARTWATCH_SMTP_HOST", "CARTWATCH_SMTP_PORT"):
            if name in base:
                env[name] = base[name]
    return env


def introduction(plan: DemoPlan, state: StackState, started_stack: bool, log: Path) -> str:
    """What the user reads first: what runs, where to look, how to stop."""
    how = "started" if started_stack else "reusing"
    mail = (f"{state.maildir / 'new'}  (one file per message; subjects below)"
            if state.maildir else f"sent to {state.smtp_address or 'your SMTP server'}")
    steps = " and ".join(_seconds(after) for after in plan.reminders)
    return "\n".join([
        f"cartwatch demo ({how} the local stack in {state.stack_dir})",
        f"  Kafka       {state.bootstrap} (topics {plan.prefix}.*)",
        f"  worker      abandons a cart after {_seconds(plan.abandon_after)} of silence; "
        f"reminds {steps} later (log: {log})",
        f"  shoppers    {plan.carts_per_minute} new carts a minute in {len(STORES)} shops; "
        f"{plan.shoppers.consent_probability:.0%} of those with an address opt in to email",
        "",
        f"  Dashboard   {plan.dashboard_url}",
        f"  Emails      {mail}",
        "  Stop        Ctrl-C (the stack keeps running; `cartwatch stack down` stops it)",
        "",
    ])


def status_line(elapsed: float, totals: Mapping[str, int | None], emails: int) -> str:
    """One line of progress: carts by state from the worker's API, and emails received."""
    def shown(name: str) -> str:
        value = totals.get(name)
        return "?" if value is None else str(value)

    minutes, seconds = divmod(int(elapsed), 60)
    return (f"[{minutes:02d}:{seconds:02d}] abandoned {shown('abandoned')} · "
            f"came back {shown('reactivated')} · recovered {shown('recovered')} · "
            f"emails {emails}")


def mail_line(message: EmailMessage) -> str:
    recipient = str(message.get("X-RcptTo") or message.get("To") or "?")
    return f"  ✉ {recipient}: {message.get('Subject', '')}"


# -- the shell -------------------------------------------------------------------------------


def ensure_stack(settings: StackSettings) -> tuple[StackState, bool]:
    """The running stack in ``settings.stack_dir`` if every service is alive, else a new one.

    Returns the stack and whether this call started it.
    """
    state = status(settings.stack_dir)
    if state is not None and state.services and all(s.alive() for s in state.services):
        return state, False
    return up(settings), True


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create the input topics unless they exist: the worker must find them when it starts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, 1) for name in names], timeout_ms=30_000)
        errors = [(name, code) for name, code, *_ in response.topic_errors
                  if code not in (0, TOPIC_ALREADY_EXISTS)]
        if errors:
            raise click.ClickException(f"creating topics failed (topic, Kafka error): {errors}")
    finally:
        await admin.close()


class Mailbox:
    """Messages that arrived in the Maildir since the last look, oldest first."""

    def __init__(self, maildir: Path | None) -> None:
        self.maildir = maildir
        self.seen: set[str] = set()
        if maildir is not None:  # earlier demos' mail is not news
            self.seen = {path.name for path in self._files()}

    def _files(self) -> list[Path]:
        assert self.maildir is not None
        folders = [self.maildir / "new", self.maildir / "cur"]
        return [path for folder in folders if folder.is_dir() for path in folder.iterdir()]

    def new(self) -> list[EmailMessage]:
        if self.maildir is None:
            return []
        fresh = [path for path in self._files() if path.name not in self.seen]
        fresh.sort(key=lambda path: (path.stat().st_mtime, path.name))
        messages = []
        for path in fresh:
            self.seen.add(path.name)
            with contextlib.suppress(OSError):
                messages.append(email.message_from_bytes(
                    path.read_bytes(), policy=default_policy))
        return messages


async def totals(http: aiohttp.ClientSession, plan: DemoPlan) -> dict[str, int | None]:
    """Carts by status from the worker's API (None while it cannot answer)."""
    found: dict[str, int | None] = {}
    for name in ("abandoned", "reactivated", "recovered"):
        try:
            async with http.get(f"{plan.web_url}/cartwatch/api/carts/",
                                params={"status": name, "limit": "1"}) as response:
                found[name] = int((await response.json())["total"]) if response.ok else None
        except (aiohttp.ClientError, ValueError, KeyError):
            found[name] = None
    return found


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def run_demo(plan: DemoPlan, duration: float | None) -> None:
    if port_taken(plan.web_port):  # say so now, not as a worker crash after the stack started
        raise click.ClickException(
            f"port {plan.web_port} is in use (a `make run` worker?): stop it, or choose "
            "another with --web-port")
    settings = StackSettings.from_env()
    click.echo("Starting the local stack (first time: unpacks Kafka, ~1 min)...", err=True)
    state, started_stack = await asyncio.to_thread(ensure_stack, settings)
    if not state.bootstrap:
        raise click.ClickException("the stack runs no Kafka broker and CARTWATCH_BROKER is unset")
    workdir = plan.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cartwatch.toml").write_text(demo_config(plan))
    secret = workdir / "link-secret"
    if not secret.exists():  # kept: links in earlier demo emails stay valid
        secret.touch(mode=0o600)
        secret.write_text(secrets.token_hex(32) + "\n")
    await ensure_topics(state.bootstrap, [plan.topic("cart_events"),
                                          plan.topic("purchase_events")], PARTITIONS)
    worker = WorkerProcess(name="worker", env=worker_environment(plan, state, os.environ),
                           workdir=workdir)
    click.echo(f"Starting a worker ({worker.log_path})...", err=True)
    worker.start()
    try:
        await worker.wait_ready(0, timeout=180.0)
        await watch(plan, state, started_stack, worker, duration)
    finally:
        worker.stop()
        click.echo("Worker stopped. The stack still runs: `cartwatch stack down` stops it.")


async def watch(plan: DemoPlan, state: StackState, started_stack: bool,
                worker: WorkerProcess, duration: float | None) -> None:
    """Feed the load and print what happens until Ctrl-C, SIGTERM or ``duration``."""
    assert state.bootstrap is not None
    click.echo(introduction(plan, state, started_stack, worker.log_path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    begun = time.time()
    topics = topic_names(plan.topic)
    traffic = dress(continuous(plan.load(begun + 0.5)), plan.shoppers)
    load = asyncio.create_task(produce_live(state.bootstrap, traffic, topics))
    mailbox = Mailbox(state.maildir)
    emails = 0
    next_status = time.monotonic() + 2.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while not stop.is_set():
            if duration is not None and time.time() - begun >= duration:
                break
            if load.done():  # the broker went away, say: show why instead of idling
                load.result()
            if not worker.alive:
                raise WorkerError(f"the worker exited:\n{worker.log()[-3000:]}")
            for message in mailbox.new():
                emails += 1
                click.echo(mail_line(message))
            if time.monotonic() >= next_status:
                click.echo(status_line(time.time() - begun, await totals(http, plan), emails))
                next_status = time.monotonic() + STATUS_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    load.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await load
    click.echo(f"Stopping after {time.time() - begun:.0f} s: {emails} email(s) received.")


@click.command("demo")
@click.option("--abandon-after", default="20s", show_default=True,
              help="Silence after which a cart counts as abandoned.")
@click.option("--reminders", default="10s,40s", show_default=True,
              help="Reminder steps, after the abandonment (the last uses 'last-chance').")
@click.option("--carts-per-minute", type=click.IntRange(1, 10_000), default=30,
              show_default=True)
@click.option("--duration", type=float, default=None,
              help="Stop after this many seconds [default: at Ctrl-C].")
@click.option("--web-port", type=click.IntRange(1, 65535), default=6066, show_default=True,
              help="Port of the worker's dashboard and API.")
@click.option("--prefix", default="demo", show_default=True,
              help="Topic prefix and consumer group of the demo.")
@click.option("--state-dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".cartwatch/demo"), show_default=True,
              help="The worker's settings, state and log (not --workdir: that is Faust's own "
                   "option, which changes directory first).")
@click.option("--seed", type=int, default=None,
              help="Seed of the traffic [default: the clock, so carts are new every run].")
def demo(abandon_after: str, reminders: str, carts_per_minute: int, duration: float | None,
         web_port: int, prefix: str, workdir: Path, seed: int | None) -> None:
    """See cartwatch work: local stack, a worker with short times, live shoppers, reminders."""
    try:
        abandon = parse_duration(abandon_after)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--abandon-after") from None
    plan = DemoPlan(abandon_after=abandon, reminders=parse_steps(reminders),
                    carts_per_minute=carts_per_minute, prefix=prefix, web_port=web_port,
                    workdir=workdir, seed=int(time.time()) if seed is None else seed)
    try:
        asyncio.run(run_demo(plan, duration))
    except (StackError, SettingsError, WorkerError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C before the watch loop took over the signal
        sys.exit(130)
