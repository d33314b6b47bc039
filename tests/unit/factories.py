"""Small builders for contract events, shared by the unit tests.

``*_doc`` functions return the JSON document a producer would publish; the others validate it
into the contract model. Every builder gets a fresh ``event_id`` unless one is given.
"""

import itertools
import json
from datetime import UTC, datetime
from typing import Any

from config.settings import Settings
from schemas.events import CartEvent, PurchaseEvent

T0 = 1_704_067_200.0
"""2024-01-01T00:00:00Z, the reference event time of the tests."""
MINUTE = 60.0
HOUR = 3_600.0
DAY = 86_400.0

_ids = itertools.count(1)


def iso(epoch: float) -> str:
    """RFC 3339 UTC spelling of ``epoch`` as producers write it."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def make_settings(**overrides: Any) -> Settings:
    """Settings with the documented defaults unless overridden (durations in seconds or text)."""
    return Settings.model_validate(overrides)


def item_doc(
    sku: str = "sku-1",
    quantity: int | None = 1,
    unit_price: str | None = "19.99",
    currency: str | None = "EUR",
    **extra: Any,
) -> dict[str, Any]:
    fields = {"sku": sku, "quantity": quantity, "unit_price": unit_price, "currency": currency}
    return {key: value for key, value in {**fields, **extra}.items() if value is not None}


def cart_doc(
    type: str = "cart_viewed",
    *,
    when: float = T0,
    cart_id: str = "cart-1",
    store_id: str = "store-1",
    event_id: str | None = None,
    item: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": event_id or f"evt-{next(_ids)}",
        "type": type,
        "cart_id": cart_id,
        "store_id": store_id,
        "occurred_at": iso(when),
    }
    if item is not None:
        doc["item"] = item
    doc.update(extra)
    return doc


def purchase_doc(
    *,
    when: float = T0,
    cart_id: str = "cart-1",
    store_id: str = "store-1",
    event_id: str | None = None,
    order_id: str = "order-1",
    total: str = "59.97",
    currency: str = "EUR",
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": event_id or f"evt-{next(_ids)}",
        "type": "order_completed",
        "order_id": order_id,
        "cart_id": cart_id,
        "store_id": store_id,
        "occurred_at": iso(when),
        "total": total,
        "currency": currency,
    }
    doc.update(extra)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def cart_event(type: str = "cart_viewed", **kwargs: Any) -> CartEvent:
    return CartEvent.model_validate(cart_doc(type, **kwargs))


def added(
    sku: str = "sku-1", quantity: int = 1, unit_price: str = "19.99", **kwargs: Any
) -> CartEvent:
    return cart_event("item_added", item=item_doc(sku, quantity, unit_price), **kwargs)


def removed(sku: str = "sku-1", **kwargs: Any) -> CartEvent:
    return cart_event("item_removed", item=item_doc(sku, None, None, None), **kwargs)


def quantity_changed(sku: str, quantity: int, **kwargs: Any) -> CartEvent:
    return cart_event("quantity_changed", item=item_doc(sku, quantity, None, None), **kwargs)


def purchase(**kwargs: Any) -> PurchaseEvent:
    return PurchaseEvent.model_validate(purchase_doc(**kwargs))
