"""``CartRecovered.attribution`` from the cart state machine: clicked, reminded, self.

The lifecycle learns of reminders from the notifier's feedback (``ReminderSent``) and of clicks
from ``cartwatch-clicks`` (``LinkClick``); both are read at least once and in any order with
each other, so the state they leave must not depend on repeats or order (hypothesis).
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.common import utc_from_epoch
from schemas.notifications import LinkClick, ReminderSent
from schemas.outputs import CartRecovered
from streams.lifecycle import (
    CartState,
    Transition,
    apply_event,
    on_click,
    on_deadline,
    on_reminder_sent,
)

from .factories import HOUR, MINUTE, T0, added, make_settings, purchase

SETTINGS = make_settings(abandon_after="30m")
ABANDONED_AT = T0 + 30 * MINUTE
BOUGHT_AT = T0 + 5 * HOUR


def abandoned_cart() -> CartState:
    state = apply_event(None, added(when=T0, event_id="e-1"), SETTINGS, 0).state
    assert state is not None
    abandoned = on_deadline(state, ABANDONED_AT, SETTINGS).state
    assert abandoned is not None and abandoned.abandonment_id == "cart-1:1"
    return abandoned


def sent(step: int, at: float, abandonment_id: str = "cart-1:1") -> ReminderSent:
    return ReminderSent(abandonment_id=abandonment_id, cart_id="cart-1", step=step,
                        channel="email", sent_at=utc_from_epoch(at), campaign="big-carts",
                        variant="discount")


def click(step: int, at: float, abandonment_id: str = "cart-1:1") -> LinkClick:
    return LinkClick(click_id=f"k-{step}-{at}", abandonment_id=abandonment_id, cart_id="cart-1",
                     store_id="store-1",
                     step=step, channel="email", campaign="big-carts", variant="discount",
                     clicked_at=utc_from_epoch(at), user_agent_class="desktop")


def fold(state: CartState, *inputs: ReminderSent | LinkClick) -> CartState:
    for message in inputs:
        transition: Transition
        if isinstance(message, LinkClick):
            transition = on_click(state, message)
        else:
            transition = on_reminder_sent(state, message)
        assert transition.state is not None
        state = transition.state
    return state


def recover(state: CartState, when: float = BOUGHT_AT) -> CartRecovered:
    [recovered] = apply_event(state, purchase(when=when), SETTINGS, 0).outputs
    assert isinstance(recovered, CartRecovered)
    return recovered


def test_no_reminder_is_self_without_campaign():
    recovered = recover(abandoned_cart())

    assert (recovered.attribution, recovered.campaign, recovered.variant,
            recovered.last_step, recovered.clicked_step) == ("self", None, None, None, None)
    assert recovered.reminder_sent is False


def test_reminded_without_a_click_names_campaign_variant_and_last_step():
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), sent(2, T0 + 2 * HOUR))
    recovered = recover(state)

    assert (recovered.attribution, recovered.campaign, recovered.variant,
            recovered.last_step, recovered.clicked_step) == (
        "reminded", "big-carts", "discount", 2, None)
    assert recovered.reminder_sent is True


def test_a_click_before_the_purchase_is_clicked_with_the_clicked_step():
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, T0 + 90 * MINUTE),
                 sent(2, T0 + 2 * HOUR))
    recovered = recover(state)

    assert (recovered.attribution, recovered.last_step, recovered.clicked_step) == (
        "clicked", 2, 1)
    assert (recovered.campaign, recovered.variant) == ("big-carts", "discount")


def test_a_click_after_the_purchase_time_does_not_count():
    """The purchase was read late: a click stamped after it cannot have caused it."""
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, BOUGHT_AT + 1))

    assert recover(state).attribution == "reminded"


def test_a_click_at_the_purchase_time_counts():
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, BOUGHT_AT))

    assert recover(state).attribution == "clicked"


def test_a_click_read_before_its_feedback_still_means_reminded_and_clicked():
    """The click proves the step was sent, though its feedback is not read yet."""
    recovered = recover(fold(abandoned_cart(), click(2, T0 + 3 * HOUR)))

    assert (recovered.attribution, recovered.last_step, recovered.clicked_step,
            recovered.reminder_sent) == ("clicked", 2, 2, True)


def test_a_click_of_a_reactivated_cart_counts():
    """The shopper follows the link, the shop reports the visit (the cart comes back), then
    the shopper buys: the commonest path of a recovery by a reminder."""
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, T0 + 2 * HOUR))
    back = apply_event(state, added(when=T0 + 2 * HOUR + 5), SETTINGS, 0).state
    assert back is not None and back.status == "active"

    assert recover(back).attribution == "clicked"


def test_clicks_and_feedback_of_another_abandonment_change_nothing():
    state = abandoned_cart()

    assert on_click(state, click(1, T0 + HOUR, "cart-1:0")).changed is False
    assert on_reminder_sent(state, sent(1, T0 + HOUR, "cart-1:0")).changed is False
    assert on_click(None, click(1, T0 + HOUR)).changed is False
    assert recover(state).attribution == "self"


def test_a_click_after_the_cart_was_bought_changes_nothing():
    state = abandoned_cart()
    bought = apply_event(state, purchase(when=BOUGHT_AT), SETTINGS, 0).state
    assert bought is not None

    assert on_click(bought, click(1, BOUGHT_AT - 1)).changed is False


def test_a_new_abandonment_starts_without_reminders_or_clicks():
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, T0 + 2 * HOUR))
    back = apply_event(state, added(when=T0 + 3 * HOUR), SETTINGS, 0).state
    assert back is not None
    again = on_deadline(back, T0 + 3 * HOUR + 30 * MINUTE, SETTINGS).state
    assert again is not None and again.abandonment_id == "cart-1:2"

    recovered = recover(again)
    assert (recovered.abandonment_id, recovered.attribution) == ("cart-1:2", "self")


def test_a_new_cart_after_a_purchase_forgets_the_old_clicks():
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, T0 + 2 * HOUR))
    bought = apply_event(state, purchase(when=BOUGHT_AT), SETTINGS, 0).state
    again = apply_event(bought, added(when=BOUGHT_AT + HOUR), SETTINGS, 0).state
    assert again is not None

    assert (again.clicked_at, again.last_step, again.campaign) == (None, None, None)


def test_repeats_write_nothing():
    state = fold(abandoned_cart(), sent(1, T0 + HOUR), click(1, T0 + 2 * HOUR))

    assert on_reminder_sent(state, sent(1, T0 + HOUR)).changed is False
    assert on_click(state, click(1, T0 + 2 * HOUR)).changed is False
    assert on_click(state, click(1, T0 + 3 * HOUR)).changed is False  # a later click


MESSAGES = st.lists(
    st.one_of(
        st.builds(sent, st.integers(1, 5), st.floats(T0 + HOUR, T0 + 9 * HOUR)),
        st.builds(click, st.integers(1, 5), st.floats(T0 + HOUR, T0 + 9 * HOUR)),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(messages=MESSAGES, data=st.data())
def test_the_state_depends_on_neither_order_nor_repeats(messages, data):
    """Feedback and clicks come on two topics, at least once each: any order, any repeats."""
    shuffled = data.draw(st.permutations(messages))
    repeated = data.draw(st.lists(st.sampled_from(messages), max_size=4)) if messages else []

    first = fold(abandoned_cart(), *messages)
    second = fold(abandoned_cart(), *shuffled, *repeated)

    assert first == second
    assert recover(first) == recover(second)


@settings(max_examples=300, deadline=None)
@given(messages=MESSAGES)
def test_the_attribution_rule(messages):
    """clicked iff a click at or before the purchase; else reminded iff any reminder is known;
    the last step is the highest step sent or clicked."""
    recovered = recover(fold(abandoned_cart(), *messages))
    clicks = [m for m in messages if isinstance(m, LinkClick)]
    early = [m for m in clicks if m.clicked_at.timestamp() <= BOUGHT_AT]
    if early:
        expected = "clicked"
    elif messages:
        expected = "reminded"
    else:
        expected = "self"

    assert recovered.attribution == expected
    assert recovered.last_step == (max(m.step for m in messages) if messages else None)
    if clicks and early:
        first = min(clicks, key=lambda m: (m.clicked_at, m.step))
        assert recovered.clicked_step == first.step
    else:
        assert recovered.clicked_step is None
