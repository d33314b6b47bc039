"""What the shopper did, and what a correct pipeline must emit for it, from the rule alone.

The load generator writes a ``CartLedger`` per cart while it generates: each action the shopper
took (once, however often its message is delivered), the cart's lines after it, the address
given at checkout, and the purchase. ``expected_outcomes`` turns ledgers into the outputs the
README promises, straight from the business rule, without the pipeline's state machine
(``streams.lifecycle``): a check that replayed the state machine could never catch its bugs.

The rule: a cart's activity splits into *visits* wherever it is silent for longer than the time
to abandon ``T``. A visit that ends with items and is not ended by the purchase is abandoned at
its last activity + ``T`` (the n-th such abandonment of the cart is ``<cart>:<n>``); the first
action of the next visit reactivates it. A purchase after an abandonment recovers the latest
one (even if the cart came back in between: the reminder link brings shoppers back). An action
stamped before the cart's latest one (delivered late) is activity but never moves the last
activity back, and the generator only delivers views late, so it changes no line.

``compare`` then judges observed output records against the expectations field by field
(lines, item count, total, currency, times), and ``expected_reminders`` says which reminder
emails are due, which must not come, and which depend on timing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

TIME_TOLERANCE = 0.002
"""Seconds two timestamps may differ by and still be equal (event times carry milliseconds)."""

Kind = Literal["abandoned", "recovered", "reactivated"]
KINDS: tuple[Kind, ...] = ("abandoned", "recovered", "reactivated")


# -- the ledger (written by the generator) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One product in the cart: how many, at what unit price."""

    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Activity:
    """One shopper action on the cart, as stamped on its event."""

    event_id: str
    at: float
    lines: tuple[Line, ...] | None = None
    """The cart's lines after the action; None when the action changes none (a view)."""
    email: str | None = None
    """An address the shopper gave with this action (at checkout)."""


@dataclass(frozen=True, slots=True)
class Purchase:
    """The order that ended the cart."""

    at: float
    order_id: str
    total: Decimal
    currency: str


@dataclass(slots=True)
class CartLedger:
    """Everything the shopper did with one cart, in the order they did it."""

    cart_id: str
    store_id: str
    currency: str
    activities: list[Activity] = field(default_factory=list)
    purchase: Purchase | None = None
    """The order, if any: the last thing that happens to the cart (nothing is added after)."""


# -- the expectations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Abandonment:
    """A ``cart_abandoned`` record as plain data (expected, or parsed from an output)."""

    abandonment_id: str
    cart_id: str
    store_id: str
    lines: tuple[Line, ...]
    item_count: int
    total: Decimal
    currency: str | None
    last_activity_at: float
    abandoned_at: float
    email: str | None


@dataclass(frozen=True, slots=True)
class Recovery:
    """A ``cart_recovered`` record as plain data."""

    abandonment_id: str
    order_id: str
    revenue: Decimal
    currency: str
    recovered_at: float


@dataclass(frozen=True, slots=True)
class Reactivation:
    """A ``cart_reactivated`` record as plain data."""

    abandonment_id: str
    event_id: str
    reactivated_at: float


@dataclass(frozen=True)
class Expected:
    """What a correct pipeline emits for the generated traffic once every deadline passed."""

    abandonments: Mapping[str, Abandonment]
    recoveries: Mapping[str, Recovery]
    reactivations: Mapping[str, Reactivation]

    @property
    def abandonment_ids(self) -> frozenset[str]:
        return frozenset(self.abandonments)

    @property
    def recovered_ids(self) -> frozenset[str]:
        return frozenset(self.recoveries)

    @property
    def reactivated_ids(self) -> frozenset[str]:
        return frozenset(self.reactivations)

    def of(self, kind: Kind) -> Mapping[str, Abandonment | Recovery | Reactivation]:
        by_kind: dict[Kind, Mapping[str, Abandonment | Recovery | Reactivation]] = {
            "abandoned": self.abandonments, "recovered": self.recoveries,
            "reactivated": self.reactivations}
        return by_kind[kind]

    def as_json(self) -> dict[str, Any]:
        """Ids per kind (as before) and each abandonment's cart, for ``loadgen --expect``."""
        return {
            "abandonment_ids": sorted(self.abandonments),
            "recovered_ids": sorted(self.recoveries),
            "reactivated_ids": sorted(self.reactivations),
            "abandonments": {
                key: {
                    "lines": {line.sku: [line.quantity, str(line.unit_price)]
                              for line in a.lines},
                    "item_count": a.item_count, "total": str(a.total), "currency": a.currency,
                    "last_activity_at": a.last_activity_at, "abandoned_at": a.abandoned_at,
                }
                for key, a in sorted(self.abandonments.items())
            },
        }


def _visits(activities: Sequence[Activity], abandon_after: float) -> list[list[Activity]]:
    """The activities split wherever the cart was silent for longer than ``abandon_after``.

    A late action (stamped before the latest one) joins the current visit: it is activity, but
    the silence is measured from the latest action.
    """
    visits: list[list[Activity]] = []
    latest = -math.inf
    for activity in activities:
        if activity.at > latest + abandon_after:
            visits.append([])
        visits[-1].append(activity)
        latest = max(latest, activity.at)
    return visits


def _abandonment(cart: CartLedger, number: int, lines: tuple[Line, ...], last: float,
                 abandon_after: float, email: str | None) -> Abandonment:
    return Abandonment(
        abandonment_id=f"{cart.cart_id}:{number}", cart_id=cart.cart_id, store_id=cart.store_id,
        lines=tuple(sorted(lines, key=lambda line: line.sku)),
        item_count=sum(line.quantity for line in lines),
        total=sum((line.unit_price * line.quantity for line in lines), Decimal(0)),
        currency=cart.currency, last_activity_at=last, abandoned_at=last + abandon_after,
        email=email,
    )


def cart_outcomes(cart: CartLedger, abandon_after: float) -> Expected:
    """The outputs one cart's ledger must produce (see the module docstring for the rule)."""
    abandonments: dict[str, Abandonment] = {}
    recoveries: dict[str, Recovery] = {}
    reactivations: dict[str, Reactivation] = {}
    lines: tuple[Line, ...] = ()
    email: str | None = None
    previous: Abandonment | None = None
    """The abandonment of the visit before, if it was abandoned."""
    latest: Abandonment | None = None
    purchase = cart.purchase
    for visit in _visits(cart.activities, abandon_after):
        if previous is not None:  # this visit's first action brought the abandoned cart back
            reactivations[previous.abandonment_id] = Reactivation(
                previous.abandonment_id, visit[0].event_id, visit[0].at)
        for activity in visit:
            lines = activity.lines if activity.lines is not None else lines
            email = activity.email or email
        last = max(activity.at for activity in visit)
        bought_in_time = purchase is not None and purchase.at <= last + abandon_after
        if lines and not bought_in_time:
            previous = latest = _abandonment(cart, len(abandonments) + 1, lines, last,
                                             abandon_after, email)
            abandonments[latest.abandonment_id] = latest
        else:
            previous = None
    if latest is not None and purchase is not None:  # bought after (any) abandonment
        recoveries[latest.abandonment_id] = Recovery(
            latest.abandonment_id, purchase.order_id, purchase.total, purchase.currency,
            purchase.at)
    return Expected(abandonments, recoveries, reactivations)


def expected_outcomes(carts: Iterable[CartLedger], abandon_after: float) -> Expected:
    """Every cart's expected outputs, merged."""
    abandonments: dict[str, Abandonment] = {}
    recoveries: dict[str, Recovery] = {}
    reactivations: dict[str, Reactivation] = {}
    for cart in carts:
        outcome = cart_outcomes(cart, abandon_after)
        abandonments.update(outcome.abandonments)
        recoveries.update(outcome.recoveries)
        reactivations.update(outcome.reactivations)
    return Expected(abandonments, recoveries, reactivations)


# -- judging observed outputs -------------------------------------------------------------------


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def parse_output(kind: Kind, value: Mapping[str, Any]) -> Abandonment | Recovery | Reactivation:
    """An output record (contract JSON) as the plain data the expectations are written in."""
    if kind == "recovered":
        return Recovery(value["abandonment_id"], value["order_id"], Decimal(str(value["revenue"])),
                        value["currency"], _epoch(value["recovered_at"]))
    if kind == "reactivated":
        return Reactivation(value["abandonment_id"], value["event_id"],
                            _epoch(value["reactivated_at"]))
    cart = value["cart"]
    return Abandonment(
        abandonment_id=value["abandonment_id"], cart_id=value["cart_id"],
        store_id=value["store_id"],
        lines=tuple(sorted((Line(line["sku"], int(line["quantity"]),
                                 Decimal(str(line["unit_price"])))
                            for line in cart["lines"]), key=lambda line: line.sku)),
        item_count=int(cart["item_count"]), total=Decimal(str(cart["total"])),
        currency=cart.get("currency"), last_activity_at=_epoch(value["last_activity_at"]),
        abandoned_at=_epoch(value["abandoned_at"]),
        email=(cart.get("customer") or {}).get("email"),
    )


def _line_differences(want: tuple[Line, ...], got: tuple[Line, ...]) -> list[str]:
    wanted = {line.sku: line for line in want}
    seen = {line.sku: line for line in got}
    found = [f"line {sku} missing" for sku in sorted(wanted.keys() - seen.keys())]
    found += [f"line {sku} unexpected" for sku in sorted(seen.keys() - wanted.keys())]
    for sku in sorted(wanted.keys() & seen.keys()):
        a, b = wanted[sku], seen[sku]
        if a.quantity != b.quantity:
            found.append(f"line {sku} quantity {a.quantity} != {b.quantity}")
        if a.unit_price != b.unit_price:
            found.append(f"line {sku} unit_price {a.unit_price} != {b.unit_price}")
    return found


def differences(want: Abandonment | Recovery | Reactivation,
                got: Abandonment | Recovery | Reactivation) -> list[str]:
    """How an observed record differs from the expected one: "field expected != seen"."""
    found: list[str] = []
    for name in (f.name for f in fields(want)):
        a, b = getattr(want, name), getattr(got, name)
        if name == "lines":
            found += _line_differences(a, b)
        elif isinstance(a, float):
            if abs(a - b) > TIME_TOLERANCE:
                found.append(f"{name} {a:.3f} != {b:.3f}")
        elif a != b:
            found.append(f"{name} {a} != {b}")
    return found


@dataclass(frozen=True)
class Verdict:
    """Expected versus observed, per output kind: missing, unexpected and different ids."""

    missing: Mapping[Kind, frozenset[str]]
    unexpected: Mapping[Kind, frozenset[str]]
    different: Mapping[Kind, Mapping[str, list[str]]]
    """Id -> what differs (every record of an id must match: a redelivery is a repeat)."""

    @property
    def ok(self) -> bool:
        return not self.problems()

    def counts(self) -> dict[str, dict[Kind, int]]:
        """How many ids per problem and kind (for reports: all zero when correct)."""
        return {
            "missing": {kind: len(self.missing[kind]) for kind in KINDS},
            "unexpected": {kind: len(self.unexpected[kind]) for kind in KINDS},
            "different": {kind: len(self.different[kind]) for kind in KINDS},
        }

    def problems(self, first: int = 3) -> list[str]:
        """Readable lines, with the first few ids (and for different ones, what differs)."""
        found = []
        for kind in KINDS:
            if self.missing[kind]:
                found.append(f"{kind}: {len(self.missing[kind])} missing: "
                             f"{sorted(self.missing[kind])[:first]}")
            if self.unexpected[kind]:
                found.append(f"{kind}: {len(self.unexpected[kind])} unexpected: "
                             f"{sorted(self.unexpected[kind])[:first]}")
            if self.different[kind]:
                shown = "; ".join(f"{key}: {', '.join(diff[:first])}"
                                  for key, diff in sorted(self.different[kind].items())[:first])
                found.append(f"{kind}: {len(self.different[kind])} different: {shown}")
        return found


def compare(expected: Expected, observed: Mapping[Kind, Iterable[Mapping[str, Any]]]) -> Verdict:
    """Judge the output records of each kind (contract JSON, repeats allowed) against ``expected``.

    A record that cannot be read as its contract counts as different (its id, if it has one).
    """
    missing: dict[Kind, frozenset[str]] = {}
    unexpected: dict[Kind, frozenset[str]] = {}
    different: dict[Kind, dict[str, list[str]]] = {}
    for kind in KINDS:
        want = expected.of(kind)
        seen: set[str] = set()
        different[kind] = {}
        for value in observed.get(kind, ()):
            key = str(value.get("abandonment_id"))
            seen.add(key)
            if key not in want:
                continue
            try:
                diff = differences(want[key], parse_output(kind, value))
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                diff = [f"unreadable record ({type(exc).__name__}: {exc})"]
            if diff and key not in different[kind]:
                different[kind][key] = diff
        missing[kind] = frozenset(want.keys() - seen)
        unexpected[kind] = frozenset(seen - want.keys())
    return Verdict(missing, unexpected, different)


# -- reminders ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReminderRule:
    """The reminder policy a scenario's notifier runs, as plain data (all stores alike)."""

    steps: tuple[float, ...]
    """Delay of each step after the abandonment, seconds."""
    require_consent: bool = True
    """The generator's shoppers never give marketing consent: True means no email at all."""
    frequency_cap: float | None = 16 * 3_600.0
    """At most one email per address in this long, across abandonments."""
    cancel_on_reactivation: bool = True


@dataclass(frozen=True)
class Reminders:
    """Which (abandonment id, step) emails must arrive, and which may or may not."""

    must: frozenset[tuple[str, int]]
    optional: frozenset[tuple[str, int]]


def _decided_at(due: float, blackouts: Sequence[tuple[float, float]], margin: float) -> float:
    """When a step due at ``due`` is decided: then, or when the outage around it ends."""
    return max([due] + [end for start, end in blackouts if start - margin <= due <= end])


def expected_reminders(
    expected: Expected, rule: ReminderRule, *, margin: float,
    blackouts: Sequence[tuple[float, float]] = (),
) -> Reminders:
    """The emails the ledger's abandonments must get under ``rule``, and the unsure ones.

    A step of an abandonment with an address (and consent, when required) is due at
    ``abandoned_at + after``. A purchase (or, if it cancels, new activity) before that ends
    the plan; one after it comes too late to stop the email. Only a follow-up within ``margin``
    of the moment the step is decided (its due time, or the end of a ``blackout``, an outage
    around it) leaves it to timing: optional. An address that got an email for another
    abandonment less than the frequency cap before gets none; when that earlier email was
    itself optional, so is this one.
    """
    must: set[tuple[str, int]] = set()
    optional: set[tuple[str, int]] = set()
    if rule.require_consent:
        return Reminders(frozenset(), frozenset())
    follow_ups: dict[str, float] = {key: r.recovered_at for key, r in expected.recoveries.items()}
    if rule.cancel_on_reactivation:  # came back (and maybe bought later): the first one counts
        for key, back in expected.reactivations.items():
            follow_ups[key] = min(back.reactivated_at, follow_ups.get(key, math.inf))
    sent: dict[str, list[tuple[float, str, bool]]] = {}
    """Address -> (time, abandonment id, sure) of the emails it gets."""
    for abandonment in sorted(expected.abandonments.values(), key=lambda a: a.abandoned_at):
        if not abandonment.email:
            continue
        follow_up = follow_ups.get(abandonment.abandonment_id, math.inf)
        earlier = sent.setdefault(abandonment.email, [])
        for step, after in enumerate(rule.steps, start=1):
            due = abandonment.abandoned_at + after
            if follow_up < due - margin:
                break  # cancelled before it fell due: neither this step nor a later one
            capped = [sure for at, key, sure in earlier
                      if key != abandonment.abandonment_id and rule.frequency_cap is not None
                      and due - at < rule.frequency_cap]
            if any(capped):
                continue
            unsure = bool(capped) or follow_up <= _decided_at(due, blackouts, margin) + margin
            (optional if unsure else must).add((abandonment.abandonment_id, step))
            earlier.append((due, abandonment.abandonment_id, not unsure))
    return Reminders(frozenset(must), frozenset(optional))
