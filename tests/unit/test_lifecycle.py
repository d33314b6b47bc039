"""The pure cart state machine: every transition, per-store timeouts, event time, retention."""

import json
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas.common import MAX_QUANTITY
from schemas.events import PurchaseEvent
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.lifecycle import (
    REMEMBERED_EVENT_IDS,
    CartState,
    Transition,
    apply_event,
    horizon_before,
    next_deadline,
    on_deadline,
    snapshot,
)

from .factories import (
    DAY,
    HOUR,
    MINUTE,
    T0,
    added,
    at,
    cart_event,
    make_settings,
    purchase,
    quantity_changed,
    removed,
)

SETTINGS = make_settings(
    abandon_after="30m",
    abandoned_retention="30d",
    purchased_retention="7d",
    empty_cart_retention="1d",
    stores={"fast": {"abandon_after": "45s"}, "b2b": {"abandon_after": "1mo"}, "plain": {}},
)
ABANDON = 30 * MINUTE


def fold(events, state=None, settings=SETTINGS, partition=3):
    """Apply ``events`` in order; return the final state and every output, in order.

    After a purchase the partition's time is advanced to the purchase's event time, as the
    pipeline does, so a purchase has taken effect whether ``apply_event`` completes it at once
    or leaves it for ``on_deadline`` to complete once event time reaches it.
    """
    outputs = []
    for event in events:
        transition = apply_event(state, event, settings, partition)
        state = transition.state
        outputs.extend(transition.outputs)
        if isinstance(event, PurchaseEvent) and transition.changed:
            transition = on_deadline(state, event.occurred_at.timestamp(), settings)
            state = transition.state
            outputs.extend(transition.outputs)
    return state, outputs


def fire(state, settings=SETTINGS):
    """Run ``on_deadline`` at exactly the cart's next deadline."""
    return on_deadline(state, next_deadline(state, settings), settings)


def abandoned_cart(*events):
    """A cart built from ``events`` (default: 3 x 19.99 at T0), abandoned at its deadline."""
    state, _ = fold(events or [added(quantity=3, when=T0)])
    transition = fire(state)
    assert transition.state is not None and transition.state.status == "abandoned"
    return transition.state, transition.outputs


# --- new carts ---------------------------------------------------------------------------


def test_first_event_creates_an_active_cart():
    state, outputs = fold([added("sku-1", 2, "5.00", when=T0, store_id="fast")], partition=5)

    assert outputs == []
    assert state.cart_id == "cart-1"
    assert state.store_id == "fast"
    assert state.partition == 5
    assert state.status == "active"
    assert state.created_at == T0
    assert state.last_activity_at == T0
    assert state.lines == {"sku-1": {"quantity": 2, "unit_price": "5.00"}}
    assert state.currency == "EUR"
    assert state.abandonments == 0


def test_every_event_type_counts_as_activity():
    events = [
        added(when=T0),
        cart_event("cart_viewed", when=T0 + 10),
        cart_event("checkout_started", when=T0 + 20),
        cart_event("customer_identified", when=T0 + 30, customer={"email": "a@b.io"}),
    ]
    state, outputs = fold(events)

    assert outputs == []
    assert state.last_activity_at == T0 + 30
    assert state.customer == {"email": "a@b.io"}
    assert next_deadline(state, SETTINGS) == T0 + 30 + ABANDON


# --- deadlines and abandonment ------------------------------------------------------------


@pytest.mark.parametrize(
    ("store_id", "seconds"),
    [
        ("store-1", 30 * MINUTE),  # no override: the global value
        ("plain", 30 * MINUTE),  # listed without abandon_after: the global value
        ("fast", 45.0),
        ("b2b", 30 * DAY),
    ],
)
def test_deadline_is_last_activity_plus_the_stores_time_to_abandon(store_id, seconds):
    state, _ = fold([added(when=T0, store_id=store_id), cart_event(when=T0 + 7, store_id=store_id)])

    assert next_deadline(state, SETTINGS) == T0 + 7 + seconds


def test_default_time_to_abandon_is_thirty_minutes():
    state, _ = fold([added(when=T0)])

    assert next_deadline(state, make_settings()) == T0 + 1800


def test_on_deadline_before_the_deadline_changes_nothing():
    state, _ = fold([added(when=T0)])

    transition = on_deadline(state, T0 + ABANDON - 0.001, SETTINGS)

    assert transition.state is state
    assert transition.outputs == ()
    assert state.status == "active"
    assert state.abandonments == 0


def test_cart_is_abandoned_exactly_at_its_deadline():
    state, _ = fold([added("sku-1", 3, "19.99", when=T0), cart_event(when=T0 + 60)])

    transition = on_deadline(state, T0 + 60 + ABANDON, SETTINGS)

    assert transition.state is state
    assert state.status == "abandoned"
    assert state.abandonments == 1
    assert state.abandoned_at == T0 + 60 + ABANDON
    (output,) = transition.outputs
    assert isinstance(output, CartAbandoned)
    assert output.abandonment_id == "cart-1:1"
    assert output.sequence == 1
    assert output.cart_id == "cart-1"
    assert output.store_id == "store-1"
    assert output.created_at == at(T0)
    assert output.last_activity_at == at(T0 + 60)
    assert output.abandoned_at == at(T0 + 60 + ABANDON)
    assert output.cart.total == Decimal("59.97")
    assert output.cart.item_count == 3


def test_abandoned_at_comes_from_event_time_not_from_the_horizon():
    state, _ = fold([added(when=T0)])

    transition = on_deadline(state, T0 + 5 * DAY, SETTINGS)  # e.g. a worker that was down

    assert transition.outputs[0].abandoned_at == at(T0 + ABANDON)
    assert transition.state.abandoned_at == T0 + ABANDON


def test_per_store_timeout_abandons_only_that_stores_carts():
    fast, _ = fold([added(when=T0, cart_id="a", store_id="fast")])
    normal, _ = fold([added(when=T0, cart_id="b", store_id="store-1")])

    assert on_deadline(fast, T0 + 44, SETTINGS).outputs == ()
    assert [o.cart_id for o in on_deadline(fast, T0 + 45, SETTINGS).outputs] == ["a"]
    assert on_deadline(normal, T0 + 45, SETTINGS).outputs == ()
    assert normal.status == "active"


# --- reactivation and re-abandonment -------------------------------------------------------


def test_new_activity_reactivates_an_abandoned_cart():
    state, _ = abandoned_cart()
    event = cart_event("cart_viewed", when=T0 + 2 * HOUR)

    transition = apply_event(state, event, SETTINGS, 3)

    assert transition.state.status == "active"
    assert transition.state.last_activity_at == T0 + 2 * HOUR
    assert transition.outputs == (
        CartReactivated(
            abandonment_id="cart-1:1",
            cart_id="cart-1",
            store_id="store-1",
            event_id=event.event_id,
            abandoned_at=at(T0 + ABANDON),
            reactivated_at=at(T0 + 2 * HOUR),
        ),
    )
    assert next_deadline(transition.state, SETTINGS) == T0 + 2 * HOUR + ABANDON


def test_reactivated_cart_is_abandoned_again_under_a_new_id():
    state, _ = abandoned_cart()
    state, _ = fold([added("sku-2", 1, "1.00", when=T0 + 2 * HOUR)], state)

    transition = on_deadline(state, T0 + 2 * HOUR + ABANDON, SETTINGS)

    (output,) = transition.outputs
    assert output.abandonment_id == "cart-1:2"
    assert output.sequence == 2
    assert output.abandoned_at == at(T0 + 2 * HOUR + ABANDON)
    assert output.created_at == at(T0)
    assert [line.sku for line in output.cart.lines] == ["sku-1", "sku-2"]
    assert output.cart.total == Decimal("60.97")


def test_late_event_older_than_last_activity_does_not_reactivate():
    state, _ = abandoned_cart(added(when=T0), cart_event(when=T0 + 100))

    transition = apply_event(state, cart_event(when=T0 + 50), SETTINGS, 3)

    assert transition.outputs == ()
    assert transition.state.status == "abandoned"
    assert transition.state.last_activity_at == T0 + 100


# --- purchases -----------------------------------------------------------------------------


def test_purchase_of_an_abandoned_cart_is_a_recovery():
    state, _ = abandoned_cart()
    buy = purchase(when=T0 + 3 * HOUR, order_id="o-42", total="59.97", currency="EUR")

    state, outputs = fold([buy], state)

    assert outputs == [
        CartRecovered(
            abandonment_id="cart-1:1",
            cart_id="cart-1",
            store_id="store-1",
            order_id="o-42",
            revenue=Decimal("59.97"),
            currency="EUR",
            abandoned_at=at(T0 + ABANDON),
            recovered_at=at(T0 + 3 * HOUR),
            seconds_to_recover=3 * HOUR - ABANDON,
            reminder_sent=False,
                attribution="self",
        ),
    ]
    assert state.status == "purchased"
    assert state.purchased_at == T0 + 3 * HOUR
    assert state.abandonments == 1


def test_recovery_reports_whether_a_reminder_was_sent():
    state, _ = abandoned_cart()
    state.reminder_sent = True

    _, outputs = fold([purchase(when=T0 + HOUR)], state)

    assert outputs[0].reminder_sent is True


def test_recovery_after_re_abandonment_names_the_latest_abandonment():
    state, _ = abandoned_cart()
    state, _ = fold([cart_event(when=T0 + HOUR)], state)
    state = fire(state).state

    _, outputs = fold([purchase(when=T0 + 5 * HOUR, total="10.00")], state)

    (recovered,) = outputs
    assert recovered.abandonment_id == "cart-1:2"
    assert recovered.abandoned_at == at(T0 + HOUR + ABANDON)
    assert recovered.seconds_to_recover == 5 * HOUR - (HOUR + ABANDON)
    assert recovered.revenue == Decimal("10.00")


def test_purchase_after_reactivation_is_still_a_recovery():
    # The usual way back: the reminder link opens the cart (reactivation), then the order.
    state, _ = abandoned_cart()
    state, outputs = fold([cart_event(when=T0 + HOUR), purchase(when=T0 + HOUR + 60)], state)

    assert [type(output) for output in outputs] == [CartReactivated, CartRecovered]
    assert outputs[1].abandonment_id == "cart-1:1"
    assert outputs[1].seconds_to_recover == HOUR + 60 - ABANDON


def test_purchase_before_the_deadline_means_the_cart_is_never_abandoned():
    state, outputs = fold([added(when=T0), purchase(when=T0 + 10 * MINUTE)])

    assert outputs == []
    assert state.status == "purchased"
    assert state.purchased_at == T0 + 10 * MINUTE
    assert state.abandonments == 0
    past_abandon_deadline = on_deadline(state, T0 + 10 * MINUTE + ABANDON, SETTINGS)
    assert past_abandon_deadline.outputs == ()
    assert past_abandon_deadline.state is state
    assert state.status == "purchased"


def test_purchase_without_earlier_cart_events():
    state, outputs = fold([purchase(when=T0, customer={"email": "x@y.io"})])

    assert outputs == []
    assert state.status == "purchased"
    assert state.created_at == T0
    assert state.purchased_at == T0
    assert state.customer == {"email": "x@y.io"}


def test_second_purchase_of_a_purchased_cart_is_ignored():
    state, _ = fold([added(when=T0), purchase(when=T0 + 60, order_id="first")])

    state, outputs = fold([purchase(when=T0 + 120, order_id="second")], state)

    assert outputs == []
    assert state.purchased_at == T0 + 60


def test_late_cart_event_of_a_purchased_cart_is_ignored():
    state, _ = fold([added("sku-1", when=T0), purchase(when=T0 + 60)])
    last_activity = state.last_activity_at

    for late in (added("sku-late", when=T0 + 30), cart_event("cart_cleared", when=T0 + 60)):
        transition = apply_event(state, late, SETTINGS, 3)
        assert transition.outputs == ()
        assert transition.state.status == "purchased"
        assert transition.state.purchased_at == T0 + 60
        assert list(transition.state.lines) == ["sku-1"]
        assert transition.state.last_activity_at == last_activity


def test_newer_cart_event_after_a_purchase_starts_a_fresh_cart():
    state, _ = abandoned_cart()
    state, _ = fold([purchase(when=T0 + HOUR)], state)

    state, outputs = fold([added("sku-new", 1, "2.50", when=T0 + 2 * DAY)], state)

    assert outputs == []
    assert state.status == "active"
    assert state.created_at == T0 + 2 * DAY
    assert state.last_activity_at == T0 + 2 * DAY
    assert state.purchased_at is None
    assert state.abandoned_at is None
    assert state.lines == {"sku-new": {"quantity": 1, "unit_price": "2.50"}}
    # abandonment numbering goes on, so ids stay unique per cart id
    (abandoned,) = fire(state).outputs
    assert abandoned.abandonment_id == "cart-1:2"
    assert abandoned.created_at == at(T0 + 2 * DAY)
    assert abandoned.cart.total == Decimal("2.50")


# --- event time and redeliveries -------------------------------------------------------------


def test_late_event_never_moves_last_activity_backwards_but_its_content_counts():
    state, _ = fold([added("sku-1", when=T0 + 100), added("sku-2", 2, "1.00", when=T0 + 40)])

    assert state.last_activity_at == T0 + 100
    assert state.created_at == T0 + 100
    assert state.lines["sku-2"]["quantity"] == 2
    assert next_deadline(state, SETTINGS) == T0 + 100 + ABANDON


def test_repeated_event_id_changes_nothing():
    event = added("sku-1", 2, "3.00", when=T0)
    state, _ = fold([event, cart_event(when=T0 + 10)])
    before = json.dumps(state.to_dict())

    transition = apply_event(state, event, SETTINGS, 3)

    assert transition == Transition(state, (), changed=False)
    assert json.dumps(state.to_dict()) == before
    assert state.lines["sku-1"]["quantity"] == 2


def test_redelivered_purchase_does_not_recover_twice():
    state, _ = abandoned_cart()
    buy = purchase(when=T0 + HOUR)
    state, first = fold([buy], state)

    transition = apply_event(state, buy, SETTINGS, 3)

    assert len(first) == 1
    assert transition.changed is False
    assert transition.outputs == ()


def test_redelivery_is_recognised_among_the_last_remembered_ids():
    first = cart_event(when=T0)
    later = [cart_event(when=T0 + i) for i in range(1, REMEMBERED_EVENT_IDS)]
    state, _ = fold([first, *later])

    assert len(state.recent_event_ids) == REMEMBERED_EVENT_IDS
    assert apply_event(state, first, SETTINGS, 3).changed is False
    state, _ = fold([cart_event(when=T0 + 1000)], state)
    assert len(state.recent_event_ids) == REMEMBERED_EVENT_IDS
    assert first.event_id not in state.recent_event_ids


# --- empty carts and retention ----------------------------------------------------------------


@pytest.mark.parametrize(
    "emptying",
    [
        lambda when: removed("sku-1", when=when),
        lambda when: cart_event("cart_cleared", when=when),
        lambda when: quantity_changed("sku-1", 0, when=when),
    ],
    ids=["item_removed", "cart_cleared", "quantity_0"],
)
def test_empty_cart_is_not_abandoned_but_evicted_after_retention(emptying):
    state, _ = fold([added("sku-1", 2, when=T0), emptying(T0 + 60)])

    assert state.lines == {}
    assert next_deadline(state, SETTINGS) == T0 + 60 + DAY
    kept = on_deadline(state, T0 + 60 + ABANDON, SETTINGS)
    assert kept.outputs == ()
    assert kept.state is state
    assert state.status == "active"
    assert on_deadline(state, T0 + 60 + DAY - 1, SETTINGS).state is state
    assert on_deadline(state, T0 + 60 + DAY, SETTINGS) == Transition(None)


def test_cart_that_never_held_items_is_evicted_not_abandoned():
    state, _ = fold([cart_event("cart_viewed", when=T0)])

    assert on_deadline(state, T0 + DAY - 1, SETTINGS).outputs == ()
    assert on_deadline(state, T0 + DAY, SETTINGS) == Transition(None)


def test_abandoned_cart_is_forgotten_after_abandoned_retention():
    state, _ = abandoned_cart()

    assert next_deadline(state, SETTINGS) == T0 + ABANDON + 30 * DAY
    kept = on_deadline(state, T0 + ABANDON + 30 * DAY - 1, SETTINGS)
    assert kept.state is state and kept.outputs == ()
    assert on_deadline(state, T0 + ABANDON + 30 * DAY, SETTINGS) == Transition(None)


def test_purchased_cart_is_forgotten_after_purchased_retention():
    state, _ = fold([added(when=T0), purchase(when=T0 + 60)])

    assert next_deadline(state, SETTINGS) == T0 + 60 + 7 * DAY
    assert on_deadline(state, T0 + 60 + 7 * DAY - 1, SETTINGS).state is state
    assert on_deadline(state, T0 + 60 + 7 * DAY, SETTINGS) == Transition(None)


# --- cart content and snapshot -----------------------------------------------------------------


def test_snapshot_totals_are_exact_decimals():
    state, _ = fold(
        [
            added("a", 3, "19.99", when=T0),
            added("b", 1, "0.10", when=T0 + 1),
            added("c", 1, "0.20", when=T0 + 2),
        ]
    )

    cart = snapshot(state)

    assert [(line.sku, line.quantity, line.line_total) for line in cart.lines] == [
        ("a", 3, Decimal("59.97")),
        ("b", 1, Decimal("0.10")),
        ("c", 1, Decimal("0.20")),
    ]
    assert cart.total == Decimal("60.27")
    assert cart.item_count == 5
    assert cart.currency == "EUR"
    assert json.loads(cart.model_dump_json())["total"] == "60.27"


def test_snapshot_of_an_empty_cart():
    cart = snapshot(fold([cart_event(when=T0)])[0])

    assert cart.lines == []
    assert cart.item_count == 0
    assert cart.total == Decimal(0)
    assert cart.currency is None


def test_item_added_accumulates_and_quantity_changed_sets():
    state, _ = fold(
        [
            added("a", 2, "1.50", when=T0),
            added("a", 3, "1.50", when=T0 + 1),
            quantity_changed("b", 4, when=T0 + 2),  # never priced: nothing to show
            quantity_changed("a", 7, when=T0 + 3),
        ]
    )

    assert state.lines == {"a": {"quantity": 7, "unit_price": "1.50"}}
    assert snapshot(state).total == Decimal("10.50")


def test_item_added_quantity_is_capped():
    state, _ = fold([added("a", MAX_QUANTITY, "1", when=T0), added("a", 5, "1", when=T0 + 1)])

    assert state.lines["a"]["quantity"] == MAX_QUANTITY


def test_latest_price_and_product_details_are_kept():
    first = cart_event(
        "item_added",
        when=T0,
        item={"sku": "a", "quantity": 1, "unit_price": "5.00", "currency": "EUR", "name": "Mug"},
    )
    second = cart_event(
        "item_added",
        when=T0 + 1,
        item={
            "sku": "a",
            "quantity": 1,
            "unit_price": "4.50",
            "currency": "USD",
            "url": "https://shop.example/a",
            "image_url": "https://img.example/a.png",
        },
        cart_url="https://shop.example/cart/1",
    )
    state, _ = fold([first, second])

    (line,) = snapshot(state).lines
    assert line.name == "Mug"
    assert line.unit_price == Decimal("4.50")
    assert line.line_total == Decimal("9.00")
    assert line.url == "https://shop.example/a"
    assert line.image_url == "https://img.example/a.png"
    assert state.currency == "EUR"  # the cart's currency is its first item's
    assert snapshot(state).cart_url == "https://shop.example/cart/1"


def test_customer_details_merge_across_events():
    state, _ = fold(
        [
            cart_event(when=T0, customer={"id": "u1", "email": "old@shop.io"}),
            cart_event(when=T0 + 1, customer={"email": "new@shop.io", "locale": "fr-FR"}),
        ]
    )

    assert state.customer == {"id": "u1", "email": "new@shop.io", "locale": "fr-FR"}
    assert snapshot(state).customer.email == "new@shop.io"


def test_abandoning_an_expensive_but_valid_cart_does_not_crash():
    state, _ = fold([added("pallet", MAX_QUANTITY, "1000000", when=T0)])

    (output,) = fire(state).outputs

    assert output.cart.total == Decimal("10000000000")


def test_state_survives_a_json_round_trip():
    state, _ = abandoned_cart(
        added("a", 2, "19.99", when=T0, customer={"email": "a@b.io"}), cart_event(when=T0 + 5)
    )

    restored = CartState.from_dict(json.loads(json.dumps(state.to_dict())))

    assert restored == state
    assert snapshot(restored) == snapshot(state)


# --- properties -----------------------------------------------------------------------------

_activity = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10 * 86_400),  # seconds after T0
        st.sampled_from(["a", "b", "c", None]),  # sku to add, or None for a cart view
        st.integers(min_value=1, max_value=5),
    ),
    min_size=1,
    max_size=20,
)


@st.composite
def _delivery(draw):
    """Distinct events, then the same events delivered in any order with some repeated."""
    specs = draw(_activity)
    events = [
        cart_event(when=T0 + offset)
        if sku is None
        else added(sku, quantity, "1.25", when=T0 + offset)
        for offset, sku, quantity in specs
    ]
    repeats = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    order = draw(st.permutations(events + repeats))
    return specs, order


@hypothesis_settings(max_examples=150, deadline=None)
@given(_delivery())
def test_any_order_and_duplication_gives_the_same_cart(delivery):
    specs, order = delivery

    state, outputs = fold(order)

    newest = T0 + max(offset for offset, _, _ in specs)
    expected_lines: dict[str, int] = {}
    for _, sku, quantity in specs:
        if sku is not None:
            expected_lines[sku] = expected_lines.get(sku, 0) + quantity
    assert outputs == []
    assert state.status == "active"
    assert state.last_activity_at == newest
    assert {sku: line["quantity"] for sku, line in state.lines.items()} == expected_lines
    if expected_lines:
        (abandoned,) = on_deadline(state, newest + ABANDON, SETTINGS).outputs
        assert abandoned.abandoned_at == at(newest + ABANDON)
        assert abandoned.cart.total == Decimal("1.25") * sum(expected_lines.values())
    else:
        assert on_deadline(state, newest + DAY, SETTINGS) == Transition(None)


# --- events read ahead of the safe time (uneven replay of the two inputs) ---------------------


def test_an_event_beyond_the_safe_time_waits_and_the_abandonment_it_jumps_over_is_kept():
    state, _ = fold([added(when=T0)])
    # the cart's next event is read while the purchase input still holds the safe time back
    transition = apply_event(state, cart_event(when=T0 + 2 * ABANDON), SETTINGS, 3, T0 + 60)

    assert transition.outputs == () and transition.state.last_activity_at == T0
    assert next_deadline(transition.state, SETTINGS) == T0 + ABANDON

    outputs = on_deadline(transition.state, T0 + 2.5 * ABANDON, SETTINGS).outputs
    assert [type(output) for output in outputs] == [CartAbandoned, CartReactivated]
    assert outputs[0].abandoned_at == at(T0 + ABANDON)
    assert outputs[1].reactivated_at == at(T0 + 2 * ABANDON)


def test_a_purchase_read_late_still_prevents_the_abandonment():
    state, _ = fold([added(when=T0)])
    state = apply_event(state, cart_event(when=T0 + 2 * ABANDON), SETTINGS, 3, T0).state
    # the purchase is older than the waiting cart event: it goes first, in event time
    state = apply_event(state, purchase(when=T0 + 60), SETTINGS, 3, T0 + 60).state

    transition = on_deadline(state, T0 + 3 * ABANDON, SETTINGS)

    assert transition.outputs == ()
    assert transition.state.status == "active"  # the later view started a new cart
    assert transition.state.pending == []


def _outputs_of(transition, outputs):
    outputs.extend(output.model_dump(mode="json") for output in transition.outputs)
    return transition.state


def _live(events):
    """Events in time order, each when it happens: deadlines up to it fire first."""
    state, outputs = None, []
    for event in sorted(events, key=lambda event: event.occurred_at):
        when = event.occurred_at.timestamp()
        before = horizon_before(event, when)
        if state is not None and next_deadline(state, SETTINGS) <= before:
            state = _outputs_of(on_deadline(state, before, SETTINGS), outputs)
        state = _outputs_of(apply_event(state, event, SETTINGS, 3, when), outputs)
    return state, outputs


def _replayed(cart_events, purchases, picks):
    """Each input in its own order, read unevenly (``picks``: which input is read next), as a
    replay reads them: the safe time is held back by the other input's last event time until
    that input is read to its end, and deadlines up to it fire before each event."""
    inputs = {"cart": list(cart_events), "purchase": list(purchases)}
    last_read = {"cart": -math.inf, "purchase": -math.inf}
    state, outputs, picks = None, [], iter(picks)
    while inputs["cart"] or inputs["purchase"]:
        source = next(picks, "cart")
        if not inputs[source]:
            source = "purchase" if source == "cart" else "cart"
        other = "purchase" if source == "cart" else "cart"
        event = inputs[source].pop(0)
        when = event.occurred_at.timestamp()
        last_read[source] = when
        horizon = min(when, last_read[other] if inputs[other] else math.inf)
        before = horizon_before(event, horizon)
        if state is not None and next_deadline(state, SETTINGS) <= before:
            state = _outputs_of(on_deadline(state, before, SETTINGS), outputs)
        state = _outputs_of(apply_event(state, event, SETTINGS, 3, horizon), outputs)
    return state, outputs


@st.composite
def _two_inputs(draw):
    gaps = st.sampled_from([MINUTE, 10 * MINUTE, ABANDON - 1, ABANDON, ABANDON + 1, 2 * HOUR])
    times = [T0]
    for gap in draw(st.lists(gaps, min_size=1, max_size=11)):
        times.append(times[-1] + gap)
    kinds = draw(st.lists(st.sampled_from(["add", "add", "view", "remove", "buy"]),
                          min_size=len(times), max_size=len(times)))
    cart_events, purchases = [], []
    for when, kind in zip(times, kinds, strict=True):
        if kind == "buy":
            purchases.append(purchase(when=when))
        elif kind == "add":
            cart_events.append(added(sku=f"sku-{int(when) % 3}", when=when))
        elif kind == "remove":
            cart_events.append(removed(sku=f"sku-{int(when) % 3}", when=when))
        else:
            cart_events.append(cart_event(when=when))
    picks = draw(st.lists(st.sampled_from(["cart", "purchase"]), max_size=2 * len(times)))
    return cart_events, purchases, picks


@hypothesis_settings(max_examples=300, deadline=None)
@given(_two_inputs())
def test_reading_the_two_inputs_unevenly_gives_the_outputs_of_reading_them_in_time_order(
        inputs):
    cart_events, purchases, picks = inputs
    end = max(event.occurred_at.timestamp() for event in cart_events + purchases) + 3 * ABANDON

    live_state, live = _live(cart_events + purchases)
    replay_state, replayed = _replayed(cart_events, purchases, picks)
    for state, outputs in ((live_state, live), (replay_state, replayed)):
        if state is not None:
            _outputs_of(on_deadline(state, end, SETTINGS), outputs)

    assert replayed == live


def test_an_event_after_a_waiting_one_waits_behind_it_even_within_the_safe_time():
    state, _ = fold([added(when=T0)])
    state = apply_event(state, cart_event(when=T0 + 100), SETTINGS, 3, T0 + 50).state
    transition = apply_event(state, cart_event(when=T0 + 120), SETTINGS, 3, T0 + 130)

    assert [entry["at"] for entry in transition.state.pending] == [T0 + 100, T0 + 120]
    assert transition.state.last_activity_at == T0
    assert on_deadline(transition.state, T0 + 130, SETTINGS).state.last_activity_at == T0 + 120


def test_an_event_before_a_waiting_one_applies_at_once_and_the_waiting_one_stays():
    state, _ = fold([added(when=T0)])
    state = apply_event(state, purchase(when=T0 + 100), SETTINGS, 3, T0 + 50).state
    # the purchase input ran ahead; the cart's own earlier event is within the safe time
    transition = apply_event(state, added(when=T0 + 80, sku="B"), SETTINGS, 3, T0 + 90)

    assert transition.state.last_activity_at == T0 + 80 and "B" in transition.state.lines
    assert [entry["at"] for entry in transition.state.pending] == [T0 + 100]
    assert next_deadline(transition.state, SETTINGS) == T0 + 100
    bought = on_deadline(transition.state, T0 + 100, SETTINGS)
    assert bought.outputs == () and bought.state.status == "purchased"
