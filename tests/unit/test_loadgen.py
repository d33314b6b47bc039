"""The load generator's model: seeded, realistic, valid, and right about the outcomes."""

import io
import json
from collections import Counter

import pytest

from schemas.events import CartEvent, PurchaseEvent
from streams.loadgen import LoadSpec, expected_outcomes, generate, silent_carts
from streams.loadgen.produce import Progress

SPEC = LoadSpec(seed=7, carts=400, duplicate_probability=0.05, late_probability=0.05)


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
    spec = LoadSpec(seed=3, carts=2_000)
    expected = expected_outcomes(spec, generate(spec))
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
    assert not expected_outcomes(never, generate(never)).abandonment_ids
    always = LoadSpec(seed=1, carts=300, abandon_probability=1.0, empty_probability=0.0,
                      recover_probability=0.0, reactivate_probability=0.0)
    expected = expected_outcomes(always, generate(always))
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
