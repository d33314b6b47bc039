"""The cart state machine: plain functions from (state, input) to (new state, outputs).

Nothing here touches Kafka or the clock, so every rule is unit-tested directly and replaying the
same inputs always yields the same outputs. Times are epoch seconds (event time).

    active --silence--> abandoned --purchase--> purchased (a recovery)
       ^                    |
       +---new activity-----+   (reactivation; a later abandonment gets a new id)
    active --purchase--> purchased (never abandoned)
"""

import bisect
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from config.settings import Settings
from schemas.common import MAX_QUANTITY, Contract, Customer, utc_from_epoch
from schemas.events import CartEvent, PurchaseEvent
from schemas.notifications import LinkClick, ReminderSent
from schemas.outputs import (
    Attribution,
    CartAbandoned,
    CartLine,
    CartReactivated,
    CartRecovered,
    CartSnapshot,
)
from streams.stored import StoredFormat

Status = Literal["active", "abandoned", "purchased"]
REMEMBERED_EVENT_IDS = 64
"""Event ids kept per cart to drop redeliveries; a cart's redeliveries arrive close together."""


@dataclass(slots=True)
class CartState:
    """Everything cartwatch remembers about one cart, stored as a table value."""

    cart_id: str
    store_id: str
    partition: int
    status: Status
    created_at: float | None = None
    """Event time of the cart's first event (None while only a purchase is known)."""
    last_activity_at: float | None = None
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    currency: str | None = None
    customer: dict[str, Any] | None = None
    cart_url: str | None = None
    abandonments: int = 0
    abandoned_at: float | None = None
    purchased_at: float | None = None
    reminder_sent: bool = False
    recent_event_ids: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Events read ahead of the partition's safe time, oldest first, as
    ``{"at": event time, "purchase": bool, "event": contract JSON}``; applied when it reaches
    them, so events are folded in event-time order even when the inputs are read unevenly."""
    scheduled_at: float | None = None
    """Deadline the timer index holds for this cart; lets the index skip its stale entries."""
    campaign: str | None = None
    """Campaign and variant of the latest abandonment's reminders, as the notifier's feedback
    or a click told them (None: no reminder known), for ``CartRecovered.attribution``."""
    variant: str | None = None
    last_step: int | None = None
    """The highest reminder step of the latest abandonment known to be sent."""
    clicked_at: float | None = None
    """The earliest counted click on a reminder link of the latest abandonment."""
    clicked_step: int | None = None
    """The step of that click."""

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the current format version (``streams.stored``) and every field."""
        return CART_FORMAT.dump(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CartState":
        """A cart stored by any release: older formats migrated, unknown fields ignored.

        Raises ``streams.stored.UnreadableRecord`` for a record no release could have written.
        """
        return cls(*CART_FORMAT.values(data))

    @property
    def abandonment_id(self) -> str:
        """Id of the latest abandonment: cart id and its sequence number, stable on replay."""
        return f"{self.cart_id}:{self.abandonments}"


CART_FORMAT = StoredFormat.of_dataclass("cart", CartState, version=3, migrations=[
    lambda v0: v0,  # 1 = the un-versioned dicts of earlier releases, plus "v"
    lambda v1: v1,  # 2 = 1: the release of golden fixtures v2 changed other formats only
    lambda v2: v2,  # 3 = 2 plus campaign, variant, last_step, clicked_at, clicked_step
])                  #     (attribution; missing: None)
"""The stored cart's format. A change of the fields bumps the version and appends the
migration from the previous one (see ``streams.stored``, and add golden fixtures). Versions
are numbered with the golden fixtures (``tests/fixtures/golden/v<N>``, one per release that
changed any format), so a format may skip a number, as the cart skipped 2."""


@dataclass(slots=True, frozen=True)
class Transition:
    """The state after an input (``None`` = forget the cart) and the messages to publish.

    ``changed`` is false only when the input was a redelivery, so nothing needs writing.
    """

    state: CartState | None
    outputs: tuple[Contract, ...] = ()
    changed: bool = True


def next_deadline(state: CartState, settings: Settings) -> float:
    """When the cart next needs attention: a pending event, abandonment, or eviction."""
    lifecycle = _lifecycle_deadline(state, settings)
    if state.pending:
        return min(lifecycle, state.pending[0]["at"])
    return lifecycle


def _lifecycle_deadline(state: CartState, settings: Settings) -> float:
    if state.status == "active":
        if state.last_activity_at is None:
            return math.inf  # known only from events that are still pending
        if state.lines:
            return state.last_activity_at + settings.abandon_after_for(state.store_id)
        return state.last_activity_at + settings.empty_cart_retention
    if state.status == "abandoned":
        assert state.abandoned_at is not None
        return state.abandoned_at + settings.abandoned_retention
    assert state.purchased_at is not None
    return state.purchased_at + settings.purchased_retention


def apply_event(
    state: CartState | None,
    event: CartEvent | PurchaseEvent,
    settings: Settings,
    partition: int,
    horizon: float = math.inf,
) -> Transition:
    """Fold one input event into the cart's state, or keep it until ``horizon`` reaches it.

    ``horizon`` is the partition's safe time, up to which every deadline has fired. An event
    beyond it (the two input topics are read unevenly during a replay) waits in
    ``state.pending`` for ``on_deadline``: applying it now could skip an abandonment that a
    still unread purchase may yet prevent. So does an event at or after the oldest one waiting,
    to keep the cart's events in time order; one before it applies now (during a replay the
    purchase input runs ahead of the cart events, and queueing every cart event behind its
    waiting purchase validated most of the input twice, measured).
    """
    if state is not None and event.event_id in state.recent_event_ids:
        return Transition(state, changed=False)
    if state is None:
        state = CartState(
            cart_id=event.cart_id, store_id=event.store_id, partition=partition, status="active"
        )
    _remember(state, event.event_id)
    occurred = event.occurred_at.timestamp()
    if occurred > horizon or state.pending and occurred >= state.pending[0]["at"]:
        entry = {
            "at": occurred,
            "purchase": isinstance(event, PurchaseEvent),
            "event": event.model_dump(mode="json"),
        }
        bisect.insort(state.pending, entry, key=lambda pending: pending["at"])
        return Transition(state)
    return Transition(state, _apply_now(state, event))


def horizon_before(event: CartEvent | PurchaseEvent, horizon: float) -> float:
    """How far deadlines fire before ``event`` is applied, ``horizon`` being the partition's
    safe time: all the way, except that a purchase wins a tie with its cart's deadline (as
    ``on_deadline`` orders a waiting purchase first), so a deadline at its very time waits
    for it. Live and replayed reading then decide the same."""
    occurred = event.occurred_at.timestamp()
    if isinstance(event, PurchaseEvent) and horizon >= occurred:
        return math.nextafter(occurred, -math.inf)
    return horizon


def _apply_now(state: CartState, event: CartEvent | PurchaseEvent) -> tuple[Contract, ...]:
    if isinstance(event, CartEvent):
        return _apply_cart_event(state, event)
    if state.status == "purchased":
        return ()  # a second order for the cart: the first one ended it
    return _complete_purchase(state, event)


def _pending_first(state: CartState, lifecycle: float) -> bool:
    """Is the oldest pending event due before the cart's own deadline? A purchase wins a tie
    (bought at the deadline: never abandoned); a cart event loses it (abandoned, then back)."""
    if not state.pending:
        return False
    first = state.pending[0]
    return bool(first["at"] < lifecycle or first["at"] == lifecycle and first["purchase"])


def on_deadline(state: CartState, horizon: float, settings: Settings) -> Transition:
    """Apply everything due up to ``horizon`` (the partition's safe time), in time order."""
    outputs: list[Contract] = []
    while (due := next_deadline(state, settings)) <= horizon:
        if _pending_first(state, _lifecycle_deadline(state, settings)):
            entry = state.pending.pop(0)
            model = PurchaseEvent if entry["purchase"] else CartEvent
            outputs.extend(_apply_now(state, model.model_validate(entry["event"])))
        elif state.status == "active" and state.lines:
            mark_abandoned(state, due)
            outputs.append(abandoned_message(state))
        else:
            return Transition(None, tuple(outputs))
    return Transition(state, tuple(outputs))


def abandons_at(state: CartState, deadline: float, settings: Settings) -> bool:
    """Will ``on_deadline`` at exactly ``deadline`` abandon the cart and do nothing else?"""
    return (
        state.status == "active"
        and bool(state.lines)
        and not state.pending
        and next_deadline(state, settings) == deadline
    )


def mark_abandoned(state: CartState, due: float) -> None:
    """The state change of an abandonment at ``due`` (its message: ``abandoned_message``)."""
    state.status = "abandoned"
    state.abandonments += 1
    state.abandoned_at = due
    _forget_reminders(state)


def _forget_reminders(state: CartState) -> None:
    """A new abandonment (or a new cart) starts without reminders or clicks."""
    state.reminder_sent = False
    state.campaign = state.variant = None
    state.last_step = state.clicked_at = state.clicked_step = None


def on_reminder_sent(state: CartState | None, feedback: ReminderSent | str) -> Transition:
    """The notifier delivered a reminder: remember it for the abandonment's ``CartRecovered``
    (``reminder_sent``, and the campaign, variant and last step of its ``attribution``).

    Feedback for an earlier abandonment (or a forgotten cart) changes nothing, and so does a
    repeat (the state keeps the highest step, so feedback read again or out of order leaves
    it as it is): replays and redeliveries are harmless. A plain abandonment id is feedback
    without step or campaign (as tests and older callers give it).
    """
    if isinstance(feedback, str):
        abandonment_id, step, campaign, variant = feedback, None, None, None
    else:
        abandonment_id, step = feedback.abandonment_id, feedback.step
        campaign, variant = feedback.campaign, feedback.variant
    if state is None or state.abandonment_id != abandonment_id or state.abandoned_at is None:
        return Transition(state, changed=False)
    before = (state.reminder_sent, state.last_step, state.campaign, state.variant)
    state.reminder_sent = True
    _note_reminder(state, step, campaign, variant)
    if (state.reminder_sent, state.last_step, state.campaign, state.variant) == before:
        return Transition(state, changed=False)
    return Transition(state)


def on_click(state: CartState | None, click: LinkClick) -> Transition:
    """A counted click on a reminder link (``cartwatch-clicks``): remember the earliest click
    of the latest abandonment, for ``CartRecovered.attribution``.

    A click of an earlier abandonment, of a forgotten cart, or after the purchase changes
    nothing (the recovery it could have counted for is already published). Keeping the
    earliest click makes repeats and any reading order give the same state.
    """
    if (state is None or state.abandonment_id != click.abandonment_id
            or state.abandoned_at is None or state.status == "purchased"):
        return Transition(state, changed=False)
    at = click.clicked_at.timestamp()
    before = (state.clicked_at, state.clicked_step, state.last_step, state.campaign,
              state.variant)
    if state.clicked_at is None or (at, click.step) < (state.clicked_at, state.clicked_step):
        state.clicked_at, state.clicked_step = at, click.step  # ties: the lower step
    _note_reminder(state, click.step, click.campaign, click.variant)  # its link was sent
    after = (state.clicked_at, state.clicked_step, state.last_step, state.campaign,
             state.variant)
    return Transition(state, changed=after != before)


def _note_reminder(state: CartState, step: int | None, campaign: str | None,
                   variant: str | None) -> None:
    if step is not None and (state.last_step is None or step > state.last_step):
        state.last_step = step
    if state.campaign is None and campaign is not None:
        state.campaign, state.variant = campaign, variant


class AttributionFacts(NamedTuple):
    """``CartRecovered``'s attribution fields."""

    attribution: Attribution
    campaign: str | None
    variant: str | None
    last_step: int | None
    clicked_step: int | None


def attribution(state: CartState, purchased_at: float) -> AttributionFacts:
    """Why the abandonment was recovered, from what the cart knows when the purchase applies.

    ``clicked``: a counted click of this abandonment's reminder link at or before the
    purchase's time; ``reminded``: a reminder of it was sent (no such click); ``self``: no
    reminder is known (then no campaign either: a held-out abandonment gets none, and the
    notification log says which campaign held it out).
    """
    if state.clicked_at is not None and state.clicked_at <= purchased_at:
        return AttributionFacts("clicked", state.campaign, state.variant, state.last_step,
                                state.clicked_step)
    if state.reminder_sent or state.last_step is not None:
        return AttributionFacts("reminded", state.campaign, state.variant, state.last_step,
                                None)
    return AttributionFacts("self", None, None, None, None)


def _remember(state: CartState, event_id: str) -> None:
    ids = state.recent_event_ids
    ids.append(event_id)
    if len(ids) > REMEMBERED_EVENT_IDS:
        del ids[: len(ids) - REMEMBERED_EVENT_IDS]


def _complete_purchase(state: CartState, event: PurchaseEvent) -> tuple[Contract, ...]:
    occurred = event.occurred_at.timestamp()
    outputs: tuple[Contract, ...] = ()
    if state.abandoned_at is not None:  # abandoned, or came back (e.g. by the reminder link)
        facts = attribution(state, occurred)
        outputs = (
            CartRecovered(
                abandonment_id=state.abandonment_id,
                cart_id=state.cart_id,
                store_id=state.store_id,
                order_id=event.order_id,
                revenue=event.total,
                currency=event.currency,
                abandoned_at=utc_from_epoch(state.abandoned_at),
                recovered_at=event.occurred_at,
                seconds_to_recover=max(0.0, occurred - state.abandoned_at),
                reminder_sent=state.reminder_sent or facts.attribution != "self",
                **facts._asdict(),
            ),
        )
    _merge_customer(state, event.customer)
    state.status = "purchased"
    state.purchased_at = occurred
    if state.created_at is None:
        state.created_at = occurred
    return outputs


def _apply_cart_event(state: CartState, event: CartEvent) -> tuple[Contract, ...]:
    occurred = event.occurred_at.timestamp()
    if state.status == "purchased":
        assert state.purchased_at is not None
        if occurred <= state.purchased_at:
            return ()  # a late event of the cart that was bought
        _start_new_cart(state)
    _apply_content(state, event)
    if state.created_at is None:
        state.created_at = occurred
    outputs: tuple[Contract, ...] = ()
    if state.last_activity_at is None or occurred > state.last_activity_at:
        state.last_activity_at = occurred
        if state.status == "abandoned":
            assert state.abandoned_at is not None
            state.status = "active"
            outputs = (
                CartReactivated(
                    abandonment_id=state.abandonment_id,
                    cart_id=state.cart_id,
                    store_id=state.store_id,
                    event_id=event.event_id,
                    abandoned_at=utc_from_epoch(state.abandoned_at),
                    reactivated_at=event.occurred_at,
                ),
            )
    return outputs


def _start_new_cart(state: CartState) -> None:
    """A purchased cart id seeing newer activity starts over; abandonment numbering goes on."""
    state.status = "active"
    state.lines = {}
    state.created_at = None
    state.last_activity_at = None
    state.abandoned_at = None
    state.purchased_at = None
    _forget_reminders(state)


def _apply_content(state: CartState, event: CartEvent) -> None:
    _merge_customer(state, event.customer)
    if event.cart_url is not None:
        state.cart_url = event.cart_url
    item = event.item
    if event.type == "cart_cleared":
        state.lines = {}
    elif item is None:
        return
    elif event.type == "item_removed" or (
        event.type == "quantity_changed" and item.quantity == 0
    ):
        state.lines.pop(item.sku, None)
    elif event.type in ("item_added", "quantity_changed"):
        line = state.lines.get(item.sku)
        if line is None:
            if item.unit_price is None:
                return  # a quantity change for a line we never saw priced: nothing to show
            line = state.lines[item.sku] = {"quantity": 0}
        assert item.quantity is not None
        if event.type == "item_added":
            line["quantity"] = min(MAX_QUANTITY, line["quantity"] + item.quantity)
        else:
            line["quantity"] = item.quantity
        for name in ("name", "url", "image_url"):
            value = getattr(item, name)
            if value is not None:
                line[name] = value
        if item.unit_price is not None:
            line["unit_price"] = format(item.unit_price, "f")
        if item.currency is not None and state.currency is None:
            state.currency = item.currency


def _merge_customer(state: CartState, customer: Customer | None) -> None:
    if customer is None:
        return
    known = dict(state.customer or {})
    known.update(customer.model_dump(exclude_none=True))
    state.customer = known


def snapshot(state: CartState) -> CartSnapshot:
    """The cart as a reminder shows it: lines, item count and total."""
    lines = []
    for sku, line in state.lines.items():
        unit_price = Decimal(line["unit_price"])
        lines.append(
            CartLine(
                sku=sku,
                name=line.get("name"),
                quantity=line["quantity"],
                unit_price=unit_price,
                line_total=unit_price * line["quantity"],
                url=line.get("url"),
                image_url=line.get("image_url"),
            )
        )
    return CartSnapshot(
        lines=lines,
        item_count=sum(line.quantity for line in lines),
        total=sum((line.line_total for line in lines), Decimal(0)),
        currency=state.currency,
        customer=Customer.model_validate(state.customer) if state.customer else None,
        cart_url=state.cart_url,
    )


def abandoned_message(state: CartState) -> CartAbandoned:
    assert state.abandoned_at is not None
    assert state.created_at is not None and state.last_activity_at is not None
    return CartAbandoned(
        abandonment_id=state.abandonment_id,
        sequence=state.abandonments,
        cart_id=state.cart_id,
        store_id=state.store_id,
        cart=snapshot(state),
        created_at=utc_from_epoch(state.created_at),
        last_activity_at=utc_from_epoch(state.last_activity_at),
        abandoned_at=utc_from_epoch(state.abandoned_at),
    )
