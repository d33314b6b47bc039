"""Insight aggregation and the Prometheus text format."""

from decimal import Decimal

from streams.operator.health import readiness
from streams.operator.insights import AbandonmentFacts, aggregate, period_start
from streams.operator.prometheus import Family, Histogram, render
from tests.unit.factories import DAY, HOUR, T0

MONDAY = T0  # 2024-01-01 was a Monday


def facts(store: str, at: float, status: str = "abandoned", reminded: bool = False,
          revenue: str | None = None, after: float | None = None) -> AbandonmentFacts:
    return AbandonmentFacts(store, at, status, reminded,
                            Decimal(revenue) if revenue else None, "EUR" if revenue else None,
                            after)


def test_period_starts() -> None:
    assert period_start(MONDAY + 23 * HOUR, "day") == "2024-01-01"
    assert period_start(MONDAY + 6 * DAY + 23 * HOUR, "week") == "2024-01-01"
    assert period_start(MONDAY + 7 * DAY, "week") == "2024-01-08"
    assert period_start(MONDAY - 1, "week") == "2023-12-25"


def test_daily_insights_per_store() -> None:
    created = [("s1", MONDAY + n * 60) for n in range(10)] + [("s1", MONDAY + DAY), ("s2", MONDAY)]
    abandonments = [
        facts("s1", MONDAY + HOUR, "recovered", reminded=True, revenue="20.00", after=600),
        facts("s1", MONDAY + HOUR, "recovered", reminded=False, revenue="5.50", after=100),
        facts("s1", MONDAY + HOUR, "recovered", reminded=True, revenue="1.00", after=300),
        facts("s1", MONDAY + HOUR, "reactivated", reminded=True),
        facts("s1", MONDAY + 2 * HOUR),
        facts("s1", MONDAY + DAY + HOUR),
    ]
    result = aggregate(created, abandonments, "day")
    assert [(b["store_id"], b["period_start"]) for b in result] == [
        ("s1", "2024-01-01"), ("s1", "2024-01-02"), ("s2", "2024-01-01")]
    first = result[0]
    assert first == {
        "store_id": "s1", "period_start": "2024-01-01", "carts_created": 10, "abandoned": 5,
        "abandonment_rate": 0.5, "reminded": 3, "recovered": 3, "recovered_after_reminder": 2,
        "recovered_by_themselves": 1, "recovery_rate": 0.6,
        "recovered_revenue": {"EUR": "26.50"}, "median_seconds_to_recover": 300,
    }
    assert result[1]["abandonment_rate"] == 1.0 and result[1]["recovery_rate"] == 0.0
    assert result[2]["abandoned"] == 0 and result[2]["recovery_rate"] is None
    assert result[2]["median_seconds_to_recover"] is None


def test_weekly_insights_merge_days() -> None:
    result = aggregate([("s", MONDAY), ("s", MONDAY + 3 * DAY)],
                       [facts("s", MONDAY + 6 * DAY), facts("s", MONDAY + 7 * DAY)], "week")
    assert [(b["period_start"], b["carts_created"], b["abandoned"]) for b in result] == [
        ("2024-01-01", 2, 1), ("2024-01-08", 0, 1)]
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
