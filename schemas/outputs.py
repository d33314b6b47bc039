"""Output contract: what cartwatch publishes for downstream services and the notifier.

All outputs are keyed by ``cart_id``. Delivery is at-least-once: after a crash a message may be
repeated, always with the same ``abandonment_id``, so consumers de-duplicate on it.
"""

from typing import Literal

from pydantic import Field

from schemas.common import (
    Contract,
    Currency,
    Customer,
    Identifier,
    Money,
    Quantity,
    Text,
    Timestamp,
    Total,
    Url,
)

Attribution = Literal["clicked", "reminded", "self"]
AbandonmentId = str
"""``<cart_id>:<n>``: the cart id and the n-th abandonment of that cart, stable across replays."""


class CartLine(Contract):
    """One SKU of the cart at the time of the snapshot."""

    sku: Identifier
    name: Text | None = None
    quantity: Quantity
    unit_price: Money
    line_total: Total
    url: Url | None = None
    image_url: Url | None = None


class CartSnapshot(Contract):
    """The cart's content when it was abandoned, enough to render a reminder."""

    lines: list[CartLine]
    item_count: int = Field(description="Sum of the quantities of all lines")
    total: Total
    currency: Currency | None
    customer: Customer | None = None
    cart_url: Url | None = None


class CartAbandoned(Contract):
    """A cart with items went silent for the store's time to abandon."""

    type: Literal["cart_abandoned"] = "cart_abandoned"
    abandonment_id: AbandonmentId
    sequence: int = Field(ge=1, description="n-th abandonment of this cart")
    cart_id: Identifier
    store_id: Identifier
    cart: CartSnapshot
    created_at: Timestamp = Field(description="Event time of the cart's first event")
    last_activity_at: Timestamp
    abandoned_at: Timestamp = Field(description="last_activity_at + the store's time to abandon")


class CartReactivated(Contract):
    """An abandoned cart saw new activity; reminders for that abandonment are no longer wanted."""

    type: Literal["cart_reactivated"] = "cart_reactivated"
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier
    event_id: Identifier = Field(description="The cart event that brought the cart back")
    abandoned_at: Timestamp
    reactivated_at: Timestamp


class CartRecovered(Contract):
    """A purchase completed an abandoned cart: the sale the reminders were for."""

    type: Literal["cart_recovered"] = "cart_recovered"
    abandonment_id: AbandonmentId
    cart_id: Identifier
    store_id: Identifier
    order_id: Identifier
    revenue: Money
    currency: Currency
    abandoned_at: Timestamp
    recovered_at: Timestamp
    seconds_to_recover: float = Field(ge=0, description="recovered_at - abandoned_at")
    reminder_sent: bool = Field(description="A reminder was sent for this abandonment before")
    attribution: Attribution | None = Field(
        None,
        description=(
            "clicked: a reminder link of this abandonment was clicked before the purchase; "
            "reminded: a reminder went out, no click; self: no reminder went out. Null only in "
            "records of releases before attribution"
        ),
    )
    campaign: str | None = Field(None, description="The campaign of the reminders (null: self)")
    variant: str | None = Field(None, description="Its variant in the campaign's experiment")
    last_step: int | None = Field(
        None, ge=1, description="The last reminder step sent before the purchase (null: self)")
    clicked_step: int | None = Field(
        None, ge=1, description="The step whose link was clicked first (null unless clicked)")


class DeadLetter(Contract):
    """An input message that could not be accepted, kept whole so it can be fixed and replayed;
    or (``error_kind`` ``unreadable_state``) a changelog record of a table that could not be
    decoded, quarantined at restore (``source_topic`` is the changelog)."""

    type: Literal["dead_letter"] = "dead_letter"
    source_topic: str
    partition: int
    offset: int
    key_base64: str | None
    value_base64: str | None = Field(description="The raw bytes of the message, base64")
    value_truncated: bool = Field(
        False, description="Only the first 256 KiB of a larger value are kept in value_base64"
    )
    error: str = Field(description="Why it was refused, readable by a person")
    error_kind: Literal[
        "not_json", "invalid", "unknown_type", "out_of_range_time", "processing_failed",
        "unreadable_state",
    ]
    failed_at: Timestamp


OUTPUT_MODELS: tuple[type[Contract], ...] = (
    CartAbandoned,
    CartReactivated,
    CartRecovered,
    DeadLetter,
)
