"""Campaigns end to end (issue #16): real broker, real `cartwatch worker`, real SMTP, and a real
local HTTP server as the webhook (SMS gateway) of a campaign's second step; then a second
deployment replays the same input."""

import asyncio
import hashlib
import itertools
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from kafka_helpers import create_topics, free_ports
from pipeline_harness import PARTITIONS, Pipeline, Shop, partition_for
from test_notifier import (  # noqa: F401 (fixtures)
    MailServer,
    configure,
    customer,
    mail_server,
    notifier_pipeline,
    read_topic,
    wait_for_mail,
)

from config.campaigns import WEEKDAYS

pytestmark = [pytest.mark.integration]

CAMPAIGNS = """
abandon_after = "1s"
[notifier]
retry_initial = "0.2s"
retry_max = "1s"
[notifier.reminders]
from_address = "hello@tea.example"
webhook_url = "http://127.0.0.1:{hook_port}/{hook_path}"
webhook_fallback = false

[[notifier.reminders.campaigns]]
name = "big"
experiment = "e2e"
segment = {{total_min = 50}}
steps = [{{after = "1s"}}, {{after = "6s", channel = "webhook"}},
         {{after = "11s", template = "last-chance"}}]

[[notifier.reminders.campaigns.variants]]
name = "a"
weight = 2
subject = "Subject A"

[[notifier.reminders.campaigns.variants]]
name = "b"
weight = 2
subject = "Subject B"
discount_code = "BCODE"

[[notifier.reminders.campaigns.variants]]
name = "holdout"
weight = 1
holdout = true

[[notifier.reminders.campaigns]]
name = "small"
segment = {{total_max = "49.99"}}
steps = [{{after = "1s"}}]

[[notifier.stores.rep.campaigns]]
name = "limited"
segment = {{sku_contains = ["TEA"]}}
steps = [{{after = "1s", channel = "webhook"}}]
reentry_limit = {{count = 1, period = "{period}s"}}

[[notifier.stores.rep.campaigns]]
name = "windowed"
steps = [{{after = "1s"}}]
send_window = {{days = {days}, start = "09:00", end = "17:00"}}
"""
WEIGHTS = [("a", 2), ("b", 2), ("holdout", 1)]
BIG_STEPS = (1, 2, 3)
"""5 s apart: a step decided later than the next one's time would be superseded by it (so a
slow worker must lag 5 s to change the outcome); the last one comes before rita's third cart's
reminder (``REENTRY_PERIOD`` after her first), so the spacing costs no time."""
EMAIL_STEPS = (1, 3)
REENTRY_PERIOD = 10.0
"""The "limited" campaign's re-entry period: long against the ~1 s between an address's first
two reminders (so the second is held back however slow the machine), short for the test."""
WINDOW_ZONE = "Pacific/Kiritimati"
"""The windowed customer's time zone (UTC+14): the window is judged in it, not in UTC."""


def expected_variant(abandonment_id: str) -> str:
    """The README's rule, written out independently of ``streams.notifier.campaigns``."""
    digest = hashlib.sha256(f"{abandonment_id}\0big\0e2e".encode()).digest()
    point = int.from_bytes(digest[:8], "big") * 5 // 2**64
    return "a" if point < 2 else "b" if point < 4 else "holdout"


def big_carts() -> dict[str, str]:
    """Cart ids giving two carts of each sending variant and two held out."""
    chosen: dict[str, str] = {}
    wanted = {"a": 2, "b": 2, "holdout": 2}
    for n in itertools.count():
        cart = f"c-big{n}"
        variant = expected_variant(f"{cart}:1")
        if wanted[variant]:
            wanted[variant] -= 1
            chosen[cart] = variant
        if not any(wanted.values()):
            return chosen


def closed_window(now: datetime) -> tuple[list[str], datetime]:
    """Send window days closed today and tomorrow in ``WINDOW_ZONE``, and its next opening.

    Deterministic on any day and at any hour: a step decided today or tomorrow (the test
    crossing midnight) waits for the day after tomorrow, 09:00 in the customer's zone."""
    zone = ZoneInfo(WINDOW_ZONE)
    today = now.astimezone(zone).date()
    closed = {WEEKDAYS[(today + timedelta(days=n)).weekday()] for n in (0, 1)}
    opens = datetime.combine(today + timedelta(days=2), clock_time(9), zone)
    return [day for day in WEEKDAYS if day not in closed], opens


Key = tuple[Any, ...]


def seen(records: list[dict[str, Any]]) -> set[Key]:
    """(abandonment, step, status, reason, campaign, variant) of the final entries."""
    return {(e["abandonment_id"], e["step"], e["status"], e["reason"], e["campaign"],
             e["variant"]) for e in records if not e["retrying"]}


def assignments(records: list[dict[str, Any]]) -> set[Key]:
    """(abandonment, campaign, variant) of every log entry."""
    return {(e["abandonment_id"], e["campaign"], e["variant"]) for e in records}


async def test_two_campaigns_two_variants_and_a_holdout(
    notifier_pipeline: Pipeline, mail_server: MailServer, tmp_path: Path,  # noqa: F811
) -> None:
    """Store ``tea``: a 3-step campaign (email, webhook, email) with variants a and b and a
    holdout at weights 2:2:1, and a 1-step campaign of small carts. Store ``rep``: a campaign
    with a re-entry limit of 1 reminder per address per ``REENTRY_PERIOD``, and one whose
    send window is closed today and tomorrow in the customer's zone. Then a second deployment
    (own topics, consumer group and changelogs) replays the same input: same assignments.

    The send window is asserted as a deferral (``send_window``, to the exact opening in the
    customer's zone) and nothing sent, not as a release at the opening: a window is a wall time
    written into the settings before the worker starts, and a worker's start-up on a loaded
    machine takes an unknown time, so a window opening "soon" could open before the step is
    decided (sent without a deferral) or long after. Where a deferral lands (days, hours, DST)
    is unit-tested (``window_opens``); ``test_quiet_hours_defer_and_webhook_fallback`` defers
    by quiet hours, which are not campaign windows.
    """
    pipeline = notifier_pipeline
    posts: dict[str, list[dict[str, Any]]] = {"sms": [], "replay-sms": []}

    async def hook(request: web.Request) -> web.Response:
        posts[request.match_info["path"]].append(await request.json())
        return web.json_response({"ok": True})

    hook_app = web.Application()
    hook_app.router.add_post("/{path}", hook)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    hook_port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    days, window_opens = closed_window(datetime.now(UTC))

    def config(hook_path: str) -> str:
        return CAMPAIGNS.format(hook_port=hook_port, hook_path=hook_path,
                                period=REENTRY_PERIOD, days=json.dumps(days))

    replay: Pipeline | None = None
    replay_mail = MailServer(tmp_path / "replay-maildir")
    try:
        mail_server.start()
        configure(pipeline, tmp_path, config("sms"), mail_server.port)
        worker = pipeline.worker("w1").start()
        worker.wait_ready()
        shop, rep = Shop("tea"), Shop("rep")
        big = big_carts()
        small = ["c-small0", "c-small1"]
        # rita's first two carts share a partition: the order of their reminders (1 s apart),
        # which decides the one held back, is their deadlines' order on one partition
        rita = customer("rita@example.com")
        r1 = "c-rita1"
        r2 = next(cart for cart in (f"c-rita{n}" for n in itertools.count(2))
                  if partition_for(cart) == partition_for(r1))
        r3 = "c-rita-later"
        inputs = (
            [shop.add(cart, "LAMP", price="60.00", customer=customer(f"{cart}@example.com"))
             for cart in big]
            + [shop.add(cart, "MUG", price="10.00", customer=customer(
                f"{cart}@example.com", **({"locale": "de-DE"} if cart == "c-small0" else {})))
               for cart in small]
            + [rep.add(r1, "TEA-1", customer=rita), rep.add(r2, "TEA-2", offset=1, customer=rita),
               rep.add("c-win", "MUG", customer=customer("wendy@example.com",
                                                         timezone=WINDOW_ZONE))])
        await pipeline.send(inputs)

        # the re-entry limit: rita's first reminder goes out, her second cart's is held back;
        # her third cart is abandoned once the period since the first has passed: sent
        limited = {(f"{r1}:1", 1, "sent", None, "limited", "control"),
                   (f"{r2}:1", 1, "skipped", "reentry_limit", "limited", "control")}
        log = await read_topic(pipeline, "cartwatch-notification-log",
                               lambda records: seen(records) >= limited)
        [first] = [e for e in log if e["abandonment_id"] == f"{r1}:1" and e["status"] == "sent"]
        period_over = datetime.fromisoformat(first["at"]).timestamp() + REENTRY_PERIOD
        await asyncio.sleep(max(0.0, period_over - time.time()) + 0.5)
        rep.base = datetime.now(UTC)
        later = [rep.add(r3, "TEA-3", customer=rita)]
        await pipeline.send(later)
        inputs += later

        sending = [cart for cart, variant in big.items() if variant != "holdout"]
        expected = {(f"{c}:1", step, "sent", None, "big", big[c])
                    for c in sending for step in BIG_STEPS}
        expected |= {(f"{c}:1", step, "skipped", "holdout", "big", "holdout")
                     for c, variant in big.items() if variant == "holdout" for step in BIG_STEPS}
        expected |= {(f"{c}:1", 1, "sent", None, "small", "control") for c in small}
        expected |= limited | {(f"{r3}:1", 1, "sent", None, "limited", "control"),
                               ("c-win:1", 1, "deferred", "send_window", "windowed", "control")}

        log = await read_topic(pipeline, "cartwatch-notification-log",
                               lambda records: seen(records) >= expected, settle=2.0)
        assert seen(log) == expected
        assert len([e for e in log if not e["retrying"]]) == len(expected)  # each once
        assert {(e["abandonment_id"], e["step"], e["channel"]) for e in log
                if e["status"] == "sent"} == (
            {(f"{c}:1", step, "email") for c in sending for step in EMAIL_STEPS}
            | {(f"{c}:1", 1, "email") for c in small}
            | {(f"{c}:1", 2, "webhook") for c in sending}
            | {(f"{c}:1", 1, "webhook") for c in (r1, r3)})
        [deferred] = [e for e in log if e["status"] == "deferred"]
        assert datetime.fromisoformat(deferred["deferred_until"]) == window_opens

        messages = wait_for_mail(mail_server.maildir, len(sending) * 2 + len(small))
        by_step = {(m["X-Cartwatch-Abandonment"].removesuffix(":1"), m["X-Cartwatch-Step"]): m
                   for m in messages}
        assert len(messages) == len(by_step)  # one each
        assert set(by_step) == ({(c, str(step)) for c in sending for step in EMAIL_STEPS}
                                | {(c, "1") for c in small})  # nothing to the holdout, rep
        for cart in sending:
            for step in EMAIL_STEPS:
                message = by_step[(cart, str(step))]
                assert message["Subject"] == f"Subject {big[cart].upper()}"
                body = message.get_body(("plain",)).get_content()
                assert ("BCODE" in body) is (big[cart] == "b")
                assert ("This is our last reminder" in body) is (step == 3)
        for cart in small:
            assert not by_step[(cart, "1")]["Subject"].startswith("Subject ")
        # a customer with locale de-DE gets the built-in German variant, amounts by Babel
        german = by_step[("c-small0", "1")]
        assert german["Subject"] == "Ihr Warenkorb bei tea wartet auf Sie"
        assert "Summe: 10,00\xa0€" in german.get_body(("plain",)).get_content()
        assert "Total: 10.00 EUR" in by_step[("c-small1", "1")].get_body(
            ("plain",)).get_content()

        tea_posts = [post for post in posts["sms"] if post["store_id"] == "tea"]
        assert sorted(post["cart_id"] for post in tea_posts) == sorted(sending)
        for post in tea_posts:
            assert post["step"] == 2
            assert post["discount_code"] == ("BCODE" if big[post["cart_id"]] == "b" else None)
        assert [post["cart_id"] for post in posts["sms"] if post["store_id"] == "rep"] == [
            r1, r3]

        await check_results(worker.web_url)
        worker.stop(signal.SIGKILL)  # done: it would only compete with the replay for the CPU

        # the replay: a second deployment with its own topics, consumer group and changelogs
        # reads the same input (all of it now overdue) and assigns every abandonment the same
        # campaign and variant; it mails and posts to its own servers
        replay = Pipeline(bootstrap=pipeline.bootstrap, prefix=f"{pipeline.prefix}-replay",
                          app_id=f"{pipeline.app_id}-replay", workdir=tmp_path / "replay",
                          kafka=pipeline.kafka)
        await replay.create_topics()
        await create_topics(replay.bootstrap, [replay.topic("cartwatch-unsubscribes")],
                            PARTITIONS, kafka=replay.kafka)
        (tmp_path / "replay").mkdir()
        replay_mail.start()
        configure(replay, tmp_path / "replay", config("replay-sms"), replay_mail.port)
        replay.worker("replay").start().wait_ready()
        await replay.send(inputs)
        everyone = {abandonment for abandonment, _, _ in assignments(log)}
        replayed = await read_topic(
            replay, "cartwatch-notification-log",
            lambda records: {e["abandonment_id"] for e in records} >= everyone, settle=2.0)
        assert assignments(replayed) == assignments(log)
        assert len(assignments(log)) == len(everyone)  # one campaign and variant each
        held_out = {cart for cart, variant in big.items() if variant == "holdout"}
        assert seen(replayed) >= {(f"{c}:1", step, "skipped", "holdout", "big", "holdout")
                                  for c in held_out for step in BIG_STEPS}
        assert not held_out & {m["X-Cartwatch-Abandonment"].removesuffix(":1")
                               for m in replay_mail.messages()}
        assert not held_out & {post["cart_id"] for post in posts["replay-sms"]}
    finally:
        if replay is not None:
            replay.stop_all()
        replay_mail.stop()
        await runner.cleanup()


async def check_results(base: str) -> None:
    """The results per campaign and variant from the worker's read model (issue #16): nobody
    bought, so every rate is 0 and the uplift 0 with the interval of 0/2 against 0/2."""
    figures = ("entered", "reminded", "sent", "skipped", "recovered", "holdout")
    expected = {
        "tea": {
            ("big", "a"): (2, 2, 6, {}, 0, False), ("big", "b"): (2, 2, 6, {}, 0, False),
            ("big", "holdout"): (2, 0, 0, {"holdout": 6}, 0, True),
            ("small", "control"): (2, 2, 2, {}, 0, False),
        },
        "rep": {
            ("limited", "control"): (3, 2, 2, {"reentry_limit": 1}, 0, False),
            ("windowed", "control"): (1, 0, 0, {}, 0, False),  # deferred: not decided yet
        },
    }
    async with aiohttp.ClientSession() as http:
        answers: dict[str, Any] = {}
        found: dict[str, dict[tuple[str, str], Any]] = {}

        def summary() -> dict[str, dict[tuple[str, str], Key]]:
            return {store: {key: tuple(v[name] for name in figures) for key, v in arms.items()}
                    for store, arms in found.items()}

        deadline = time.monotonic() + 30  # the read model follows the log: wait for all of it
        while True:
            for store in expected:
                async with http.get(f"{base}/cartwatch/api/insights/campaigns/",
                                    params={"store": store}) as response:
                    assert response.status == 200, await response.text()
                    answers[store] = await response.json()
                found[store] = {(c["campaign"], v["variant"]): v
                                for c in answers[store]["campaigns"] for v in c["variants"]}
            if summary() == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert summary() == expected
        assert answers["tea"]["pending"] == answers["rep"]["pending"] == 0
        tea = found["tea"]
        assert tea[("big", "a")]["uplift"] == {"difference": 0.0, "low": -0.6576,
                                               "high": 0.6576}
        assert tea[("big", "holdout")]["uplift"] is None
        assert [step["sent"] for step in tea[("big", "b")]["steps"]] == [2, 2, 2]
        assert [step["skipped"] for step in tea[("big", "holdout")]["steps"]] == [
            {"holdout": 2}] * 3
        async with http.get(f"{base}/cartwatch/api/insights/campaigns.csv",
                            params={"store": "tea"}) as response:
            assert response.status == 200 and response.content_type == "text/csv"
            rows = (await response.text()).splitlines()
        assert rows[0].startswith("store_id,campaign,variant,holdout,step,entered")
        assert len(rows) == 1 + 3 * (1 + 3) + (1 + 1)  # each variant's total and steps
