"""Pure helpers of the operator CLI."""

from streams.operator.cli import cart_rows, format_table, insight_rows, query_string


def test_query_string_drops_unset_options_and_joins_repeats() -> None:
    options = {"store": ("a", "b"), "status": (), "since": None, "product": "mug", "limit": 5}
    assert query_string(options) == "store=a%2Cb&product=mug&limit=5"


def test_tables_align_columns() -> None:
    rows = cart_rows([{"abandoned_at": 1_704_067_200.0, "abandonment_id": "c1:1",
                       "store_id": "s", "status": "recovered", "total": "10.00",
                       "currency": "EUR", "item_count": 2, "customer": None}])
    assert format_table(rows, ("at", "id", "store", "status", "total", "n", "email")) == (
        "at                    id    store  status     total      n  email\n"
        "2024-01-01T00:00:00Z  c1:1  s      recovered  10.00 EUR  2"
    )


def test_insight_rows_spell_revenue_and_gaps() -> None:
    bucket = {"store_id": "s", "period_start": "2024-01-01", "carts_created": 2, "abandoned": 1,
              "abandonment_rate": 0.5, "reminded": 0, "recovered": 0,
              "recovered_after_reminder": 0, "recovery_rate": 0.0,
              "recovered_revenue": {"EUR": "1.50", "USD": "2"}, "median_seconds_to_recover": None}
    [row] = insight_rows([bucket])
    assert row[-2:] == ["1.50 EUR 2 USD", ""]
