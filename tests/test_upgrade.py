"""Upgrades keep state: a worker started on changelogs written by earlier releases (the golden
fixtures of every format version, ``tests/fixtures/golden``) carries on where they stopped.

The fixtures' carts were last active on 2025-01-01 (``cartwatch_dev.golden``). This test writes
their changelog records into a fresh deployment's changelog topics before its first worker
starts, and checks: the overdue cart is abandoned once, the cart whose deadline is still ahead
(its store's ``abandon_after`` is chosen to end a few seconds from now) is abandoned at that
deadline and not before, carts already abandoned or bought are not abandoned again, the pending
reminder is sent once (and the overdue cart's, whose step is long due), a step whose delivery
is recorded is not sent again, and an unsubscribed address stays unsubscribed.
"""

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cartwatch_dev import golden
from conftest import SmtpServer
from kafka_helpers import create_topics
from pipeline_harness import Pipeline

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden"
SECRET = "test-link-secret-0123456789"
Entries = list[dict[str, Any]]
FUTURE_IN = 12.0
"""Seconds from the worker's start to the deadline of the cart whose deadline is ahead."""

CONFIG = """
[notifier]
retry_initial = "0.2s"
retry_max = "1s"
[notifier.reminders]
stale_after = "36500d"
"""
"""Steps of the fixtures' plans fell due in 2025: a reminder that late is skipped as stale by
default, so the test lets them go out, as they would after a short upgrade."""


async def write_changelogs(pipeline: Pipeline, version: Path) -> int:
    """Create the tables' changelog topics and write one golden version's records into them,
    each to the partition Faust's table would have written it to."""
    records: dict[str, list[tuple[bytes, bytes | None, int]]] = {}
    for table in golden.TABLES:
        lines = (version / f"{table}.jsonl").read_text(encoding="utf-8").splitlines()
        records[table] = []
        for line in lines:
            record = json.loads(line)
            value = None if record["value"] is None else record["value"].encode()
            records[table].append((record["key"].encode(), value, record["partition"]))
    offsets = await pipeline.write_changelogs(records)
    return sum(len(written) for written in offsets.values())


@pytest.mark.parametrize("version", sorted(GOLDEN.glob("v*")), ids=lambda path: path.name)
async def test_a_worker_started_on_old_changelogs_keeps_deadlines_reminders_and_deliveries(
    pipeline: Pipeline, smtp_server: SmtpServer, tmp_path: Path, version: Path,
) -> None:
    # format 3 added golden-clicked, a cart with its attribution fields (no plan: it is kept
    # or evicted like the other abandoned carts and must not be abandoned again)
    assert await write_changelogs(pipeline, version) == (12 if int(version.name[1:]) < 3
                                                         else 13)
    await create_topics(pipeline.bootstrap, [pipeline.topic("cartwatch-unsubscribes")],
                        pipeline.partitions, kafka=pipeline.kafka)
    config = tmp_path / "cartwatch.toml"
    config.write_text(CONFIG)
    future_deadline = time.time() + FUTURE_IN
    pipeline.settings.update(
        CARTWATCH_CONFIG=str(config), CARTWATCH_NOTIFIER_ENABLED="true",
        CARTWATCH_LINK_SECRET=SECRET, CARTWATCH_SMTP_HOST=smtp_server.host,
        CARTWATCH_SMTP_PORT=str(smtp_server.port),
        CARTWATCH_STORE_ABANDON_AFTER=(
            f"{golden.STORE_LATER}={future_deadline - golden.BASE:.3f}s"),
    )
    recipients = {"abandoned@example.com", "past@example.com", "reminded@example.com",
                  "unsub@example.com"}

    # The SMTP server is the session's, and every version's run mails the same fixture
    # customers (with the same Message-IDs): start from an empty Maildir.
    smtp_server.clear()

    def mails_to(address: str) -> list[object]:
        return [m for m in smtp_server.messages() if address in str(m["X-RcptTo"])]

    assert not any(mails_to(address) for address in recipients)
    worker = pipeline.worker("w1").start()
    worker.wait_ready()

    # the overdue cart is abandoned at start; the one whose deadline is ahead is not (yet)
    first = await pipeline.collect(
        lambda out: any(r["cart_id"] == "golden-past" for r in out["cart-abandoned"]),
        timeout=30.0, topics=["cart-abandoned"])
    seen_at = time.time()
    assert [r["abandonment_id"] for r in first["cart-abandoned"]] == ["golden-past:1"]
    assert seen_at < future_deadline - 1, "the worker took too long to start for this test"

    outputs = await pipeline.collect(
        lambda out: any(r["cart_id"] == "golden-future" for r in out["cart-abandoned"]),
        timeout=FUTURE_IN + 30.0, settle=3.0)
    abandoned = outputs["cart-abandoned"]
    assert sorted(r["abandonment_id"] for r in abandoned) == ["golden-future:1",
                                                              "golden-past:1"]
    by_cart = {r["cart_id"]: r for r in abandoned}
    past, future = by_cart["golden-past"], by_cart["golden-future"]
    assert past["abandoned_at"].startswith("2025-01-01T00:30:00")  # BASE + 30 min, as stored
    assert len(past["cart"]["lines"]) == 2 and past["cart"]["customer"]["email"] == (
        "past@example.com")
    assert abs(golden_epoch(future["abandoned_at"]) - future_deadline) < 0.01
    assert outputs["cart-reactivated"] == outputs["cart-recovered"] == []

    # the pending reminder goes out once; the recorded delivery and the unsubscribe hold. The
    # overdue cart's new abandonment is reminded at once too: its step fell due in 2025.
    log = await read_log(pipeline, lambda entries: {
        ("golden-abandoned:1", "sent"), ("golden-past:1", "sent"),
        ("golden-reminded:1", "skipped"), ("golden-unsubscribed:1", "skipped"),
    } <= {(e["abandonment_id"], e["status"]) for e in entries})
    assert sorted((e["abandonment_id"], e["step"]) for e in log if e["status"] == "sent") == [
        ("golden-abandoned:1", 1), ("golden-past:1", 1)]
    skipped = {(e["abandonment_id"], e["step"], e["reason"]) for e in log
               if e["status"] == "skipped"}
    assert skipped == {("golden-reminded:1", 1, "duplicate"),
                       ("golden-unsubscribed:1", 1, "unsubscribed")}
    assert len(mails_to("abandoned@example.com")) == len(mails_to("past@example.com")) == 1
    assert mails_to("reminded@example.com") == mails_to("unsub@example.com") == []


def golden_epoch(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


async def read_log(pipeline: Pipeline, done: Callable[[Entries], bool]) -> Entries:
    """The notification log from the start until ``done`` held, then 3 s more."""
    name = "cartwatch-notification-log"
    records = (await pipeline.collect(lambda out: done(out[name]), timeout=60.0, settle=3.0,
                                      topics=[name]))[name]
    assert done(records), f"notification log incomplete: {records}"
    return records
