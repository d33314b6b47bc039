"""Insight buckets from the database's aggregated rows, and the Prometheus text format."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from streams.operator.health import readiness
from streams.operator.insights import Period, buckets, period_start
from streams.operator.prometheus import Family, Histogram, render
from tests.unit.factories import DAY, HOUR, T0

MONDAY = T0  # 2024-01-01 was a Monday
DAY_KEY = 19_723  # its day number, T0 / 86400


def key_of(seconds: float, period: Period) -> int:
    """``insights.period_key_sql`` in Python."""
    day = math.floor(seconds / 86_400)
    return day if period == "day" else math.floor((day + 3) / 7)


def calendar_start(seconds: float, period: Period) -> str:
    """The period start by the calendar, as the insights computed it before #18."""
    day = datetime.fromtimestamp(seconds, UTC).date()
    return (day - timedelta(days=day.weekday() if period == "week" else 0)).isoformat()


@pytest.mark.parametrize("seconds", [
    MONDAY, MONDAY - 0.001, MONDAY - 1, MONDAY + DAY - 0.001, MONDAY + DAY,
    MONDAY + 6 * DAY + 23 * HOUR, MONDAY + 7 * DAY - 0.001, MONDAY + 7 * DAY,
    MONDAY + 3 * DAY + 0.5, 0.0, 3 * DAY, 4 * DAY - 1, 4 * DAY, -1.0, -4 * DAY,
    1_767_225_599.999,  # 2025-12-31T23:59:59.999Z, a Wednesday
])
@pytest.mark.parametrize("period", ["day", "week"])
def test_period_keys_start_on_the_calendar_day_or_monday(seconds: float, period: Period) -> None:
    assert period_start(key_of(seconds, period), period) == calendar_start(seconds, period)


def test_period_starts() -> None:
    assert period_start(DAY_KEY, "day") == period_start(float(DAY_KEY), "day") == "2024-01-01"
    assert period_start(DAY_KEY - 1, "day") == "2023-12-31"
    assert period_start(0, "day") == "1970-01-01" and period_start(0, "week") == "1969-12-29"
    week = (DAY_KEY + 3) // 7
    assert period_start(week, "week") == "2024-01-01"
    assert period_start(week + 1, "week") == "2024-01-08"
    assert period_start(week - 1, "week") == "2023-12-25"


def test_buckets_from_aggregated_rows() -> None:
    created = [("s1", DAY_KEY, 10), ("s1", DAY_KEY + 1, 1), ("s2", DAY_KEY, 1)]
    abandonments = [
        ("s1", float(DAY_KEY), 5, 3, 3, 2, 300.0),
        ("s1", DAY_KEY + 1, 1, 0, 0, 0, None),
        ("s3", DAY_KEY, 2, 0, 1, 0, 12.5),
    ]
    revenue = [("s1", DAY_KEY, "USD", "3"), ("s1", DAY_KEY, "EUR", "26.50"),
               ("s3", DAY_KEY, "EUR", "0")]
    result = buckets("day", abandonments, revenue, created)
    assert [(b["store_id"], b["period_start"]) for b in result] == [
        ("s1", "2024-01-01"), ("s1", "2024-01-02"), ("s2", "2024-01-01"), ("s3", "2024-01-01")]
    assert result[0] == {
        "store_id": "s1", "period_start": "2024-01-01", "carts_created": 10, "abandoned": 5,
        "abandonment_rate": 0.5, "reminded": 3, "recovered": 3, "recovered_after_reminder": 2,
        "recovered_by_themselves": 1, "recovery_rate": 0.6,
        "recovered_revenue": {"EUR": "26.50", "USD": "3"}, "median_seconds_to_recover": 300.0,
    }
    assert result[1]["abandonment_rate"] == 1.0 and result[1]["recovery_rate"] == 0.0
    assert result[1]["recovered_revenue"] == {}
    assert result[2]["abandoned"] == 0 and result[2]["recovery_rate"] is None
    assert result[2]["median_seconds_to_recover"] is None
    assert result[3]["carts_created"] == 0 and result[3]["abandonment_rate"] is None
    assert result[3]["recovered_revenue"] == {"EUR": "0"}


def test_weekly_buckets_are_keyed_by_monday() -> None:
    week = (DAY_KEY + 3) // 7
    result = buckets("week", [("s", week + 1, 1, 0, 0, 0, None)], [], [("s", week, 2)])
    assert [(b["period_start"], b["carts_created"], b["abandoned"]) for b in result] == [
        ("2024-01-01", 2, 0), ("2024-01-08", 0, 1)]
    assert result[1]["abandonment_rate"] is None


def test_render_exposition_format() -> None:
    events = Family("cartwatch_events_in_total", "counter", "Input messages read")
    events.add(3, {"topic": 'a"b'})
    events.add(0.5, {"topic": "x\\y", "partition": "1"})
    lag = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 7):
        lag.observe(value)
    assert render([events, lag.family("cartwatch_timer_lag_seconds", "Lag")]) == (
        "# HELP cartwatch_events_in_total Input messages read\n"
        "# TYPE cartwatch_events_in_total counter\n"
        'cartwatch_events_in_total{topic="a\\"b"} 3\n'
        'cartwatch_events_in_total{partition="1",topic="x\\\\y"} 0.5\n'
        "# HELP cartwatch_timer_lag_seconds Lag\n"
        "# TYPE cartwatch_timer_lag_seconds histogram\n"
        'cartwatch_timer_lag_seconds_bucket{le="0.1"} 1\n'
        'cartwatch_timer_lag_seconds_bucket{le="1"} 2\n'
        'cartwatch_timer_lag_seconds_bucket{le="+Inf"} 3\n'
        "cartwatch_timer_lag_seconds_sum 7.55\n"
        "cartwatch_timer_lag_seconds_count 3\n"
    )


def test_readiness_needs_every_check() -> None:
    checks = {"partitions_assigned": True, "tables_recovered": True,
              "broker_reachable": True, "read_model_loaded": True}
    assert readiness(checks) == (200, {"ready": True, "checks": checks})
    for name in checks:
        status, body = readiness({**checks, name: False})
        assert status == 503 and body["ready"] is False and body["checks"][name] is False
