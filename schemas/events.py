"""Input contract: what platform teams publish to ``cart-events`` and ``purchase-events``.

Messages are JSON, keyed by ``cart_id`` so that every event of a cart lands on one partition.
"""

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.common import (
    Contract,
    Currency,
    Customer,
    Identifier,
    Money,
    Quantity,
    Text,
    Timestamp,
    Url,
)

CartEventType = Literal[
    "item_added",
    "item_removed",
    "quantity_changed",
    "cart_viewed",
    "checkout_started",
    "cart_cleared",
    "customer_identified",
]


class Item(Contract):
    """A product line as the event describes it; which fields are required depends on the type."""

    sku: Identifier
    name: Text | None = None
    quantity: Quantity | None = None
    unit_price: Money | None = None
    currency: Currency | None = None
    url: Url | None = None
    image_url: Url | None = None


class CartEvent(Contract):
    """Something the shopper did to a cart; every event counts as activity."""

    event_id: Identifier = Field(description="Unique per event; a repeated id changes nothing")
    type: CartEventType
    cart_id: Identifier
    store_id: Identifier
    occurred_at: Timestamp = Field(description="Event time (RFC 3339); deadlines derive from it")
    customer: Customer | None = None
    item: Item | None = None
    cart_url: Url | None = None

    @model_validator(mode="after")
    def _item_matches_type(self) -> Self:
        item = self.item
        if self.type in ("item_added", "item_removed", "quantity_changed") and item is None:
            raise ValueError(f"{self.type} needs an item")
        if self.type == "item_added" and item is not None:
            if not item.quantity:
                raise ValueError("item_added needs item.quantity >= 1")
            if item.unit_price is None or item.currency is None:
                raise ValueError("item_added needs item.unit_price and item.currency")
        if self.type == "quantity_changed" and item is not None and item.quantity is None:
            raise ValueError("quantity_changed needs item.quantity (0 removes the line)")
        return self


class PurchaseEvent(Contract):
    """An order placed from a cart: ends the cart, and recovers it if it was abandoned."""

    event_id: Identifier
    type: Literal["order_completed"]
    order_id: Identifier
    cart_id: Identifier
    store_id: Identifier
    occurred_at: Timestamp
    total: Money
    currency: Currency
    customer: Customer | None = None
