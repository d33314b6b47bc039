"""The reminder sender's core: screening, links, message building, backoff (pure functions).

The sender is partitioned by recipient, so one address's unsubscribes, frequency cap and
delivery records live on one partition; these functions decide on them without any I/O.
"""

import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any
from zoneinfo import ZoneInfo

from config.campaigns import MAX_REENTRY_COUNT, MAX_REENTRY_PERIOD, ReentryLimit
from config.notifier import ReminderPolicy
from schemas.common import utc_from_epoch
from schemas.notifications import ReminderDue, Unsubscribe, WebhookReminder, unsubscribe_key
from streams.notifier.campaigns import reentry_exceeded
from streams.notifier.rendering import RenderedReminder, money
from streams.notifier.tokens import LinkClaims, link_with_token, sign_token
from streams.stored import StoredFormat


@dataclass(slots=True)
class Contact:
    """What the sender remembers about one address (a table value keyed by ``unsubscribe_key``)."""

    unsubscribed_all: bool = False
    unsubscribed_stores: list[str] = field(default_factory=list)
    last_sent_at: float | None = None
    last_abandonment_id: str | None = None
    sent_times: list[float] = field(default_factory=list)
    """When reminders (any channel) went to this address, newest last, for the re-entry limit;
    kept ``MAX_REENTRY_PERIOD`` and ``MAX_REENTRY_COUNT`` deep, the most a limit can ask."""

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the current format version (``streams.stored``) and every field."""
        return CONTACT_FORMAT.dump(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Contact":
        """A contact stored by any release, or a fresh one for an address never seen (raises
        ``streams.stored.UnreadableRecord``)."""
        return cls(*CONTACT_FORMAT.values(data)) if data else cls()


CONTACT_FORMAT = StoredFormat.of_dataclass("contact", Contact, version=2, migrations=[
    lambda v0: v0,  # 1 = the un-versioned dicts of earlier releases, plus "v"
    lambda v1: v1,  # 2 = 1 plus sent_times (campaign re-entry limits; missing: [])
])
DELIVERY_FORMAT = StoredFormat("delivery", version=1, fields=("status", "at"), defaults={},
                               migrations=[lambda v0: v0])
"""A delivery record (table ``notifier_deliveries``, keyed by idempotency key): ``status``
is sending, pending, sent or failed (see ``screen``), ``at`` when it was set. Version 1 = the
un-versioned dicts of earlier releases, plus "v"."""


def delivery_record(status: str, at: float) -> dict[str, Any]:
    """A delivery record as the table stores it (the current format version)."""
    return DELIVERY_FORMAT.write({"status": status, "at": at})


def read_delivery(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A delivery record stored by any release, as ``{"status", "at"}`` (None: no record).

    Raises ``streams.stored.UnreadableRecord``: ``screen`` must not guess whether a step was
    sent.
    """
    return None if stored is None else DELIVERY_FORMAT.read(stored)


def recipient_key(due: ReminderDue) -> bytes:
    """Kafka key of a due reminder: the address when known, so its contact state is local."""
    if due.recipient:
        return unsubscribe_key(due.recipient)
    return f"cart:{due.cart_id}".encode()


def apply_unsubscribe(contact: Contact, unsubscribe: Unsubscribe) -> Contact:
    if unsubscribe.store_id is None:
        contact.unsubscribed_all = True
    elif unsubscribe.store_id not in contact.unsubscribed_stores:
        contact.unsubscribed_stores.append(unsubscribe.store_id)
    return contact


def screen(
    due: ReminderDue, contact: Contact, delivery: dict[str, Any] | None,
    policy: ReminderPolicy, now: float,
) -> str | None:
    """Why this reminder must not go out (a log reason), or None to send it.

    A delivery record means the step was attempted before (a redelivery after a crash or a
    rebalance): never send twice, even when the outcome of that attempt is unknown.
    """
    status = None if delivery is None else delivery.get("status")
    if status == "sending":
        return "outcome_unknown"
    if status in ("sent", "failed"):
        return "duplicate"
    # "pending": every attempt so far failed before the server took the message; go on.
    if contact.unsubscribed_all or due.store_id in contact.unsubscribed_stores:
        return "unsubscribed"
    if (
        due.channel == "email"
        and policy.frequency_cap is not None
        and contact.last_sent_at is not None
        and contact.last_abandonment_id != due.abandonment_id
        and now - contact.last_sent_at < policy.frequency_cap
    ):
        return "frequency_capped"
    limit = reentry_limit(due, policy)
    if due.recipient and limit is not None and reentry_exceeded(contact.sent_times, limit, now):
        return "reentry_limit"
    return None


def reentry_limit(due: ReminderDue, policy: ReminderPolicy) -> ReentryLimit | None:
    """The limit of the reminder's campaign, else the store's (None: no limit)."""
    campaign = policy.campaign(due.campaign)
    if campaign is not None and campaign.reentry_limit is not None:
        return campaign.reentry_limit
    return policy.reentry_limit


def record_sent(contact: Contact, due: ReminderDue, now: float) -> Contact:
    """Remember a delivered reminder: the frequency cap counts emails, the re-entry limit every
    reminder to a known address (send times older than any limit can look back are dropped)."""
    if due.channel == "email":
        contact.last_sent_at = now
        contact.last_abandonment_id = due.abandonment_id
    if due.recipient:
        recent = [at for at in contact.sent_times if now - at < MAX_REENTRY_PERIOD]
        contact.sent_times = [*recent, now][-MAX_REENTRY_COUNT:]
    return contact


def links(due: ReminderDue, policy: ReminderPolicy, secret: bytes, now: float
          ) -> tuple[str | None, str | None]:
    """The cart link and the signed unsubscribe link (None where there is nothing to link).

    The cart link leads to the cart URL with a signed ``cw_token`` (the shop may restore the
    cart with it); a cart without a URL links to the store's ``shop_url`` instead, unsigned:
    the token restores a cart, and that page restores none. Either goes through the worker's
    click endpoint (``click_link``) when the policy has a click URL, so that a click on it is
    counted for the abandonment's attribution.
    """
    expires = int(now + policy.link_ttl)
    cart_link = policy.shop_url
    if due.cart.cart_url:
        token = sign_token(secret, LinkClaims("cart", due.cart_id, due.store_id, expires,
                                              due.abandonment_id))
        cart_link = link_with_token(due.cart.cart_url, token, "cw_token")
    if cart_link is not None:
        cart_link = click_link(due, policy, secret, cart_link, expires)
    unsubscribe_link = None
    if due.recipient:
        token = sign_token(secret, LinkClaims("unsubscribe", due.recipient.strip().lower(),
                                              due.store_id, expires, due.abandonment_id))
        unsubscribe_link = link_with_token(policy.unsubscribe_url, token)
    return cart_link, unsubscribe_link


def click_link(due: ReminderDue, policy: ReminderPolicy, secret: bytes, target: str,
               expires: int) -> str:
    """``<click base><click token>``: the worker records the click and redirects to ``target``
    (signed into the token, so the link cannot be bent into an open redirect); ``target``
    itself when the policy has no click URL."""
    base = policy.click_base()
    if base is None:
        return target
    token = sign_token(secret, LinkClaims(
        "click", due.cart_id, due.store_id, expires, due.abandonment_id, target=target,
        step=due.step, channel=due.channel, campaign=due.campaign, variant=due.variant))
    return base + token


def reminder_context(due: ReminderDue, policy: ReminderPolicy, secret: bytes, now: float
                     ) -> dict[str, Any]:
    """The template parameters (``rendering.PARAMETERS``) of a due reminder."""
    cart_link, unsubscribe_link = links(due, policy, secret, now)
    customer = due.cart.customer
    return {
        "customer_name": customer.name if customer else None,
        "cart_link": cart_link,
        "links_to_cart": bool(due.cart.cart_url),
        "lines": [
            {"name": line.name, "sku": line.sku, "quantity": line.quantity,
             "price": money(line.unit_price), "line_total": money(line.line_total),
             "image": line.image_url, "url": line.url}
            for line in due.cart.lines
        ],
        "item_count": due.cart.item_count,
        "total": money(Decimal(due.cart.total)),
        "currency": due.cart.currency or "",
        "store_name": policy.store_name or due.store_id,
        "discount_code": due.discount_code or policy.discount_code,
        "unsubscribe_link": unsubscribe_link,
        "step": due.step,
        "steps": due.steps,
        "locale": customer.locale if customer else None,
        # in the customer's time zone (else the store's), as their calendar shows the day
        "abandoned_at": due.abandoned_at.astimezone(
            ZoneInfo((customer.timezone if customer else None) or policy.timezone)),
    }


def message_id(due: ReminderDue, policy: ReminderPolicy) -> str:
    """Derived from the idempotency key: a resend, should one ever happen, is recognisable."""
    return f"<{due.idempotency_key}@{policy.from_address.rpartition('@')[2]}>"


def build_email(due: ReminderDue, rendered: RenderedReminder, policy: ReminderPolicy,
                unsubscribe_link: str | None, now: float) -> bytes:
    """The MIME message (text + HTML alternative) as sent; BCC stays in the envelope only.

    Written directly as RFC 5322 / MIME bytes, 7-bit clean: headers that are not plain ASCII
    become RFC 2047 encoded words, bodies that are not go quoted-printable. Lines end with LF,
    as in ``bytes(EmailMessage)``; the SMTP client sends them as CRLF.
    (``email.message.EmailMessage`` builds the same message, at about 3 ms a reminder: it was
    most of the sender's CPU time.)
    """
    assert due.recipient is not None
    headers = [
        ("From", formataddr((policy.from_name or policy.store_name or "", policy.from_address))),
        ("To", formataddr(((due.cart.customer.name if due.cart.customer else None) or "",
                           due.recipient))),
    ]
    if policy.reply_to:
        headers.append(("Reply-To", policy.reply_to))
    headers += [
        ("Subject", rendered.subject),
        ("Date", format_datetime(utc_from_epoch(now))),
        ("Message-ID", message_id(due, policy)),
    ]
    if unsubscribe_link:
        headers += [("List-Unsubscribe", f"<{unsubscribe_link}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
    headers += [
        ("X-Cartwatch-Abandonment", due.abandonment_id),
        ("X-Cartwatch-Step", str(due.step)),
    ]
    parts = [_text_part("plain", rendered.text), _text_part("html", rendered.html)]
    boundary = _boundary(parts)
    out = [header_line(name, value) for name, value in headers]
    out.append(b"MIME-Version: 1.0\n")
    out.append(b'Content-Type: multipart/alternative;\n boundary="' + boundary + b'"\n\n')
    for part in parts:  # the line end before a delimiter belongs to the delimiter (RFC 2046)
        out += [b"--", boundary, b"\n", part, b"\n"]
    out += [b"--", boundary, b"--\n"]
    return b"".join(out)


HEADER_LINE = 78
"""Recommended longest header line (RFC 5322 2.1.1); longer values are folded."""
_MAX_LINE = 998
"""Longest line allowed (RFC 5322 2.1.1), without its CRLF."""


def header_line(name: str, value: str) -> bytes:
    """``Name: value`` and LF, 7-bit and folded; a line break in ``value`` is refused."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"the {name} header must not contain a line break")
    length = len(name) + 2 + len(value)
    if value.isascii() and (length <= HEADER_LINE
                            or length <= _MAX_LINE and " " not in value and "\t" not in value):
        return f"{name}: {value}\n".encode("ascii")  # short, or nowhere to fold (a long link)
    folded = Header(value, "us-ascii" if value.isascii() else "utf-8", header_name=name,
                    maxlinelen=HEADER_LINE).encode(linesep="\n")
    if any(len(line) > _MAX_LINE for line in folded.split("\n")):  # one overlong word
        folded = Header(value, "utf-8", header_name=name,
                        maxlinelen=HEADER_LINE).encode(linesep="\n")
    return f"{name}: {folded}\n".encode("ascii")


def _text_part(subtype: str, text: str) -> bytes:
    """A ``text/<subtype>`` UTF-8 body part: 7bit when it can be, else quoted-printable."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    lines = text.split("\n")
    if text.isascii() and max(map(len, lines)) <= _MAX_LINE:
        encoding, body = "7bit", text.encode("ascii")
    else:
        encoding, body = "quoted-printable", binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return (f'Content-Type: text/{subtype}; charset="utf-8"\n'
            f"Content-Transfer-Encoding: {encoding}\n\n").encode("ascii") + body


def _boundary(parts: list[bytes]) -> bytes:
    """A multipart boundary that occurs in none of the parts."""
    while True:
        boundary = f"=_cartwatch_{secrets.token_hex(12)}".encode("ascii")
        if not any(boundary in part for part in parts):
            return boundary


def webhook_body(due: ReminderDue, policy: ReminderPolicy, secret: bytes, now: float) -> bytes:
    cart_link, unsubscribe_link = links(due, policy, secret, now)
    return WebhookReminder(
        idempotency_key=due.idempotency_key, abandonment_id=due.abandonment_id,
        cart_id=due.cart_id, store_id=due.store_id, step=due.step, cart=due.cart,
        cart_link=cart_link, unsubscribe_link=unsubscribe_link,
        discount_code=due.discount_code or policy.discount_code,
    ).model_dump_json().encode()


def webhook_signature(secret: bytes, body: bytes) -> str:
    """``X-Cartwatch-Signature``: lets the receiver check the body came from cartwatch."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return min(maximum, initial * 2 ** max(0, attempt - 1))
