"""Results per campaign, variant and step (streams/operator/results.py), and the uplift interval."""

import csv
import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.common import utc_from_epoch
from schemas.notifications import LinkClick, NotificationLogEntry
from streams.operator import query as q
from streams.operator import results, web
from streams.operator.export import csv_chunks
from streams.operator.results import (
    Attempt,
    Click,
    Entry,
    aggregate,
    step_outcome,
    uplift,
    wilson_interval,
)
from streams.operator.store import ReadModel
from tests.unit.factories import DAY, HOUR, T0
from tests.unit.test_operator_readmodel import abandoned, recovered

# -- the interval ---------------------------------------------------------------------------

NEWCOMBE_1998_TABLE_II = [
    # x1, n1, x2, n2, lower, upper: method 10 (hybrid score) of Newcombe, Statistics in
    # Medicine 17 (1998) 873-890, Table II, examples (a) to (h)
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0),
    (10, 10, 0, 10, 0.6075, 1.0),
]


@pytest.mark.parametrize(("x1", "n1", "x2", "n2", "low", "high"), NEWCOMBE_1998_TABLE_II)
def test_uplift_interval_matches_newcombes_table(x1: int, n1: int, x2: int, n2: int,
                                                 low: float, high: float) -> None:
    found = uplift(x1, n1, x2, n2)
    assert found.difference == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(found.low, 4), round(found.high, 4)) == (low, high)


@pytest.mark.parametrize(("x", "n", "low", "high"), [
    # Newcombe, Statistics in Medicine 17 (1998) 857-872, Table I, method 3 (score)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718), (29, 29, 0.8830, 1.0),
])
def test_wilson_interval_matches_textbook_values(x: int, n: int, low: float,
                                                 high: float) -> None:
    assert tuple(round(bound, 4) for bound in wilson_interval(x, n)) == (low, high)


@pytest.mark.parametrize(("x", "n"), [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_refuses_impossible_counts(x: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(x, n)


counts = st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


@given(counts, counts)
def test_uplift_interval_holds_the_estimate_within_minus_one_and_one(
        variant: tuple[int, int], holdout: tuple[int, int]) -> None:
    found = uplift(*variant, *holdout)
    assert -1.0 <= found.low <= found.difference <= found.high <= 1.0
    assert found.high - found.low > 0  # never the Wald interval's zero width at 0 % or 100 %


@given(counts)
def test_wilson_interval_holds_the_proportion(count: tuple[int, int]) -> None:
    low, high = wilson_interval(*count)
    assert 0.0 <= low <= count[0] / count[1] <= high <= 1.0


@given(counts, counts)
def test_a_99_percent_interval_holds_the_95_percent_one(variant: tuple[int, int],
                                                        holdout: tuple[int, int]) -> None:
    narrow = uplift(*variant, *holdout)
    wide = uplift(*variant, *holdout, z=2.5758293035489)
    assert wide.low <= narrow.low + 1e-12 and narrow.high <= wide.high + 1e-12
    assert math.isclose(narrow.difference, wide.difference)


# -- one step's outcome -------------------------------------------------------------------


def attempt(status: str, at: float, reason: str | None = None, step: int = 1) -> Attempt:
    return Attempt("c:1", step, status, reason, at)


@pytest.mark.parametrize(("log", "outcome"), [
    ([attempt("deferred", 1, "quiet_hours"), attempt("sent", 2)], ("sent", None)),
    # a step read again after a crash is logged duplicate after it was sent: still sent
    ([attempt("sent", 1), attempt("skipped", 2, "duplicate")], ("sent", None)),
    ([attempt("failed", 1), attempt("failed", 2), attempt("sent", 3)], ("sent", None)),
    ([attempt("deferred", 1, "send_window"), attempt("skipped", 2, "cart_recovered")],
     ("skipped", "cart_recovered")),
    ([attempt("skipped", 2, "stale"), attempt("skipped", 1, "holdout")], ("skipped", "stale")),
    ([attempt("failed", 1)], ("failed", None)),
    ([attempt("deferred", 1, "quiet_hours")], None),
])
def test_a_step_has_one_outcome(log: list[Attempt], outcome: tuple[str, str | None] | None
                                ) -> None:
    assert step_outcome(log) == outcome


# -- the SQL aggregation against a read model of known rows --------------------------------


def entry(abandonment_id: str, step: int, status: str, at: float, reason: str | None = None,
          campaign: str | None = "big", variant: str | None = "a",
          store: str = "s1") -> NotificationLogEntry:
    return NotificationLogEntry(
        abandonment_id=abandonment_id, cart_id=abandonment_id.split(":")[0], store_id=store,
        step=step, channel="email" if status in ("sent", "failed") else None, status=status,
        reason=reason, at=utc_from_epoch(at), campaign=campaign, variant=variant)


def click(abandonment_id: str, step: int, click_id: str, at: float, store: str = "s1",
          variant: str = "a") -> LinkClick:
    return LinkClick(
        click_id=click_id, abandonment_id=abandonment_id, cart_id=abandonment_id.split(":")[0],
        store_id=store, step=step, channel="email", campaign="big", variant=variant,
        clicked_at=utc_from_epoch(at), user_agent_class="mobile")


def shop() -> ReadModel:
    """Campaign "big" of store s1 with variants a, b and holdout h, two steps (1 h, 24 h):

    - a1: step 1 sent, recovered 2 h after abandonment (last touch: step 1), 100.00 EUR
    - a2: steps 1 and 2 sent, recovered after step 2, 50.00 EUR
    - a3: step 1 skipped no_consent, step 2 skipped no_consent
    - a4: step 1 sent, then a duplicate skip of it; step 2 failed for good
    - b1: step 1 deferred (quiet hours) then sent; no recovery; step 2 still deferred
    - b2: recovered 30 min after abandonment, 20.00 EUR; step 1 still went out at 1 h (the
      purchase had not reached the scheduler yet), step 2 skipped cart_recovered
    - h1..h4: holdout, both steps skipped holdout at once; h1 recovered by itself, 10.00 EUR
    - p1, p2: abandoned, no log entry yet (pending); n1: no campaign matched; o1: another store

    Clicks: a1 clicked step 1's link twice (and one of those clicks is read twice), a2 the
    links of both steps, b1 step 1's, o1 its step 1's; n1 has a click but no campaign.
    """
    model = ReadModel()
    records: list[object] = []
    a = T0
    for cart in ("a1", "a2", "a3", "a4", "b1", "b2", "h1", "h2", "h3", "h4", "p1", "p2", "n1"):
        records.append(abandoned(cart, at=a))
    records.append(abandoned("o1", store="s2", at=a))
    records += [recovered("a1", at=a, after=2 * HOUR, revenue="100.00"),
                recovered("a2", at=a, after=30 * HOUR, revenue="50.00"),
                recovered("b2", at=a, after=HOUR / 2, revenue="20.00"),
                recovered("h1", at=a, after=5 * HOUR, revenue="10.00")]
    step1, step2 = a + HOUR, a + DAY
    records += [
        entry("a1:1", 1, "sent", step1), entry("a1:1", 2, "skipped", a + 2 * HOUR,
                                               "cart_recovered"),
        entry("a2:1", 1, "sent", step1), entry("a2:1", 2, "sent", step2),
        entry("a3:1", 1, "skipped", step1, "no_consent"),
        entry("a3:1", 2, "skipped", step2, "no_consent"),
        entry("a4:1", 1, "sent", step1), entry("a4:1", 1, "skipped", step1 + 5, "duplicate"),
        entry("a4:1", 2, "failed", step2),
        entry("b1:1", 1, "deferred", step1, "quiet_hours", variant="b"),
        entry("b1:1", 1, "sent", step1 + 8 * HOUR, variant="b"),
        entry("b1:1", 2, "deferred", step2, "quiet_hours", variant="b"),
        entry("b2:1", 1, "sent", step1, variant="b"),
        entry("b2:1", 2, "skipped", a + HOUR / 2, "cart_recovered", variant="b"),
        entry("n1:1", 1, "skipped", a, "no_campaign", campaign=None, variant=None),
        entry("o1:1", 1, "sent", step1, store="s2"),
    ]
    for cart in ("h1", "h2", "h3", "h4"):
        records += [entry(f"{cart}:1", step, "skipped", a, "holdout", variant="h")
                    for step in (1, 2)]
    twice = click("a1:1", 1, "a1-x", step1 + 60)
    records += [
        twice, click("a1:1", 1, "a1-y", step1 + 90), twice,
        click("a2:1", 1, "a2-x", step1 + 60), click("a2:1", 2, "a2-y", step2 + 60),
        click("b1:1", 1, "b1-x", step1 + 9 * HOUR, variant="b"),
        click("o1:1", 1, "o1-x", step1 + 60, store="s2"),
        click("n1:1", 1, "n1-x", a + 60),
    ]
    model.write_batch(records, {})
    return model


def answer(**params: str) -> dict[str, object]:
    return web.campaign_results(shop(), q.parse_query(params, 500))


def variants(result: dict[str, object]) -> dict[str, dict[str, object]]:
    [campaign] = [c for c in result["campaigns"] if c["store_id"] == "s1"]  # type: ignore[attr-defined]
    return {variant["variant"]: variant for variant in campaign["variants"]}


def test_results_per_variant() -> None:
    result = answer()
    assert result["uplift_method"] == "newcombe-wilson" and result["pending"] == 2
    assert [(c["store_id"], c["campaign"], c["holdout_variants"])  # type: ignore[index]
            for c in result["campaigns"]] == [("s1", "big", ["h"]), ("s2", "big", [])]  # type: ignore[attr-defined]
    found = variants(result)
    a, b, h = found["a"], found["b"], found["h"]
    assert {name: a[name] for name in a if name not in ("steps", "uplift")} == {
        "variant": "a", "holdout": False, "entered": 4, "reminded": 3, "sent": 4, "failed": 1,
        "skipped": {"cart_recovered": 1, "no_consent": 2}, "clicked": 2, "recovered": 2,
        "recovery_rate": 0.5, "revenue": {"EUR": "150.00"},
        "revenue_per_reminder": {"EUR": "37.50"},
    }
    assert (b["entered"], b["reminded"], b["sent"], b["clicked"], b["recovered"],
            b["recovery_rate"], b["skipped"], b["revenue"], b["revenue_per_reminder"]) == (
        2, 2, 2, 1, 1, 0.5, {"cart_recovered": 1}, {"EUR": "20.00"}, {"EUR": "10.00"})
    assert (h["holdout"], h["entered"], h["sent"], h["skipped"], h["clicked"], h["recovered"],
            h["recovery_rate"], h["revenue"], h["revenue_per_reminder"], h["uplift"]) == (
        True, 4, 0, {"holdout": 8}, 0, 1, 0.25, {"EUR": "10.00"}, {}, None)
    expected = uplift(2, 4, 1, 4).as_dict()
    assert a["uplift"] == expected and expected["difference"] == 0.25
    assert expected["low"] < 0 < expected["high"]  # four carts each prove nothing


def test_results_per_step_count_recoveries_toward_the_last_reminder_before_the_order() -> None:
    steps = {(name, step["step"]): step for name, variant in variants(answer()).items()
             for step in variant["steps"]}  # type: ignore[attr-defined]
    one, two = steps[("a", 1)], steps[("a", 2)]
    assert (one["entered"], one["sent"], one["failed"], one["skipped"], one["recovered"],
            one["revenue"], one["revenue_per_reminder"], one["recovery_rate"]) == (
        4, 3, 0, {"no_consent": 1}, 1, {"EUR": "100.00"}, {"EUR": "33.33"}, 0.25)
    assert (two["entered"], two["sent"], two["failed"], two["skipped"], two["recovered"],
            two["revenue"]) == (
        4, 1, 1, {"cart_recovered": 1, "no_consent": 1}, 1, {"EUR": "50.00"})
    # b1's step 2 is still deferred: it reached the step, with no outcome yet
    assert (steps[("b", 2)]["entered"], steps[("b", 2)]["sent"],
            steps[("b", 2)]["skipped"]) == (2, 0, {"cart_recovered": 1})
    # b2 was bought before its only reminder: no step recovered it, the variant did
    assert steps[("b", 1)]["sent"] == 2 and steps[("b", 1)]["recovered"] == 0
    assert steps[("h", 1)]["skipped"] == steps[("h", 2)]["skipped"] == {"holdout": 4}


def test_clicked_counts_abandonments_with_a_click_per_variant_and_per_step() -> None:
    """a1's three click records (two clicks, one read twice) are one clicked abandonment; a2
    clicked both steps: once in the variant, once in each step; n1 has no campaign."""
    result = answer()
    found = variants(result)
    clicked = {(name, step["step"]): step["clicked"] for name, variant in found.items()
               for step in variant["steps"]}  # type: ignore[attr-defined]
    assert {name: variant["clicked"] for name, variant in found.items()} == {
        "a": 2, "b": 1, "h": 0}
    assert clicked == {("a", 1): 2, ("a", 2): 1, ("b", 1): 1, ("b", 2): 0,
                       ("h", 1): 0, ("h", 2): 0}
    [s2] = [c for c in result["campaigns"] if c["store_id"] == "s2"]  # type: ignore[attr-defined]
    assert s2["variants"][0]["clicked"] == 1


def test_a_replayed_click_changes_nothing_and_a_second_click_adds_no_abandonment() -> None:
    model = shop()
    before = web.campaign_results(model, q.parse_query({}, 500))
    rows = model.query("SELECT click_id, abandonment_id, step, channel, campaign, variant "
                       "FROM clicks WHERE abandonment_id = 'a1:1' ORDER BY click_id")
    assert [tuple(row) for row in rows] == [("a1-x", "a1:1", 1, "email", "big", "a"),
                                            ("a1-y", "a1:1", 1, "email", "big", "a")]
    model.write_batch([click("a1:1", 1, "a1-x", T0), click("b1:1", 1, "b1-z", T0, variant="b")],
                      {})
    assert web.campaign_results(model, q.parse_query({}, 500)) == before
    assert model.sizes()["clicks"] == 8


def test_aggregate_counts_clicks_of_the_abandonments_in_the_campaign_only() -> None:
    """Pure: distinct abandonments per variant and per step; a click of an abandonment
    outside the entries counts nowhere; a click on a step with no log entry yet counts in the
    variant's total only (the step is not in the step view until its entry is read)."""
    entries = [Entry("x:1", "s", "c", "v", "abandoned"), Entry("y:1", "s", "c", "v", "abandoned"),
               Entry("z:1", "s", "c", "w", "abandoned")]
    log = [Attempt("x:1", 1, "sent", None, 1.0), Attempt("y:1", 1, "sent", None, 1.0),
           Attempt("z:1", 1, "sent", None, 1.0)]
    clicks = [Click("x:1", 1), Click("x:1", 1), Click("y:1", 2), Click("other:1", 1)]
    v, w = aggregate(entries, log, clicks)
    assert (v.variant, v.total.clicked, v.steps[1].clicked, sorted(v.steps)) == ("v", 2, 1, [1])
    assert (w.variant, w.total.clicked, w.steps[1].clicked) == ("w", 0, 0)
    assert [arm.total.clicked for arm in aggregate(entries, log, [])] == [0, 0]


def test_results_take_the_scope_filters() -> None:
    assert [c["store_id"] for c in answer(store="s2")["campaigns"]] == ["s2"]  # type: ignore[attr-defined]
    later = answer(since="2024-01-02")
    assert later["campaigns"] == [] and later["pending"] == 0


def test_a_campaign_without_holdout_has_no_uplift() -> None:
    [s2] = [c for c in answer()["campaigns"] if c["store_id"] == "s2"]  # type: ignore[attr-defined]
    assert s2["variants"][0]["uplift"] is None and s2["variants"][0]["sent"] == 1


def test_csv_has_a_total_line_per_variant_then_its_steps() -> None:
    result = answer(store="s1")
    text = "".join(csv_chunks([name for name, _ in results.CSV_COLUMNS],
                              results.csv_rows(result)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(row["variant"], row["step"]) for row in rows] == [
        ("a", ""), ("a", "1"), ("a", "2"), ("b", ""), ("b", "1"), ("b", "2"),
        ("h", ""), ("h", "1"), ("h", "2")]
    total = rows[0]
    assert (total["entered"], total["reminded"], total["skipped"], total["skipped_reasons"],
            total["clicked"], total["revenue"], total["revenue_per_reminder"], total["holdout"],
            total["uplift"]) == ("4", "3", "3", "cart_recovered=1;no_consent=2", "2",
                                 "150.00 EUR", "37.50 EUR", "false", "0.25")
    assert [row["clicked"] for row in rows] == ["2", "2", "1", "1", "1", "0", "0", "0", "0"]
    assert rows[1]["uplift"] == "" and rows[1]["reminded"] == ""
    assert rows[6]["holdout"] == "true" and rows[6]["uplift"] == ""


def test_csv_defuses_names_a_spreadsheet_would_run() -> None:
    rows = results.csv_rows({"campaigns": [{"store_id": "=cmd", "campaign": "+c",
                                            "holdout_variants": [], "variants": []}]})
    assert rows == []
    arm = results.Arm("=s", "@c", "-v")
    [row] = results.csv_rows(results.results([arm], 0))
    assert row[:3] == ["'=s", "'@c", "'-v"]


def test_the_openapi_model_accepts_a_real_answer() -> None:
    from streams.operator import openapi

    document = openapi.CampaignResults.model_validate(answer())
    assert document.campaigns[0].variants[0].uplift is not None
    assert document.campaigns[0].variants[0].steps[1].step == 2
