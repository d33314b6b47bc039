"""The cart lifecycle pipeline end to end: real broker, real worker processes."""

from datetime import UTC, datetime

import pytest
from pipeline_harness import Pipeline, Shop, ids

pytestmark = pytest.mark.integration


def abandoned_by_id(outputs: dict) -> dict[str, dict]:
    return {record["abandonment_id"]: record for record in outputs["cart-abandoned"]}


async def test_realistic_mix_gives_exact_outputs(pipeline: Pipeline) -> None:
    pipeline.settings.update(
        CARTWATCH_ABANDON_AFTER="2s", CARTWATCH_STORE_ABANDON_AFTER="slow=4s"
    )
    worker = pipeline.worker("w1").start()
    worker.wait_ready()
    shop, slow = Shop("fast"), Shop("slow")
    duplicate = shop.add("c-dup", "MUG", quantity=1)
    await pipeline.send([
        shop.add("c-abandon", "MUG", customer={"email": "ann@example.com", "name": "Ann"},
                 cart_url="https://shop.example/cart/c-abandon"),
        shop.add("c-abandon", "TEA", quantity=3, price="4.99"),
        shop.add("c-bought", "MUG"),
        shop.purchase("c-bought"),
        shop.add("c-empty", "MUG"),
        shop.cart_event("c-empty", "item_removed", item={"sku": "MUG"}),
        shop.add("c-cleared", "MUG"),
        shop.cart_event("c-cleared", "cart_cleared"),
        shop.add("c-recover", "MUG"),
        shop.add("c-reactivate", "MUG"),
        slow.add("c-slow", "LAMP", price="120.00"),
        duplicate,
        duplicate,
        shop.add("c-late", "MUG", offset=0),
        shop.cart_event("c-late", "cart_viewed", offset=1),
        shop.cart_event("c-late", "cart_viewed", offset=-5),
        ("cart-events", b"c-bad", b"{not json"),
        ("cart-events", b"c-bad", b'{"type": "cart_exploded", "cart_id": "c-bad"}'),
        ("cart-events", b"c-bad", b'{"type": "item_added", "cart_id": "c-bad"}'),
        ("purchase-events", b"other-key", shop.purchase("c-bad")[2]),
    ])
    first_wave = {f"{cart}:1" for cart in
                  ("c-abandon", "c-recover", "c-reactivate", "c-slow", "c-dup", "c-late")}
    outputs = await pipeline.collect(lambda out: ids(out["cart-abandoned"]) >= first_wave)
    assert ids(outputs["cart-abandoned"]) == first_wave

    shop.base = datetime.now(UTC)
    await pipeline.send([shop.purchase("c-recover", total="10.00", order_id="o-77"),
                         shop.cart_event("c-reactivate", "cart_viewed")])
    expected_abandoned = first_wave | {"c-reactivate:2"}
    outputs = await pipeline.collect(
        lambda out: ids(out["cart-abandoned"]) >= expected_abandoned
        and len(out["cart-recovered"]) >= 1 and len(out["cart-reactivated"]) >= 1,
        settle=3.0,
    )
    assert ids(outputs["cart-abandoned"]) == expected_abandoned
    assert len(outputs["cart-abandoned"]) == len(expected_abandoned)
    assert [r["abandonment_id"] for r in outputs["cart-reactivated"]] == ["c-reactivate:1"]
    [recovered] = outputs["cart-recovered"]
    assert (recovered["abandonment_id"], recovered["order_id"], recovered["revenue"]) == (
        "c-recover:1", "o-77", "10.00")
    assert recovered["reminder_sent"] is False and recovered["seconds_to_recover"] > 0

    letters = outputs["cartwatch-dead-letter"]
    assert sorted(letter["error_kind"] for letter in letters) == [
        "invalid", "invalid", "not_json", "unknown_type"]
    assert all(letter["value_base64"] for letter in letters)

    abandoned = abandoned_by_id(outputs)
    cart = abandoned["c-abandon:1"]["cart"]
    assert (cart["item_count"], cart["total"], cart["currency"]) == (4, "24.97", "EUR")
    assert {line["sku"]: line["quantity"] for line in cart["lines"]} == {"MUG": 1, "TEA": 3}
    assert cart["customer"]["email"] == "ann@example.com"
    assert cart["cart_url"] == "https://shop.example/cart/c-abandon"
    assert abandoned["c-dup:1"]["cart"]["item_count"] == 1

    late = abandoned["c-late:1"]  # the late -5 s view never moves last activity backwards
    assert parse(late["last_activity_at"]) - parse(late["created_at"]) == 1.0
    slow_record = abandoned["c-slow:1"]
    assert parse(slow_record["abandoned_at"]) - parse(slow_record["last_activity_at"]) == 4.0
    assert parse(late["abandoned_at"]) - parse(late["last_activity_at"]) == 2.0


def parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()

