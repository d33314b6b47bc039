"""Who the generated shoppers are, as real shops send it: addresses, consent and cart links.

``cartwatch_dev.loadgen.model`` shapes the sessions (what happens to each cart, and when). A shop
also tells who the shopper is and where the cart lives: a logged-in customer's address and
marketing opt-in ride on every cart event, a guest's only on the checkout step, and every cart
event links back to the cart. Without those, a worker with reminders enabled sends none: the
default policy emails only customers with ``marketing_consent: true``, and an email without a
link has no way back to the shop. ``dress`` adds them, as a pure function of each cart's id, so
the same seed still gives the same traffic and the same outcomes (nothing here changes when a
cart is abandoned or bought).
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from cartwatch_dev.loadgen.model import LoadSpec, Message, generate

FIRST_NAMES = ("Ada", "Ben", "Chloé", "Dara", "Emil", "Fatima", "Grace", "Hiro", "Inès", "Jonas",
               "Kemal", "Lena", "Mateo", "Noor", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tao")
LAST_NAMES = ("Almeida", "Berg", "Chen", "Dubois", "Eze", "Fischer", "García", "Haddad",
              "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor")


MATERIALS = ("Ceramic", "Linen", "Oak", "Wool", "Copper", "Bamboo", "Leather", "Glass",
             "Cotton", "Stoneware", "Walnut", "Steel")
PRODUCTS = ("mug", "tea tin", "scarf", "cutting board", "lamp", "notebook", "socks", "bowl",
            "candle", "backpack", "teapot", "blanket", "water bottle", "apron", "vase",
            "wallet", "planter")
COLOURS = ("", "blue ", "sage ", "charcoal ", "sand ", "rust ")


def product_name(sku: str) -> str:
    """A product name a shopper would recognise, the same for a SKU everywhere it appears."""
    rng = random.Random(f"product-{sku}")
    colour = rng.choice(COLOURS)
    material = rng.choice(MATERIALS)
    name = f"{colour}{material.lower() if colour else material} {rng.choice(PRODUCTS)}"
    return name[0].upper() + name[1:]


@dataclass(frozen=True, slots=True)
class Shoppers:
    """How many shoppers are known, how many opted in, and whether carts carry their link."""

    identified_probability: float = 0.7
    """The shopper is logged in (or gave an address early): every cart event names them."""
    consent_probability: float = 0.6
    """A shopper who gives an address ticks the marketing opt-in."""
    consent: bool = True
    """False: no ``marketing_consent`` at all, as shops that do not ask send it."""
    cart_urls: bool = True
    url_domain: str = "shop.example"
    """Cart links are ``https://<store>.<url_domain>/cart/<cart>`` (``.example`` never resolves)."""

    def __post_init__(self) -> None:
        for name in ("identified_probability", "consent_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")


def shopper(cart_id: str, shoppers: Shoppers) -> tuple[bool, dict[str, Any]]:
    """Whether the cart's shopper is identified from the start, and who they are."""
    rng = random.Random(f"shopper-{cart_id}")
    identified = rng.random() < shoppers.identified_probability
    consents = rng.random() < shoppers.consent_probability
    customer: dict[str, Any] = {
        "email": f"{cart_id}@example.com",
        "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
    }
    if shoppers.consent:
        customer["marketing_consent"] = consents
    return identified, customer


def dress(messages: Iterable[Message], shoppers: Shoppers) -> Iterator[Message]:
    """The messages with the shopper, cart link and product names a shop would send;
    purchases unchanged."""
    for message in messages:
        if message.topic != "cart_events":
            yield message
            continue
        document = json.loads(message.value)
        cart_id, store_id = document["cart_id"], document["store_id"]
        identified, customer = shopper(cart_id, shoppers)
        if identified or "customer" in document:
            document["customer"] = {**document.get("customer", {}), **customer}
        item = document.get("item")
        if item is not None and "name" in item:  # the catalog's "Product 17" reads like a bug
            item["name"] = product_name(item["sku"])
        if shoppers.cart_urls:
            document["cart_url"] = f"https://{store_id}.{shoppers.url_domain}/cart/{cart_id}"
        value = json.dumps(document, separators=(",", ":")).encode()
        yield replace(message, value=value)


def continuous(spec: LoadSpec) -> Iterator[Message]:
    """Endless traffic in delivery order: one round of ``spec.carts`` sessions starting within
    every ``spec.span`` seconds from ``spec.start``, round ``k`` seeded ``spec.seed + k``.

    Rounds overlap (a session's silences and returns outlast its round), so they are merged by
    delivery time; a round is generated only once the merge reaches its start.
    """
    if spec.carts < 1 or spec.span <= 0:
        raise ValueError("continuous traffic needs carts >= 1 and span > 0")
    heap: list[tuple[float, int, Message]] = []
    order = 0
    round_number = 0
    while True:
        next_start = spec.start + round_number * spec.span
        while not heap or heap[0][0] >= next_start:
            for message in generate(replace(spec, seed=spec.seed + round_number,
                                            start=next_start)):
                heapq.heappush(heap, (message.sent_at, order, message))
                order += 1
            round_number += 1
            next_start = spec.start + round_number * spec.span
        yield heapq.heappop(heap)[2]
