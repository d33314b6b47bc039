"""Insights per store and period: how many carts are abandoned and how many come back.

Pure aggregation over facts read from the read model. Abandonments are counted in the period
they were abandoned in (a cohort), so a recovery always counts toward the period of the
abandonment it recovered and the rates of a period never exceed 100 %.
"""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

Period = Literal["day", "week"]
PERIODS: tuple[Period, ...] = ("day", "week")


@dataclass(frozen=True, slots=True)
class AbandonmentFacts:
    """What insights need from one abandonment."""

    store_id: str
    abandoned_at: float
    status: str
    reminded: bool
    revenue: Decimal | None = None
    currency: str | None = None
    seconds_to_recover: float | None = None


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
    recovered_by_themselves: int = 0
    recovered_revenue: dict[str, Decimal] = field(default_factory=dict)
    _times_to_recover: list[float] = field(default_factory=list, repr=False)

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
            "recovered_by_themselves": self.recovered_by_themselves,
            "recovery_rate": rate(self.recovered, self.abandoned),
            "recovered_revenue": {
                currency: format(amount, "f")
                for currency, amount in sorted(self.recovered_revenue.items())
            },
            "median_seconds_to_recover": (
                statistics.median(self._times_to_recover) if self._times_to_recover else None
            ),
        }


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places; None when there is nothing to divide by."""
    return round(part / whole, 4) if whole else None


def period_start(seconds: float, period: Period) -> str:
    """The UTC date the period holding ``seconds`` starts on (weeks start on Monday)."""
    day = datetime.fromtimestamp(seconds, UTC).date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    return day.isoformat()


def aggregate(
    created: Iterable[tuple[str, float]],
    abandonments: Iterable[AbandonmentFacts],
    period: Period,
) -> list[dict[str, object]]:
    """Buckets by (store, period start), sorted; ``created`` is ``(store_id, created_at)``."""
    buckets: dict[tuple[str, str], Bucket] = {}

    def bucket(store_id: str, seconds: float) -> Bucket:
        start = period_start(seconds, period)
        return buckets.setdefault((store_id, start), Bucket(store_id, start))

    for store_id, created_at in created:
        bucket(store_id, created_at).carts_created += 1
    for facts in abandonments:
        current = bucket(facts.store_id, facts.abandoned_at)
        current.abandoned += 1
        current.reminded += facts.reminded
        if facts.status != "recovered":
            continue
        current.recovered += 1
        if facts.reminded:
            current.recovered_after_reminder += 1
        else:
            current.recovered_by_themselves += 1
        if facts.revenue is not None and facts.currency:
            revenue = current.recovered_revenue
            revenue[facts.currency] = revenue.get(facts.currency, Decimal(0)) + facts.revenue
        if facts.seconds_to_recover is not None:
            current._times_to_recover.append(facts.seconds_to_recover)
    return [buckets[key].as_dict() for key in sorted(buckets)]
