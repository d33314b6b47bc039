"""Shoppers as shops send them (address, opt-in, cart link), and endless live traffic."""

import itertools
import json
from collections import Counter

import pytest
from cartwatch_dev.loadgen import LoadSpec, generate
from cartwatch_dev.loadgen.shoppers import Shoppers, continuous, dress

from schemas.events import CartEvent, PurchaseEvent

SPEC = LoadSpec(seed=5, carts=300)


def documents(messages):
    return [json.loads(m.value) for m in messages]


def test_cart_events_carry_a_link_and_known_shoppers_their_opt_in():
    dressed = list(dress(generate(SPEC), Shoppers()))
    carts = [d for d in documents(dressed) if d["type"] != "order_completed"]
    assert all(d["cart_url"] == f"https://{d['store_id']}.shop.example/cart/{d['cart_id']}"
               for d in carts)
    named = [d for d in carts if "customer" in d]
    assert all(set(d["customer"]) == {"email", "name", "marketing_consent"} for d in named)
    consent = Counter(d["customer"]["marketing_consent"] for d in named)
    assert consent[True] > consent[False] > 0  # 60 % opt in
    first_events = {}
    for d in carts:
        first_events.setdefault(d["cart_id"], d)
    known = sum("customer" in d for d in first_events.values()) / len(first_events)
    assert 0.6 < known < 0.8  # 70 % are logged in from their first event


def test_a_shopper_is_the_same_on_every_event_of_the_cart():
    seen: dict[str, set[str]] = {}
    for d in documents(dress(generate(SPEC), Shoppers())):
        if "customer" in d:
            seen.setdefault(d["cart_id"], set()).add(json.dumps(d["customer"], sort_keys=True))
    assert seen and all(len(people) == 1 for people in seen.values())


def test_dressed_traffic_is_valid_and_keeps_its_outcomes():
    plain = generate(SPEC)
    dressed = list(dress(plain, Shoppers()))
    for message in dressed:
        model = CartEvent if message.topic == "cart_events" else PurchaseEvent
        model.model_validate_json(message.value)
    # only who the shopper is, the cart link and product names change: never what the cart
    # holds, when, or the keys and order, so the ledger's expected outcomes stay true
    assert [(m.topic, m.key, m.sent_at) for m in dressed] == [
        (m.topic, m.key, m.sent_at) for m in plain]
    assert [contents(d) for d in documents(dressed)] == [contents(d) for d in documents(plain)]


def contents(document: dict) -> dict:
    kept = {key: value for key, value in document.items() if key not in ("customer", "cart_url")}
    if "item" in kept:
        kept["item"] = {key: value for key, value in kept["item"].items() if key != "name"}
    return kept


def test_products_have_names_a_shopper_recognises_the_same_everywhere():
    names: dict[str, set[str]] = {}
    for d in documents(dress(generate(SPEC), Shoppers())):
        if "name" in d.get("item", {}):
            names.setdefault(d["item"]["sku"], set()).add(d["item"]["name"])
    assert names and all(len(found) == 1 for found in names.values())
    assert not any(name.startswith("Product ") for found in names.values() for name in found)
    assert len({next(iter(found)) for found in names.values()}) > len(names) / 3


def test_flags_turn_consent_and_links_off():
    dressed = documents(dress(generate(SPEC), Shoppers(consent=False, cart_urls=False)))
    assert not any("cart_url" in d for d in dressed)
    assert not any("marketing_consent" in d.get("customer", {}) for d in dressed)
    assert any("customer" in d for d in dressed)


def test_probabilities_are_checked():
    with pytest.raises(ValueError, match="consent_probability"):
        Shoppers(consent_probability=1.5)


def test_continuous_traffic_is_in_delivery_order_round_after_round():
    spec = LoadSpec(seed=10, carts=20, span=60.0, abandon_after=20.0, start=1_000_000.0)
    messages = list(itertools.islice(continuous(spec), 2_000))
    times = [m.sent_at for m in messages]
    assert times == sorted(times) and times[0] >= spec.start
    carts = {json.loads(m.value)["cart_id"] for m in messages}
    rounds = {cart.split("-")[1] for cart in carts}
    assert len(rounds) >= 5 and {"10", "11", "12"} <= rounds
    # every cart's own events keep the order the model gave them
    single = generate(spec)
    first_cart = single[0].key
    assert [m for m in messages if m.key == first_cart] == [m for m in single
                                                            if m.key == first_cart]


def test_continuous_traffic_needs_carts():
    with pytest.raises(ValueError):
        next(continuous(LoadSpec(carts=0)))
