"""The SMTP channel against a real SMTP server: reused connections, messages intact."""

import asyncio
import time
import uuid

import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.protocol import normalize_message_line_endings
from kafka_helpers import free_ports

from config.notifier import ReminderPolicy, SmtpSettings
from schemas.notifications import ReminderDue
from streams.notifier.channels import DeliveryError, SmtpMailer
from streams.notifier.rendering import RenderedReminder
from streams.notifier.sending import build_email

pytestmark = pytest.mark.integration

POLICY = ReminderPolicy(store_name="Tea & Co", from_address="hi@tea.example",
                        bcc=["audit@tea.example"])


def due(run: str, number: int) -> ReminderDue:
    cart_id = f"{run}-{number}"
    return ReminderDue(
        idempotency_key=f"{run}{number:04d}", abandonment_id=f"{cart_id}:1", cart_id=cart_id,
        store_id="tea", step=1, steps=1, template="reminder", channel="email",
        recipient=f"shopper-{number}@{run}.example",
        cart={"lines": [], "item_count": 0, "total": "0", "currency": "EUR",
              "customer": {"name": f"Zoë {number}", "email": f"shopper-{number}@{run}.example"}},
        abandoned_at="2024-01-01T00:00:00Z", due_at="2024-01-01T01:00:00Z",
        decided_at="2024-01-01T01:00:00Z")


async def test_concurrent_messages_share_a_few_connections_and_arrive_intact(smtp_server):
    run = uuid.uuid4().hex[:8]
    mailer = SmtpMailer(SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                     connections=3))
    rendered = RenderedReminder("Grüße — your cart", "Total: 13.00 €\n.\nbye", "<p>Grüße</p>")
    reminders = [due(run, number) for number in range(12)]
    try:
        await asyncio.gather(*(
            mailer.send(build_email(d, rendered, POLICY, None, 1_704_067_200.0),
                        POLICY.from_address, [d.recipient, *POLICY.bcc])
            for d in reminders
        ))
    finally:
        await mailer.close()

    ours = [m for m in smtp_server.wait_for_messages(12) if f"@{run}.example" in m["To"]]
    assert sorted(m["Message-ID"] for m in ours) == sorted(
        f"<{d.idempotency_key}@tea.example>" for d in reminders)
    assert len({m["X-Peer"] for m in ours}) <= 3  # one client port per connection
    for message in ours:
        assert message["Subject"] == "Grüße — your cart"
        assert message["To"].startswith("Zoë ")
        assert message["X-RcptTo"].endswith("audit@tea.example") and "Bcc" not in message
        assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == (
            "Total: 13.00 €\n.\nbye\n")


async def test_an_unreachable_server_is_a_transient_failure():
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=1, timeout=5))
    with pytest.raises(DeliveryError) as failure:
        await mailer.send(b"Subject: x\n\nbody\n", "hi@tea.example", ["a@example.com"])
    assert failure.value.transient and "unreachable" in str(failure.value)


class RefusingHandler:
    """Accepts every message, refuses the recipient ``nobody@...``; keeps the envelopes."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.received.append((envelope.mail_options, envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture
def refusing_server():
    handler = RefusingHandler()
    port = free_ports(1)[0]
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            server_hostname="localhost")
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


async def test_refused_recipients_and_the_declared_size(refusing_server):
    handler, port = refusing_server
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=port, connections=1))
    message = b"Subject: x\n\nline one\n.line two\n"
    try:
        with pytest.raises(DeliveryError) as failure:
            await mailer.send(message, "hi@tea.example", ["nobody@example.com"])
        assert not failure.value.transient and "550" in str(failure.value)
        # some refused: the others get it, on the same (reset) connection
        await mailer.send(message, "hi@tea.example", ["nobody@example.com", "ann@example.com"])
    finally:
        await mailer.close()

    [(options, recipients, content)] = handler.received
    assert recipients == ["ann@example.com"]
    assert content == b"Subject: x\r\n\r\nline one\r\n.line two\r\n"  # dot-unstuffed by the server
    assert f"SIZE={len(normalize_message_line_endings(message))}" in [o.upper() for o in options]


@pytest.fixture
async def silent_server():
    """A tarpit: accepts TCP connections and never writes a byte (no greeting)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], held
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_greets_is_given_up_within_the_timeout(silent_server):
    port, held = silent_server
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=port, timeout=0.5))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failure:  # wait_for: a missing timeout fails, not hangs
        await asyncio.wait_for(mailer.send(b"Subject: x\n\nbody\n", "hi@tea.example",
                                           ["a@example.com"]), 10)
    elapsed = time.monotonic() - started
    assert len(held) == 1  # it did connect: the wait was for the greeting
    assert failure.value.transient
    assert str(failure.value) == (
        "SMTP server did not answer within 0.5 s (SMTPConnectTimeoutError)")
    assert 0.5 <= elapsed < 1.5


class StallingHandler:
    """A hung relay: greets, takes MAIL, RCPT and the message, then never answers the first
    message's DATA (until the client hangs up); answers the next ones."""

    def __init__(self) -> None:
        self.stalls = 0
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.stalls == 0:
            self.stalls += 1
            await asyncio.sleep(3600)  # cancelled when the client closes the connection
        self.received.append(envelope.content)
        return "250 OK"


async def test_a_relay_hung_on_data_costs_one_timeout_then_a_fresh_connection_delivers():
    handler = StallingHandler()
    port = free_ports(1)[0]
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="localhost")
    controller.start()
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=port, timeout=0.5, connections=1))
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failure:
            await asyncio.wait_for(mailer.send(b"Subject: one\n\nbody\n", "hi@tea.example",
                                               ["a@example.com"]), 10)
        elapsed = time.monotonic() - started
        assert failure.value.transient
        assert str(failure.value) == (
            "SMTP server did not answer within 0.5 s (SMTPReadTimeoutError)")
        assert 0.5 <= elapsed < 1.5
        # the one slot is free again and the timed-out connection is not reused
        await asyncio.wait_for(mailer.send(b"Subject: two\n\nbody\n", "hi@tea.example",
                                           ["a@example.com"]), 10)
    finally:
        await mailer.close()
        controller.stop()
    assert handler.stalls == 1
    assert [content.split(b"\r\n")[0] for content in handler.received] == [b"Subject: two"]
