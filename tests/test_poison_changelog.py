"""Poison in a changelog (``streams.quarantine``): a worker restoring a table whose changelog
holds undecodable records becomes ready, quarantines each once (one log line with the table,
partition and offset; a dead letter with the raw bytes; a tombstone), keeps processing, and a
later event for a poisoned cart starts a fresh cart. A second worker restoring the same
changelog from scratch quarantines nothing again.

Before quarantine, the garbage cart made the deadline index rebuild fail on every restore
(``Table.items()`` raised while decoding it) and an event for that cart was dead-lettered.
"""

import base64
import re
import time

import pytest
from conftest import SmtpServer
from pipeline_harness import Pipeline, Shop, partition_for

from streams.cartstore import encode_state
from streams.lifecycle import CartState

pytestmark = pytest.mark.integration

GARBAGE = b"\x00\xff\xfe not JSON at all"
WRONG_SHAPE = b'{"cart_id": 17, "lines": "none"}'
PLAN_WRONG_SHAPE = b'{"v": 1, "steps": "none"}'


def quarantine_lines(log: str) -> list[str]:
    return re.findall(r"quarantined an unreadable record of table .*", log)


def unreadable_letters(outputs: dict[str, list[dict]]) -> list[dict]:
    return [r for r in outputs["cartwatch-dead-letter"] if r["error_kind"] == "unreadable_state"]


async def test_poisoned_changelog_records_are_quarantined_once_and_the_worker_carries_on(
    pipeline: Pipeline, smtp_server: SmtpServer,
) -> None:
    parts = pipeline.partitions
    good = CartState(cart_id="kept", store_id="s", partition=partition_for("kept", parts),
                     status="active", created_at=time.time(), last_activity_at=time.time(),
                     currency="EUR", scheduled_at=float("inf"))
    written = await pipeline.write_changelogs({
        "carts": [
            (b'"kept"', encode_state(good), good.partition),
            (b'"poisoned"', GARBAGE, partition_for("poisoned", parts)),
            (b'"misshapen"', WRONG_SHAPE, partition_for("misshapen", parts)),
        ],
        "reminder_plans": [(b'"planned"', PLAN_WRONG_SHAPE, partition_for("planned", parts))],
    })
    pipeline.settings.update(
        CARTWATCH_ABANDON_AFTER="2s", CARTWATCH_NOTIFIER_ENABLED="true",
        CARTWATCH_LINK_SECRET="test-link-secret-0123456789",
        CARTWATCH_SMTP_HOST=smtp_server.host, CARTWATCH_SMTP_PORT=str(smtp_server.port),
    )
    first = pipeline.worker("w1").start()
    first.wait_ready()
    assert "deadline index rebuilt: 1 carts" in first.log()

    # each poisoned record: one dead letter with its raw bytes and where it was
    expected = {
        (pipeline.changelog("carts"), partition_for("poisoned", parts), written["carts"][1],
         b'"poisoned"', GARBAGE),
        (pipeline.changelog("carts"), partition_for("misshapen", parts), written["carts"][2],
         b'"misshapen"', WRONG_SHAPE),
        (pipeline.changelog("reminder_plans"), partition_for("planned", parts),
         written["reminder_plans"][0], b'"planned"', PLAN_WRONG_SHAPE),
    }

    def letters_of(outputs: dict[str, list[dict]]) -> set[tuple[str, int, int, bytes, bytes]]:
        return {(r["source_topic"], r["partition"], r["offset"],
                 base64.b64decode(r["key_base64"]), base64.b64decode(r["value_base64"]))
                for r in unreadable_letters(outputs)}

    # the worker keeps processing: other carts, and the poisoned cart as a fresh one
    shop = Shop("s")
    await pipeline.send([shop.add("other-1", "MUG"), shop.add("other-2", "MUG"),
                         shop.add("poisoned", "MUG", quantity=3)])
    abandoned = {"other-1:1", "other-2:1", "poisoned:1"}
    outputs = await pipeline.collect(
        lambda out: letters_of(out) == expected
        and {r["abandonment_id"] for r in out["cart-abandoned"]} >= abandoned,
        timeout=45.0, settle=2.0)
    assert letters_of(outputs) == expected
    assert len(unreadable_letters(outputs)) == 3
    by_id = {r["abandonment_id"]: r for r in outputs["cart-abandoned"]}
    assert set(by_id) == abandoned
    assert by_id["poisoned:1"]["cart"]["item_count"] == 3  # a fresh cart: only the new event
    lines = quarantine_lines(first.log())
    assert len(lines) == 3, lines
    carts_line = next(line for line in lines if """key b'"poisoned"'""" in line)
    assert (f"table carts: changelog {pipeline.changelog('carts')} partition "
            f"{partition_for('poisoned', parts)} offset {written['carts'][1]}") in carts_line
    assert first.alive

    # a second worker restoring from scratch reads the poison, then the tombstone: no new
    # quarantine, and the fresh cart's state is what it restores
    first.stop()
    second = pipeline.worker("w2").start()
    second.wait_ready()
    assert quarantine_lines(second.log()) == []
    await pipeline.send([shop.add("other-3", "MUG")])
    again = await pipeline.collect(
        lambda out: "other-3:1" in {r["abandonment_id"] for r in out["cart-abandoned"]},
        timeout=30.0, settle=2.0)
    assert len(unreadable_letters(again)) == 3
    assert second.alive
