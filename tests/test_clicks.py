"""Clicks and attribution end to end: real broker, real `cartwatch worker`, real SMTP, real
HTTP requests to the redirect link taken from the received email.

Three carts of one store: ann is reminded and clicks her link (``clicked``), bob is reminded
and only a mail scanner opens his link (``reminded``), dan gave no consent and gets nothing
(``self``). Before ann's click: a HEAD, a scanner, a prefetch, a forged and an expired token,
none of which may leave a click on ``cartwatch-clicks``. Ann and bob are in campaign
``default``, dan in ``no-consent`` (its segment), so the read model's results per campaign show
one clicked abandonment of two in the first and none in the second.
"""

import csv
import io
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from kafka_helpers import create_topics, free_ports
from pipeline_harness import PARTITIONS, Pipeline, Shop, parse_metrics
from test_notifier import SECRET, MailServer, configure, customer, read_topic, wait_for_mail
from test_operator import poll

from streams.notifier.tokens import LinkClaims, sign_token, verify_token

pytestmark = [pytest.mark.integration]

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"

CONFIG = """
abandon_after = "2s"
[notifier]
retry_initial = "0.2s"
retry_max = "1s"
[notifier.reminders]
store_name = "Tea & Co"
from_address = "hello@tea.example"
unsubscribe_url = "http://127.0.0.1:{port}/cartwatch/unsubscribe/"
steps = [{{after = "1s", template = "reminder"}}]
[[notifier.reminders.campaigns]]
name = "no-consent"
segment = {{marketing_consent = false}}
[[notifier.reminders.campaigns]]
name = "default"
"""


@pytest.fixture
def mail_server(tmp_path: Path):
    server = MailServer(tmp_path / "maildir")
    try:
        yield server
    finally:
        server.stop()


def arms_of(answer: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The campaign results' variants by (campaign, variant)."""
    return {(campaign["campaign"], variant["variant"]): variant
            for campaign in answer["campaigns"] for variant in campaign["variants"]}


def cart_link_of(message: Any, base: str) -> str:
    text = message.get_body(("plain",)).get_content()
    return next(word for word in text.split() if word.startswith(base))


async def test_clicks_are_recorded_robots_are_not_and_recoveries_are_attributed(
    pipeline: Pipeline, mail_server: MailServer, tmp_path: Path
) -> None:
    await create_topics(pipeline.bootstrap, [pipeline.topic("cartwatch-unsubscribes")],
                        PARTITIONS, kafka=pipeline.kafka)
    mail_server.start()
    port = free_ports(1)[0]
    configure(pipeline, tmp_path, CONFIG.format(port=port), mail_server.port,
              CARTWATCH_OFFSET_COMMIT_INTERVAL="0.1s")
    worker = pipeline.worker("w1", CARTWATCH_WEB_PORT=str(port)).start()
    worker.wait_ready()
    shop = Shop("tea")
    await pipeline.send([
        ("cartwatch-clicks", b"c-ann", b'{"type": "link_click"}'),  # dead-lettered
        shop.add("c-ann", "TEA", customer=customer("ann@example.com"),
                 cart_url="https://tea.example/cart/c-ann"),
        shop.add("c-bob", "MUG", customer=customer("bob@example.com"),
                 cart_url="https://tea.example/cart/c-bob"),
        shop.add("c-dan", "MUG", customer=customer("dan@example.com", consent=False),
                 cart_url="https://tea.example/cart/c-dan"),
    ])
    messages = wait_for_mail(mail_server.maildir, 2)
    base = f"{worker.web_url}/cartwatch/r/"
    by_cart = {m["X-Cartwatch-Abandonment"]: cart_link_of(m, base) for m in messages}
    assert set(by_cart) == {"c-ann:1", "c-bob:1"}
    ann_link, bob_link = by_cart["c-ann:1"], by_cart["c-bob:1"]
    await read_topic(pipeline, "cartwatch-reminders-sent", lambda records: len(records) >= 2)

    async with ClientSession() as http:
        async def follow(link: str, method: str = "GET", user_agent: str = CHROME,
                         **headers: str) -> tuple[int, str | None, str]:
            async with http.request(method, link, allow_redirects=False,
                                    headers={"User-Agent": user_agent, **headers}) as response:
                return response.status, response.headers.get("Location"), await response.text()

        # robots and prefetches: redirected, never recorded
        for link, method, agent, headers in (
            (ann_link, "HEAD", CHROME, {}),
            (ann_link, "GET", SCANNER, {}),
            (ann_link, "GET", CHROME, {"Sec-Purpose": "prefetch"}),
            (bob_link, "GET", SCANNER, {}),
        ):
            status, location, _ = await follow(link, method, agent, **headers)
            assert status == 302 and location is not None
            assert location.startswith("https://tea.example/cart/c-")

        # a forged and an expired token: an error page, no redirect, nothing recorded
        token = ann_link.removeprefix(base)
        payload, signature = token.split(".")
        forged = f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
        status, location, page = await follow(base + forged)
        assert (status, location) == (400, None) and "not valid" in page
        claims = verify_token(token, secret=SECRET.encode(), purpose="click", now=time.time())
        expired = sign_token(SECRET.encode(), LinkClaims(
            "click", claims.subject, claims.store_id, int(time.time()) - 1,
            claims.abandonment_id, target=claims.target, step=claims.step,
            channel=claims.channel))
        status, location, page = await follow(base + expired)
        assert (status, location) == (410, None) and "expired" in page

        # ann's own click: 302 to her cart (with the shop's cw_token), one click recorded
        status, location, _ = await follow(ann_link)
        assert status == 302 and location is not None
        assert location.startswith("https://tea.example/cart/c-ann?cw_token=")
        cart_token = location.split("cw_token=")[1]
        assert verify_token(cart_token, secret=SECRET.encode(), purpose="cart",
                            now=time.time()).abandonment_id == "c-ann:1"

        async with http.get(f"{worker.web_url}/metrics") as response:
            metrics = parse_metrics(await response.text())
        outcomes = {outcome: metrics.get(f'cartwatch_link_requests_total{{outcome="{outcome}"}}')
                    for outcome in ("click", "robot", "prefetch", "not_get", "refused")}
        assert outcomes == {"click": 1, "robot": 2, "prefetch": 1, "not_get": 1, "refused": 2}

    clicks = await read_topic(pipeline, "cartwatch-clicks", lambda records: len(records) >= 2,
                              settle=2.0)
    assert clicks[0] == {"type": "link_click"}  # the test's own invalid message
    assert len(clicks) == 2, clicks  # and ann's click, nothing else
    click = clicks[1]
    assert (click["type"], click["abandonment_id"], click["cart_id"], click["store_id"],
            click["step"], click["channel"], click["user_agent_class"]) == (
        "link_click", "c-ann:1", "c-ann", "tea", 1, "email", "desktop")
    assert click["campaign"] == "default" and click["variant"] == "control"

    # the read model counts ann's click: one clicked abandonment in her variant, none in dan's
    async with ClientSession() as http:
        answer: dict[str, Any] = {}

        async def click_counted() -> bool | dict[str, Any]:
            nonlocal answer
            async with http.get(f"{worker.web_url}/cartwatch/api/insights/campaigns/") as got:
                assert got.status == 200, await got.text()
                answer = await got.json()
            arms = arms_of(answer)
            counted = arms.get(("default", "control"), {}).get("clicked") == 1
            return (counted and ("no-consent", "control") in arms) or answer

        await poll(click_counted, 30, "ann's click in the campaign results")
        arms = arms_of(answer)
        clicked, nobody = arms[("default", "control")], arms[("no-consent", "control")]
        assert (clicked["entered"], clicked["sent"], clicked["clicked"]) == (2, 2, 1), clicked
        assert [(step["step"], step["clicked"]) for step in clicked["steps"]] == [(1, 1)]
        assert (nobody["entered"], nobody["sent"], nobody["clicked"]) == (1, 0, 0), nobody
        assert [(step["step"], step["clicked"]) for step in nobody["steps"]] == [(1, 0)]
        async with http.get(f"{worker.web_url}/cartwatch/api/insights/campaigns.csv") as got:
            rows = list(csv.DictReader(io.StringIO(await got.text())))
        assert {(row["campaign"], row["step"]): row["clicked"] for row in rows} == {
            ("default", ""): "1", ("default", "1"): "1",
            ("no-consent", ""): "0", ("no-consent", "1"): "0"}
        async with http.get(f"{worker.web_url}/metrics") as got:
            metrics = parse_metrics(await got.text())
        # the scanner, HEAD, prefetch and refused requests left no row; the invalid record none
        assert metrics['cartwatch_read_model_rows{table="clicks"}'] == 1

    # the click and the feedback are in the carts' state before the purchases are read
    await pipeline.wait_committed(topics=["cartwatch-clicks", "cartwatch-reminders-sent"])
    shop.base = shop.base.now(shop.base.tzinfo)
    await pipeline.send([shop.purchase(cart, total="10.00")
                         for cart in ("c-ann", "c-bob", "c-dan")])
    recovered = await read_topic(pipeline, "cart-recovered", lambda records: len(records) >= 3,
                                 settle=1.0)
    outcome = {r["cart_id"]: (r["attribution"], r["campaign"], r["variant"], r["last_step"],
                              r["clicked_step"], r["reminder_sent"]) for r in recovered}
    letters = await read_topic(pipeline, "cartwatch-dead-letter",
                               lambda records: len(records) >= 1)
    assert [(letter["source_topic"], letter["error_kind"]) for letter in letters] == [
        (pipeline.topic("cartwatch-clicks"), "invalid")]
    assert outcome == {
        "c-ann": ("clicked", "default", "control", 1, 1, True),
        "c-bob": ("reminded", "default", "control", 1, None, True),
        "c-dan": ("self", None, None, None, None, False),
    }
