"""The cart lifecycle pipeline end to end: real broker, real worker processes."""

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from pipeline_harness import PARTITIONS, READY_LINE, Pipeline, Shop, Worker, ids

pytestmark = [pytest.mark.integration, pytest.mark.compat]


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
    async with aiohttp.ClientSession() as http:
        counts = await counters(http, worker)
    assert counts["dead_lettered"] == 4
    assert counts["out:cart_abandoned"] == len(expected_abandoned)

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
    assert not outputs.misplaced(pipeline.input_partitions)


def parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()



async def test_backlog_replay_matches_live_processing(pipeline: Pipeline) -> None:
    """A recorded hour replayed at full speed: deadlines fire in event-time order, so a cart
    with a later event still unread is not declared abandoned early, and vice versa."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="60s")
    shop = Shop("s", base=datetime.now(UTC) - timedelta(hours=1))
    await pipeline.send([
        shop.add("steady", "MUG", offset=0),
        shop.cart_event("steady", "cart_viewed", offset=50),
        shop.cart_event("steady", "cart_viewed", offset=100),   # abandoned at 160
        shop.add("gappy", "MUG", offset=0),                     # abandoned at 60
        shop.cart_event("gappy", "cart_viewed", offset=90),     # reactivated
        shop.cart_event("gappy", "cart_viewed", offset=130),    # abandoned again at 190
        shop.add("bought", "MUG", offset=0),
        shop.purchase("bought", offset=55),                     # never abandoned
        shop.add("won-back", "MUG", offset=0),                  # abandoned at 60
        shop.purchase("won-back", offset=200, total="10.00"),   # recovered
    ])
    pipeline.worker("w1").start().wait_ready()
    expected = {"steady:1", "gappy:1", "gappy:2", "won-back:1"}
    outputs = await pipeline.collect(
        lambda out: ids(out["cart-abandoned"]) >= expected and out["cart-recovered"], settle=2.0
    )
    abandoned = {r["abandonment_id"]: parse(r["abandoned_at"]) - shop.base.timestamp()
                 for r in outputs["cart-abandoned"]}
    assert abandoned == {"steady:1": 160, "gappy:1": 60, "gappy:2": 190, "won-back:1": 60}
    assert ids(outputs["cart-reactivated"]) == {"gappy:1"}
    assert ids(outputs["cart-recovered"]) == {"won-back:1"}
    assert outputs["cart-recovered"][0]["seconds_to_recover"] == 140
    assert not outputs.misplaced(pipeline.input_partitions)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill9"])
async def test_restarted_worker_resumes_from_changelog(
    pipeline: Pipeline, stop_signal: int
) -> None:
    """A replacement worker with an empty disk rebuilds cart state and timers from Kafka.

    The first worker's carts cannot fall due before it is stopped (an hour to abandon), so the
    second worker decides every abandonment, from the state the first left in the changelog. A
    cart keeps the deadline it was scheduled with, so every cart sees one more event after the
    restart (an item for three of them, a view for the rest) that schedules it at 6 s.
    """
    first = pipeline.worker("first", CARTWATCH_ABANDON_AFTER="1h")
    first.start().wait_ready()
    shop = Shop("s")
    carts = [f"cart-{n}" for n in range(6)]
    await pipeline.send([shop.add(cart, "MUG") for cart in carts])
    await pipeline.wait_committed()
    first.stop(stop_signal)
    if stop_signal == signal.SIGTERM:  # a clean stop: exit 0, nothing crashed on the way out
        assert first.process is not None and first.process.returncode == 0, first.log()[-3000:]
        assert "Crashed" not in first.log(), first.log()[-3000:]
    await pipeline.send([shop.add(cart, "MUG", offset=1) for cart in carts[:3]]
                        + [shop.cart_event(cart, "cart_viewed", offset=1) for cart in carts[3:]])
    second = pipeline.worker("second", CARTWATCH_ABANDON_AFTER="6s").start()
    second.wait_ready()
    assert "deadline index rebuilt: 6 carts" in second.log()
    expected = {f"{cart}:1" for cart in carts}
    outputs = await pipeline.collect(
        lambda out: ids(out["cart-abandoned"]) >= expected, settle=2.0
    )
    quantities = {r["cart_id"]: r["cart"]["item_count"] for r in outputs["cart-abandoned"]}
    assert quantities == {cart: 2 if cart in carts[:3] else 1 for cart in carts}
    assert len(outputs["cart-abandoned"]) == len(expected)


async def test_a_repeated_abandonment_is_identical_or_supersedes(pipeline: Pipeline) -> None:
    """What consumers may rely on when an ``abandonment_id`` comes twice (README, Delivery).

    A crash between sending an abandonment and writing the cart's state leaves the output on
    its topic and neither the state nor the input offsets in Kafka: the next owner decides the
    cart again from its input. A second deployment with its own consumer group and changelogs
    is in exactly that position, deterministically. With the same input the repeat is
    byte-identical; with a cart event stamped before the deadline but written to Kafka after
    the first decision, the repeat carries the fuller cart and comes later on the same
    partition, so the last record of an ``abandonment_id`` supersedes the earlier ones.
    """
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="2s")
    shop = Shop("s")
    await pipeline.send([shop.add("same", "MUG"), shop.add("late", "MUG")])
    first = pipeline.worker("first").start()
    first.wait_ready()
    decided = {"same:1", "late:1"}
    outputs = await pipeline.collect(lambda out: ids(out["cart-abandoned"]) >= decided)
    first.stop(signal.SIGTERM)
    await pipeline.send([shop.add("late", "TEA", offset=1)])  # stamped before the deadline

    pipeline.app_id += "-replay"  # the position a crash before the state write leaves
    pipeline.worker("replay").start().wait_ready()
    outputs = await pipeline.collect(
        lambda out: len(out["cart-abandoned"]) >= 4, settle=2.0
    )
    records: dict[str, list[dict]] = {}
    for record in outputs["cart-abandoned"]:
        records.setdefault(record["abandonment_id"], []).append(record)
    assert {key: len(value) for key, value in records.items()} == {"same:1": 2, "late:1": 2}
    first_same, repeat_same = records["same:1"]
    assert repeat_same == first_same
    first_late, repeat_late = records["late:1"]
    assert {line["sku"] for line in first_late["cart"]["lines"]} == {"MUG"}
    assert {line["sku"] for line in repeat_late["cart"]["lines"]} == {"MUG", "TEA"}
    assert parse(repeat_late["abandoned_at"]) - parse(first_late["abandoned_at"]) == 1.0
    assert not outputs.misplaced(pipeline.input_partitions)


async def test_two_workers_share_partitions(pipeline: Pipeline) -> None:
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="3s")
    first = pipeline.worker("first").start()
    first.wait_ready()
    second = pipeline.worker("second").start()
    second.wait_ready()
    first.wait_ready(after=1)  # the rebalance that gave partitions to the second worker
    owned = [worker_partitions(worker) for worker in (first, second)]
    assert owned[0] and owned[1] and not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(range(PARTITIONS))

    shop = Shop("s")
    carts = [f"cart-{n}" for n in range(24)]
    await pipeline.send([shop.add(cart, "MUG") for cart in carts])
    expected = {f"{cart}:1" for cart in carts}
    outputs = await pipeline.collect(
        lambda out: ids(out["cart-abandoned"]) >= expected, settle=2.0
    )
    assert sorted(r["abandonment_id"] for r in outputs["cart-abandoned"]) == sorted(expected)
    assert not outputs.misplaced(pipeline.input_partitions)


async def test_partitions_taken_over_after_their_input_was_read_keep_firing(
    pipeline: Pipeline,
) -> None:
    """A worker that takes over partitions whose inputs another worker read to the end must
    know they are caught up: it never saw their event times, and a partition it believed
    behind would hold every deadline and every event back until its input moved again."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="3s")
    first = pipeline.worker("first").start()
    first.wait_ready()
    shop = Shop("s")
    bought = [f"bought-{n}" for n in range(24)]
    await pipeline.send([shop.add(cart, "MUG") for cart in bought])
    await pipeline.send([shop.purchase(cart) for cart in bought])
    await pipeline.wait_committed()
    second = pipeline.worker("second").start()
    second.wait_ready()
    first.wait_ready(after=1)
    assert worker_partitions(second), "the second worker took no partition over"

    shop.base = datetime.now(UTC)
    carts = [f"cart-{n}" for n in range(24)]
    await pipeline.send([shop.add(cart, "MUG") for cart in carts])
    expected = {f"{cart}:1" for cart in carts}
    outputs = await pipeline.collect(
        lambda out: ids(out["cart-abandoned"]) >= expected, timeout=30, settle=1.0
    )
    assert ids(outputs["cart-abandoned"]) == expected


async def test_a_rebalance_commits_what_was_processed(pipeline: Pipeline) -> None:
    """Faust forgets the acknowledgements of revoked partitions before its own revocation commit;
    the app's consumer commits first, so no new owner redoes the old owner's work (with a
    periodic commit an hour away, only the rebalance can have committed)."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="1h", CARTWATCH_OFFSET_COMMIT_INTERVAL="1h")
    first = pipeline.worker("first").start()
    first.wait_ready()
    shop = Shop("s")
    await pipeline.send([shop.add(f"cart-{n}", "MUG") for n in range(40)])
    cart_topic = f"in:{pipeline.topic('cart-events')}"
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while (await counters(http, first)).get(cart_topic, 0) < 40:
            assert time.monotonic() < deadline, "the first worker did not read the carts"
            await asyncio.sleep(0.1)
        second = pipeline.worker("second").start()
        second.wait_ready()
        first.wait_ready(after=1)
        await pipeline.wait_committed(timeout=20)
        assert worker_partitions(second), "the second worker took no partition over"
        assert (await counters(http, second)).get(cart_topic, 0) == 0


async def counters(http: aiohttp.ClientSession, worker: Worker) -> dict[str, int]:
    async with http.get(f"{worker.web_url}/cartwatch/counters/") as response:
        return await response.json()


def worker_partitions(worker: Worker) -> set[int]:
    """The partitions a worker owned after its latest rebalance, from its log."""
    line = [line for line in worker.log().splitlines() if READY_LINE in line][-1]
    listed = line.rsplit("partitions", 1)[1].strip(" []")
    return {int(number) for number in listed.split(",") if number.strip()}
