"""Hostile input messages, each with the dead-letter kind cartwatch must give it.

Shared by ``cartwatch chaos`` (interleaved with good traffic on a real worker) and the tests
(which also check every expectation against ``decode_input`` directly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cartwatch_dev.loadgen.model import Topic, iso
from streams.intake import ErrorKind

ONE_MB = 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    """One bad message: where it goes, its raw key/value, and the refusal it must get."""

    label: str
    topic: Topic
    key: bytes | None
    value: bytes | None
    kind: ErrorKind


def _event(cart: str, now: float, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"{cart}-e", "type": "item_added", "cart_id": cart,
        "store_id": "store-0", "occurred_at": iso(now),
        "item": {"sku": "SKU-1", "quantity": 1, "unit_price": "9.99", "currency": "EUR"},
    }
    event.update(overrides)
    return event


def _item(**overrides: Any) -> dict[str, Any]:
    return {"sku": "SKU-1", "quantity": 1, "unit_price": "9.99", "currency": "EUR", **overrides}


def _cart(label: str, kind: ErrorKind, now: float, **overrides: Any) -> Hostile:
    cart = f"hostile-{label}"
    value = json.dumps(_event(cart, now, **overrides)).encode()
    return Hostile(label, "cart_events", cart.encode(), value, kind)


def _raw(label: str, value: bytes | None, kind: ErrorKind,
         topic: Topic = "cart_events") -> Hostile:
    return Hostile(label, topic, f"hostile-{label}".encode(), value, kind)


def hostile_messages(now: float) -> list[Hostile]:
    """The catalog: one message per way an input can be wrong (``now`` is the worker's clock)."""
    year_2000 = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
    purchase = {
        "event_id": "hostile-p", "type": "order_completed", "order_id": "o-1",
        "cart_id": "hostile-purchase", "store_id": "store-0", "occurred_at": iso(now),
        "total": "-5.00", "currency": "EUR",
    }
    return [
        _raw("not-json", b"{not json", "not_json"),
        _raw("invalid-utf8", b'{"type": "item_added", "cart_id": "\xff\xfe\xfd"}', "not_json"),
        _raw("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "not_json"),
        _raw("empty-value", None, "invalid"),
        _raw("json-array", b"[1, 2, 3]", "invalid"),
        _raw("json-null", b"null", "invalid"),
        _cart("missing-item", "invalid", now, item=None),
        _cart("missing-cart-id", "invalid", now, cart_id=None),
        _cart("wrong-type-quantity", "invalid", now, item=_item(quantity="two")),
        _cart("float-quantity", "invalid", now, item=_item(quantity=1.5)),
        _cart("negative-quantity", "invalid", now, item=_item(quantity=-3)),
        _cart("huge-quantity", "invalid", now, item=_item(quantity=10**12)),
        _cart("huge-price", "invalid", now, item=_item(unit_price="1e30")),
        _cart("numeric-timestamp", "invalid", now, occurred_at=now),
        _cart("control-chars", "invalid", now, store_id="store\x00\x1b[2J"),
        _cart("one-mb-string", "invalid", now, item=_item(name="x" * ONE_MB)),
        _raw("nan-quantity", json.dumps(_event("hostile-nan-quantity", now))
             .replace('"quantity": 1', '"quantity": NaN').encode(), "invalid"),
        Hostile("key-mismatch", "cart_events", b"someone-else",
                json.dumps(_event("hostile-key-mismatch", now)).encode(), "invalid"),
        _cart("unknown-type", "unknown_type", now, type="cart_exploded"),
        _cart("type-not-string", "unknown_type", now, type=["item_added"]),
        _raw("purchase-unknown-type", json.dumps({**purchase, "type": "refund"}).encode(),
             "unknown_type", topic="purchase_events"),
        _raw("purchase-negative-total", json.dumps(purchase).encode(), "invalid",
             topic="purchase_events"),
        _cart("far-future", "out_of_range_time", now, occurred_at=iso(now + 86_400)),
        _cart("far-past", "out_of_range_time", now, occurred_at=iso(year_2000)),
    ]
