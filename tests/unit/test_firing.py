"""Prepared abandonments: what is prepared ahead equals what the deadline decides, and a
changed cart, another deadline or a later safe time never reuses a prepared message."""

import math
import time
from typing import Any, cast

import faust

from streams.firing import Prepared, PreparedAbandonments
from streams.lifecycle import (
    CartState,
    abandoned_message,
    abandons_at,
    apply_event,
    mark_abandoned,
    next_deadline,
    on_deadline,
)
from streams.scheduling import PartitionTimers

from .factories import MINUTE, T0, added, cart_event, make_settings, purchase

SETTINGS = make_settings(abandon_after="30m", abandoned_retention="30d")
DEADLINE = T0 + 30 * MINUTE


def active_cart() -> CartState:
    event = added("mug", 2, "4.50", when=T0, event_id="evt-mug")
    state = apply_event(None, event, SETTINGS, partition=1).state
    assert state is not None
    return state


def test_prepared_state_and_message_equal_what_the_deadline_decides() -> None:
    prepared, decided = active_cart(), active_cart()
    assert abandons_at(prepared, DEADLINE, SETTINGS)
    mark_abandoned(prepared, DEADLINE)
    message = abandoned_message(prepared)

    transition = on_deadline(decided, DEADLINE, SETTINGS)

    assert transition.outputs == (message,)
    assert transition.state == prepared


def test_no_preparation_for_carts_the_deadline_would_not_simply_abandon() -> None:
    assert not abandons_at(active_cart(), DEADLINE - 1, SETTINGS)
    viewed_only = apply_event(None, cart_event(when=T0), SETTINGS, partition=1).state
    assert viewed_only is not None and not abandons_at(viewed_only, DEADLINE, SETTINGS)
    waiting = apply_event(
        active_cart(), purchase(when=T0 + MINUTE), SETTINGS, partition=1, horizon=T0
    ).state
    assert waiting is not None and waiting.pending  # a purchase beyond the safe time
    assert not abandons_at(waiting, next_deadline(waiting, SETTINGS), SETTINGS)


def test_a_prepared_message_is_taken_once_for_its_own_deadline() -> None:
    store = PreparedAbandonments()
    store.put(1, "cart-1", Prepared(DEADLINE, b"msg", after=DEADLINE + 3600))
    assert store.take(1, "cart-1", DEADLINE + 1, DEADLINE + 1) is None  # another deadline
    store.put(1, "cart-1", Prepared(DEADLINE, b"msg", after=DEADLINE + 3600))
    assert store.take(1, "cart-1", DEADLINE, DEADLINE + 3600) is None  # the safe time is past
    store.put(1, "cart-1", Prepared(DEADLINE, b"msg", after=DEADLINE + 3600))
    assert store.take(1, "cart-1", DEADLINE, DEADLINE + 5) == b"msg"
    assert store.take(1, "cart-1", DEADLINE, DEADLINE + 5) is None
    assert len(store) == 0


def test_a_changed_cart_or_a_rebalance_drops_what_was_prepared() -> None:
    store = PreparedAbandonments()
    store.put(1, "cart-1", Prepared(DEADLINE, b"one", after=math.inf))
    store.put(1, "cart-2", Prepared(DEADLINE, b"two", after=math.inf))
    store.discard(1, "cart-1")
    assert store.take(1, "cart-1", DEADLINE, DEADLINE) is None
    store.mark_sent(2, [(DEADLINE, "cart-9")])
    assert store.has_sent(2)
    store.clear()
    assert len(store) == 0 and not store.has_sent(2) and store.take_sent(2) == []


def test_sent_entries_are_handed_over_once() -> None:
    store = PreparedAbandonments()
    store.mark_sent(0, [(DEADLINE, "a")])
    store.mark_sent(0, [(DEADLINE + 1, "b")])
    assert store.take_sent(0) == [(DEADLINE, "a"), (DEADLINE + 1, "b")]
    assert not store.has_sent(0) and store.take_sent(0) == []


def timers(prepare_ahead: float) -> PartitionTimers:
    """Staging needs neither the app nor the tick topic."""
    return PartitionTimers(cast(faust.App, None), ("cart-events",), cast(Any, None),
                           prepare_ahead=prepare_ahead)


def test_staging_moves_entries_due_within_prepare_ahead_and_keeps_them_due() -> None:
    now = time.time()
    index = timers(prepare_ahead=60)
    index.deadlines.schedule(0, now + 30, "soon")
    index.deadlines.schedule(0, now + 3600, "later")
    assert index.to_stage(0)
    assert index.stage(0, limit=10) == [(now + 30, "soon")]
    assert not index.to_stage(0)
    assert index.earliest(0) == now + 30 and len(index) == 2
    index.deadlines.schedule(0, now + 10, "sooner")  # scheduled after staging, due earlier
    assert index.pop_due(0, now + 40, limit=10) == [(now + 30, "soon"), (now + 10, "sooner")]
    assert index.earliest(0) == now + 3600


def test_no_staging_without_prepare_ahead() -> None:
    index = timers(prepare_ahead=0)
    index.deadlines.schedule(0, 0.0, "due")
    assert not index.to_stage(0) and index.stage(0, limit=10) == []
