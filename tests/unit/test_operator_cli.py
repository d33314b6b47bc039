"""Pure helpers of the operator CLI, and its commands against a stubbed API."""

from pathlib import Path

import pytest
from click.testing import CliRunner

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


def test_insights_by_campaign_prints_variants_with_uplift(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.operator import cli, web
    from streams.operator import query as q
    from tests.unit.test_operator_results import shop

    answer = web.campaign_results(shop(), q.parse_query({"store": "s1"}, 500))
    asked: list[tuple[str, dict[str, object]]] = []

    def get_json(base: str, path: str, options: dict[str, object]) -> object:
        asked.append((path, options))
        return answer

    monkeypatch.setattr(cli, "get_json", get_json)
    result = CliRunner().invoke(cli.insights, ["--by", "campaign", "--url", "http://w",
                                               "--store", "s1", "--until", "2024-01-05"])
    assert result.exit_code == 0, result.output
    assert asked == [("/cartwatch/api/insights/campaigns/",
                      {"store": ("s1",), "since": None, "until": "2024-01-05"})]
    assert result.stdout == CAMPAIGN_TABLE
    assert "2 abandonment(s) in this range have no reminder logged yet" in result.stderr
    with_steps = CliRunner().invoke(cli.insights, ["--by", "campaign", "--url", "http://w",
                                                   "--steps"])
    assert [line.split()[2:4] for line in with_steps.stdout.splitlines()[1:4]] == [
        ["a", "all"], ["a", "1"], ["a", "2"]]


def readme_example(command: str) -> str:
    """The output under ``$ <command>`` in the README's code block that shows it."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    after = text.split(f"$ {command}\n", 1)[1]
    return after.split("```", 1)[0]


CAMPAIGN_TABLE = readme_example("cartwatch insights --by campaign --store s1")
"""The README's example is what the command prints for the shop of the results' unit tests."""
