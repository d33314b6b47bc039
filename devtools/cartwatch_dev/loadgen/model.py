"""Realistic shopping traffic as a pure function of a seed, with the outcomes it must produce.

``generate_traffic(spec)`` returns the messages a shop platform would publish (cart sessions of
adds, removes, quantity changes, views, checkouts and purchases over a catalog, with duplicates
and late deliveries) in delivery order, and the ledger of what each shopper did
(``cartwatch_dev.loadgen.ledger``), written while generating. ``Traffic.expected`` derives from the
ledger alone which abandonments (with their carts), recoveries and reactivations a correct
pipeline must emit: never from the pipeline's own state machine, whose bugs it must catch.
Nothing here touches Kafka or the wall clock, so tests and the benchmark check correctness from
the seed alone.

Sessions are shaped so the outcome does not depend on how carts interleave on a partition:
gaps inside a session are far below the time to abandon, gaps that are meant to abandon a cart
are far above it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from cartwatch_dev.loadgen.ledger import (
    Activity,
    CartLedger,
    Expected,
    Line,
    Purchase,
    expected_outcomes,
)

Topic = Literal["cart_events", "purchase_events"]
"""Logical topic names (``Settings.topic`` turns them into Kafka names)."""
TOPICS: tuple[Topic, ...] = ("cart_events", "purchase_events")


def topic_names(name: Callable[[Topic], str]) -> dict[Topic, str]:
    """Each logical input topic with its Kafka name (e.g. ``settings.topic``)."""
    return {topic: name(topic) for topic in TOPICS}

SESSION_GAP = (0.005, 0.1)
"""Time between two events of a session, as a share of the time to abandon."""
SILENCE = (1.5, 3.0)
"""A silence meant to abandon a cart lasts 1.5 to 3 times the time to abandon."""
LATE_BY = 0.004
"""A late event is stamped up to this share of the time to abandon before the cart's
previous event, and delivered after it."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What traffic to generate. Probabilities are per cart, except duplicate/late per event."""

    seed: int = 1
    carts: int = 1_000
    stores: int = 3
    catalog: int = 200
    session_events: tuple[int, int] = (2, 10)
    """Cart events per session (inclusive range), before any purchase."""
    abandon_probability: float = 0.4
    """The session ends without a purchase (the rest end with one, unless emptied)."""
    empty_probability: float = 0.05
    """The shopper removes everything: no abandonment, no purchase."""
    recover_probability: float = 0.3
    """An abandoned cart is bought later (a recovery)."""
    reactivate_probability: float = 0.2
    """An abandoned cart sees new activity later, then goes silent again."""
    duplicate_probability: float = 0.01
    late_probability: float = 0.01
    abandon_after: float = 1_800.0
    start: float = 1_704_067_200.0
    """Event time (epoch seconds) of the first session start."""
    span: float = 3_600.0
    """Sessions start uniformly within ``[start, start + span)``."""

    def __post_init__(self) -> None:
        low, high = self.session_events
        if self.carts < 0 or self.stores < 1 or self.catalog < 1 or not 1 <= low <= high:
            raise ValueError(f"invalid load spec: {self}")
        for name in ("abandon_probability", "empty_probability", "recover_probability",
                     "reactivate_probability", "duplicate_probability", "late_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.abandon_after <= 0 or self.span < 0:
            raise ValueError("abandon_after must be > 0 and span >= 0")

    @property
    def last_deadline(self) -> float:
        """No event and no abandonment deadline of the load falls after this event time."""
        session = self.session_events[1] * SESSION_GAP[1] + LATE_BY
        return self.start + self.span + (2 * session + 2 * SILENCE[1] + 1) * self.abandon_after

    def ending_before(self, moment: float) -> LoadSpec:
        """The same load shifted so that every deadline has passed at ``moment``."""
        return replace(self, start=self.start + moment - self.last_deadline)


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish: logical topic, key (the cart id), JSON value, delivery time."""

    topic: Topic
    key: bytes
    value: bytes
    sent_at: float
    """Position on the delivery timeline (a late event's ``occurred_at`` is before it)."""


@dataclass
class _Catalog:
    skus: list[str]
    prices: list[str]


@dataclass
class _Session:
    """Builds one cart's events; keeps the lines the shopper has, to make valid changes."""

    rng: random.Random
    spec: LoadSpec
    catalog: _Catalog
    cart_id: str
    store_id: str
    now: float
    ledger: CartLedger
    messages: list[Message] = field(default_factory=list)
    lines: dict[int, int] = field(default_factory=dict)
    count: int = 0
    previous_at: float | None = None

    def gap(self) -> None:
        self.now += self.spec.abandon_after * self.rng.uniform(*SESSION_GAP)

    def silence(self) -> None:
        self.now += self.spec.abandon_after * self.rng.uniform(*SILENCE)

    def _document(self, event_type: str, occurred_at: float, **fields: Any) -> dict[str, Any]:
        self.count += 1
        return {
            "event_id": f"{self.cart_id}-{self.count}",
            "type": event_type,
            "cart_id": self.cart_id,
            "store_id": self.store_id,
            "occurred_at": iso(occurred_at),
            **fields,
        }

    def _lines(self) -> tuple[Line, ...]:
        return tuple(Line(self.catalog.skus[index], quantity,
                          Decimal(self.catalog.prices[index]))
                     for index, quantity in sorted(self.lines.items()))

    def _record(self, document: dict[str, Any], changes_lines: bool) -> None:
        """Write the action in the ledger, once, at the time its event is stamped with."""
        customer = document.get("customer") or {}
        self.ledger.activities.append(Activity(
            event_id=document["event_id"], at=stamped(document["occurred_at"]),
            lines=self._lines() if changes_lines else None, email=customer.get("email")))

    def _emit(self, topic: Topic, document: dict[str, Any], sent_at: float) -> None:
        value = json.dumps(document, separators=(",", ":")).encode()
        message = Message(topic, self.cart_id.encode(), value, sent_at)
        self.messages.append(message)
        if self.rng.random() < self.spec.duplicate_probability:
            self.messages.append(message)

    def cart_event(self, event_type: str, **fields: Any) -> None:
        """Publish one cart event (``self.lines`` already changed) and write it in the ledger."""
        previous_at, self.previous_at = self.previous_at, self.now
        document = self._document(event_type, self.now, **fields)
        self._record(document, changes_lines="item" in fields)
        self._emit("cart_events", document, self.now)
        if previous_at is not None and self.rng.random() < self.spec.late_probability:
            # A view delivered now but stamped before the cart's previous event.
            late = previous_at - self.rng.uniform(0.0, LATE_BY * self.spec.abandon_after)
            document = self._document("cart_viewed", late)
            self._record(document, changes_lines=False)
            self._emit("cart_events", document, self.now)

    def add(self) -> None:
        index = self.rng.randrange(len(self.catalog.skus))
        quantity = self.rng.randint(1, 3)
        self.lines[index] = self.lines.get(index, 0) + quantity
        self.cart_event("item_added", item={
            "sku": self.catalog.skus[index], "name": f"Product {index}", "quantity": quantity,
            "unit_price": self.catalog.prices[index], "currency": "EUR",
        })

    def browse(self) -> None:
        """One shopper action other than the first add: add, remove, change, view, checkout."""
        roll = self.rng.random()
        if not self.lines or roll < 0.45:
            self.add()
        elif roll < 0.6:
            index = self.rng.choice(sorted(self.lines))
            del self.lines[index]
            self.cart_event("item_removed", item={"sku": self.catalog.skus[index]})
        elif roll < 0.75:
            index = self.rng.choice(sorted(self.lines))
            self.lines[index] = self.rng.randint(1, 5)
            self.cart_event("quantity_changed", item={
                "sku": self.catalog.skus[index], "quantity": self.lines[index]})
        elif roll < 0.9:
            self.cart_event("cart_viewed")
        else:
            self.cart_event("checkout_started", customer={
                "email": f"{self.cart_id}@example.com", "name": f"Shopper {self.cart_id}"})

    def empty(self) -> None:
        for index in sorted(self.lines):
            self.gap()
            del self.lines[index]  # before the event: the ledger writes the lines after it
            self.cart_event("item_removed", item={"sku": self.catalog.skus[index]})

    def purchase(self) -> None:
        total = sum(
            float(self.catalog.prices[index]) * quantity for index, quantity in self.lines.items()
        )
        document = self._document(
            "order_completed", self.now, order_id=f"order-{self.cart_id}-{self.count}",
            total=f"{total:.2f}", currency="EUR",
        )
        self.ledger.purchase = Purchase(stamped(document["occurred_at"]), document["order_id"],
                                        Decimal(document["total"]), document["currency"])
        self._emit("purchase_events", document, self.now)


def iso(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, as a producer would write it."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def stamped(timestamp: str) -> float:
    """The epoch seconds an event carries (``iso`` drops what is below the millisecond)."""
    return datetime.fromisoformat(timestamp).timestamp()


def catalog(spec: LoadSpec) -> _Catalog:
    rng = random.Random(f"catalog-{spec.seed}")
    return _Catalog(
        skus=[f"SKU-{index:05d}" for index in range(spec.catalog)],
        prices=[f"{rng.randint(199, 19_999) / 100:.2f}" for _ in range(spec.catalog)],
    )


def cart_session(spec: LoadSpec, shop: _Catalog, index: int) -> _Session:
    """Cart ``index``: its messages in delivery order and its ledger; its own RNG keeps carts
    independent."""
    rng = random.Random(f"{spec.seed}-{index}")
    cart_id, store_id = f"cart-{spec.seed}-{index}", f"store-{index % spec.stores}"
    session = _Session(
        rng=rng, spec=spec, catalog=shop, cart_id=cart_id, store_id=store_id,
        now=spec.start + rng.random() * spec.span,
        ledger=CartLedger(cart_id, store_id, currency="EUR"),
    )
    session.add()
    for _ in range(rng.randint(*spec.session_events) - 1):
        session.gap()
        session.browse()
    ending = rng.random()
    if ending < spec.empty_probability:
        session.empty()
    elif ending < spec.empty_probability + spec.abandon_probability:
        if not session.lines:
            return session  # emptied by its own removes: nothing to abandon
        session.silence()
        follow_up = rng.random()
        if follow_up < spec.recover_probability:
            session.purchase()
        elif follow_up < spec.recover_probability + spec.reactivate_probability:
            session.cart_event("cart_viewed")
    else:
        session.gap()
        session.purchase()
    return session


@dataclass(frozen=True)
class Traffic:
    """The messages of a load, in delivery order, and the ledger of every cart in it."""

    spec: LoadSpec
    messages: list[Message]
    carts: dict[str, CartLedger]

    def expected(self) -> Expected:
        """What a correct pipeline emits for this traffic, from the ledger alone."""
        return expected_outcomes(self.carts.values(), self.spec.abandon_after)

    def without(self, cart_ids: Collection[str]) -> Traffic:
        """The same traffic with every message and the ledger of ``cart_ids`` left out."""
        return Traffic(
            self.spec,
            [m for m in self.messages if m.key.decode() not in cart_ids],
            {key: cart for key, cart in self.carts.items() if key not in cart_ids},
        )


def generate_traffic(spec: LoadSpec) -> Traffic:
    """Every message of the load, merged across carts in delivery order, with the ledger."""
    shop = catalog(spec)
    sessions = [cart_session(spec, shop, index) for index in range(spec.carts)]
    messages = [m for session in sessions for m in session.messages]
    messages.sort(key=lambda message: message.sent_at)  # stable: a cart's order is kept
    return Traffic(spec, messages, {s.cart_id: s.ledger for s in sessions})


def generate(spec: LoadSpec) -> list[Message]:
    """Every message of the load, merged across carts in delivery order."""
    return generate_traffic(spec).messages


def silent_carts(
    count: int, occurred_at: float, *, seed: int = 1, store_id: str = "store-0",
    prefix: str = "silent",
) -> Iterator[Message]:
    """``count`` carts with one item each and the same last activity: they go silent at once.

    The benchmark uses them for timer precision and for a worker tracking a million carts.
    """
    stamp = iso(occurred_at)
    for index in range(count):
        cart_id = f"{prefix}-{seed}-{index}"
        document = {
            "event_id": f"{cart_id}-1", "type": "item_added", "cart_id": cart_id,
            "store_id": store_id, "occurred_at": stamp,
            "item": {"sku": "SKU-00001", "quantity": 1, "unit_price": "9.99", "currency": "EUR"},
        }
        value = json.dumps(document, separators=(",", ":")).encode()
        yield Message("cart_events", cart_id.encode(), value, occurred_at)
