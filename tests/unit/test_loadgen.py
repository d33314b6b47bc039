"""The load generator's model: seeded, realistic, valid, and right about the outcomes.

The ledger's expectations are checked against the real state machine here (and only here):
``replay`` folds the generated messages through ``streams.lifecycle`` the way the pipeline
does, and the ledger must predict its outputs record for record.
"""

import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.settings import Settings
from schemas.events import CartEvent, PurchaseEvent
from streams.lifecycle import CartState, apply_event, on_deadline
from streams.loadgen import LoadSpec, Message, compare, generate, generate_traffic, silent_carts
from streams.loadgen.ledger import KINDS, Kind
from streams.loadgen.produce import Progress

SPEC = LoadSpec(seed=7, carts=400, duplicate_probability=0.05, late_probability=0.05)


def expected_outcomes(spec: LoadSpec):
    return generate_traffic(spec).expected()


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
    expected = expected_outcomes(LoadSpec(seed=3, carts=2_000))
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
    assert not expected_outcomes(never).abandonment_ids
    always = LoadSpec(seed=1, carts=300, abandon_probability=1.0, empty_probability=0.0,
                      recover_probability=0.0, reactivate_probability=0.0)
    expected = expected_outcomes(always)
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
