"""The read-model figures' input: N abandonments as the JSON the read model's feed consumes.

Synthetic but shaped like a shop's: 8 stores, a catalogue of 5,000 products (popular ones
more often), carts of 1-5 lines, customers who come back (a third as many customers as carts)
with names, emails and phones (some without a phone, some carts without a customer), every
tenth abandonment a cart's second, about 18 % recovered and 12 % reactivated, step-1 (and some
step-2) entries in the notification log with a campaign and variant, and the cart event that
created each cart (the feed reads ``cart-events`` for the insights' carts created).

Everything about abandonment ``i`` derives from ``(seed, i)`` alone (``facts``), so any record
can be rebuilt without the others and the search terms of the query figures can be picked
from what is in the database. Abandonments are spread over the 90 days before ``END``, in
order of ``i``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

END = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
SPAN = 90 * 86_400.0
STORES = 8
PRODUCTS = 5_000
ABANDON_AFTER = 3_600.0
"""The stores' time to abandon: last activity to abandonment."""

FIRST = ("anna", "ben", "clara", "david", "emma", "felix", "greta", "hugo", "ida", "jonas",
         "katrin", "lukas", "mia", "noah", "olga", "paul", "rosa", "simon", "tina", "umar",
         "vera", "willem", "yara", "zoe", "amir", "bea", "chen", "dana", "elif", "farid")
LAST = ("schmidt", "mueller", "schneider", "fischer", "weber", "meyer", "wagner", "becker",
        "schulz", "hoffmann", "koch", "richter", "klein", "wolf", "neumann", "schwarz",
        "zimmermann", "braun", "hartmann", "krueger", "lange", "werner", "krause", "lehmann",
        "kaya", "yilmaz", "novak", "rossi", "garcia", "dubois", "jansen", "nowak", "silva",
        "larsen", "murphy", "okafor", "tanaka", "kim", "nguyen", "patel")
DOMAINS = ("example.com", "mail.example", "shop.example", "post.example", "web.example")
ADJECTIVES = ("blue", "green", "black", "white", "red", "grey", "navy", "olive", "sand", "rose")
MATERIALS = ("linen", "cotton", "wool", "leather", "denim", "silk", "canvas", "suede", "knit",
             "fleece")
NOUNS = ("shirt", "dress", "jacket", "scarf", "boots", "sneakers", "trousers", "skirt", "bag",
         "hat", "belt", "socks", "coat", "sweater", "shorts", "gloves", "cap", "vest", "tote",
         "blazer", "hoodie", "jeans", "sandals", "loafers", "backpack", "wallet", "beanie",
         "poncho", "cardigan", "parka", "kimono", "apron", "robe", "tunic", "overalls", "mittens",
         "slippers", "clogs", "cape", "tie", "bowtie", "bracelet", "necklace", "earrings",
         "ring", "watch", "sunglasses", "umbrella", "raincoat", "windbreaker")
LINE_COUNTS = (1, 2, 3, 4, 5)
LINE_WEIGHTS = (40, 25, 15, 12, 8)

KINDS = ("cart_events", "abandoned", "recovered", "reactivated", "notification_log")
"""The feed's decoders (``streams.operator.feed.DECODERS``) the input has records of."""


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def product_name(number: int) -> str:
    adjective = ADJECTIVES[number % len(ADJECTIVES)]
    material = MATERIALS[number // len(ADJECTIVES) % len(MATERIALS)]
    noun = NOUNS[number // (len(ADJECTIVES) * len(MATERIALS)) % len(NOUNS)]
    return f"{adjective.title()} {material.title()} {noun.title()}"


def sku(number: int) -> str:
    return f"SKU-{number:05d}"


@dataclass(frozen=True, slots=True)
class Customer:
    number: int

    @property
    def first(self) -> str:
        return FIRST[self.number % len(FIRST)]

    @property
    def last(self) -> str:
        return LAST[self.number // len(FIRST) % len(LAST)]

    @property
    def name(self) -> str:
        return f"{self.first.title()} {self.last.title()}"

    @property
    def email(self) -> str:
        return f"{self.first}.{self.last}{self.number}@{DOMAINS[self.number % len(DOMAINS)]}"

    @property
    def phone(self) -> str | None:
        if self.number % 5 == 0:
            return None
        digits = f"{(self.number * 7919) % 10**8:08d}"
        return f"+49 151 {digits[:4]} {digits[4:]}"

    def document(self) -> dict[str, object]:
        doc: dict[str, object] = {"id": f"cust-{self.number}", "email": self.email,
                                  "name": self.name, "marketing_consent": self.number % 4 != 0}
        if (phone := self.phone) is not None:
            doc["phone"] = phone
        return doc


@dataclass(frozen=True, slots=True)
class Facts:
    """What abandonment ``i`` is: enough to write all its records and to search for it."""

    index: int
    store_id: str
    cart_id: str
    sequence: int
    abandoned_at: float
    created_at: float
    customer: Customer | None
    products: tuple[int, ...]
    quantities: tuple[int, ...]
    cents: tuple[int, ...]
    outcome: str | None
    """``recovered``, ``reactivated`` or None."""
    outcome_after: float
    log_steps: int
    variant: str

    @property
    def abandonment_id(self) -> str:
        return f"{self.cart_id}:{self.sequence}"

    @property
    def total_cents(self) -> int:
        return sum(q * c for q, c in zip(self.quantities, self.cents, strict=True))


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class Synthetic:
    """``abandonments`` abandonments of seed ``seed``."""

    abandonments: int
    seed: int = 18

    @property
    def customers(self) -> int:
        return max(1, self.abandonments // 3)

    def facts(self, index: int) -> Facts:
        rng = random.Random(self.seed * 1_000_003 + index)
        second = index > 0 and index % 10 == 0  # the second abandonment of the cart before
        cart = index - index // 10
        abandoned_at = END - SPAN * (self.abandonments - index) / self.abandonments
        abandoned_at -= rng.random() * 60
        count = rng.choices(LINE_COUNTS, LINE_WEIGHTS)[0]
        products: list[int] = []
        while len(products) < count:
            number = int(PRODUCTS * rng.random() ** 2)  # popular products are bought more
            if number not in products:
                products.append(number)
        customer = None if rng.random() < 0.1 else Customer(rng.randrange(self.customers))
        outcome_roll = rng.random()
        outcome = ("recovered" if outcome_roll < 0.18 else
                   "reactivated" if outcome_roll < 0.30 else None)
        log_roll = rng.random()
        return Facts(
            index=index, store_id=f"store-{cart % STORES}", cart_id=f"cart-{cart:07d}",
            sequence=2 if second else 1, abandoned_at=abandoned_at,
            created_at=abandoned_at - ABANDON_AFTER - rng.uniform(60, 7_200),
            customer=customer, products=tuple(products),
            quantities=tuple(rng.choice((1, 1, 1, 2, 3)) for _ in products),
            cents=tuple(rng.randrange(199, 25_000) for _ in products),
            outcome=outcome, outcome_after=rng.uniform(300, 3 * 86_400),
            log_steps=0 if log_roll < 0.3 else 2 if log_roll > 0.8 else 1,
            variant=rng.choice(("a", "b", "holdout")),
        )

    def records(self) -> Iterator[tuple[str, bytes]]:
        """``(decoder name, JSON value)`` of every record, abandonment by abandonment."""
        for index in range(self.abandonments):
            yield from self.records_of(self.facts(index))

    def records_of(self, facts: Facts) -> Iterator[tuple[str, bytes]]:
        store, cart_id = facts.store_id, facts.cart_id
        base = f"https://{store}.example"
        if facts.sequence == 1:
            first = facts.products[0]
            yield "cart_events", _json({
                "event_id": f"{cart_id}-1", "type": "item_added", "cart_id": cart_id,
                "store_id": store, "occurred_at": iso(facts.created_at),
                "item": {"sku": sku(first), "name": product_name(first),
                         "quantity": facts.quantities[0], "unit_price": _money(facts.cents[0]),
                         "currency": "EUR"}})
        lines = []
        for number, quantity, cents in zip(facts.products, facts.quantities, facts.cents,
                                           strict=True):
            line: dict[str, object] = {
                "sku": sku(number), "name": product_name(number), "quantity": quantity,
                "unit_price": _money(cents), "line_total": _money(quantity * cents),
                "url": f"{base}/p/{sku(number)}"}
            if number % 2:
                line["image_url"] = f"{base}/img/{sku(number)}.jpg"
            lines.append(line)
        snapshot: dict[str, object] = {
            "lines": lines, "item_count": sum(facts.quantities),
            "total": _money(facts.total_cents), "currency": "EUR",
            "cart_url": f"{base}/cart/{cart_id}"}
        if facts.customer is not None:
            snapshot["customer"] = facts.customer.document()
        abandoned_at = iso(facts.abandoned_at)
        yield "abandoned", _json({
            "type": "cart_abandoned", "abandonment_id": facts.abandonment_id,
            "sequence": facts.sequence, "cart_id": cart_id, "store_id": store,
            "cart": snapshot, "created_at": iso(facts.created_at),
            "last_activity_at": iso(facts.abandoned_at - ABANDON_AFTER),
            "abandoned_at": abandoned_at})
        ids = {"abandonment_id": facts.abandonment_id, "cart_id": cart_id, "store_id": store}
        campaign = {"campaign": "default", "variant": facts.variant}
        for step in range(1, facts.log_steps + 1):
            at = facts.abandoned_at + step * 1_800
            customer = facts.customer
            entry: dict[str, object]
            if customer is None:
                entry = {"status": "skipped", "reason": "no_contact", "channel": None}
            elif facts.variant == "holdout":
                entry = {"status": "skipped", "reason": "holdout", "channel": None}
            elif customer.number % 4 == 0:
                entry = {"status": "skipped", "reason": "no_consent", "channel": "email"}
            else:
                entry = {"status": "sent", "channel": "email", "attempt": 1,
                         "message_id": f"<{facts.abandonment_id}.{step}@cartwatch>"}
            yield "notification_log", _json({
                "type": "notification_log", **ids, "step": step, **entry, **campaign,
                "at": iso(at)})
        reminded = facts.log_steps > 0 and facts.customer is not None and (
            facts.customer.number % 4 != 0 and facts.variant != "holdout")
        if facts.outcome == "recovered":
            yield "recovered", _json({
                "type": "cart_recovered", **ids, "order_id": f"order-{facts.index}",
                "revenue": _money(facts.total_cents), "currency": "EUR",
                "abandoned_at": abandoned_at,
                "recovered_at": iso(facts.abandoned_at + facts.outcome_after),
                "seconds_to_recover": round(facts.outcome_after, 3), "reminder_sent": reminded,
                **(campaign if reminded else {})})
        elif facts.outcome == "reactivated":
            yield "reactivated", _json({
                "type": "cart_reactivated", **ids, "event_id": f"{cart_id}-back-{facts.index}",
                "abandoned_at": abandoned_at,
                "reactivated_at": iso(facts.abandoned_at + facts.outcome_after)})


def _json(document: dict[str, object]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
