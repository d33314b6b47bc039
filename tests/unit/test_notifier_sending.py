"""The sender's pure core: screening, caps, links, the MIME message, backoff and retries."""

import asyncio
import email
from email.policy import default as default_policy

import aiosmtplib
import pytest

from config.notifier import ReminderPolicy
from schemas.notifications import ReminderDue, Unsubscribe
from streams.notifier.channels import DeliveryError, RetryPolicy, deliver_with_retries, smtp_failure
from streams.notifier.rendering import RenderedReminder, environment, render
from streams.notifier.sending import (
    Contact,
    apply_unsubscribe,
    backoff_delay,
    build_email,
    message_id,
    recipient_key,
    record_sent,
    reminder_context,
    screen,
    webhook_signature,
)
from streams.notifier.tokens import verify_token

from .factories import HOUR, T0, iso

SECRET = b"0123456789abcdef-secret"
POLICY = ReminderPolicy(store_name="Tea & Co", from_address="hi@tea.example",
                        bcc=["audit@tea.example"], discount_code="SAVE5",
                        unsubscribe_url="https://tea.example/u")


def due(abandonment_id="c-1:1", step=1, channel="email", recipient="Ann@Example.com",
        name="Ann", **cart):
    cart_doc = {
        "lines": [{"sku": "TEA", "name": "Green tea", "quantity": 3, "unit_price": "4.333",
                   "line_total": "12.999", "image_url": "https://tea.example/tea.png"}],
        "item_count": 3, "total": "12.999", "currency": "EUR",
        "customer": {"name": name, "email": recipient} if recipient else None,
        "cart_url": "https://tea.example/cart/c-1", **cart,
    }
    return ReminderDue(
        idempotency_key=f"k{step}{abandonment_id.replace(':', 'x')}", abandonment_id=abandonment_id,
        cart_id=abandonment_id.split(":")[0], store_id="tea", step=step, steps=2,
        template="reminder", channel=channel, recipient=recipient, cart=cart_doc,
        abandoned_at=iso(T0), due_at=iso(T0 + HOUR), decided_at=iso(T0 + HOUR))


def test_recipient_key_is_the_normalized_address_or_the_cart():
    assert recipient_key(due()) == b"ann@example.com"
    assert recipient_key(due(recipient=None, channel="webhook")) == b"cart:c-1"


def test_a_fresh_reminder_passes():
    assert screen(due(), Contact(), None, POLICY, T0) is None


@pytest.mark.parametrize(("record", "reason"), [
    ({"status": "sent"}, "duplicate"),
    ({"status": "failed"}, "duplicate"),
    ({"status": "sending"}, "outcome_unknown"),
])
def test_an_attempted_step_is_never_sent_again(record, reason):
    assert screen(due(), Contact(), record, POLICY, T0) == reason


def test_a_step_whose_attempts_failed_transiently_may_be_tried_again():
    assert screen(due(), Contact(), {"status": "pending"}, POLICY, T0) is None


def test_unsubscribes_from_all_stores_or_this_store():
    everywhere = apply_unsubscribe(Contact(), unsubscribe(None))
    here = apply_unsubscribe(Contact(), unsubscribe("tea"))
    elsewhere = apply_unsubscribe(Contact(), unsubscribe("other"))

    assert screen(due(), everywhere, None, POLICY, T0) == "unsubscribed"
    assert screen(due(), here, None, POLICY, T0) == "unsubscribed"
    assert screen(due(), elsewhere, None, POLICY, T0) is None
    assert apply_unsubscribe(here, unsubscribe("tea")).unsubscribed_stores == ["tea"]


def unsubscribe(store_id):
    return Unsubscribe(email="ann@example.com", store_id=store_id, unsubscribed_at=iso(T0))


def test_frequency_cap_across_carts_but_not_between_steps_of_one_abandonment():
    contact = record_sent(Contact(), due("c-1:1"), T0)
    cap = POLICY.frequency_cap

    assert screen(due("c-2:1"), contact, None, POLICY, T0 + cap - 1) == "frequency_capped"
    assert screen(due("c-2:1"), contact, None, POLICY, T0 + cap) is None
    assert screen(due("c-1:1", step=2), contact, None, POLICY, T0 + 60) is None
    no_cap = POLICY.model_copy(update={"frequency_cap": None})
    assert screen(due("c-2:1"), contact, None, no_cap, T0 + 1) is None


def test_webhook_reminders_neither_count_for_nor_are_held_by_the_cap():
    contact = record_sent(Contact(), due("c-1:1", channel="webhook"), T0)
    assert contact.last_sent_at is None
    capped = record_sent(Contact(), due("c-1:1"), T0)
    assert screen(due("c-2:1", channel="webhook"), capped, None, POLICY, T0 + 1) is None


def test_contacts_survive_the_table_round_trip():
    contact = record_sent(apply_unsubscribe(Contact(), unsubscribe("x")), due(), T0)

    assert Contact.from_dict(contact.to_dict()) == contact
    assert Contact.from_dict(None) == Contact()


def test_context_has_every_parameter_formatted_and_signed_links():
    context = reminder_context(due(), POLICY, SECRET, T0)

    assert context["lines"] == [{"name": "Green tea", "sku": "TEA", "quantity": 3,
                                 "price": "4.33", "line_total": "13.00",
                                 "image": "https://tea.example/tea.png", "url": None}]
    assert (context["total"], context["currency"], context["item_count"]) == ("13.00", "EUR", 3)
    assert (context["store_name"], context["discount_code"], context["customer_name"]) == (
        "Tea & Co", "SAVE5", "Ann")
    cart_token = context["cart_link"].split("?cw_token=")[1]
    claims = verify_token(cart_token, secret=SECRET, purpose="cart", now=T0)
    assert (claims.subject, claims.expires_at) == ("c-1", int(T0 + POLICY.link_ttl))
    unsubscribe_token = context["unsubscribe_link"].removeprefix("https://tea.example/u?token=")
    claims = verify_token(unsubscribe_token, secret=SECRET, purpose="unsubscribe", now=T0)
    assert (claims.subject, claims.store_id) == ("ann@example.com", "tea")


def test_context_without_cart_url_or_address_has_no_links():
    context = reminder_context(due(recipient=None, channel="webhook", cart_url=None), POLICY,
                               SECRET, T0)

    assert context["cart_link"] is None and context["unsubscribe_link"] is None
    assert context["store_name"] == "Tea & Co"


def test_a_cart_without_url_links_to_the_store_instead():
    """Shops that send no cart_url still get a reminder with a way back: the store's page."""
    store = POLICY.model_copy(update={"shop_url": "https://tea.example/"})
    context = reminder_context(due(cart_url=None), store, SECRET, T0)
    assert context["cart_link"] == "https://tea.example/" and not context["links_to_cart"]
    rendered = render(environment(None), "reminder", context)
    assert "Visit Tea & Co: https://tea.example/\n" in rendered.text
    assert 'href="https://tea.example/"' in rendered.html
    assert "Visit Tea &amp; Co</a>" in rendered.html  # not "Return to your cart": it is not

    with_cart = reminder_context(due(), store, SECRET, T0)
    assert with_cart["cart_link"].startswith("https://tea.example/cart/c-1?cw_token=")
    assert with_cart["links_to_cart"]
    assert "Return to your cart</a>" in render(environment(None), "reminder", with_cart).html


def test_the_email_headers_bodies_and_envelope_only_bcc():
    rendered = RenderedReminder("Your cart", "plain body", "<p>html body</p>")
    message = build_email(due(), rendered, POLICY, "https://tea.example/u?token=T", T0)
    parsed = email.message_from_bytes(bytes(message), policy=default_policy)

    assert parsed["From"] == "Tea & Co <hi@tea.example>"
    assert parsed["To"] == "Ann <Ann@Example.com>"
    assert parsed["Subject"] == "Your cart"
    assert parsed["Message-ID"] == message_id(due(), POLICY) == "<k1c-1x1@tea.example>"
    assert parsed["List-Unsubscribe"] == "<https://tea.example/u?token=T>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Bcc"] is None
    assert parsed.get_body(("plain",)).get_content() == "plain body\n"
    assert parsed.get_body(("html",)).get_content() == "<p>html body</p>\n"


def test_the_email_is_7bit_mime_that_carries_any_text_exactly():
    """Names and subjects outside ASCII, long subjects and long or non-ASCII bodies survive."""
    subject = "Zoë, your cart at Tea & Co is still waiting for you — 3 items, 13.00 € in total"
    text = "Hallo Zoë,\n" + "x" * 1200 + "\n.\nTotal: 13.00 €"
    html = "<p>Grüße</p>\n<p>" + "y " * 700 + "</p>\n"
    rendered = RenderedReminder(subject, text, html)
    message = build_email(due(name="Zoë Ünal"), rendered, POLICY, "https://tea.example/u?t=" +
                          "T" * 150, T0)

    assert message.isascii()
    assert all(len(line) <= 998 for line in message.split(b"\n"))
    parsed = email.message_from_bytes(message, policy=default_policy)
    assert parsed.defects == [] and all(part.defects == [] for part in parsed.walk())
    assert parsed["To"] == "Zoë Ünal <Ann@Example.com>"
    assert parsed["Subject"] == subject
    assert parsed["List-Unsubscribe"] == "<https://tea.example/u?t=" + "T" * 150 + ">"
    assert all(len(line) <= 78 for line in message.split(b"\n\n")[0].split(b"\n")
               if not line.startswith(b"List-Unsubscribe:"))
    assert parsed.get_body(("plain",)).get_content() == text + "\n"
    assert parsed.get_body(("html",)).get_content() == html
    assert parsed.get_content_type() == "multipart/alternative"


def test_a_header_with_a_line_break_is_refused():
    rendered = RenderedReminder("Your cart\nBcc: everyone@example.com", "body", "<p>body</p>")
    with pytest.raises(ValueError, match="Subject"):
        build_email(due(), rendered, POLICY, None, T0)


def test_webhook_signature_is_an_hmac_of_the_body():
    assert webhook_signature(SECRET, b"{}") != webhook_signature(SECRET, b"{ }")
    assert webhook_signature(SECRET, b"{}").startswith("sha256=")


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def run(outcomes, give_up_after=100.0):
    clock, failures, calls = Clock(), [], []

    async def attempt():
        calls.append(clock.now)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome

    async def on_failure(number, error, retrying):
        failures.append((number, str(error), retrying))

    result = asyncio.run(deliver_with_retries(
        attempt, RetryPolicy(1.0, 4.0, give_up_after), on_failure, clock.sleep, clock))
    return result, failures, clock.sleeps


def test_transient_failures_are_retried_with_backoff_until_delivered():
    down = DeliveryError("unreachable", transient=True)
    result, failures, sleeps = run([down, down, down, None])

    assert result == (True, 4)
    assert failures == [(1, "unreachable", True), (2, "unreachable", True),
                        (3, "unreachable", True)]
    assert sleeps == [1.0, 2.0, 4.0]


def test_permanent_failures_are_not_retried():
    result, failures, sleeps = run([DeliveryError("550 no such user", transient=False)])

    assert result == (False, 1) and failures == [(1, "550 no such user", False)] and not sleeps


def test_transient_failures_give_up_after_the_deadline():
    down = DeliveryError("unreachable", transient=True)
    result, failures, sleeps = run([down] * 10, give_up_after=5.0)

    assert result == (False, 3)
    assert [retrying for _, _, retrying in failures] == [True, True, False]
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(("exc", "transient"), [
    (aiosmtplib.SMTPResponseException(421, "try later"), True),
    (aiosmtplib.SMTPResponseException(554, "rejected"), False),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@b.c")]),
     False),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "busy", "a@b.c")]),
     True),
    (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), True),
    (aiosmtplib.SMTPServerDisconnected("gone"), True),
    (aiosmtplib.SMTPConnectError("refused"), True),
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (ValueError("bug"), False),
])
def test_smtp_failure_classification(exc, transient):
    assert smtp_failure(exc).transient is transient


@pytest.mark.parametrize("exc", [
    aiosmtplib.SMTPConnectTimeoutError("no greeting"), aiosmtplib.SMTPReadTimeoutError("no reply"),
])
def test_a_silent_server_is_a_transient_failure_naming_the_wait(exc):
    failure = smtp_failure(exc, 2.5)
    assert failure.transient
    assert str(failure) == f"SMTP server did not answer within 2.5 s ({type(exc).__name__})"


def test_context_carries_the_locale_and_the_abandonment_day_in_the_customers_zone():
    """T0 is midnight UTC on 1 January 2024: in New York it is still 31 December."""
    customer = {"name": "Ann", "email": "ann@example.com", "locale": "de-DE",
                "timezone": "America/New_York"}
    context = reminder_context(due(customer=customer), POLICY, SECRET, T0)
    assert context["locale"] == "de-DE"
    assert context["abandoned_at"].date().isoformat() == "2023-12-31"
    plain = reminder_context(due(), POLICY, SECRET, T0)  # no locale, the store's zone (UTC)
    assert plain["locale"] is None and plain["abandoned_at"].date().isoformat() == "2024-01-01"
