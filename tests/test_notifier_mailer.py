"""The SMTP channel against a real SMTP server: reused connections, messages intact."""

import asyncio
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
