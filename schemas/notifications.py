"""Contracts of the reminder notifier's topics.

- ``cartwatch-unsubscribes`` (input, keyed by the normalized email, see ``unsubscribe_key``):
  an unsubscribe, e.g. produced by the operator surface's unsubscribe endpoint.
- ``cartwatch-notification-log`` (output, keyed by cart_id): one entry per reminder attempt.
- ``cartwatch-operator-notifications`` (output, keyed by store_id): what operators asked to see.
- ``cartwatch-reminders-due`` (internal, keyed by the recipient key): a reminder the scheduler
  found due, handed to the sender's partition of that recipient.
- ``cartwatch-reminders-sent`` (internal, keyed by cart_id): tells the cart lifecycle that a
  reminder went out, so ``CartRecovered.reminder_sent`` and ``attribution`` can say so.
- ``cartwatch-clicks`` (output, keyed by cart_id): a counted click on a reminder's cart link
  (``LinkClick``), written by the worker's ``/cartwatch/r/<token>`` endpoint; the cart
  lifecycle reads it for ``CartRecovered.attribution``.
"""

from typing import Literal

from pydantic import Field

from schemas.common import Contract, Email, Identifier, Text, Timestamp, Url
from schemas.outputs import AbandonmentId, CartSnapshot

Channel = Literal["email", "webhook"]
LogStatus = Literal["sent", "skipped", "deferred", "failed"]
UserAgentClass = Literal["desktop", "mobile", "robot"]


def unsubscribe_key(email: str) -> bytes:
    """The Kafka key of an unsubscribe (and of a due email reminder): the normalized address.

    Both topics are partitioned by it, so the sender sees an address's unsubscribes and its
    reminders on one partition, in order.
    """
    return email.strip().lower().encode()


class Unsubscribe(Contract):
    """A customer asked for no more reminders: from one store, or from all (``store_id`` null)."""

    type: Literal["unsubscribe"] = "unsubscribe"
    email: Email
    store_id: Identifier | None = None
    unsubscribed_at: Timestamp
    source: Text = Field("link", description="Where it came from, e.g. link, support, import")


class ReminderDue(Contract):
    """A reminder step the scheduler decided to send now, with all it needs to render it."""

    type: Literal["reminder_due"] = "reminder_due"
    idempotency_key: str = Field(description="Stable per (abandonment_id, step, channel)")
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier
    step: int = Field(ge=1)
    steps: int = Field(ge=1, description="Number of steps in the store's sequence")
    template: str
    channel: Channel
    recipient: Email | None = Field(description="The customer's address, if known (the key)")
    cart: CartSnapshot
    abandoned_at: Timestamp
    due_at: Timestamp = Field(description="When the step was planned (before any deferral)")
    decided_at: Timestamp
    campaign: str | None = Field(None, description="The campaign the abandonment entered")
    variant: str | None = Field(None, description="Its variant in the campaign's experiment")
    subject: Text | None = Field(None, description="The variant's subject, instead of the "
                                                   "template's")
    discount_code: str | None = Field(None, description="The code of this step and variant "
                                                        "(null: the store's)")


class NotificationLogEntry(Contract):
    """One attempt at a reminder step: sent, skipped (with why), deferred, or failed."""

    type: Literal["notification_log"] = "notification_log"
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier
    step: int = Field(ge=1)
    channel: Channel | None = Field(description="Null when skipped before a channel was chosen")
    status: LogStatus
    reason: str | None = Field(
        None,
        description=(
            "Why skipped or deferred: cart_recovered, cart_reactivated, superseded, "
            "unsubscribed, no_consent, no_contact, frequency_capped, stale, duplicate, "
            "outcome_unknown, disabled, quiet_hours, no_campaign, holdout, send_window, "
            "no_webhook, reentry_limit"
        ),
    )
    campaign: str | None = Field(None, description="The campaign the abandonment entered "
                                                   "(null: none, or logged before campaigns)")
    variant: str | None = Field(None, description="Its variant in the campaign's experiment")
    error: Text | None = Field(None, description="The failure, without secrets")
    retrying: bool = Field(False, description="A failed attempt that will be tried again")
    attempt: int = Field(0, ge=0, description="Delivery attempt number (0: not attempted)")
    deferred_until: Timestamp | None = None
    message_id: str | None = Field(None, description="Message-ID of the email, when sent")
    idempotency_key: str | None = None
    at: Timestamp


class ReminderSent(Contract):
    """Feedback to the cart lifecycle: a reminder of this abandonment was delivered."""

    type: Literal["reminder_sent"] = "reminder_sent"
    abandonment_id: AbandonmentId
    cart_id: Identifier
    step: int = Field(ge=1)
    channel: Channel
    sent_at: Timestamp
    campaign: str | None = Field(None, description="The campaign of the reminder (null: none, "
                                                   "or sent by a release before attribution)")
    variant: str | None = Field(None, description="Its variant in the campaign's experiment")


class LinkClick(Contract):
    """A person followed a reminder's cart link (``/cartwatch/r/<token>``); requests that the
    click rule refuses (``HEAD``, prefetches, robots and mail scanners) are not recorded."""

    type: Literal["link_click"] = "link_click"
    click_id: str = Field(description="Unique per counted request: a producer's retry repeats "
                                      "it, so consumers that count clicks de-duplicate on it")
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier
    step: int = Field(ge=1, description="The reminder step whose link was followed")
    channel: Channel
    campaign: str | None = Field(None, description="The campaign of the reminder")
    variant: str | None = Field(None, description="Its variant in the campaign's experiment")
    clicked_at: Timestamp = Field(description="When the worker answered the request")
    user_agent_class: Literal["desktop", "mobile"] = Field(
        description="The browser's kind, from its User-Agent (never the User-Agent itself)")


class ManualReminder(Contract):
    """The operator's "remind now" (``POST /cartwatch/api/carts/<id>/remind/``), sent to the
    notifier's scheduler on its tick topic, keyed by cart id (so on the cart's partition)."""

    type: Literal["remind_now"] = "remind_now"
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier


class OperatorNotification(Contract):
    """An event of a store's reminders that its operators subscribed to (``operator_events``)."""

    type: Literal["operator_notification"] = "operator_notification"
    store_id: Identifier
    event: LogStatus
    abandonment_id: AbandonmentId
    step: int
    channel: Channel | None
    detail: Text | None = None
    at: Timestamp


class WebhookReminder(Contract):
    """The JSON body the webhook channel POSTs (signed in ``X-Cartwatch-Signature``)."""

    type: Literal["cart_reminder"] = "cart_reminder"
    idempotency_key: str
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier
    step: int
    cart: CartSnapshot
    cart_link: Url | None
    unsubscribe_link: Url | None
    discount_code: str | None = None


NOTIFICATION_MODELS: tuple[type[Contract], ...] = (
    Unsubscribe,
    NotificationLogEntry,
    OperatorNotification,
    ReminderDue,
    ReminderSent,
    WebhookReminder,
    ManualReminder,
    LinkClick,
)
