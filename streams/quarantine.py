"""Quarantine of changelog records that cannot be decoded, so a poison record never stops a worker.

A table's changelog is written by cartwatch only, but a record can still be unreadable: bytes
corrupted on the way, a tool that wrote to the topic by hand, a release with a bug. Before this
module, a record that is not JSON stopped Faust's restore itself: the recovery decodes each
changelog record with the table's JSON codec, and one it cannot decode is thrown out of its
queue uncounted, so the restore waited for that offset forever and the worker never became
ready. JSON of the wrong shape got into RocksDB (the store copies values verbatim), where it was
skipped by the index rebuilds and failed every later event of that cart.

The restore now hands records on undecoded (``compat.restore_undecoded``), and
``ChangelogGuard`` checks each one (Faust's public ``on_changelog_event`` hook, called before
the buffered record is written to RocksDB). An unreadable value or key is
turned into a delete there, so the poison never reaches the store. Once the restore is complete
(the table's ``on_recover`` callback), every poisoned key that no later record superseded is
quarantined, once:

1. one log line naming the table, the changelog partition and offset, the key and the error;
2. a dead letter (``error_kind="unreadable_state"``) with the raw key and value, base64, on the
   dead-letter topic, the contract of refused input messages (``streams.intake.dead_letter``);
3. a tombstone for that key on the changelog, after the dead letter is acknowledged.

The tombstone is what makes the quarantine happen once: a restart on the same data dir resumes
the changelog after it, and a fresh restore (another host, a wiped data dir) reads the poison,
then the tombstone, which supersedes it before the restore ends, so nothing is quarantined again.
Compaction eventually removes the poison record itself. A crash between the dead letter and the
tombstone quarantines it again on the next restore: at least once, like every output.

A later event for a quarantined cart finds no state and starts a fresh cart. Its state is lost
either way; dead-lettering its every later event instead would also lose the shopper's next
activity, abandonment and reminders for good, where a fresh cart loses only what the poison
held (kept in the dead letter for a person to look at).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from pydantic_core import from_json

from schemas.outputs import DeadLetter
from streams.compat import restore_undecoded
from streams.intake import Rejected, dead_letter

log = logging.getLogger(__name__)

Reader = Callable[[Any], object]
"""Turns a decoded (JSON) stored value into the value it stores; raises if it cannot."""


class ChangelogMessage(Protocol):
    """The part of a Faust ``Message`` the guard reads (and whose value it may clear)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class ChangelogEvent(Protocol):
    @property
    def message(self) -> ChangelogMessage: ...


@dataclass(frozen=True, slots=True)
class Poisoned:
    """A changelog record that could not be decoded, waiting for the end of the restore."""

    table: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str

    def dead_letter(self, now: float) -> DeadLetter:
        return dead_letter(Rejected("unreadable_state", self.error), topic=self.topic,
                           partition=self.partition, offset=self.offset, key=self.key,
                           value=self.value, now=now)


SendDeadLetter = Callable[[bytes, DeadLetter], Awaitable[None]]
"""Sends a dead letter under the given key and returns once the broker acknowledged it."""
SendTombstone = Callable[[str, int, bytes], Awaitable[None]]
"""Sends a tombstone to (changelog topic, partition) for a key; returns once acknowledged."""


def unreadable(key: bytes | None, value: bytes | None, read: Reader) -> str | None:
    """Why a changelog record of a table cannot be used, or None if it can.

    A tombstone (no value) is always fine. The key must be a JSON string (Faust's table codec
    writes every key as one); the value JSON that ``read`` accepts.
    """
    if value is None:
        return None
    try:
        decoded_key = from_json(key or b"")
    except ValueError as exc:
        return f"key is not JSON: {exc}"[:300]
    if not isinstance(decoded_key, str):
        return f"key is a JSON {type(decoded_key).__name__}, not a string"
    try:
        data = from_json(value)
    except ValueError as exc:
        return f"value is not JSON: {exc}"[:300]
    try:
        read(data)
    except Exception as exc:  # any failure to read means the same: this record is unusable
        return f"{type(exc).__name__}: {exc}"[:1000]
    return None


class ChangelogGuard:
    """Finds the unreadable records of one table's restore and quarantines them once it ends.

    ``read`` is how the table's readers turn a decoded value into theirs (``CartState.from_dict``
    for the carts): a value it accepts is one the worker can use.
    """

    def __init__(self, table: str, read: Reader,
                 counters: MutableMapping[str, int] | None = None) -> None:
        self.table = table
        self.read = read
        self.counters = counters if counters is not None else {}
        self.pending: dict[tuple[int, bytes | None], Poisoned] = {}

    async def on_changelog_event(self, event: ChangelogEvent) -> None:
        """Faust's ``on_changelog_event`` hook: called for each record its restore reads."""
        self.inspect(event.message)

    def inspect(self, message: ChangelogMessage) -> None:
        """Check one restored record; a poisoned one is replaced by a delete (the store then
        holds no value for its key) and kept for ``release``. A later record for the same key
        supersedes an earlier poisoned one, which then needs no quarantine."""
        slot = (message.partition, message.key)
        self.pending.pop(slot, None)
        error = unreadable(message.key, message.value, self.read)
        if error is None:
            return
        self.pending[slot] = Poisoned(self.table, message.topic, message.partition,
                                      message.offset, message.key, message.value, error)
        message.value = None

    async def release(self, send_dead_letter: SendDeadLetter,
                      send_tombstone: SendTombstone) -> int:
        """Quarantine every poisoned record the finished restore left: log, dead letter,
        tombstone (in that order; see the module doc). Returns how many."""
        released = 0
        while self.pending:
            slot, poisoned = next(iter(self.pending.items()))
            log.error("quarantined an unreadable record of table %s: changelog %s partition "
                      "%d offset %d, key %r: %s (dead-lettered; the key is deleted)",
                      poisoned.table, poisoned.topic, poisoned.partition, poisoned.offset,
                      poisoned.key, poisoned.error)
            await send_dead_letter(poisoned.key or b"", poisoned.dead_letter(time.time()))
            if poisoned.key is not None:
                await send_tombstone(poisoned.topic, poisoned.partition, poisoned.key)
            del self.pending[slot]
            self.counters["quarantined"] = self.counters.get("quarantined", 0) + 1
            self.counters["dead_lettered"] = self.counters.get("dead_lettered", 0) + 1
            released += 1
        return released


def install(app: Any, table: Any, guard: ChangelogGuard, dead_letter_topic: Any) -> None:
    """Quarantine what ``guard`` found each time ``table``'s restore completes, through the
    worker's producer (dead letter and tombstone each acknowledged before the next step).
    ``dead_letter_topic`` is the Faust topic: the first restore may run before the agents
    declared it."""
    topic_name = dead_letter_topic.get_topic_name()
    restore_undecoded(table)

    async def send_dead_letter(key: bytes, letter: DeadLetter) -> None:
        await (await app.producer.send(topic_name, key, letter.model_dump_json().encode(),
                                       None, None, None))

    async def send_tombstone(topic: str, partition: int, key: bytes) -> None:
        await (await app.producer.send(topic, key, None, partition, None, None))

    async def release() -> None:
        if not guard.pending:
            return
        try:
            await dead_letter_topic.maybe_declare()
            await guard.release(send_dead_letter, send_tombstone)
        except (KafkaError, TimeoutError) as exc:
            # The store is clean already; what is left pending goes at the next restore's end
            # rather than failing this one (which would stop the worker).
            log.warning("quarantine of %d %s records postponed to the next rebalance: %s",
                        len(guard.pending), guard.table, exc)

    table.on_recover(release)
