"""What a read-model record changes, as SQL both backends run: the one place that maps the feed's
records (abandonments, their outcomes, the notification log, clicks, operator notices, created
carts) to rows.

Pure: ``record_writes`` returns statements and their parameters, and the SQLite store
(``store.ReadModel``) and the PostgreSQL store (``pgstore.PostgresReadModel``) execute them in
order inside their batch's transaction. The statements use ``?`` placeholders (the PostgreSQL
store rewrites them) and only syntax the two databases share: ``ON CONFLICT DO NOTHING`` rather
than SQLite's ``INSERT OR IGNORE``, ``CASE`` rather than SQLite's ``min``/``max`` or
PostgreSQL's ``least``/``greatest``. Every value is a parameter; the only names put into the
text are column names written in this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.events import CartEvent
from schemas.notifications import LinkClick, NotificationLogEntry, OperatorNotification
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered

STATUS_RANK = {"abandoned": 0, "reactivated": 1, "recovered": 2}
"""An abandonment's status only moves up this order, whatever order its records arrive in."""


@dataclass(frozen=True)
class Write:
    """One statement and the parameter rows it runs with (``executemany``)."""

    statement: str
    rows: Sequence[Sequence[Any]]


_NON_DIGITS = re.compile(r"\D+")


def phone_digits(phone: str | None) -> str | None:
    """Digits only, so "+49 151-234" is found by "49151234" and by "151 234"."""
    return _NON_DIGITS.sub("", phone) if phone else None


FIELD_SEPARATOR = "\x1f"
"""Between the fields of ``abandonments.products`` (ASCII's unit separator): a search term
never holds it, so a match never spans two fields."""
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def searchable_products(lines: Sequence[tuple[str, str | None]]) -> str:
    """Each line's SKU and name, lower-cased as SQL's ``lower()`` does it (ASCII letters only,
    in SQLite and in PostgreSQL's "C" collation), so the product search is one condition on
    the abandonment's own row instead of a probe of its lines."""
    fields = [text for sku, name in lines for text in (sku, name or "")]
    return FIELD_SEPARATOR.join(fields).translate(_ASCII_LOWER)


def offset_writes(offsets: Mapping[tuple[str, int], int]) -> Write:
    """Remember the next offset of each partition the batch's records came from.

    Offsets only move forward: a feeder that lost a partition in a rebalance while writing
    may still commit its batch after the new owner wrote further. Its rows change nothing
    (every write is idempotent and a status never moves back), and its offsets must not
    send the next owner back either."""
    return Write(
        "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?) "
        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset "
        "WHERE excluded.next_offset > offsets.next_offset",
        [(topic, partition, offset) for (topic, partition), offset in offsets.items()],
    )


def record_writes(record: object) -> list[Write]:
    """The statements that apply one decoded record, in order; idempotent (a record read again
    changes nothing)."""
    if isinstance(record, CartAbandoned):
        return _abandoned(record)
    if isinstance(record, CartReactivated):
        return _advance(record.abandonment_id, record.cart_id, record.store_id, "reactivated",
                        record.abandoned_at.timestamp(),
                        reactivated_at=record.reactivated_at.timestamp())
    if isinstance(record, CartRecovered):
        return _advance(record.abandonment_id, record.cart_id, record.store_id, "recovered",
                        record.abandoned_at.timestamp(),
                        recovered_at=record.recovered_at.timestamp(),
                        order_id=record.order_id, revenue=format(record.revenue, "f"),
                        revenue_currency=record.currency,
                        seconds_to_recover=record.seconds_to_recover,
                        reminder_sent=int(record.reminder_sent))
    if isinstance(record, NotificationLogEntry):
        writes = [Write(
            "INSERT INTO notifications (abandonment_id, step, channel, status, attempt, at, "
            "cart_id, store_id, reason, error, deferred_until, campaign, variant) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(record.abandonment_id, record.step, record.channel or "", record.status,
              record.attempt, record.at.timestamp(), record.cart_id, record.store_id,
              record.reason, record.error,
              record.deferred_until.timestamp() if record.deferred_until else None,
              record.campaign, record.variant)],
        )]
        if record.campaign is not None:
            writes.append(Write(
                "UPDATE abandonments SET campaign = ?, variant = ? "
                "WHERE abandonment_id = ? AND campaign IS NULL",
                [(record.campaign, record.variant, record.abandonment_id)],
            ))
        return writes
    if isinstance(record, LinkClick):
        return [Write(
            "INSERT INTO clicks (click_id, abandonment_id, cart_id, store_id, step, channel, "
            "campaign, variant, clicked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(record.click_id, record.abandonment_id, record.cart_id, record.store_id,
              record.step, record.channel, record.campaign, record.variant,
              record.clicked_at.timestamp())],
        )]
    if isinstance(record, OperatorNotification):
        return [Write(
            "INSERT INTO operator_notices (store_id, event, abandonment_id, step, channel, "
            "detail, at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(record.store_id, record.event, record.abandonment_id, record.step,
              record.channel, record.detail, record.at.timestamp())],
        )]
    if isinstance(record, CartEvent):
        return [Write(
            "INSERT INTO carts (cart_id, store_id, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (cart_id) DO UPDATE SET created_at = CASE "
            "WHEN excluded.created_at < carts.created_at THEN excluded.created_at "
            "ELSE carts.created_at END",
            [(record.cart_id, record.store_id, record.occurred_at.timestamp())],
        )]
    raise TypeError(f"not a read-model record: {type(record).__name__}")


def _abandoned(record: CartAbandoned) -> list[Write]:
    cart = record.cart
    customer = cart.customer
    return [
        *_advance(
            record.abandonment_id, record.cart_id, record.store_id, "abandoned",
            record.abandoned_at.timestamp(),
            sequence=record.sequence,
            created_at=record.created_at.timestamp(),
            last_activity_at=record.last_activity_at.timestamp(),
            total=format(cart.total, "f"),
            total_value=float(cart.total),
            currency=cart.currency,
            item_count=cart.item_count,
            customer_name=customer.name if customer else None,
            customer_email=customer.email if customer else None,
            customer_phone=customer.phone if customer else None,
            phone_digits=phone_digits(customer.phone if customer else None),
            marketing_consent=(
                None if customer is None or customer.marketing_consent is None
                else int(customer.marketing_consent)
            ),
            customer_json=customer.model_dump_json(exclude_none=True) if customer else None,
            cart_url=cart.cart_url,
            products=searchable_products([(line.sku, line.name) for line in cart.lines]),
        ),
        Write("DELETE FROM lines WHERE abandonment_id = ?", [(record.abandonment_id,)]),
        Write(
            "INSERT INTO lines (abandonment_id, position, sku, name, quantity, unit_price, "
            "line_total, url, image_url) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(record.abandonment_id, position, line.sku, line.name, line.quantity,
              format(line.unit_price, "f"), format(line.line_total, "f"), line.url,
              line.image_url)
             for position, line in enumerate(cart.lines)],
        ),
    ]


def _advance(abandonment_id: str, cart_id: str, store_id: str, status: str,
             abandoned_at: float, **fields: Any) -> list[Write]:
    """Insert or update one abandonment; its status never moves backwards. Then, as log
    entries may be read before an abandonment's first record (topics arrive in any order),
    take its campaign from them."""
    columns = ["abandonment_id", "cart_id", "store_id", "status", "status_rank",
               "abandoned_at", *fields]
    values = [abandonment_id, cart_id, store_id, status, STATUS_RANK[status], abandoned_at,
              *fields.values()]
    updates = ", ".join([
        *(f"{name} = excluded.{name}" for name in fields),
        "status = CASE WHEN excluded.status_rank > abandonments.status_rank "
        "THEN excluded.status ELSE abandonments.status END",
        "status_rank = CASE WHEN excluded.status_rank > abandonments.status_rank "
        "THEN excluded.status_rank ELSE abandonments.status_rank END",
    ])
    return [
        Write(f"INSERT INTO abandonments ({', '.join(columns)}) "
              f"VALUES ({', '.join('?' * len(columns))}) "
              f"ON CONFLICT (abandonment_id) DO UPDATE SET {updates}", [values]),
        Write("UPDATE abandonments SET (campaign, variant) = (SELECT n.campaign, n.variant "
              "FROM notifications n WHERE n.abandonment_id = abandonments.abandonment_id AND "
              "n.campaign IS NOT NULL LIMIT 1) WHERE abandonment_id = ? AND campaign IS NULL",
              [(abandonment_id,)]),
    ]
