"""The load generator's model: seeded, realistic, valid, and right about the outcomes.

The ledger's expectations are checked against the real state machine here (and only here):
``replay`` folds the generated messages through ``streams.lifecycle`` the way the pipeline
does, and the ledger must predict its outputs record for record.
"""

import io
import json
import mailbox
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cartwatch_dev.chaos.emails import MARGIN, judge_emails
from cartwatch_dev.chaos.report import ScenarioResult
from cartwatch_dev.loadgen import (
    LoadSpec,
    Message,
    compare,
    generate,
    generate_traffic,
    silent_carts,
)
from cartwatch_dev.loadgen.ledger import (
    KINDS,
    Activity,
    CartLedger,
    Kind,
    Line,
    Purchase,
    ReminderRule,
    Reminders,
    expected_outcomes,
    expected_reminders,
)
from cartwatch_dev.loadgen.produce import Progress
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.settings import Settings
from schemas.events import CartEvent, PurchaseEvent
from streams.lifecycle import CartState, apply_event, on_deadline

SPEC = LoadSpec(seed=7, carts=400, duplicate_probability=0.05, late_probability=0.05)


def replay(spec: LoadSpec, messages: Sequence[Message]) -> dict[Kind, list[dict[str, Any]]]:
    """The real state machine's outputs (contract JSON) for ``messages``: before each message,
    everything due up to its delivery time fires; at the end, everything fires."""
    settings = Settings(abandon_after=spec.abandon_after)
    states: dict[bytes, CartState | None] = {}
    outputs: list[Any] = []

    def fire(key: bytes, horizon: float) -> None:
        state = states.get(key)
        if state is not None:
            transition = on_deadline(state, horizon, settings)
            outputs.extend(transition.outputs)
            states[key] = transition.state

    for message in messages:
        fire(message.key, message.sent_at)
        model = CartEvent if message.topic == "cart_events" else PurchaseEvent
        event = model.model_validate_json(message.value)
        transition = apply_event(states.get(message.key), event, settings, 0)
        outputs.extend(transition.outputs)
        states[message.key] = transition.state
    for key in list(states):
        fire(key, math.inf)
    kinds = {"cart_abandoned": "abandoned", "cart_recovered": "recovered",
             "cart_reactivated": "reactivated"}
    observed: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for output in outputs:
        observed[kinds[output.type]].append(output.model_dump(mode="json"))  # type: ignore
    return observed


@given(seed=st.integers(min_value=0, max_value=10**6),
       duplicate=st.sampled_from([0.0, 0.05, 0.3]), late=st.sampled_from([0.0, 0.05, 0.3]),
       abandon_after=st.sampled_from([3.0, 60.0, 1_800.0]))
@hypothesis_settings(max_examples=40, deadline=None)
def test_the_ledger_predicts_the_state_machine_record_for_record(
    seed: int, duplicate: float, late: float, abandon_after: float,
) -> None:
    spec = LoadSpec(seed=seed, carts=60, duplicate_probability=duplicate,
                    late_probability=late, abandon_after=abandon_after)
    traffic = generate_traffic(spec)
    verdict = compare(traffic.expected(), replay(spec, traffic.messages))
    assert verdict.ok, verdict.problems()


def test_the_cross_check_covers_every_outcome_and_delivery_fault() -> None:
    traffic = generate_traffic(SPEC)
    expected = traffic.expected()
    assert compare(expected, replay(SPEC, traffic.messages)).ok
    assert expected.recoveries and expected.reactivations
    assert any(a.abandonment_id.endswith(":2") for a in expected.abandonments.values())
    assert any(a.email for a in expected.abandonments.values())
    assert any(a.email is None for a in expected.abandonments.values())
    assert len(traffic.messages) > sum(len(c.activities) + (c.purchase is not None)
                                       for c in traffic.carts.values())  # duplicates
    assert any(activity.at < max(a.at for a in cart.activities[:index])
               for cart in traffic.carts.values()
               for index, activity in enumerate(cart.activities) if index)  # late ones


def test_same_seed_same_traffic_other_seed_other_traffic():
    assert generate(SPEC) == generate(SPEC)
    assert generate(SPEC) != generate(LoadSpec(seed=8, carts=400))


def test_every_message_is_a_valid_contract_event_keyed_by_its_cart():
    for message in generate(SPEC):
        model = CartEvent if message.topic == "cart_events" else PurchaseEvent
        event = model.model_validate_json(message.value)
        assert message.key == event.cart_id.encode()


def test_traffic_mixes_every_shopper_action_and_delivery_fault():
    messages = generate(SPEC)
    types = Counter(json.loads(m.value)["type"] for m in messages)
    assert set(types) == {"item_added", "item_removed", "quantity_changed", "cart_viewed",
                          "checkout_started", "order_completed"}
    assert len(messages) > len({m.value for m in messages})  # duplicates
    times = {}
    late = 0
    for message in messages:  # late: stamped before an event of its cart delivered earlier
        document = json.loads(message.value)
        late += document["occurred_at"] < times.get(message.key, "")
        times[message.key] = max(times.get(message.key, ""), document["occurred_at"])
    assert late > 0
    assert [m.sent_at for m in messages] == sorted(m.sent_at for m in messages)


def test_outcomes_follow_the_probabilities():
    expected = generate_traffic(LoadSpec(seed=3, carts=2_000)).expected()
    spec = LoadSpec(seed=3, carts=2_000)
    first = {i for i in expected.abandonment_ids if i.endswith(":1")}
    assert 0.3 * spec.carts < len(first) < 0.5 * spec.carts
    assert 0.2 * len(first) < len(expected.recovered_ids) < 0.4 * len(first)
    assert 0.1 * len(first) < len(expected.reactivated_ids) < 0.3 * len(first)
    assert expected.recovered_ids <= first and expected.reactivated_ids <= first
    # a reactivated cart goes silent again: its second abandonment is expected too
    second = {i.replace(":1", ":2") for i in expected.reactivated_ids}
    assert second <= expected.abandonment_ids


def test_no_abandonment_without_silence_or_purchase_and_all_abandoned_without_purchase():
    never = LoadSpec(seed=1, carts=300, abandon_probability=0.0, empty_probability=0.0)
    assert not generate_traffic(never).expected().abandonment_ids
    always = LoadSpec(seed=1, carts=300, abandon_probability=1.0, empty_probability=0.0,
                      recover_probability=0.0, reactivate_probability=0.0)
    expected = generate_traffic(always).expected()
    # every cart is abandoned once, except those its shopper's own removes emptied
    assert expected.abandonment_ids <= {f"cart-1-{i}:1" for i in range(300)}
    assert len(expected.abandonment_ids) > 0.8 * 300


def test_ending_before_puts_every_deadline_in_the_past():
    spec = SPEC.ending_before(2_000_000_000.0)
    assert spec.last_deadline == pytest.approx(2_000_000_000.0)
    last_event = max(
        CartEvent.model_validate_json(m.value).occurred_at.timestamp()
        for m in generate(spec) if m.topic == "cart_events"
    )
    assert last_event + spec.abandon_after <= spec.last_deadline


@pytest.mark.parametrize("field", ["abandon_probability", "late_probability"])
def test_probabilities_outside_unit_interval_are_refused(field):
    with pytest.raises(ValueError, match=field):
        LoadSpec(**{field: 1.5})


def test_silent_carts_share_one_last_activity():
    messages = list(silent_carts(5, 1_700_000_000.0, seed=2))
    events = [CartEvent.model_validate_json(m.value) for m in messages]
    assert len({e.cart_id for e in events}) == 5
    assert {e.occurred_at.timestamp() for e in events} == {1_700_000_000.0}


def test_progress_reports_count_and_rate():
    out = io.StringIO()
    progress = Progress(10, out=out)
    progress.advance(10)
    assert progress.close() > 0
    assert "10/10" in out.getvalue() and "msg/s" in out.getvalue()


# -- comparisons: each one fails when the outputs are wrong on purpose -------------------------


def _observed(spec: LoadSpec = SPEC) -> tuple[Any, dict[Kind, list[dict[str, Any]]]]:
    traffic = generate_traffic(spec)
    return traffic.expected(), replay(spec, traffic.messages)


def _first_with(observed: dict[Kind, list[dict[str, Any]]], lines: int) -> dict[str, Any]:
    return next(r for r in observed["abandoned"] if len(r["cart"]["lines"]) >= lines)


def test_a_wrong_total_is_a_difference() -> None:
    expected, observed = _observed()
    record = _first_with(observed, 1)
    record["cart"]["total"] = str(Decimal(record["cart"]["total"]) + Decimal("0.01"))
    verdict = compare(expected, observed)
    assert not verdict.ok
    assert list(verdict.different["abandoned"]) == [record["abandonment_id"]]
    assert verdict.different["abandoned"][record["abandonment_id"]][0].startswith("total ")
    assert not verdict.missing["abandoned"] and not verdict.unexpected["abandoned"]


def test_a_missing_line_is_a_difference() -> None:
    expected, observed = _observed()
    record = _first_with(observed, 2)
    dropped = record["cart"]["lines"].pop()
    (problem,) = compare(expected, observed).problems()
    assert f"line {dropped['sku']} missing" in problem and "1 different" in problem


def test_a_wrong_item_count_or_quantity_is_a_difference() -> None:
    expected, observed = _observed()
    record = _first_with(observed, 1)
    record["cart"]["item_count"] += 1
    record["cart"]["lines"][0]["quantity"] += 1
    diff = compare(expected, observed).different["abandoned"][record["abandonment_id"]]
    assert any(d.startswith("item_count ") for d in diff)
    assert any(d.startswith(f"line {record['cart']['lines'][0]['sku']} quantity") for d in diff)


def test_a_wrong_time_a_wrong_revenue_and_a_wrong_reactivating_event_are_differences() -> None:
    expected, observed = _observed()
    record = observed["abandoned"][0]
    record["abandoned_at"] = record["last_activity_at"]  # fired at once, not after T
    observed["recovered"][0]["revenue"] = "0.01"
    observed["reactivated"][0]["event_id"] = "someone-else"
    different = compare(expected, observed).different
    assert all(len(different[kind]) == 1 for kind in KINDS)
    assert different["abandoned"][record["abandonment_id"]][0].startswith("abandoned_at ")


def test_a_repeated_record_must_repeat_the_first_one() -> None:
    expected, observed = _observed()
    repeat = json.loads(json.dumps(observed["abandoned"][0]))
    repeat["cart"]["lines"] = []
    observed["abandoned"].append(repeat)
    verdict = compare(expected, observed)
    assert list(verdict.different["abandoned"]) == [repeat["abandonment_id"]]
    assert not verdict.missing["abandoned"]


def test_missing_unexpected_and_unreadable_records_are_told_apart() -> None:
    expected, observed = _observed()
    lost = observed["abandoned"].pop(0)["abandonment_id"]
    observed["recovered"].append({**observed["recovered"][0], "abandonment_id": "invented:1"})
    broken = observed["reactivated"][0]
    del broken["reactivated_at"]
    verdict = compare(expected, observed)
    assert verdict.missing["abandoned"] == {lost}
    assert verdict.unexpected["recovered"] == {"invented:1"}
    assert "unreadable record (KeyError" in verdict.different["reactivated"][
        broken["abandonment_id"]][0]
    assert verdict.counts() == {
        "missing": {"abandoned": 1, "recovered": 0, "reactivated": 0},
        "unexpected": {"abandoned": 0, "recovered": 1, "reactivated": 0},
        "different": {"abandoned": 0, "recovered": 0, "reactivated": 1},
    }
    assert len(verdict.problems()) == 3


def _drop_last_line(snapshot: Any) -> Any:
    def broken(state: CartState) -> Any:
        cart = snapshot(state)
        return cart.model_copy(update={"lines": cart.lines[:-1]})
    return broken


def _add_sets_quantity(apply_content: Any) -> Any:
    def broken(state: CartState, event: CartEvent) -> None:
        if event.type == "item_added" and event.item is not None:
            event = event.model_copy(update={"type": "quantity_changed"})
        apply_content(state, event)
    return broken


@pytest.mark.parametrize(("name", "breaker", "symptom"), [
    ("snapshot", _drop_last_line, "missing"),
    ("_apply_content", _add_sets_quantity, "quantity"),
])
def test_the_ledger_catches_a_state_machine_broken_on_purpose(
    monkeypatch: pytest.MonkeyPatch, name: str, breaker: Any, symptom: str,
) -> None:
    """Ids stay right, carts go wrong: the old id-only expectations (a replay of this very
    state machine) could not see it; the ledger does."""
    import streams.lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, name, breaker(getattr(lifecycle, name)))
    expected, observed = _observed()
    verdict = compare(expected, observed)
    assert {r["abandonment_id"] for r in observed["abandoned"]} == expected.abandonment_ids
    assert verdict.different["abandoned"]
    assert any(symptom in problem for problem in verdict.problems())


# -- reminders: due, never, or left to timing -----------------------------------------------------

RULE = ReminderRule(steps=(0.5, 10.0), require_consent=False)
LINES = (Line("SKU-1", 2, Decimal("9.99")),)


def cart(name: str, *, email: str | None = "a@example.com", at: Sequence[float] = (0.0,),
         bought_at: float | None = None) -> CartLedger:
    """A cart with one line, activity at ``at`` (the address given with the first) and maybe
    a purchase; the time to abandon is 3 s."""
    ledger = CartLedger(name, "store-0", "EUR")
    ledger.activities = [Activity(f"{name}-{n}", moment, LINES if n == 0 else None,
                                  email if n == 0 else None) for n, moment in enumerate(at)]
    if bought_at is not None:
        ledger.purchase = Purchase(bought_at, f"order-{name}", Decimal("19.98"), "EUR")
    return ledger


def reminders(*carts: CartLedger, rule: ReminderRule = RULE, **options: Any) -> Reminders:
    return expected_reminders(expected_outcomes(carts, 3.0), rule, margin=0.5, **options)


def test_an_abandonment_with_an_address_gets_every_step_and_without_one_none() -> None:
    assert reminders(cart("c")) == Reminders(frozenset({("c:1", 1), ("c:1", 2)}), frozenset())
    assert reminders(cart("c", email=None)) == Reminders(frozenset(), frozenset())
    consent = replace(RULE, require_consent=True)  # the load's shoppers never consent
    assert reminders(cart("c"), rule=consent) == Reminders(frozenset(), frozenset())


@pytest.mark.parametrize(("bought_at", "must", "optional"), [
    (20.0, {1, 2}, set()),  # abandoned at 3: both steps (3.5, 13) before the purchase
    (6.0, {1}, set()),  # between the steps: the second is cancelled
    (3.3, set(), {1}),  # 0.2 s before the first step: timing decides
    (3.9, set(), {1}),  # 0.4 s after it: still timing
    (13.2, {1}, {2}),
])
def test_a_purchase_cancels_the_steps_after_it_and_close_calls_are_optional(
    bought_at: float, must: set[int], optional: set[int],
) -> None:
    found = reminders(cart("c", bought_at=bought_at))
    assert found == Reminders(frozenset(("c:1", s) for s in must),
                              frozenset(("c:1", s) for s in optional))


def test_the_frequency_cap_holds_back_a_later_abandonment_unless_the_first_got_none() -> None:
    one_step = replace(RULE, steps=(1.0,))
    # abandoned at 3, back at 10 (after the reminder at 4), abandoned again at 13
    assert reminders(cart("c", at=(0.0, 10.0)), rule=one_step).must == {("c:1", 1)}
    # back at 3.2 (before the reminder): abandonment 1 gets none, abandonment 2 gets one
    assert reminders(cart("c", at=(0.0, 3.2)), rule=one_step).must == {("c:2", 1)}
    # back at 4.2: either may get it, depending on which won the race
    close = reminders(cart("c", at=(0.0, 4.2)), rule=one_step)
    assert close == Reminders(frozenset(), frozenset({("c:1", 1), ("c:2", 1)}))
    no_cap = replace(one_step, frequency_cap=None)
    assert reminders(cart("c", at=(0.0, 10.0)), rule=no_cap).must == {("c:1", 1), ("c:2", 1)}


def test_a_follow_up_before_an_outage_ends_leaves_the_reminder_to_timing() -> None:
    bought = cart("c", bought_at=8.0)
    assert reminders(bought).must == {("c:1", 1)}
    assert reminders(bought, blackouts=[(2.0, 7.8)]).optional == {("c:1", 1)}
    assert reminders(bought, blackouts=[(4.5, 7.8)]).must == {("c:1", 1)}  # decided before


def test_the_chaos_load_leaves_no_reminder_to_timing() -> None:
    """With the chaos scenarios' settings (3 s to abandon, one step after 0.5 s) the load's
    follow-ups come 1.5 s or more after an abandonment: every email is known in advance."""
    spec = LoadSpec(seed=19, carts=400, abandon_after=3.0, span=25.0)
    expected = generate_traffic(spec).expected()
    found = expected_reminders(expected, ReminderRule(steps=(0.5,), require_consent=False),
                               margin=0.5)
    assert not found.optional
    with_address = {key for key, a in expected.abandonments.items() if a.email}
    first = {key for key in with_address if key.endswith(":1")}
    assert {key for key, _ in found.must} == first  # the cap holds back every second one
    assert first & expected.recovered_ids and first & expected.reactivated_ids
    assert with_address - first


# -- the chaos consumers --------------------------------------------------------------------------


def _scenario(spec: LoadSpec) -> ScenarioResult:
    traffic = generate_traffic(spec)
    return ScenarioResult(
        name="unit", faults=[], carts=spec.carts, messages=len(traffic.messages),
        expected=traffic.expected(), outputs=replay(spec, traffic.messages),
        duplicate_outputs=0)


def test_a_scenario_with_the_right_ids_but_a_wrong_cart_fails() -> None:
    result = _scenario(SPEC)
    assert result.ok and result.verdict.ok
    result.outputs["abandoned"][0]["cart"]["total"] = "0.00"
    assert result.abandoned == result.expected.abandonment_ids and not result.lost
    assert not result.ok
    assert [p for p in result.problems() if "different" in p and "total" in p]


def _mail(box: mailbox.Maildir, abandonment_id: str, step: int, number: int) -> None:
    message = EmailMessage()
    message["Message-ID"] = f"<{abandonment_id}-{step}-{number}@unit>"
    message["X-Cartwatch-Abandonment"] = abandonment_id
    message["X-Cartwatch-Step"] = str(step)
    message["Date"] = "Thu, 03 Dec 2026 01:00:00 +0000"
    box.add(message)


MAIL_SPEC = LoadSpec(seed=19, carts=200, abandon_after=3.0, span=25.0)
MAIL_RULE = ReminderRule(steps=(0.5,), require_consent=False)


def _mailed(tmp_path: Path, sent: slice) -> tuple[ScenarioResult, list[tuple[str, int]],
                                                  mailbox.Maildir]:
    """A scenario of ``MAIL_SPEC``, its due reminders in order, and a Maildir holding the
    ``sent`` slice of them."""
    result = _scenario(MAIL_SPEC)
    must = sorted(expected_reminders(result.expected, MAIL_RULE, margin=MARGIN).must)
    box = mailbox.Maildir(tmp_path / "mail", create=True)
    for number, (key, step) in enumerate(must[sent]):
        _mail(box, key, step, number)
    return result, must, box


def test_the_email_check_wants_the_ledgers_reminders_and_refuses_others(tmp_path: Path) -> None:
    spec, rule = MAIL_SPEC, MAIL_RULE
    result, must, box = _mailed(tmp_path, slice(None, -1))
    judge_emails(result, rule, tmp_path / "mail")
    assert (result.emails_expected, result.emails) == (len(must), len(must) - 1)
    assert any("emails" in problem for problem in result.problems())
    _mail(box, *must[-1], len(must))
    result = _scenario(spec)
    judge_emails(result, rule, tmp_path / "mail")
    assert result.ok, result.problems()
    capped = next(key for key in result.expected.abandonments
                  if key.endswith(":2") and result.expected.abandonments[key].email)
    _mail(box, capped, 1, len(must) + 1)  # the cap holds back a cart's second abandonment
    result = _scenario(spec)
    judge_emails(result, rule, tmp_path / "mail")
    assert any("must not be sent" in problem for problem in result.problems())


def test_a_reminder_lost_at_most_once_is_allowed_only_after_a_crash(tmp_path: Path) -> None:
    spec, rule = MAIL_SPEC, MAIL_RULE
    result, must, _ = _mailed(tmp_path, slice(1, None))
    logged_at = result.expected.abandonments[must[0][0]].abandoned_at + 1.0
    unknown = {must[0]: logged_at}
    judge_emails(result, rule, tmp_path / "mail", unknown)  # no crash: unexplained
    assert not result.ok
    assert any("outcome_unknown without a crash" in p for p in result.problems())
    result = _scenario(spec)
    result.blackouts = [(logged_at - 2.0, logged_at + 1.0)]  # the worker was killed before it
    judge_emails(result, rule, tmp_path / "mail", unknown)
    assert result.ok, result.problems()
    assert (result.emails, result.emails_expected) == (len(must) - 1, len(must) - 1)
    assert "1 lost at most once" in result.notes[-1]
    result = _scenario(spec)
    result.blackouts = [(logged_at + 1.0, logged_at + 3.0)]  # the only crash came after it
    judge_emails(result, rule, tmp_path / "mail", unknown)
    assert not result.ok


MUTATIONS = {
    "total": lambda r: r["cart"].update(total=str(Decimal(r["cart"]["total"]) + 1)),
    "item_count": lambda r: r["cart"].update(item_count=r["cart"]["item_count"] - 1),
    "last line": lambda r: r["cart"]["lines"].pop(),
    "unit_price": lambda r: r["cart"]["lines"][0].update(unit_price="0.01"),
    "currency": lambda r: r["cart"].update(currency="USD"),
    "last_activity_at": lambda r: r.update(last_activity_at=r["abandoned_at"]),
    "email": lambda r: r["cart"].update(customer=None),
}
TRAFFIC = generate_traffic(SPEC)
ABANDONED = replay(SPEC, TRAFFIC.messages)["abandoned"]


@given(index=st.integers(min_value=0, max_value=len(ABANDONED) - 1),
       mutation=st.sampled_from(sorted(MUTATIONS)))
@hypothesis_settings(max_examples=60, deadline=None)
def test_any_one_wrong_field_of_any_abandoned_cart_is_a_difference(
    index: int, mutation: str,
) -> None:
    record = json.loads(json.dumps(ABANDONED[index]))
    if mutation == "email" and not (record["cart"].get("customer") or {}).get("email"):
        record["cart"]["customer"] = {"email": "someone@example.com"}
    else:
        MUTATIONS[mutation](record)
    verdict = compare(TRAFFIC.expected(),
                      {"abandoned": [*ABANDONED[:index], record, *ABANDONED[index + 1:]]})
    assert set(verdict.different["abandoned"]) == {record["abandonment_id"]}


def test_the_expectations_serialize_for_loadgen_expect() -> None:
    written = json.loads(json.dumps(generate_traffic(SPEC).expected().as_json()))
    some_id = written["abandonment_ids"][0]
    assert set(written["abandonments"][some_id]) >= {"lines", "item_count", "total"}


def test_the_expectations_never_consult_the_pipelines_state_machine() -> None:
    """The ledger must stay independent of what it checks (only this test file cross-checks)."""
    code = ("import sys, cartwatch_dev.loadgen, cartwatch_dev.loadgen.ledger; "
            "print(sorted(m for m in sys.modules if m.startswith('streams.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert "streams.lifecycle" not in loaded and "streams.pipeline" not in loaded, loaded
