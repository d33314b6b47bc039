"""Poison changelog records (``streams.quarantine``): found while a table restores, kept out of
its store, quarantined once (log line, dead letter with the raw bytes, tombstone) when the
restore ends; and a store that already holds one still rebuilds its index (``json_entries``)."""

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.outputs import DeadLetter
from streams.cartstore import encode_state
from streams.lifecycle import CartState
from streams.notifier.planning import ReminderPlan
from streams.notifier.sending import Contact, read_delivery
from streams.quarantine import ChangelogGuard, unreadable
from streams.stored import json_entries, readable

TOPIC = "app-carts-changelog"


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def good_cart(cart_id: str = "c-1") -> bytes:
    return encode_state(CartState(cart_id=cart_id, store_id="s", partition=2, status="active",
                                  created_at=1.0, last_activity_at=2.0, currency="EUR"))


class Sent:
    def __init__(self) -> None:
        self.letters: list[tuple[bytes, DeadLetter]] = []
        self.tombstones: list[tuple[str, int, bytes]] = []
        self.order: list[str] = []

    async def dead_letter(self, key: bytes, letter: DeadLetter) -> None:
        self.letters.append((key, letter))
        self.order.append("dead letter")

    async def tombstone(self, topic: str, partition: int, key: bytes) -> None:
        self.tombstones.append((topic, partition, key))
        self.order.append("tombstone")


def restore(guard: ChangelogGuard, *records: tuple[bytes, bytes | None]) -> list[Message]:
    """Feed records to the guard as one partition's restore would, offsets from 10."""
    messages = [Message(TOPIC, 2, 10 + n, key, value) for n, (key, value) in enumerate(records)]
    for message in messages:
        guard.inspect(message)
    return messages


@pytest.mark.parametrize("poison", [b"\x00\xffgarbage", b'{"cart_id": "c-1"}', b"[1, 2]",
                                    b'"a string"', b"{"])
def test_a_value_that_cannot_be_read_is_kept_out_of_the_store(poison: bytes) -> None:
    guard = ChangelogGuard("carts", CartState.from_dict)
    good, bad = restore(guard, (b'"c-0"', good_cart("c-0")), (b'"c-1"', poison))
    assert good.value == good_cart("c-0")  # written to RocksDB as it is
    assert bad.value is None  # the store deletes the key instead of keeping the poison
    assert list(guard.pending) == [(2, b'"c-1"')]


async def test_release_logs_dead_letters_the_raw_bytes_then_writes_a_tombstone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters: dict[str, int] = {}
    guard = ChangelogGuard("carts", CartState.from_dict, counters)
    restore(guard, (b'"c-0"', good_cart("c-0")), (b'"c-1"', b"\x00\xffgarbage"))
    sent = Sent()
    with caplog.at_level(logging.ERROR, logger="streams.quarantine"):
        assert await guard.release(sent.dead_letter, sent.tombstone) == 1
    [line] = [r.getMessage() for r in caplog.records]
    assert "table carts" in line and f"changelog {TOPIC} partition 2 offset 11" in line
    assert "c-1" in line
    [(key, letter)] = sent.letters
    assert key == b'"c-1"'
    assert base64.b64decode(letter.value_base64 or "") == b"\x00\xffgarbage"
    assert base64.b64decode(letter.key_base64 or "") == b'"c-1"'
    assert (letter.source_topic, letter.partition, letter.offset) == (TOPIC, 2, 11)
    assert letter.error_kind == "unreadable_state" and "not JSON" in letter.error
    assert sent.tombstones == [(TOPIC, 2, b'"c-1"')]
    assert sent.order == ["dead letter", "tombstone"]  # a crash between repeats, never loses
    assert counters == {"quarantined": 1, "dead_lettered": 1}
    # released once: the next restore's callback has nothing left
    assert await guard.release(sent.dead_letter, sent.tombstone) == 0


async def test_a_poisoned_record_superseded_later_in_the_restore_is_not_quarantined() -> None:
    """The tombstone a quarantine wrote follows the poison on the changelog until compaction
    removes it: a fresh restore reads both and must not quarantine the poison again; nor a
    poison a later good value replaced."""
    guard = ChangelogGuard("carts", CartState.from_dict)
    restore(guard, (b'"c-1"', b"garbage"), (b'"c-1"', None),
            (b'"c-2"', b"garbage"), (b'"c-2"', good_cart("c-2")))
    sent = Sent()
    assert await guard.release(sent.dead_letter, sent.tombstone) == 0
    assert sent.letters == [] and sent.tombstones == []


def test_a_key_that_is_not_a_json_string_is_unreadable() -> None:
    read = CartState.from_dict
    assert unreadable(b"\xff", good_cart(), read) is not None
    assert unreadable(b"[1]", good_cart(), read) is not None
    assert unreadable(b'"c-1"', good_cart(), read) is None
    assert unreadable(b"\xff", None, read) is None  # a tombstone is never poison


def test_an_index_rebuild_skips_an_undecodable_entry_already_in_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Table.items()`` decodes inside its iterator, so one such entry ended the rebuild."""
    stored = [(b'"c-0"', good_cart("c-0")), (b'"c-1"', b"\x00garbage"),
              (b'"c-2"', b'{"wrong": "shape"}'), (b'"c-3"', good_cart("c-3"))]
    with caplog.at_level(logging.ERROR):
        carts = list(readable(json_entries(stored, "cart"), CartState.from_dict, "cart"))
    assert [cart_id for cart_id, _ in carts] == ["c-0", "c-3"]
    assert sum("c-1" in r.getMessage() for r in caplog.records) == 1
    assert sum("c-2" in r.getMessage() for r in caplog.records) == 1


GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
READERS = {"carts": CartState.from_dict, "reminder_plans": ReminderPlan.from_dict,
           "notifier_contacts": Contact.from_dict, "notifier_deliveries": read_delivery}
"""The reader each table's guard is given (``streams.app``, ``streams.notifier.worker``)."""


@pytest.mark.parametrize("version", sorted(GOLDEN.glob("v*")), ids=lambda path: path.name)
def test_no_record_any_release_wrote_is_taken_for_poison(version: Path) -> None:
    """The guard must never quarantine a good record: every golden changelog record of every
    format version passes it."""
    checked = 0
    for table, read in READERS.items():
        for line in (version / f"{table}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            value = None if record["value"] is None else record["value"].encode()
            assert unreadable(record["key"].encode(), value, read) is None, (table, record)
            checked += 1
    assert checked >= 12


def test_the_restore_hands_on_changelog_records_undecoded() -> None:
    """Faust's recovery decodes each changelog record with the changelog topic's schema, and one
    it cannot decode was lost from its queue uncounted: the restore never ended. The guarded
    tables restore raw bytes (the guard decides), and still write JSON."""
    from streams.pipeline import app, carts_table  # where the carts' guard is installed

    # what the recovery reads through: a clone of the changelog topic
    schema = carts_table.changelog_topic.clone_using_queue(asyncio.Queue()).schema
    assert (schema.key_serializer, schema.value_serializer) == ("raw", "raw")
    assert app.serializers.loads_value(None, GARBAGE, serializer=schema.value_serializer) == (
        GARBAGE)
    assert (carts_table.key_serializer, carts_table.value_serializer) == ("json", "json")


GARBAGE = b"\x00\xff\xfe not JSON"
