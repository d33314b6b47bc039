"""The execution log (every reminder attempt) and the operator notifications, as queries.

Pure functions from query parameters to SQL and from rows to what the API and the CSV show,
so every filter is unit-tested without a worker, like ``streams.operator.query`` for carts.
The log reads ``notifications n`` joined to ``abandonments a``: entries written by an earlier
version have no store or cart of their own, and the abandonment supplies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.operator import query as q
from streams.operator.export import cell, rfc3339

if TYPE_CHECKING:
    from streams.operator.export import Record

LOG_STATUSES = ("sent", "skipped", "deferred", "failed")
CHANNELS = ("email", "webhook")
NOTICE_LIMIT = 100
"""Operator notifications shown at most; they are alerts, not an archive."""

LOG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("at", "when the attempt was logged (RFC 3339 UTC)"),
    ("store_id", "the store"),
    ("cart_id", "the shop's cart id"),
    ("abandonment_id", "cart id and abandonment number"),
    ("step", "the reminder step (1 = first reminder)"),
    ("channel", "email or webhook; empty when skipped before a channel was chosen"),
    ("status", "sent, skipped, deferred or failed"),
    ("reason", "why skipped or deferred (e.g. no_consent, quiet_hours)"),
    ("error", "the failure, without secrets"),
    ("attempt", "delivery attempt number (0: not attempted)"),
    ("deferred_until", "when a deferred step is due again"),
)
"""Columns of the log's CSV export and of each entry of ``/cartwatch/api/log/``."""

NO_REMINDERS: dict[str, Any] = {"counts": {}, "last_status": None, "last_reason": None,
                                "last_at": None}
"""The reminders summary of an abandonment without any attempt."""

_SELECT = (
    "SELECT n.at AS at, coalesce(n.store_id, a.store_id) AS store_id, "
    "coalesce(n.cart_id, a.cart_id) AS cart_id, n.abandonment_id AS abandonment_id, "
    "n.step AS step, nullif(n.channel, '') AS channel, n.status AS status, n.reason AS reason, "
    "n.error AS error, n.attempt AS attempt, n.deferred_until AS deferred_until, "
    "n.rowid AS rowid FROM notifications n "
    "LEFT JOIN abandonments a ON a.abandonment_id = n.abandonment_id"
)
_ORDER = "ORDER BY n.at DESC, n.rowid DESC"
"""Newest first; the rowid breaks ties so pages neither overlap nor skip."""


@dataclass(frozen=True)
class LogQuery:
    """Which attempts to list. Times are epoch seconds; ``until`` is exclusive."""

    stores: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    cart: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = q.DEFAULT_PAGE_SIZE
    offset: int = 0


def _choices(values: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    chosen = q.comma_list(values, name)
    unknown = [value for value in chosen if value not in allowed]
    if unknown:
        raise q.QueryError(f"{name}: unknown {unknown}; use {list(allowed)}")
    return chosen


def parse_log_query(values: Mapping[str, str], max_page_size: int) -> LogQuery:
    """``store=a,b&status=skipped,failed&channel=email&reason=no_consent&cart=c-1&since=...``"""
    return LogQuery(
        stores=q.comma_list(values, "store"),
        statuses=_choices(values, "status", LOG_STATUSES),
        channels=_choices(values, "channel", CHANNELS),
        reasons=q.comma_list(values, "reason"),
        cart=values.get("cart", "").strip() or None,
        since=q.parse_time("since", values["since"]) if values.get("since") else None,
        until=q.parse_time("until", values["until"]) if values.get("until") else None,
        limit=q.whole_number("limit", values.get("limit", str(q.DEFAULT_PAGE_SIZE)), 1,
                             max_page_size),
        offset=q.whole_number("offset", values.get("offset", "0"), 0, 10**9),
    )


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join('?' * len(values))})"


def log_where(query: LogQuery) -> tuple[str, list[Any]]:
    """SQL condition on ``notifications n`` (joined to ``abandonments a``) and its parameters."""
    conditions: list[str] = []
    params: list[Any] = []
    for column, values in (("coalesce(n.store_id, a.store_id)", query.stores),
                           ("n.status", query.statuses), ("n.channel", query.channels),
                           ("n.reason", query.reasons)):
        if values:
            conditions.append(_in(column, values))
            params.extend(values)
    if query.cart:
        conditions.append("(coalesce(n.cart_id, a.cart_id) = ? OR n.abandonment_id = ?)")
        params.extend([query.cart, query.cart])
    if query.since is not None:
        conditions.append("n.at >= ?")
        params.append(query.since)
    if query.until is not None:
        conditions.append("n.at < ?")
        params.append(query.until)
    return " AND ".join(conditions) or "TRUE", params


def log_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = log_where(query)
    return f"{_SELECT} WHERE {where} {_ORDER} LIMIT ? OFFSET ?", [
        *params, query.limit, query.offset]


def log_count_sql(query: LogQuery) -> tuple[str, list[Any]]:
    where, params = log_where(query)
    return (f"SELECT count(*) FROM notifications n LEFT JOIN abandonments a "
            f"ON a.abandonment_id = n.abandonment_id WHERE {where}", params)


def log_keyset_sql(query: LogQuery, after: tuple[float, int] | None, size: int
                   ) -> tuple[str, list[Any]]:
    """The next ``size`` attempts after ``(at, rowid)`` in log order, for the CSV export."""
    where, params = log_where(query)
    if after is not None:
        # ``n.at <= ?``: an index scan can start at the key (see ``query.keyset_sql``)
        where += " AND n.at <= ? AND (n.at < ? OR (n.at = ? AND n.rowid < ?))"
        params += [after[0], after[0], after[0], after[1]]
    return f"{_SELECT} WHERE {where} {_ORDER} LIMIT ?", [*params, size]


def log_entry(row: Record) -> dict[str, Any]:
    """One attempt as the API shows it: the CSV's columns, times as epoch seconds."""
    return {name: row[name] for name, _ in LOG_COLUMNS}


def log_csv_row(row: Record) -> list[str]:
    out = []
    for name, _ in LOG_COLUMNS:
        value = row[name]
        out.append(rfc3339(value) if name in ("at", "deferred_until") else cell(
            "cart_id" if name in ("cart_id", "abandonment_id", "error") else name, value))
    return out


def reminder_summary(rows: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Per abandonment: attempts per status and the latest attempt's status and reason.

    ``rows`` are ``(abandonment_id, status, reason, at)`` in any order; the cart list shows
    the counts as its reminders column and the latest reason as the cell's explanation.
    """
    summary: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(row["abandonment_id"], {
            "counts": {}, "last_status": None, "last_reason": None, "last_at": None})
        counts = entry["counts"]
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if entry["last_at"] is None or row["at"] >= entry["last_at"]:
            entry.update(last_status=row["status"], last_reason=row["reason"],
                         last_at=row["at"])
    return summary


def summary_sql(abandonment_ids: list[str]) -> tuple[str, list[Any]]:
    return (
        "SELECT abandonment_id, status, reason, at FROM notifications "
        f"WHERE abandonment_id IN ({', '.join('?' * len(abandonment_ids))})",
        list(abandonment_ids),
    )


def notices_sql(stores: tuple[str, ...], limit: int = NOTICE_LIMIT) -> tuple[str, list[Any]]:
    """Operator notifications of ``stores`` (all when empty), newest first."""
    where = _in("store_id", stores) if stores else "TRUE"
    return (f"SELECT * FROM operator_notices WHERE {where} "
            "ORDER BY at DESC, abandonment_id, step LIMIT ?", [*stores, limit])


def stores_sql() -> str:
    """Every store the read model has seen, for the dashboard's store selector."""
    return ("SELECT store_id FROM abandonments UNION SELECT store_id FROM carts "
            "UNION SELECT store_id FROM operator_notices ORDER BY 1")
