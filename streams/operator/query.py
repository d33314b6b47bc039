"""Filters of the abandoned-carts list: parsed from query parameters, turned into SQL.

Pure functions, so every filter rule is unit-tested without a worker. The same ``CartQuery``
serves the JSON list, the CSV export, the customer export and the CLI.
"""

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.operator.writes import STATUS_RANK, phone_digits

DEFAULT_PAGE_SIZE = 50
PHONE_LIKE = re.compile(r"^\+?[0-9 ()./-]+$")
"""A customer search that is all phone characters is also matched against phone digits."""


class QueryError(ValueError):
    """A query parameter that cannot be understood; the message names it (HTTP 400)."""


@dataclass(frozen=True)
class CartQuery:
    """Which abandonments to return. Times are epoch seconds; ``until`` is exclusive."""

    stores: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    product: str | None = None
    customer: str | None = None
    min_total: Decimal | None = None
    max_total: Decimal | None = None
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    after: tuple[float, str] | None = None
    """The page after this key (``abandoned_at``, ``abandonment_id``) of the list order, as
    ``next`` in the previous page gave it: a deep page read from an index at the key, not by
    skipping ``offset`` rows."""


Key = tuple[float, str]
"""A row's place in the list order: ``(abandoned_at, abandonment_id)``."""


def encode_cursor(key: Key) -> str:
    """The ``next`` of a list page: the last row's key, opaque to clients (URL-safe)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Key:
    """The key of an ``after`` parameter; ``QueryError`` unless a page's ``next`` made it."""
    try:
        at, abandonment_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise QueryError("after: expected the next of a previous page") from None
    if (isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at)
            or not isinstance(abandonment_id, str)):
        raise QueryError("after: expected the next of a previous page")
    return float(at), abandonment_id


def parse_time(name: str, text: str) -> float:
    """RFC 3339 time, or a date (midnight UTC), as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}: expected a date or RFC 3339 time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _amount(name: str, text: str) -> Decimal:
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise QueryError(f"{name}: expected an amount like 19.90, got {text!r}") from None
    if not amount.is_finite():
        raise QueryError(f"{name}: expected a finite amount, got {text!r}")
    return amount


def whole_number(name: str, text: str, low: int, high: int) -> int:
    """An integer parameter within ``[low, high]``; the error names the parameter."""
    try:
        number = int(text)
    except ValueError:
        raise QueryError(f"{name}: expected a whole number, got {text!r}") from None
    if not low <= number <= high:
        raise QueryError(f"{name}: must be between {low} and {high}, got {number}")
    return number


def comma_list(values: Mapping[str, str], name: str) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")``: the list parameters of every operator query."""
    text = values.get(name, "")
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_query(values: Mapping[str, str], max_page_size: int) -> CartQuery:
    """Build a ``CartQuery`` from query parameters (``store=a,b&status=recovered&...``)."""
    statuses = comma_list(values, "status")
    unknown = [status for status in statuses if status not in STATUS_RANK]
    if unknown:
        raise QueryError(f"status: unknown {unknown}; use {sorted(STATUS_RANK)}")
    since = parse_time("since", values["since"]) if values.get("since") else None
    until = parse_time("until", values["until"]) if values.get("until") else None
    min_total = _amount("min_total", values["min_total"]) if values.get("min_total") else None
    max_total = _amount("max_total", values["max_total"]) if values.get("max_total") else None
    after = decode_cursor(values["after"].strip()) if values.get("after", "").strip() else None
    offset = whole_number("offset", values.get("offset", "0"), 0, 10**9)
    if after is not None and offset:
        raise QueryError("after, offset: page by one of them, not both")
    return CartQuery(
        stores=comma_list(values, "store"),
        statuses=statuses,
        since=since,
        until=until,
        product=values.get("product", "").strip() or None,
        customer=values.get("customer", "").strip() or None,
        min_total=min_total,
        max_total=max_total,
        limit=whole_number("limit", values.get("limit", str(DEFAULT_PAGE_SIZE)), 1, max_page_size),
        offset=offset,
        after=after,
    )


def _like(text: str) -> str:
    """A case-insensitive substring pattern with LIKE's wildcards taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def scope_conditions(
    query: CartQuery, store_column: str, time_column: str
) -> tuple[list[str], list[Any]]:
    """Conditions for the query's stores and time range on the given columns."""
    conditions: list[str] = []
    params: list[Any] = []
    if query.stores:
        conditions.append(f"{store_column} IN ({', '.join('?' * len(query.stores))})")
        params.extend(query.stores)
    if query.since is not None:
        conditions.append(f"{time_column} >= ?")
        params.append(query.since)
    if query.until is not None:
        conditions.append(f"{time_column} < ?")
        params.append(query.until)
    return conditions, params


def where_clause(query: CartQuery) -> tuple[str, list[Any]]:
    """SQL condition on ``abandonments a`` and its parameters for every set filter."""
    conditions, params = scope_conditions(query, "a.store_id", "a.abandoned_at")
    if query.statuses:
        conditions.append(f"a.status IN ({', '.join('?' * len(query.statuses))})")
        params.extend(query.statuses)
    if query.min_total is not None:
        conditions.append("a.total_value >= ?")
        params.append(float(query.min_total))
    if query.max_total is not None:
        conditions.append("a.total_value <= ?")
        params.append(float(query.max_total))
    if query.product:
        # SKUs and names of the lines, lower-cased in the row (writes.searchable_products)
        conditions.append("a.products LIKE ? ESCAPE '\\'")
        params.append(_like(query.product))
    if query.customer:
        matches = [
            "lower(coalesce(a.customer_name, '')) LIKE ? ESCAPE '\\'",
            "lower(coalesce(a.customer_email, '')) LIKE ? ESCAPE '\\'",
        ]
        params.extend([_like(query.customer)] * 2)
        digits = phone_digits(query.customer)
        if digits and len(digits) >= 3 and PHONE_LIKE.match(query.customer):
            matches.append("a.phone_digits LIKE ?")
            params.append(f"%{digits}%")
        conditions.append(f"({' OR '.join(matches)})")
    return (" AND ".join(conditions) or "TRUE"), params


ORDER = "ORDER BY a.abandoned_at DESC, a.abandonment_id"
"""Newest first; the id breaks ties so that pages never overlap or skip a row."""


def after_key(where: str, params: list[Any], after: Key | None) -> tuple[str, list[Any]]:
    """``where`` narrowed to the rows after ``after`` in the list order."""
    if after is None:
        return where, params
    # The first bound says the same as the OR, in the one form that lets the database start
    # its index scan at the key instead of walking from the newest row to it (at 1M
    # abandonments on PostgreSQL a deep page took 0.7 s, the whole export 14 min).
    return (where + " AND a.abandoned_at <= ? AND (a.abandoned_at < ? OR "
            "(a.abandoned_at = ? AND a.abandonment_id > ?))",
            [*params, after[0], after[0], after[0], after[1]])


def list_sql(query: CartQuery) -> tuple[str, list[Any]]:
    """A page of the list, with one row more than the limit: it tells whether a next page
    exists, so the last page's ``next`` is null instead of leading to an empty page."""
    where, params = after_key(*where_clause(query), query.after)
    return (
        f"SELECT a.* FROM abandonments a WHERE {where} {ORDER} LIMIT ? OFFSET ?",
        [*params, query.limit + 1, query.offset],
    )


COUNT_LIMIT = 1_000
"""Matches counted at most: a list's ``total`` is exact up to this many, and says "at least"
beyond. Counting every match of a common word ("shirt" in a quarter of a million carts) is
the one part of a search that grows with the matches: a second or more at 1M abandonments,
where the page itself, newest first, takes milliseconds."""


def match_keys_sql(query: CartQuery, limit: int | None = None) -> tuple[str, list[Any]]:
    """The keys of at most ``limit`` + 1 matching abandonments, in no order (one more than
    ``limit`` tells that there are more): the count of a list, and, when it found them all,
    its page too (``page_keys``).

    In no order, so the database stops after ``limit`` + 1, however it finds them. A search
    with few matches is the one whose scan costs most (every candidate of a trigram index is
    checked, none found early): with every match in hand, its page is sorted from the keys
    instead of scanning the same candidates a second time in ``list_sql``."""
    where, params = where_clause(query)
    return (f"SELECT a.abandoned_at, a.abandonment_id FROM abandonments a WHERE {where} "
            "LIMIT ?", [*params, (COUNT_LIMIT if limit is None else limit) + 1])


def _list_order(key: Key) -> tuple[float, str]:
    """``ORDER``: newest first, then the id's bytes (code points order UTF-8 as its bytes do,
    so as SQLite's BINARY and PostgreSQL's "C" collation order it)."""
    return -key[0], key[1]


def page_keys(keys: Iterable[Key], query: CartQuery) -> list[Key]:
    """The keys of the page ``query`` asks for and of the row after it (when there is one),
    given the keys of every matching abandonment: the list order, after ``query.after``,
    from ``query.offset``."""
    ordered = sorted(keys, key=_list_order)
    if query.after is not None:
        start = _list_order(query.after)
        ordered = [key for key in ordered if _list_order(key) > start]
    return ordered[query.offset:query.offset + query.limit + 1]


def rows_sql(abandonment_ids: Sequence[str]) -> tuple[str, list[Any]]:
    """The rows of these abandonments, in the list order."""
    return (f"SELECT a.* FROM abandonments a WHERE a.abandonment_id IN "
            f"({', '.join('?' * len(abandonment_ids))}) {ORDER}", list(abandonment_ids))


def keyset_sql(
    query: CartQuery, after: tuple[float, str] | None, size: int
) -> tuple[str, list[Any]]:
    """The next ``size`` matching abandonments after ``after`` (list order), for exports.

    Paging by the last row's sort key instead of an offset keeps a long export stable while
    new abandonments arrive, and lets each page be read in one short database call.
    """
    where, params = after_key(*where_clause(query), after)
    return f"SELECT a.* FROM abandonments a WHERE {where} {ORDER} LIMIT ?", [*params, size]


def customers_sql(query: CartQuery) -> tuple[str, list[Any]]:
    """One row per distinct email among the matching abandonments, newest cart first.

    Name and consent are the newest cart's (the id breaks a tie of times): a window function,
    which SQLite and PostgreSQL both run, where SQLite alone would take them as bare columns
    of ``max()``."""
    where, params = where_clause(query)
    return (
        "SELECT email, last_abandoned_at, name, marketing_consent, carts FROM ("
        "SELECT a.customer_email AS email, a.abandoned_at AS last_abandoned_at, "
        "a.customer_name AS name, a.marketing_consent AS marketing_consent, "
        "count(*) OVER (PARTITION BY a.customer_email) AS carts, row_number() OVER ("
        "PARTITION BY a.customer_email ORDER BY a.abandoned_at DESC, a.abandonment_id) AS nth "
        f"FROM abandonments a WHERE {where} AND a.customer_email IS NOT NULL) newest "
        "WHERE nth = 1 ORDER BY last_abandoned_at DESC, email",
        params,
    )
