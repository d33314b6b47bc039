"""The order of the notifier's side effects that exactly-once delivery rests on
(``streams.notifier.processors``), with fakes that write every effect into one journal:

- the scheduler publishes every message of its decisions (and the broker acknowledges them)
  before it writes any plan; a publish that fails writes no plan and leaves the steps due;
- the sender records a step durably as ``sending`` before it tries to deliver it, publishes the
  log entry and the feedback before it records ``sent``, and skips a step already tried.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from faust.types import TP

from config.notifier import NotifierSettings, ReminderPolicy, ReminderStep
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.notifier.channels import RetryPolicy
from streams.notifier.processors import (
    Destinations,
    Outgoing,
    Outputs,
    ReminderScheduler,
    ReminderSender,
    WriteEntry,
)
from streams.notifier.rendering import check_templates
from streams.notifier.sending import delivery_record
from streams.scheduling import PartitionTimers

from .factories import HOUR, T0
from .test_notifier_planning import abandoned
from .test_notifier_sending import due

POLICY = ReminderPolicy(steps=[ReminderStep(after=HOUR, template="reminder"),
                               ReminderStep(after=24 * HOUR, template="last-chance")])
TO = Destinations(reminders_due="reminders-due", notification_log="log",
                  operator_notifications="operator", reminders_sent="reminders-sent",
                  dead_letter="dead-letter")
INPUTS = {"abandoned": CartAbandoned, "recovered": CartRecovered,
          "reactivated": CartReactivated}


class Journal(list[str]):
    """What happened, in order, across every fake."""


class Refused(Exception):
    """The broker did not acknowledge (a fault injected into the fake publish)."""


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class FakeEvent:
    message: FakeMessage


class JournaledTable(dict[str, Any]):
    """A table whose writes go into the journal."""

    def __init__(self, journal: Journal, name: str) -> None:
        super().__init__()
        self.journal, self.name = journal, name

    def __setitem__(self, key: str, value: Any) -> None:
        self.journal.append(f"write {self.name} {key}")
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.journal.append(f"delete {self.name} {key}")
        super().__delitem__(key)


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


def outputs(journal: Journal, clock: Clock, refuse: bool = False) -> Outputs:
    async def publish(messages: list[Outgoing]) -> None:
        for topic, key, _ in messages:
            journal.append(f"publish {topic} {key.decode()}")
        await asyncio.sleep(0)
        if refuse:
            raise Refused("not acknowledged")
        journal.append(f"acknowledged {len(messages)}")

    return Outputs(publish=publish, to=TO, policy=lambda store_id: POLICY, counters=Counter(),
                   clock=clock)


class Acknowledgement:
    """The broker's acknowledgement of a table write: journaled when (and if) awaited."""

    def __init__(self, journal: Journal, line: str) -> None:
        self.journal, self.line = journal, line

    def __await__(self) -> Generator[Any, None, None]:
        yield from asyncio.sleep(0).__await__()
        self.journal.append(self.line)


def writer(journal: Journal) -> WriteEntry:
    """The shell's ``write``: the table's own write (journaled), then an acknowledgement."""
    async def write(table: Any, key: str, value: Any) -> Acknowledgement:
        if value is None:
            del table[key]
        else:
            table[key] = value
        return Acknowledgement(journal, f"acknowledged write {table.name} {key}")
    return write


def scheduler(journal: Journal, clock: Clock, refuse: bool = False) -> ReminderScheduler:
    # a consumer that has not heard of any partition's end: only event time moves the timers
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=set, highwater=lambda tp: None))
    timers = PartitionTimers(cast(faust.App, app), tuple(INPUTS), cast(faust.TopicT, None))
    return ReminderScheduler(plans=JournaledTable(journal, "plan"), write=writer(journal),
                             timers=timers,
                             outputs=outputs(journal, clock, refuse), inputs=INPUTS,
                             tick_topic="ticks")


def abandonment_event(cart_id: str, offset: int) -> FakeEvent:
    value = abandoned(cart_id=cart_id, when=T0).model_dump_json().encode()
    return FakeEvent(FakeMessage("abandoned", 0, offset, cart_id.encode(), value))


async def planned(journal: Journal, clock: Clock, refuse: bool = False) -> ReminderScheduler:
    """A scheduler that has planned the reminders of two abandoned carts."""
    planner = scheduler(journal, clock)
    for offset, cart_id in enumerate(("c-1", "c-2")):
        await planner.handle(abandonment_event(cart_id, offset))
    if refuse:
        planner.outputs = outputs(journal, clock, refuse=True)
    journal.clear()
    return planner


async def test_the_scheduler_publishes_every_due_step_before_it_writes_a_plan():
    journal, clock = Journal(), Clock()
    planner = await planned(journal, clock)
    clock.now = T0 + HOUR + 1
    await planner.fire_due(0, clock.now)

    publishes = [n for n, line in enumerate(journal) if line.startswith("publish")]
    writes = [n for n, line in enumerate(journal) if line.startswith("write plan")]
    assert [journal[n] for n in publishes] == [
        "publish reminders-due ann@example.com", "publish reminders-due ann@example.com"]
    assert sorted(journal[n] for n in writes) == ["write plan c-1", "write plan c-2"]
    acknowledged = journal.index("acknowledged 2")
    assert max(publishes) < acknowledged < min(writes), journal


async def test_a_due_step_the_broker_did_not_acknowledge_writes_no_plan_and_stays_due():
    journal, clock = Journal(), Clock()
    planner = await planned(journal, clock, refuse=True)
    clock.now = T0 + HOUR + 1
    with pytest.raises(Refused):
        await planner.fire_due(0, clock.now)

    assert not [line for line in journal if line.startswith("write")], journal
    again = planner.timers.deadlines.pop_due(0, clock.now, 10)
    assert sorted(cart_id for _, cart_id in again) == ["c-1", "c-2"]


class FakeMailer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def send(self, message: bytes, sender: str, recipients: Any) -> None:
        self.journal.append(f"mail to {recipients[0]}")


class FakePoster:
    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout: float) -> None:
        raise AssertionError("no webhook in these tests")


def sender(journal: Journal, clock: Clock) -> ReminderSender:
    return ReminderSender(
        contacts=JournaledTable(journal, "contact"),
        deliveries=JournaledTable(journal, "delivery"), outputs=outputs(journal, clock),
        write=writer(journal), mailer=FakeMailer(journal), webhooks=FakePoster(),
        environments=check_templates([("defaults", POLICY)]),
        settings=NotifierSettings(link_secret="0123456789abcdef-secret"),
        retry_policy=RetryPolicy(0.1, 1.0, 10.0), unsubscribe_topic="unsubscribes")


def due_event(offset: int = 0) -> FakeEvent:
    value = due().model_dump_json().encode()
    return FakeEvent(FakeMessage("reminders-due", 0, offset, b"ann@example.com", value))


async def test_the_sender_records_sending_then_delivers_then_logs_then_records_sent():
    journal, clock = Journal(), Clock(T0 + HOUR)
    await sender(journal, clock).handle(due_event())

    key = due().idempotency_key
    assert journal == [
        f"write delivery {key}",
        f"acknowledged write delivery {key}",
        "mail to Ann@Example.com",
        "publish log c-1",
        "publish reminders-sent c-1",
        "acknowledged 2",
        f"write delivery {key}",
        "write contact ann@example.com",
    ]


async def test_a_step_already_tried_is_skipped_and_never_mailed():
    journal, clock = Journal(), Clock(T0 + HOUR)
    shell = sender(journal, clock)
    dict.__setitem__(shell.deliveries, due().idempotency_key,
                     delivery_record("sending", T0 + HOUR - 5))
    await shell.handle(due_event())

    assert journal == ["publish log c-1", "acknowledged 1"]
