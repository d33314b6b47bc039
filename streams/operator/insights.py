"""Insights per store and period: how many carts are abandoned and how many come back.

The database aggregates (issue #18: loading a row per abandonment into Python took seconds at
300k): ``abandonments_sql``, ``revenue_sql`` and ``created_sql`` return one row per (store,
period), per currency for the revenue, and ``buckets`` turns those rows into the answer. Pure:
the web layer runs the queries. Abandonments are counted in the period they were abandoned
in (a cohort), so a recovery always counts toward the period of the abandonment it recovered
and the rates of a period never exceed 100 %.

Periods are keyed in SQL by whole numbers (``period_key_sql``): the UTC day number
``floor(t / 86400)``, and for weeks, which start on Monday, ``floor((day + 3) / 7)`` (day 0,
1970-01-01, was a Thursday). ``period_start`` turns a key into its date.

Two aggregates are not standard SQL; each read model defines them under the same name, so the
query text is one for both (``streams.operator.store`` registers them on its SQLite connection,
``streams.operator.pgstore`` creates them in a migration):

- ``cartwatch_decimal_sum(text)``: the exact decimal sum of amounts written as text, as text
  (``"10.00"`` + ``"5.5"`` = ``"15.50"``, as ``decimal.Decimal`` adds them), NULL for none;
- ``cartwatch_median(real)``: ``statistics.median`` of the non-NULL values (the mean of the two
  middle ones for an even count), NULL for none.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

from streams.operator.query import CartQuery, scope_conditions, where_clause

Period = Literal["day", "week"]
PERIODS: tuple[Period, ...] = ("day", "week")
EPOCH = date(1970, 1, 1)

RECOVERED = "a.status = 'recovered'"
REMINDED = (
    "(coalesce(a.reminder_sent, 0) <> 0 OR EXISTS (SELECT 1 FROM notifications n "
    "WHERE n.abandonment_id = a.abandonment_id AND n.status = 'sent'))"
)
"""An abandonment was reminded: its recovery says a reminder went out, or its log does."""


@dataclass
class Bucket:
    """The figures of one store in one period."""

    store_id: str
    period_start: str
    carts_created: int = 0
    abandoned: int = 0
    reminded: int = 0
    recovered: int = 0
    recovered_after_reminder: int = 0
    recovered_revenue: dict[str, Decimal] = field(default_factory=dict)
    median_seconds_to_recover: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "store_id": self.store_id,
            "period_start": self.period_start,
            "carts_created": self.carts_created,
            "abandoned": self.abandoned,
            "abandonment_rate": rate(self.abandoned, self.carts_created),
            "reminded": self.reminded,
            "recovered": self.recovered,
            "recovered_after_reminder": self.recovered_after_reminder,
            "recovered_by_themselves": self.recovered - self.recovered_after_reminder,
            "recovery_rate": rate(self.recovered, self.abandoned),
            "recovered_revenue": {
                currency: format(amount, "f")
                for currency, amount in sorted(self.recovered_revenue.items())
            },
            "median_seconds_to_recover": self.median_seconds_to_recover,
        }


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places; None when there is nothing to divide by."""
    return round(part / whole, 4) if whole else None


def period_key_sql(column: str, period: Period) -> str:
    """SQL for the key of the period holding the epoch seconds in ``column``."""
    day = f"floor({column} / 86400)"
    return day if period == "day" else f"floor(({day} + 3) / 7.0)"


def period_start(key: float, period: Period) -> str:
    """The UTC date (ISO) the period with key ``key`` starts on: the day, or its Monday."""
    days = int(key) if period == "day" else int(key) * 7 - 3
    return (EPOCH + timedelta(days=days)).isoformat()


# -- queries --------------------------------------------------------------------------------


def abandonments_sql(query: CartQuery, period: Period) -> tuple[str, list[Any]]:
    """Per store and period of the matching abandonments: ``(store_id, key, abandoned,
    reminded, recovered, recovered_after_reminder, median_seconds_to_recover)``."""
    where, params = where_clause(query)
    return (
        f"SELECT a.store_id, {period_key_sql('a.abandoned_at', period)} AS period_key, "
        f"count(*), count(*) FILTER (WHERE {REMINDED}), count(*) FILTER (WHERE {RECOVERED}), "
        f"count(*) FILTER (WHERE {RECOVERED} AND {REMINDED}), "
        f"cartwatch_median(a.seconds_to_recover) FILTER (WHERE {RECOVERED}) "
        f"FROM abandonments a WHERE {where} GROUP BY a.store_id, period_key", params)


def revenue_sql(query: CartQuery, period: Period) -> tuple[str, list[Any]]:
    """Per store, period and currency, the revenue of the matching recovered abandonments:
    ``(store_id, key, currency, amount as text)``."""
    where, params = where_clause(query)
    return (
        f"SELECT a.store_id, {period_key_sql('a.abandoned_at', period)} AS period_key, "
        "a.revenue_currency, cartwatch_decimal_sum(a.revenue) FROM abandonments a "
        f"WHERE {where} AND {RECOVERED} AND a.revenue IS NOT NULL "
        "AND a.revenue_currency <> '' GROUP BY a.store_id, period_key, a.revenue_currency",
        params)


def created_sql(query: CartQuery, period: Period) -> tuple[str, list[Any]]:
    """Per store and period, the carts created in the query's stores and time range:
    ``(store_id, key, carts_created)``."""
    conditions, params = scope_conditions(query, "store_id", "created_at")
    return (
        f"SELECT store_id, {period_key_sql('created_at', period)} AS period_key, count(*) "
        f"FROM carts WHERE {' AND '.join(conditions) or 'TRUE'} GROUP BY store_id, period_key",
        params)


# -- the answer -----------------------------------------------------------------------------


def buckets(
    period: Period,
    abandonments: Iterable[Sequence[Any]],
    revenue: Iterable[Sequence[Any]],
    created: Iterable[Sequence[Any]],
) -> list[dict[str, object]]:
    """The buckets of the rows of ``abandonments_sql``, ``revenue_sql`` and ``created_sql``,
    sorted by (store, period start)."""
    found: dict[tuple[str, str], Bucket] = {}

    def bucket(store_id: str, key: float) -> Bucket:
        start = period_start(key, period)
        return found.setdefault((store_id, start), Bucket(store_id, start))

    for store_id, key, count in created:
        bucket(store_id, key).carts_created = int(count)
    for store_id, key, abandoned, reminded, recovered, after_reminder, median in abandonments:
        current = bucket(store_id, key)
        current.abandoned, current.reminded = int(abandoned), int(reminded)
        current.recovered, current.recovered_after_reminder = int(recovered), int(after_reminder)
        current.median_seconds_to_recover = median
    for store_id, key, currency, amount in revenue:
        bucket(store_id, key).recovered_revenue[currency] = Decimal(amount)
    return [found[key].as_dict() for key in sorted(found)]
