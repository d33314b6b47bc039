"""The reminder notifier end to end: real broker, real `cartwatch worker`, real SMTP servers."""

import asyncio
import itertools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientSession, web
from aiosmtpd.controller import Controller
from cartwatch_dev.stack import read_maildir
from kafka_helpers import create_topics, free_ports
from pipeline_harness import PARTITIONS, Pipeline, Shop, parse_metrics, partition_for

from schemas.notifications import unsubscribe_key
from streams.notifier.tokens import verify_token

pytestmark = [pytest.mark.integration, pytest.mark.compat]

SECRET = "test-link-secret-0123456789"
Entries = list[dict[str, Any]]


def configure(pipeline: Pipeline, tmp_path: Path, toml: str, smtp_port: int, **env: str) -> None:
    """Point the workers at a TOML config with the notifier enabled and at an SMTP port."""
    config = tmp_path / "cartwatch.toml"
    config.write_text(toml)
    pipeline.settings.update(
        CARTWATCH_CONFIG=str(config), CARTWATCH_NOTIFIER_ENABLED="true",
        CARTWATCH_LINK_SECRET=SECRET, CARTWATCH_SMTP_HOST="127.0.0.1",
        CARTWATCH_SMTP_PORT=str(smtp_port), **env,
    )


async def read_topic(
    pipeline: Pipeline, name: str, done: Callable[[Entries], bool],
    timeout: float = 60.0, settle: float = 0.0,
) -> Entries:
    """Every record of a topic from the start until ``done`` held (then ``settle`` s more)."""
    records = (await pipeline.collect(lambda out: done(out[name]), timeout, settle,
                                      topics=[name]))[name]
    assert done(records), f"{name}: condition not met in {timeout} s: {records}"
    return records


def outcomes(log: Entries) -> set[tuple[str, int, str, str | None]]:
    """(abandonment, step, status, reason) of the final entries (retries left out)."""
    return {(e["abandonment_id"], e["step"], e["status"], e["reason"])
            for e in log if not e["retrying"]}


def unsubscribe(email: str, store_id: str | None = None) -> tuple[str, bytes, bytes]:
    value = {"type": "unsubscribe", "email": email, "store_id": store_id,
             "unsubscribed_at": datetime.now(UTC).isoformat()}
    return "cartwatch-unsubscribes", unsubscribe_key(email), json.dumps(value).encode()


def wait_for_mail(maildir: Path, count: int, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while len(messages := read_maildir(maildir)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} message(s), got {len(messages)}")
        time.sleep(0.05)
    return messages


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def notifier_pipeline(pipeline: Pipeline) -> Pipeline:
    """The pipeline plus the notifier's input topic, created before any worker subscribes."""
    await create_topics(pipeline.bootstrap, [pipeline.topic("cartwatch-unsubscribes")], PARTITIONS,
                        kafka=pipeline.kafka)
    return pipeline


class MailServer:
    """A second SMTP server (the stack's aiosmtpd process) a test can stop and start."""

    def __init__(self, maildir: Path) -> None:
        # The port stays bound (not listening) until the server has it: a client connecting
        # while the server is down is refused, and the kernel never picks this port as the
        # client's own (a connection to itself would block the server's bind).
        self._reserved = socket.socket()
        self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._reserved.bind(("127.0.0.1", 0))
        self.port = self._reserved.getsockname()[1]
        self.maildir = maildir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cartwatch_dev.stack.smtp", "--port", str(self.port),
             "--maildir", str(self.maildir)],
            cwd=Path(__file__).resolve().parents[1],
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self._reserved.close()
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self._reserved.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def messages(self) -> list:
        return read_maildir(self.maildir)


@pytest.fixture
def mail_server(tmp_path: Path):
    server = MailServer(tmp_path / "maildir")
    try:
        yield server
    finally:
        server.stop()


TWO_STEPS = """
abandon_after = "2s"
[notifier]
retry_initial = "0.2s"
retry_max = "1s"
[notifier.reminders]
store_name = "Tea & Co"
from_address = "hello@tea.example"
from_name = "Tea & Co"
bcc = ["audit@tea.example"]
discount_code = "COMEBACK10"
unsubscribe_url = "https://tea.example/unsubscribe"
steps = [{after = "2s", template = "reminder"}, {after = "8s", template = "last-chance"}]
"""


def customer(email: str, consent: bool = True, **fields: Any) -> dict[str, Any]:
    return {"email": email, "marketing_consent": consent, **fields}


async def test_two_step_sequence_with_recovery_unsubscribe_consent_and_cap(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    pipeline = notifier_pipeline
    mail_server.start()
    # bob's purchase must be read before his second step: commits every 0.1 s make waiting for
    # his first step's feedback short, and the second step comes 6 s after the first
    configure(pipeline, tmp_path, TWO_STEPS, mail_server.port,
              CARTWATCH_OFFSET_COMMIT_INTERVAL="0.1s")
    pipeline.worker("w1").start().wait_ready()
    shop = Shop("tea")
    # ann's two carts share a partition, so the order of their steps (1 s apart), which decides
    # the one capped, is their deadlines' order on one partition, never two partitions' race
    ann2 = next(cart for cart in (f"c-ann{n}" for n in itertools.count(2))
                if partition_for(cart) == partition_for("c-ann"))
    await pipeline.send([
        unsubscribe("Cid@Example.com"),
        shop.cart_event("c-ann", "item_added",
                        customer=customer("ann@example.com", name="Ann <b>"),
                        cart_url="https://tea.example/cart/c-ann",
                        item={"sku": "TEA-1", "name": "Green <Tea>", "quantity": 2,
                              "unit_price": "4.50", "currency": "EUR",
                              "image_url": "https://tea.example/img/tea-1.png"}),
        shop.add("c-ann", "MUG", price="12.00"),
        shop.add("c-bob", "MUG", customer=customer("bob@example.com")),
        shop.add("c-cid", "MUG", customer=customer("cid@example.com")),
        shop.add("c-dan", "MUG", customer=customer("dan@example.com", consent=False)),
        shop.add(ann2, "MUG", offset=1, customer=customer("ann@example.com")),
    ])
    # bob's first reminder goes out (and its feedback reaches his cart); he then buys: his
    # second step is cancelled, and the recovery says a reminder was sent
    await read_topic(pipeline, "cartwatch-reminders-sent",
                     lambda records: any(r["cart_id"] == "c-bob" for r in records))
    await pipeline.wait_committed(topics=["cartwatch-reminders-sent"])
    shop.base = datetime.now(UTC)
    await pipeline.send([shop.purchase("c-bob", total="10.00")])

    expected = {
        ("c-ann:1", 1, "sent", None), ("c-ann:1", 2, "sent", None),
        ("c-bob:1", 1, "sent", None), ("c-bob:1", 2, "skipped", "cart_recovered"),
        ("c-cid:1", 1, "skipped", "unsubscribed"), ("c-cid:1", 2, "skipped", "unsubscribed"),
        ("c-dan:1", 1, "skipped", "no_consent"), ("c-dan:1", 2, "skipped", "no_consent"),
        (f"{ann2}:1", 1, "skipped", "frequency_capped"),
        (f"{ann2}:1", 2, "skipped", "frequency_capped"),
    }
    log = await read_topic(pipeline, "cartwatch-notification-log",
                           lambda records: outcomes(records) >= expected, settle=3.0)
    assert outcomes(log) == expected
    assert len(log) == len(expected)
    assert all(e["channel"] == "email" for e in log if e["status"] == "sent")

    messages = mail_server.messages()
    assert sorted((m["To"], m["X-Cartwatch-Step"]) for m in messages) == [
        ('"Ann <b>" <ann@example.com>', "1"), ('"Ann <b>" <ann@example.com>', "2"),
        ("bob@example.com", "1"),
    ]
    sent_ids = {e["message_id"] for e in log if e["status"] == "sent"}
    assert {m["Message-ID"] for m in messages} == sent_ids
    for message in messages:
        assert message["From"] == "Tea & Co <hello@tea.example>"
        assert message["X-RcptTo"].split(",")[-1].strip() == "audit@tea.example"
        assert "Bcc" not in message

    first = next(m for m in messages if "ann@" in m["To"] and m["X-Cartwatch-Step"] == "1")
    assert first["Subject"] == "Ann <b>, you left 3 items in your cart at Tea & Co"
    text = first.get_body(("plain",)).get_content()
    html = first.get_body(("html",)).get_content()
    assert "2 x Green <Tea> (TEA-1)  4.50 EUR = 9.00 EUR" in text
    assert "1 x Product MUG (MUG)  12.00 EUR" in text
    assert "Total: 21.00 EUR" in text and "COMEBACK10" in text
    assert "Green &lt;Tea&gt;" in html and "Green <Tea>" not in html  # autoescaped
    assert "Ann &lt;b&gt;" in html
    assert '<img src="https://tea.example/img/tea-1.png"' in html

    cart_link = next(w for w in text.split() if w.startswith("https://tea.example/cart/c-ann"))
    token = cart_link.split("cw_token=")[1]
    claims = verify_token(token, secret=SECRET.encode(), purpose="cart", now=time.time())
    assert (claims.subject, claims.abandonment_id) == ("c-ann", "c-ann:1")
    unsubscribe_link = first["List-Unsubscribe"].strip("<>")
    assert unsubscribe_link.startswith("https://tea.example/unsubscribe?token=")
    assert unsubscribe_link in text
    claims = verify_token(unsubscribe_link.split("token=")[1], secret=SECRET.encode(),
                          purpose="unsubscribe", now=time.time())
    assert (claims.subject, claims.store_id) == ("ann@example.com", "tea")
    last = next(m for m in messages if "ann@" in m["To"] and m["X-Cartwatch-Step"] == "2")
    assert last["Subject"].strip() == (  # a long header is folded: a leading space may stay
        "Last chance: your cart at Tea & Co is waiting (code COMEBACK10 inside)")

    recovered = await read_topic(pipeline, "cart-recovered", lambda records: len(records) >= 1)
    assert [(r["abandonment_id"], r["reminder_sent"]) for r in recovered] == [("c-bob:1", True)]


QUIET_AND_WEBHOOK = """
abandon_after = "1s"
[notifier]
retry_initial = "0.2s"
retry_max = "1s"
[notifier.reminders]
steps = [{{after = "1s"}}]
[notifier.stores.quiet]
quiet_hours = {{start = "{start}", end = "{end}"}}
timezone = "Pacific/Auckland"
[notifier.stores.hook]
webhook_url = "http://127.0.0.1:{hook_port}/reminders"
operator_events = ["sent", "skipped"]
"""


async def test_quiet_hours_defer_and_webhook_fallback(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    pipeline = notifier_pipeline
    zone = ZoneInfo("Pacific/Auckland")
    local_now = datetime.now(zone)
    start = (local_now - timedelta(hours=1)).strftime("%H:%M")
    end_local = (local_now + timedelta(hours=2)).replace(second=0, microsecond=0)
    received: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.json_response({"ok": True})

    hook_app = web.Application()
    hook_app.router.add_post("/reminders", hook)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    hook_port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        mail_server.start()
        configure(pipeline, tmp_path, QUIET_AND_WEBHOOK.format(
            start=start, end=end_local.strftime("%H:%M"), hook_port=hook_port),
            mail_server.port)
        pipeline.worker("w1").start().wait_ready()
        quiet, hook_shop = Shop("quiet"), Shop("hook")
        await pipeline.send([
            quiet.add("c-night", "MUG", customer=customer("nora@example.com")),
            hook_shop.add("c-noconsent", "MUG", cart_url="https://hook.example/cart/1",
                          customer=customer("nic@example.com", consent=False)),
            hook_shop.add("c-anon", "LAMP", price="99.00"),
            ("cartwatch-unsubscribes", b"x@example.com", b"{not json"),
            unsubscribe("x@example.com")[:1] + (b"someone-else", unsubscribe("x@example.com")[2]),
        ])
        expected = {("c-night:1", 1, "deferred", "quiet_hours"),
                    ("c-noconsent:1", 1, "sent", None), ("c-anon:1", 1, "sent", None)}
        log = await read_topic(pipeline, "cartwatch-notification-log",
                               lambda records: outcomes(records) >= expected, settle=2.0)
        assert outcomes(log) == expected
        [deferred] = [e for e in log if e["status"] == "deferred"]
        assert datetime.fromisoformat(deferred["deferred_until"]) == end_local
        assert {e["channel"] for e in log if e["status"] == "sent"} == {"webhook"}
        assert mail_server.messages() == []

        assert sorted(body["cart_id"] for _, body in received) == ["c-anon", "c-noconsent"]
        for headers, body in received:
            assert headers["Idempotency-Key"] == body["idempotency_key"]
            assert headers["X-Cartwatch-Signature"].startswith("sha256=")
        by_cart = {body["cart_id"]: body for _, body in received}
        # the cart link leads through the worker's click endpoint (the default click URL,
        # derived from the default unsubscribe URL), which redirects to the cart
        click_base, _, click_token = by_cart["c-noconsent"]["cart_link"].rpartition("/")
        assert click_base == "http://127.0.0.1:6066/cartwatch/r"
        claims = verify_token(click_token, secret=SECRET.encode(), purpose="click",
                              now=time.time())
        assert claims.channel == "webhook" and claims.target is not None
        assert claims.target.startswith("https://hook.example/cart/1?cw_token=")
        assert by_cart["c-anon"]["cart"]["total"] == "99.00"
        assert by_cart["c-anon"]["unsubscribe_link"] is None

        letters = await read_topic(pipeline, "cartwatch-dead-letter",
                                   lambda records: len(records) >= 2, settle=1.0)
        errors = sorted(letter["error"] for letter in letters)
        assert len(errors) == 2
        assert errors[0].startswith("message key must be the normalized email")
        assert errors[1].startswith("not a valid Unsubscribe: 1 validation error")
        assert {letter["source_topic"] for letter in letters} == {
            pipeline.topic("cartwatch-unsubscribes")}
        async with ClientSession() as http, http.get(
                f"{pipeline.workers[0].web_url}/metrics") as response:
            metrics = parse_metrics(await response.text())
        assert metrics["cartwatch_dead_lettered_total"] == 2

        notes = await read_topic(pipeline, "cartwatch-operator-notifications",
                                 lambda records: len(records) >= 2, settle=1.0)
        assert sorted((n["store_id"], n["event"]) for n in notes) == [
            ("hook", "sent"), ("hook", "sent")]
    finally:
        await runner.cleanup()


ONE_STEP = """
abandon_after = "1s"
[notifier]
retry_initial = "0.2s"
retry_max = "0.5s"
[notifier.reminders]
steps = [{after = "1s"}]
"""


async def test_smtp_down_then_back_delivers_everything_once(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    pipeline = notifier_pipeline
    configure(pipeline, tmp_path, ONE_STEP, mail_server.port)  # not started: refused
    pipeline.worker("w1").start().wait_ready()
    shop = Shop("s")
    carts = [f"c-{n}" for n in range(3)]
    await pipeline.send([shop.add(cart, "MUG", customer=customer(f"{cart}@example.com"))
                         for cart in carts])
    await read_topic(pipeline, "cartwatch-notification-log",
                     lambda records: sum(e["retrying"] for e in records) >= 3)
    mail_server.start()
    expected = {(f"{cart}:1", 1, "sent", None) for cart in carts}
    log = await read_topic(pipeline, "cartwatch-notification-log",
                           lambda records: outcomes(records) >= expected, settle=2.0)
    assert outcomes(log) == expected
    failures = [e for e in log if e["status"] == "failed"]
    assert failures and all(e["retrying"] for e in failures)
    assert all("unreachable" in e["error"] for e in failures)
    assert sorted(m["To"] for m in mail_server.messages()) == [
        f"{cart}@example.com" for cart in carts]


async def test_smtp_connection_lost_while_open_then_back_delivers_everything_once(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    """The server goes away under an open, idle connection: the sender notices the loss,
    holds what falls due meanwhile (retrying), and sends each reminder once on a new
    connection when the server is back."""
    pipeline = notifier_pipeline
    mail_server.start()
    configure(pipeline, tmp_path, ONE_STEP, mail_server.port)
    pipeline.worker("w1").start().wait_ready()
    shop = Shop("s")
    await pipeline.send([shop.add("c-0", "MUG", customer=customer("c-0@example.com"))])
    [first] = await asyncio.to_thread(wait_for_mail, mail_server.maildir, 1)
    mail_server.stop()  # closes the connection the worker keeps open for the next message
    shop.base = datetime.now(UTC)
    carts = [f"c-{n}" for n in range(1, 4)]
    await pipeline.send([shop.add(cart, "MUG", customer=customer(f"{cart}@example.com"))
                         for cart in carts])
    await read_topic(pipeline, "cartwatch-notification-log",
                     lambda records: sum(e["retrying"] for e in records) >= 3)
    mail_server.start()
    expected = {(f"{cart}:1", 1, "sent", None) for cart in ["c-0", *carts]}
    log = await read_topic(pipeline, "cartwatch-notification-log",
                           lambda records: outcomes(records) >= expected, settle=2.0)
    assert outcomes(log) == expected
    assert [e["abandonment_id"] for e in log if e["status"] == "sent"].count("c-0:1") == 1
    messages = mail_server.messages()
    assert sorted(m["To"] for m in messages) == [f"c-{n}@example.com" for n in range(4)]
    assert first["X-Peer"] not in {m["X-Peer"] for m in messages[1:]}  # a new connection


async def test_crash_between_send_and_ack_sends_no_duplicate(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    pipeline = notifier_pipeline
    mail_server.start()
    configure(pipeline, tmp_path, ONE_STEP, mail_server.port)
    crashing = pipeline.worker("crashing", CARTWATCH_FAULT_EXIT_AFTER_SEND="1").start()
    crashing.wait_ready()
    await pipeline.send([Shop("s").add("c-1", "MUG", customer=customer("one@example.com"))])
    assert crashing.process is not None
    await wait_until(lambda: crashing.process.poll() is not None, 40, "the injected crash")
    assert crashing.process.returncode == 70
    assert len(mail_server.messages()) == 1

    pipeline.worker("replacement").start().wait_ready(timeout=120)  # the dead member's session
    log = await read_topic(pipeline, "cartwatch-notification-log",
                           lambda records: len(records) >= 1, settle=4.0)
    assert outcomes(log) == {("c-1:1", 1, "skipped", "outcome_unknown")}
    assert len(mail_server.messages()) == 1


LATER_STEP = """
abandon_after = "1s"
[notifier.reminders]
steps = [{after = "8s"}]
"""


async def test_pending_reminder_survives_a_worker_restart(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    """The plan is in the table: a replacement worker with an empty disk still sends it."""
    pipeline = notifier_pipeline
    mail_server.start()
    configure(pipeline, tmp_path, LATER_STEP, mail_server.port)
    first = pipeline.worker("first").start()
    first.wait_ready()
    await pipeline.send([Shop("s").add("c-1", "MUG", customer=customer("one@example.com"))])
    await read_topic(pipeline, "cart-abandoned", lambda records: len(records) == 1)
    await pipeline.wait_committed(topics=["cart-abandoned"])  # the plan is written
    first.stop(signal.SIGTERM)
    assert mail_server.messages() == []

    pipeline.worker("second").start().wait_ready()
    log = await read_topic(pipeline, "cartwatch-notification-log",
                           lambda records: len(records) >= 1, settle=2.0)
    assert outcomes(log) == {("c-1:1", 1, "sent", None)} and len(log) == 1
    assert [m["To"] for m in mail_server.messages()] == ["one@example.com"]
    assert "reminder index rebuilt: 1 plans" in pipeline.workers[1].log()


OVERDUE_STEPS = """
abandon_after = "1s"
[notifier.reminders]
steps = [{after = "8s", template = "reminder"}, {after = "10s", template = "last-chance"}]
"""


async def test_steps_overdue_after_a_stopped_worker_send_only_the_latest(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    """Both steps fell due while no worker ran: the replacement sends the last chance only,
    and logs the first reminder as superseded."""
    pipeline = notifier_pipeline
    mail_server.start()
    configure(pipeline, tmp_path, OVERDUE_STEPS, mail_server.port)
    first = pipeline.worker("first").start()
    first.wait_ready()
    await pipeline.send([Shop("s").add("c-1", "MUG", customer=customer("one@example.com"))])
    abandoned = await read_topic(pipeline, "cart-abandoned", lambda records: len(records) == 1)
    await pipeline.wait_committed(topics=["cart-abandoned"])  # the plan is written
    first.stop(signal.SIGTERM)
    assert mail_server.messages() == []
    last_step_due = datetime.fromisoformat(abandoned[0]["abandoned_at"]).timestamp() + 10
    await asyncio.sleep(max(0.0, last_step_due - time.time()))  # both steps are due now

    pipeline.worker("second").start().wait_ready()
    log = await read_topic(pipeline, "cartwatch-notification-log",
                           lambda records: len(outcomes(records)) >= 2, settle=2.0)
    assert outcomes(log) == {("c-1:1", 1, "skipped", "superseded"), ("c-1:1", 2, "sent", None)}
    assert [(m["To"], m["X-Cartwatch-Step"]) for m in mail_server.messages()] == [
        ("one@example.com", "2")]


STALL, BUSY = "stall@example.com", "busy@example.com"


class HostileHandler:
    """An SMTP server that is hostile to two addresses and delivers to every other one.

    ``stall@``: a relay hung on DATA. Each of its attempts that begins before every other
    address has its mail is greeted, takes MAIL, RCPT and the message, and then gets no answer
    until the client hangs up. ``busy@``: ``451`` to its first ``busy_refusals`` RCPTs (a
    greylisting server). Accepted messages are recorded with the time they were accepted.
    """

    def __init__(self, others: set[str], busy_refusals: int = 3) -> None:
        self.others = others
        self.busy_refusals = busy_refusals
        self.refused = 0
        self.accepted: list[tuple[float, str, str]] = []
        """(monotonic time, recipient, Message-ID) of each message answered with 250."""
        self.stalls: list[tuple[float, float | None]] = []
        """(start, end) of each stalled DATA; end is when the client hung up."""

    def others_done(self) -> bool:
        return self.others <= {rcpt for _, rcpt, _ in self.accepted}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address == BUSY and self.refused < self.busy_refusals:
            self.refused += 1
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if STALL in envelope.rcpt_tos and not self.others_done():
            index = len(self.stalls)
            self.stalls.append((time.monotonic(), None))
            try:
                await asyncio.sleep(3600)  # cancelled when the client closes the connection
            finally:
                self.stalls[index] = (self.stalls[index][0], time.monotonic())
        parsed = message_from_bytes(envelope.content)
        self.accepted.append((time.monotonic(), envelope.rcpt_tos[0], parsed["Message-ID"]))
        return "250 OK"


SMTP_TIMEOUT = 1.5


async def test_tarpit_and_greylisting_hold_one_lane_while_other_addresses_get_their_reminders(
    notifier_pipeline: Pipeline, tmp_path: Path
) -> None:
    """A relay hung on DATA for one address and 451 for another: each stalled attempt is given
    up after ``smtp.timeout`` with one log line and retried with backoff; every other address
    gets its reminder while the stalled one's lane is stuck; each reminder arrives once."""
    pipeline = notifier_pipeline
    others = {f"o{n}@example.com" for n in range(4)}
    handler = HostileHandler(others)
    port = free_ports(1)[0]
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            server_hostname="localhost")
    controller.start()
    try:
        configure(pipeline, tmp_path, ONE_STEP, port, CARTWATCH_SMTP_TIMEOUT=f"{SMTP_TIMEOUT}s")
        pipeline.worker("w1").start().wait_ready()
        shop = Shop("s")
        await pipeline.send([shop.add("c-stall", "MUG", customer=customer(STALL)),
                             shop.add("c-busy", "MUG", customer=customer(BUSY))])
        await wait_until(lambda: bool(handler.stalls), 60, "the first stalled DATA")
        # the other carts are abandoned and fall due while stall@'s lane is stuck
        shop.base = datetime.now(UTC)
        await pipeline.send([shop.add(f"c-{address.split('@')[0]}", "MUG",
                                      customer=customer(address)) for address in others])
        carts = ["c-stall", "c-busy", *(f"c-o{n}" for n in range(4))]
        expected = {(f"{cart}:1", 1, "sent", None) for cart in carts}
        log = await read_topic(pipeline, "cartwatch-notification-log",
                               lambda records: outcomes(records) >= expected, settle=2.0)
    finally:
        controller.stop()

    assert outcomes(log) == expected
    # once each: one accepted message per address, its Message-ID the one the log recorded
    accepted = {rcpt: (at, mid) for at, rcpt, mid in handler.accepted}
    assert sorted(rcpt for _, rcpt, _ in handler.accepted) == sorted([STALL, BUSY, *others])
    assert {mid for _, mid in accepted.values()} == {
        e["message_id"] for e in log if e["status"] == "sent"}
    # the other addresses were served while stall@ was stuck, before its own delivery
    first_stall = handler.stalls[0][0]
    assert all(first_stall < accepted[rcpt][0] < accepted[STALL][0] for rcpt in others)
    # each stalled attempt was given up after the timeout (the client hung up), then retried
    assert all(end is not None and SMTP_TIMEOUT - 0.1 < end - start < SMTP_TIMEOUT + 1.0
               for start, end in handler.stalls), handler.stalls
    failed = {cart: [e for e in log if e["status"] == "failed" and e["cart_id"] == cart]
              for cart in ("c-stall", "c-busy")}
    assert len(failed["c-stall"]) == len(handler.stalls) >= 1
    assert all(e["retrying"] and e["error"] == "SMTP server did not answer within 1.5 s "
               "(SMTPReadTimeoutError)" for e in failed["c-stall"])
    assert len(failed["c-busy"]) == handler.refused == 3
    assert all(e["retrying"] and "451" in e["error"] for e in failed["c-busy"])
    assert not [e for e in log if e["status"] == "failed" and e["cart_id"].startswith("c-o")]
    # one clear line per stalled attempt in the worker's log
    lines = [line for line in pipeline.workers[0].log().splitlines()
             if "reminder c-stall:1 step 1 attempt" in line]
    assert len(lines) == len(handler.stalls)
    assert all("failed (will retry): SMTP server did not answer within 1.5 s" in line
               for line in lines)
