"""The operator surface end to end: two real workers, a real broker, a few hundred known carts.

Every figure the API, the exports, the insights and the metrics report is checked against what
the input below must produce, on both workers: each with a read model of all partitions, and
both on one PostgreSQL read model they feed together.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from pipeline_harness import Pipeline, Shop, Worker, parse_metrics

from streams.notifier import LinkClaims, sign_token
from streams.operator.export import CART_COLUMNS

pytestmark = [pytest.mark.integration, pytest.mark.compat]

TOKEN = "operator-test-token"
LINK_SECRET = "operator-test-link-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ABANDON_AFTER = 60
CATALOG = {"MUG-1": ("Blue mug", "12.50"), "TEA-2": ("Green tea", "4.99"),
           "LAMP-3": ("Desk lamp", "89.00"), "SOCK-4": ("Wool socks", "9.90"),
           "BOOK-5": ("Cook book", "24.00")}
SKUS = list(CATALOG)
CARTS = 300


@dataclass
class Expected:
    """What the input must produce, built alongside the events."""

    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    comebacks: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    """Sent once the first abandonments are out (see ``build_input``)."""
    abandonments: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: Counter[tuple[str, str]] = field(default_factory=Counter)
    cart_events: int = 0


def build_input(base: datetime) -> Expected:
    """300 carts over two days and two stores; fates by number: 10 % bought before abandonment,
    10 % recovered, 10 % reactivated (then abandoned again), the rest abandoned."""
    expected = Expected()
    shops = {"north": Shop("north", base=base), "south": Shop("south", base=base)}
    for n in range(CARTS):
        store = "south" if n % 3 == 0 else "north"
        shop, cart = shops[store], f"cart-{n:03d}"
        start = (n % 2) * 86_400 + n * 10
        day = (base + timedelta(seconds=start)).date().isoformat()
        lines = {SKUS[n % 5]: 1}
        if n % 7 == 0:
            lines[SKUS[(n + 1) % 5]] = 2
        customer = {"name": f"Customer {n:03d}", "email": f"c{n:03d}@example.com"}
        if n % 4 != 3:
            customer["phone"] = f"+49 151 {n:05d}"
        for index, (sku, quantity) in enumerate(lines.items()):
            name, price = CATALOG[sku]
            message = shop.add(cart, sku, offset=start + index, quantity=quantity, price=price,
                               customer=customer)
            item = json.loads(message[2])
            item["item"]["name"] = name
            expected.messages.append((message[0], message[1], json.dumps(item).encode()))
            expected.cart_events += 1
        expected.created[(store, day)] += 1
        total = sum(Decimal(CATALOG[sku][1]) * qty for sku, qty in lines.items())
        last = start + len(lines) - 1
        record = {"cart_id": cart, "store_id": store, "status": "abandoned", "day": day,
                  "lines": lines, "total": total, "customer": customer,
                  "abandoned_at": base + timedelta(seconds=last + ABANDON_AFTER)}
        fate = n % 10
        if fate == 0:
            expected.messages.append(shop.purchase(cart, offset=last + 30, total=str(total)))
            continue
        expected.abandonments[f"{cart}:1"] = record
        if fate == 1:
            expected.messages.append(shop.purchase(cart, offset=last + 600, total=str(total)))
            record.update(status="recovered", revenue=total, seconds_to_recover=600 - 60)
        elif fate == 2:
            expected.comebacks.append(shop.cart_event(cart, "cart_viewed", offset=last + 300))
            expected.cart_events += 1
            record["status"] = "reactivated"
            expected.abandonments[f"{cart}:2"] = {
                **record, "status": "abandoned",
                "abandoned_at": base + timedelta(seconds=last + 300 + ABANDON_AFTER)}
    # In event-time order, as a shop would publish them: the pipeline's clock is per partition,
    # so a cart's event read after another cart's much later one would count as late. The
    # returns come in a second wave: replayed in one go, a cart event can be applied before
    # the cart's due deadline while the purchase partition holds the safe time back.
    expected.messages.sort(key=lambda message: json.loads(message[2])["occurred_at"])
    expected.comebacks.sort(key=lambda message: json.loads(message[2])["occurred_at"])
    return expected


async def get(http: aiohttp.ClientSession, worker: Worker, path: str,
              headers: dict[str, str] | None = AUTH, **params: str) -> Any:
    async with http.get(worker.web_url + path, headers=headers, params=params) as response:
        assert response.status == 200, (path, params, await response.text())
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


async def poll(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Await ``check()`` until it returns true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last is True:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not reached in {timeout} s; last: {last}")


async def differences(http: aiohttp.ClientSession, worker: Worker, wanted: dict[str, str],
                      ignore_status: bool = False) -> list[tuple[str, str]]:
    """What the worker lists and ``wanted`` (id -> status) do not share, for failure messages."""
    page = await get(http, worker, "/cartwatch/api/carts/", limit="500")
    got = {cart["abandonment_id"]: cart["status"] for cart in page["carts"]}
    if ignore_status:
        got = {key: wanted.get(key, status) for key, status in got.items()}
    return sorted(set(got.items()) ^ set(wanted.items()))[:20]


def ids_of(page: dict[str, Any]) -> list[str]:
    return [cart["abandonment_id"] for cart in page["carts"]]


async def listed(http: aiohttp.ClientSession, worker: Worker, **params: str) -> list[str]:
    return ids_of(await get(http, worker, "/cartwatch/api/carts/", **{"limit": "500", **params}))


def newest_first(expected: Expected, keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    chosen = [(r["abandoned_at"], key) for key, r in expected.abandonments.items() if keep(r)]
    return [key for _, key in sorted(chosen, key=lambda pair: (-pair[0].timestamp(), pair[1]))]


@pytest.mark.parametrize("backend", ["memory", "postgresql"])
async def test_operator_surface_with_two_workers(pipeline: Pipeline, backend: str,
                                                 request: pytest.FixtureRequest) -> None:
    """The same answers from each worker's own read model and from one PostgreSQL database
    the two workers feed together."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER=f"{ABANDON_AFTER}s",
                             CARTWATCH_API_TOKEN=TOKEN, CARTWATCH_READ_MODEL=backend,
                             CARTWATCH_LINK_SECRET=LINK_SECRET)
    if backend == "postgresql":
        database = request.getfixturevalue("postgres_database")
        pipeline.settings.update(CARTWATCH_READ_MODEL=database.url,
                                 CARTWATCH_READ_MODEL_PASSWORD=database.password)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    base = today - timedelta(days=3) + timedelta(hours=10)
    expected = build_input(base)
    # A backlog, read by workers that start after it was written: with live input a deadline
    # may fire before a purchase the producer has not written yet.
    await pipeline.send(expected.messages)
    first = pipeline.worker("first").start()
    second = pipeline.worker("second").start()
    first.wait_ready()
    second.wait_ready()
    workers = (first, second)

    async with aiohttp.ClientSession() as http:
        first_wave = len([key for key in expected.abandonments if key.endswith(":1")])

        async def first_wave_out() -> Any:
            total = (await get(http, first, "/cartwatch/api/carts/", limit="1"))["total"]
            return total == first_wave or (total, await differences(
                http, first, {key: "abandoned" for key in expected.abandonments
                              if key.endswith(":1")}, ignore_status=True))

        await poll(first_wave_out, 90, "the first abandonments")
        await pipeline.send(expected.comebacks)

        async def complete() -> Any:
            pages = [await get(http, w, "/cartwatch/api/carts/", limit="1") for w in workers]
            totals = [page["total"] for page in pages]
            statuses = [
                (await get(http, w, "/cartwatch/api/carts/", limit="1",
                           status="recovered,reactivated"))["total"] for w in workers]
            want = len(expected.abandonments)
            if totals == [want, want] and statuses == [60, 60]:
                return True
            wanted = {key: record["status"] for key, record in expected.abandonments.items()}
            return totals, statuses, await differences(http, first, wanted)

        await poll(complete, 90, "every abandonment in both read models")
        for worker in workers:
            await check_queries(http, worker, expected)
        await check_exports(http, second, expected)
        await check_insights(http, first, expected)
        await check_access_and_probes(http, workers)
        await check_metrics(http, workers, expected)
        await check_unsubscribe(http, second, pipeline)
    check_cli(first, expected)


async def check_queries(http: aiohttp.ClientSession, worker: Worker, expected: Expected) -> None:
    everything = newest_first(expected, lambda r: True)
    assert await listed(http, worker) == everything
    page = await get(http, worker, "/cartwatch/api/carts/", limit="500")
    by_id = {cart["abandonment_id"]: cart for cart in page["carts"]}
    for key, record in expected.abandonments.items():
        cart = by_id[key]
        assert (cart["status"], cart["store_id"], Decimal(cart["total"])) == (
            record["status"], record["store_id"], record["total"]), key
        assert {line["sku"]: line["quantity"] for line in cart["lines"]} == record["lines"]
        assert cart["customer"]["email"] == record["customer"]["email"]
    cases: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
        ({"store": "south"}, lambda r: r["store_id"] == "south"),
        ({"store": "north", "status": "recovered"},
         lambda r: r["store_id"] == "north" and r["status"] == "recovered"),
        ({"status": "reactivated"}, lambda r: r["status"] == "reactivated"),
        ({"product": "LAMP-3"}, lambda r: "LAMP-3" in r["lines"]),
        ({"product": "wool"}, lambda r: "SOCK-4" in r["lines"]),
        ({"customer": "C007@EXAMPLE"}, lambda r: r["customer"]["email"] == "c007@example.com"),
        ({"customer": "Customer 12"}, lambda r: r["customer"]["name"].startswith("Customer 12")),
        ({"customer": "151 00045"}, lambda r: r["customer"].get("phone") == "+49 151 00045"),
        ({"min_total": "89", "max_total": "100"}, lambda r: 89 <= r["total"] <= 100),
        ({"since": expected_day(expected, 1), "until": expected_day(expected, 2)},
         lambda r: r["day"] == expected_day(expected, 1)),
    ]
    for params, keep in cases:
        want = newest_first(expected, keep)
        assert want, params
        assert await listed(http, worker, **params) == want, params
    pages: list[str] = []
    for offset in range(0, len(everything), 70):
        pages += await listed(http, worker, limit="70", offset=str(offset))
    assert pages == everything

    detail = await get(http, worker, "/cartwatch/api/carts/cart-002/")
    assert [a["abandonment_id"] for a in detail["abandonments"]] == ["cart-002:2", "cart-002:1"]
    assert [a["status"] for a in detail["abandonments"]] == ["abandoned", "reactivated"]
    assert {line["sku"]: line["quantity"] for line in detail["abandonments"][0]["lines"]} == (
        expected.abandonments["cart-002:1"]["lines"])
    async with http.get(f"{worker.web_url}/cartwatch/api/carts/cart-000/",
                        headers=AUTH) as response:
        assert response.status == 404  # bought before it was abandoned


def expected_day(expected: Expected, index: int) -> str:
    days = sorted({day for _, day in expected.created})
    return days[index] if index < len(days) else (
        datetime.fromisoformat(days[-1]) + timedelta(days=1)).date().isoformat()


async def check_exports(http: aiohttp.ClientSession, worker: Worker, expected: Expected) -> None:
    async with http.get(f"{worker.web_url}/cartwatch/api/carts.csv", headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        text = await response.text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [name for name, _ in CART_COLUMNS]
    got = Counter((row["abandonment_id"], row["sku"], row["quantity"]) for row in rows)
    want = Counter((key, sku, str(quantity)) for key, record in expected.abandonments.items()
                   for sku, quantity in record["lines"].items())
    assert got == want and len(rows) == sum(want.values())
    recovered = [row for row in rows if row["status"] == "recovered"]
    assert recovered and all(row["revenue"] == row["cart_total"] for row in recovered)

    text = await get(http, worker, "/cartwatch/api/carts.csv", store="south", status="abandoned")
    south = {row["abandonment_id"] for row in csv.DictReader(io.StringIO(text))}
    assert south == set(newest_first(
        expected, lambda r: r["store_id"] == "south" and r["status"] == "abandoned"))

    text = await get(http, worker, "/cartwatch/api/customers.csv", product="BOOK-5")
    emails = [row["email"] for row in csv.DictReader(io.StringIO(text))]
    assert sorted(emails) == sorted({r["customer"]["email"] for r in
                                     expected.abandonments.values() if "BOOK-5" in r["lines"]})


async def check_insights(http: aiohttp.ClientSession, worker: Worker, expected: Expected) -> None:
    result = await get(http, worker, "/cartwatch/api/insights/", period="day")
    buckets = {(b["store_id"], b["period_start"]): b for b in result["buckets"]}
    for (store, day), created in expected.created.items():
        records = [r for r in expected.abandonments.values()
                   if r["store_id"] == store and r["abandoned_at"].date().isoformat() == day]
        recovered = [r for r in records if r["status"] == "recovered"]
        bucket = buckets[(store, day)]
        assert (bucket["carts_created"], bucket["abandoned"], bucket["recovered"]) == (
            created, len(records), len(recovered)), (store, day)
        assert bucket["recovered_by_themselves"] == len(recovered)
        assert bucket["abandonment_rate"] == round(len(records) / created, 4)
        revenue = sum((r["revenue"] for r in recovered), Decimal(0))
        assert Decimal(bucket["recovered_revenue"].get("EUR", "0")) == revenue
        if recovered:
            assert bucket["median_seconds_to_recover"] == 540
    weekly = await get(http, worker, "/cartwatch/api/insights/", period="week")
    assert sum(b["carts_created"] for b in weekly["buckets"]) == CARTS
    assert sum(b["abandoned"] for b in weekly["buckets"]) == len(expected.abandonments)


async def check_access_and_probes(http: aiohttp.ClientSession, workers: tuple[Worker, ...]
                                  ) -> None:
    worker = workers[0]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for path in ("/cartwatch/api/carts/", "/cartwatch/api/carts.csv",
                     "/cartwatch/api/carts/cart-001/"):
            async with http.get(worker.web_url + path, headers=headers) as response:
                assert response.status == 401, (path, headers)
    assert TOKEN not in worker.log()
    async with http.post(f"{worker.web_url}/cartwatch/api/carts/cart-001/remind/",
                         headers=AUTH) as response:
        assert response.status == 409  # recovered: nothing to remind
    async with http.post(f"{worker.web_url}/cartwatch/api/carts/cart-003/remind/",
                         headers=AUTH) as response:
        assert response.status == 503  # abandoned, but this notifier takes no manual reminders
    async with http.get(f"{worker.web_url}/cartwatch/unsubscribe/") as response:
        assert response.status == 400
    for each in workers:
        async with http.get(f"{each.web_url}/livez") as response:
            assert response.status == 200
        async with http.get(f"{each.web_url}/readyz") as response:
            assert response.status == 200, await response.text()
            assert all((await response.json())["checks"].values())


async def check_metrics(http: aiohttp.ClientSession, workers: tuple[Worker, ...],
                        expected: Expected) -> None:
    async def scrape() -> list[dict[str, float]]:
        return [parse_metrics(await get(http, w, "/metrics", headers=None)) for w in workers]

    async def every_abandonment_timed() -> Any:
        # an abandonment's timer lag is observed when the broker acknowledges it, which may
        # come a moment after the read models already show it
        samples = await scrape()
        timed = sum(s["cartwatch_timer_lag_seconds_count"] for s in samples)
        abandoned = sum(s.get('cartwatch_state_transitions_total{to="abandoned"}', 0)
                        for s in samples)
        return timed == abandoned or (timed, abandoned)

    await poll(every_abandonment_timed, 15, "a timer lag observed for every abandonment")
    samples = await scrape()
    cart_topic = f"{workers[0].env['CARTWATCH_TOPIC_PREFIX']}cart-events"
    read = sum(s.get(f'cartwatch_events_in_total{{topic="{cart_topic}"}}', 0) for s in samples)
    # Both workers started on the backlog together: what the first processed before the
    # rebalance and had not committed yet is processed again by its new owner (at least once).
    assert expected.cart_events <= read <= 2 * expected.cart_events
    abandoned = sum(s.get('cartwatch_state_transitions_total{to="abandoned"}', 0)
                    for s in samples)
    assert len(expected.abandonments) <= abandoned <= 2 * len(expected.abandonments)
    assert sum(s["cartwatch_timer_lag_seconds_count"] for s in samples) == abandoned
    # the input was three days old: every deadline fired (at least) ~2.5 days late
    assert min(s["cartwatch_timer_lag_seconds_sum"] for s in samples) > 86_400
    lag = {name: value for s in samples for name, value in s.items()
           if name.startswith("cartwatch_consumer_lag{")}
    assert len(lag) == 8 and set(lag.values()) == {0.0}  # 2 input topics x 4 partitions
    assert sum(s["cartwatch_carts_in_table"] for s in samples) == CARTS
    for s in samples:
        assert s['cartwatch_read_model_rows{table="abandonments"}'] == len(expected.abandonments)
        assert s["cartwatch_read_model_loaded"] == 1


async def check_unsubscribe(http: aiohttp.ClientSession, worker: Worker,
                            pipeline: Pipeline) -> None:
    expires = int(time.time()) + 600
    link = sign_token(LINK_SECRET.encode(),
                      LinkClaims("unsubscribe", "c003@example.com", "south", expires, "cart-003:1"))
    url = f"{worker.web_url}/cartwatch/unsubscribe/"
    async with http.get(url, params={"token": link}) as response:
        assert response.status == 200 and 'method="post"' in await response.text()
    async with http.post(url, data={"token": link + "x"}) as response:
        assert response.status == 400
    async with http.post(url, data={"token": link}) as response:
        assert response.status == 200, await response.text()
    consumer = AIOKafkaConsumer(pipeline.topic("cartwatch-unsubscribes"),
                                **pipeline.client_options(),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    [record] = [record for records in batch.values() for record in records]
    assert record.key == b"c003@example.com"
    assert json.loads(record.value)["store_id"] == "south"


def cli(worker: Worker, *args: str) -> str:
    env = {**worker.env, "CARTWATCH_API_URL": worker.web_url}
    done = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env,
                          capture_output=True, timeout=60, cwd=worker.workdir)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def check_cli(worker: Worker, expected: Expected) -> None:
    south = newest_first(expected, lambda r: r["store_id"] == "south" and "BOOK-5" in r["lines"])
    listed_ids = [line.split()[1] for line in cli(
        worker, "carts", "list", "--store", "south", "--product", "BOOK-5", "--limit", "500"
    ).splitlines()[1:]]
    assert listed_ids == south
    first = json.loads(cli(worker, "carts", "list", "--store", "south", "--product", "BOOK-5",
                           "--limit", "2", "--json"))
    rest = json.loads(cli(worker, "carts", "list", "--store", "south", "--product", "BOOK-5",
                          "--limit", "500", "--after", first["next"], "--json"))
    assert [cart["abandonment_id"] for cart in first["carts"] + rest["carts"]] == south
    assert rest["next"] is None
    day = expected_day(expected, 1)
    exported = list(csv.DictReader(io.StringIO(cli(worker, "carts", "export", "--since", day))))
    assert {row["abandonment_id"] for row in exported} == set(
        newest_first(expected, lambda r: r["day"] >= day))
    weekly = json.loads(cli(worker, "insights", "--period", "week", "--json"))
    assert sum(bucket["abandoned"] for bucket in weekly["buckets"]) == len(expected.abandonments)
    denied = subprocess.run([sys.executable, "-m", "streams.cli", "carts", "list"],
                            env={**worker.env, "CARTWATCH_API_URL": worker.web_url,
                                 "CARTWATCH_API_TOKEN": "wrong"},
                            capture_output=True, timeout=60, cwd=worker.workdir)
    assert denied.returncode == 1 and b"HTTP 401" in denied.stderr


async def test_csv_export_across_pages_is_one_document(pipeline: Pipeline) -> None:
    """An export read from the database in several pages has its header once and then only
    data lines, one per SKU: no blank line where one page ends and the next starts."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="60s", CARTWATCH_READ_MODEL="memory",
                             CARTWATCH_EXPORT_PAGE_SIZE="2")
    shop = Shop("paged", base=datetime.now(UTC) - timedelta(hours=1))
    want: set[tuple[str, str]] = set()
    messages = []
    for n in range(7):  # 7 carts, 2 a page: 4 pages of rows, then the empty one
        for index in range(n % 3 + 1):
            messages.append(shop.add(f"cart-{n}", f"SKU-{index}", offset=n * 10 + index))
            want.add((f"cart-{n}:1", f"SKU-{index}"))
    await pipeline.send(messages)
    worker = pipeline.worker("exporter").start()
    worker.wait_ready()
    async with aiohttp.ClientSession() as http:
        async def all_abandoned() -> Any:
            total = (await get(http, worker, "/cartwatch/api/carts/", headers=None))["total"]
            return total == 7 or total

        await poll(all_abandoned, 60, "7 abandonments in the read model")
        text = await get(http, worker, "/cartwatch/api/carts.csv", headers=None)
    lines = text.split("\r\n")
    assert lines[-1] == "" and all(lines[:-1]), lines  # CRLF-terminated, no empty line
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert header == [name for name, _ in CART_COLUMNS]
    assert len(rows) == len(want) == 13
    assert all(len(row) == len(header) for row in rows)
    assert {(row[0], row[header.index("sku")]) for row in rows} == want


async def test_worker_without_read_model_processes_and_says_why_it_cannot_answer(
    pipeline: Pipeline,
) -> None:
    """``CARTWATCH_READ_MODEL=off``: a pipeline-only worker; its probes and metrics work, its
    API refuses with the reason, and the pipeline runs as usual."""
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="2s", CARTWATCH_READ_MODEL="off")
    worker = pipeline.worker("pipeline-only").start()
    worker.wait_ready()
    await pipeline.send([Shop("s").add("cart-1", "MUG-1")])
    outputs = await pipeline.collect(lambda out: bool(out["cart-abandoned"]), timeout=30)
    assert [r["abandonment_id"] for r in outputs["cart-abandoned"]] == ["cart-1:1"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{worker.web_url}/cartwatch/api/carts/") as response:
            assert response.status == 503
            assert "CARTWATCH_READ_MODEL=off" in (await response.json())["error"]
        async with http.get(f"{worker.web_url}/readyz") as response:
            assert response.status == 200, await response.text()
        metrics = parse_metrics(await get(http, worker, "/metrics", headers=None))
        assert metrics["cartwatch_read_model_loaded"] == 1
    assert not (worker.workdir / "data" / "operator.sqlite3").exists()
