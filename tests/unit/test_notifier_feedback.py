"""Reminder feedback into the cart lifecycle: ``CartRecovered.reminder_sent``."""

from schemas.outputs import CartRecovered
from streams.lifecycle import apply_event, on_deadline, on_reminder_sent

from .factories import HOUR, MINUTE, T0, added, make_settings, purchase

SETTINGS = make_settings(abandon_after="30m")


def abandoned_cart():
    state = apply_event(None, added(when=T0), SETTINGS, 0).state
    return on_deadline(state, T0 + 30 * MINUTE, SETTINGS).state


def recover(state):
    [recovered] = apply_event(state, purchase(when=T0 + HOUR), SETTINGS, 0).outputs
    assert isinstance(recovered, CartRecovered)
    return recovered


def test_feedback_for_the_current_abandonment_marks_the_recovery():
    state = abandoned_cart()
    transition = on_reminder_sent(state, "cart-1:1")

    assert transition.changed and transition.state.reminder_sent is True
    assert recover(transition.state).reminder_sent is True


def test_without_feedback_the_recovery_says_no_reminder():
    assert recover(abandoned_cart()).reminder_sent is False


def test_feedback_for_an_older_abandonment_or_unknown_cart_changes_nothing():
    state = abandoned_cart()

    assert on_reminder_sent(state, "cart-1:0").changed is False
    assert on_reminder_sent(None, "cart-1:1").changed is False
    assert state.reminder_sent is False


def test_repeated_feedback_writes_once():
    state = on_reminder_sent(abandoned_cart(), "cart-1:1").state

    assert on_reminder_sent(state, "cart-1:1").changed is False
