"""CSV exports: one line per SKU of each abandoned cart, and customer emails.

Rows are produced one at a time from database batches, so an export of any size streams with
flat memory. Amounts are written exactly as published (decimal text), times in RFC 3339 UTC.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import SupportsKeysAndGetItem

    Record = SupportsKeysAndGetItem[str, Any]
    """A mapping or a ``sqlite3.Row``: both have keys and items by name."""

CART_COLUMNS: tuple[tuple[str, str], ...] = (
    ("abandonment_id", "cart id and abandonment number, e.g. c-1:2"),
    ("cart_id", "the shop's cart id"),
    ("store_id", "the store"),
    ("status", "abandoned, reactivated or recovered"),
    ("created_at", "time of the cart's first event"),
    ("last_activity_at", "time of the cart's last activity before it was abandoned"),
    ("abandoned_at", "when cartwatch declared it abandoned"),
    ("reactivated_at", "when the shopper came back without buying (empty otherwise)"),
    ("recovered_at", "time of the order that recovered it (empty otherwise)"),
    ("customer_name", "from the cart's events"),
    ("customer_email", "from the cart's events"),
    ("customer_phone", "from the cart's events"),
    ("marketing_consent", "true, false, or empty when unknown"),
    ("currency", "ISO 4217 code of the cart"),
    ("cart_total", "total of all lines of the cart"),
    ("cart_item_count", "sum of the quantities of all lines"),
    ("sku", "this line's SKU"),
    ("product_name", "this line's product name"),
    ("quantity", "this line's quantity"),
    ("unit_price", "this line's unit price"),
    ("line_total", "quantity x unit price"),
    ("order_id", "the recovering order (empty otherwise)"),
    ("revenue", "the recovering order's total (empty otherwise)"),
    ("reminder_sent", "a reminder went out before the recovery (recovered carts only)"),
    ("cart_url", "link back to the cart"),
)
"""Column name and meaning, in file order; README's table is written from this."""

CUSTOMER_COLUMNS = ("email", "name", "marketing_consent", "carts", "last_abandoned_at")

_TIMES = {"created_at", "last_activity_at", "abandoned_at", "reactivated_at", "recovered_at",
          "last_abandoned_at"}
_FLAGS = {"marketing_consent", "reminder_sent"}
_FREE_TEXT = {"cart_id", "customer_name", "customer_email", "sku", "product_name", "cart_url",
              "email", "name", "order_id"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def rfc3339(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def cell(column: str, value: Any) -> str:
    """One value as CSV text: times in RFC 3339, flags as true/false, None as empty.

    Shopper-supplied text that a spreadsheet would run as a formula gets a leading quote.
    """
    if value is None:
        return ""
    if column in _TIMES:
        return rfc3339(value)
    if column in _FLAGS:
        return "true" if value else "false"
    text = str(value)
    return defuse(text) if column in _FREE_TEXT else text


def defuse(text: str) -> str:
    """Text a spreadsheet would run as a formula, with a leading quote so it stays text."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def cart_row(abandonment: Record, line: Record) -> list[str]:
    """One export line: the abandonment's columns, then one of its lines."""
    values = {**abandonment, **line, "cart_total": abandonment["total"],
              "cart_item_count": abandonment["item_count"], "product_name": line["name"]}
    return [cell(name, values[name]) for name, _ in CART_COLUMNS]


def customer_row(row: Record) -> list[str]:
    return [cell(name, row[name]) for name in CUSTOMER_COLUMNS]


def csv_chunks(header: Sequence[str] | None, rows: Iterable[list[str]], every: int = 500
               ) -> Iterator[str]:
    """The CSV text in chunks of ``every`` rows, header first unless ``header`` is None.

    None, not an empty sequence, means "no header": ``csv.writer`` turns an empty row into an
    empty line, which is how exports once had a blank line between database pages.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header is not None:
        writer.writerow(header)
    pending = 0
    for row in rows:
        writer.writerow(row)
        pending += 1
        if pending >= every:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if text := buffer.getvalue():
        yield text


async def paged_csv(header: Sequence[str], pages: AsyncIterable[list[list[str]]],
                    every: int = 500) -> AsyncIterator[str]:
    """One CSV document from rows read page by page: the header once, then every page's rows.

    The export reads the database in pages so that memory stays flat; the reader must not be
    able to tell where one page ended.
    """
    first = True
    async for rows in pages:
        for chunk in csv_chunks(header if first else None, rows, every):
            yield chunk
        first = False
    if first:
        for chunk in csv_chunks(header, (), every):
            yield chunk
