"""The reminder notifier's Faust agents, wired: a scheduler partitioned by cart, a sender by
address (``streams.notifier.processors`` holds both processors; this module gives them the
app's tables, topics, timers, mailer and clock and registers them).

``reminder_scheduler`` consumes the abandoned, recovered and reactivated topics (keyed by
cart_id, co-partitioned) and its own tick topic. It keeps each cart's ``ReminderPlan`` in a table
and its next deadline in a ``DeadlineIndex`` (``streams.scheduling.PartitionTimers``, the same
machinery as the cart lifecycle, rebuilt from the table after a rebalance), and emits due steps
to ``reminders-due`` keyed by the customer's address.

``reminder_sender`` consumes ``reminders-due`` and ``unsubscribes`` (both keyed by address), so
an address's suppression, frequency cap and delivery records are local to one partition. Before
each delivery attempt it writes the step's delivery record and waits until its changelog record
is acknowledged by the broker: a redelivered step (crash, restart, rebalance) finds the record
and is skipped, so no step is ever sent twice. Messages of different addresses are processed
concurrently (up to ``SENDER_WINDOW``), those of one address strictly one after the other in
offset order; a message is released to Faust only once its processing ended, so a commit never
passes a message still in flight.

Test-only fault injection: ``CARTWATCH_FAULT_EXIT_AFTER_SEND=1`` makes the worker exit with
``os._exit(70)`` right after a successful delivery, before anything is recorded or committed.
"""


import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust import current_event
from faust.types import EventT, StreamT

from config.settings import SettingsError
from schemas.notifications import ManualReminder
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.app import (
    app,
    dead_letter_topic,
    notification_log_topic,
    operator_notifications_topic,
    reminder_ticks_topic,
    reminders_due_topic,
    reminders_sent_topic,
    settings,
)
from streams.compat import table_stored_items
from streams.consumer import on_seek
from streams.counters import worker_counters
from streams.notifier.channels import RetryPolicy, SmtpMailer, WebhookPoster
from streams.notifier.lanes import KeyedLanes
from streams.notifier.planning import ReminderPlan
from streams.notifier.processors import (
    Destinations,
    Outgoing,
    Outputs,
    ReminderScheduler,
    ReminderSender,
)
from streams.notifier.rendering import TemplateError, check_templates
from streams.notifier.sending import Contact, read_delivery
from streams.quarantine import ChangelogGuard
from streams.quarantine import install as install_quarantine
from streams.scheduling import PartitionTimers
from streams.tablewrites import TableWriter

log = logging.getLogger(__name__)
KAFKA_RETRY_INITIAL = 0.5
KAFKA_RETRY_MAX = 10.0
"""Seconds between retries while Kafka is away, doubling from the first to the cap."""
SENDER_WINDOW = 64
"""Reminder messages the sender processes at once (of different addresses, see KeyedLanes)."""
SENDER_DRAIN_TIMEOUT = 30.0
"""Seconds a stopping sender lets the deliveries in flight finish before cancelling them."""

notifier = settings.notifier
ABANDONED = settings.topic("abandoned")
RECOVERED = settings.topic("recovered")
REACTIVATED = settings.topic("reactivated")
REMINDER_TICKS = settings.topic("reminder_ticks")
REMINDERS_DUE = settings.topic("reminders_due")
UNSUBSCRIBES = settings.topic("unsubscribes")
counters = worker_counters


def _source(*names: str) -> faust.TopicT:
    return app.topic(*names, internal=True, partitions=settings.partitions,
                     key_serializer="raw", value_serializer="raw")


try:
    environments = check_templates(
        [("defaults", notifier.reminders), *notifier.policies().items()]
    ) if notifier.enabled else {}
except TemplateError as exc:
    raise SettingsError(f"reminder templates: {exc}") from None


def _table(name: str, help: str, read: Callable[[Any], object]) -> Any:
    """A table when the notifier runs; otherwise a plain dict (no changelog topic is created).

    ``read`` is how its values are read: its restore quarantines records that ``read`` refuses
    (``streams.quarantine``)."""
    if not notifier.enabled:
        return {}
    guard = ChangelogGuard(name, read, counters)
    table = app.Table(name, default=None, partitions=settings.partitions, help=help,
                      on_changelog_event=guard.on_changelog_event)
    install_quarantine(app, table, guard, dead_letter_topic)
    return table


reminder_plans = _table("reminder_plans", "Pending reminder steps per cart (ReminderPlan)",
                        ReminderPlan.from_dict)
contacts = _table("notifier_contacts", "Unsubscribes and last send per address (Contact)",
                  Contact.from_dict)
deliveries = _table("notifier_deliveries", "Delivery record per idempotency key",
                    read_delivery)


async def publish(messages: list[Outgoing]) -> None:
    """Send messages and wait until the broker has them all.

    Straight to Faust's producer: ``Topic.send`` costs about ten times as much per record
    (measured for the pipeline), and the sender publishes three records per email (the
    bench's i went from 445 to 501 emails/s, means of four interleaved runs)."""
    producer = app.producer
    pending = [await producer.send(topic.get_topic_name(), key,
                                   message.model_dump_json().encode(), None, None, None)
               for topic, key, message in messages]
    for future in pending:
        await future


table_writers = {table.name: TableWriter(app, table)
                 for table in (reminder_plans, contacts, deliveries)} if notifier.enabled else {}


async def write_entry(table: Any, key: str, value: Any) -> Awaitable[object]:
    """Write a table entry (``None`` deletes it) below Faust's table API
    (``streams.tablewrites``: the sender's three writes per email went through
    ``Topic.send_soon``, 16 % of the worker's samples), in the partition
    Faust's ``table[key] = value`` would pick, the current event's. Returns the changelog
    record's future: awaited by the write a crash right after must not lose."""
    event = current_event()
    if event is None:
        raise RuntimeError(f"{table.name}: written outside an event, whose partition it takes")
    return await table_writers[table.name].put(event.message.partition, key, value)


timers = PartitionTimers(app, (ABANDONED, RECOVERED, REACTIVATED), reminder_ticks_topic)
on_seek(timers)
outputs = Outputs(
    publish=publish,
    to=Destinations(reminders_due=reminders_due_topic, notification_log=notification_log_topic,
                    operator_notifications=operator_notifications_topic,
                    reminders_sent=reminders_sent_topic, dead_letter=dead_letter_topic),
    policy=notifier.policy, counters=counters, clock=time.time,
)
scheduler = ReminderScheduler(
    plans=reminder_plans, write=write_entry, timers=timers, outputs=outputs,
    tick_topic=REMINDER_TICKS,
    inputs={ABANDONED: CartAbandoned, RECOVERED: CartRecovered, REACTIVATED: CartReactivated},
)
sender = ReminderSender(
    contacts=contacts, deliveries=deliveries, outputs=outputs, write=write_entry,
    mailer=SmtpMailer(notifier.smtp), webhooks=WebhookPoster(), environments=environments,
    settings=notifier, unsubscribe_topic=UNSUBSCRIBES,
    retry_policy=RetryPolicy(notifier.retry_initial, notifier.retry_max,
                             notifier.give_up_after),
)


async def declare_topics() -> None:
    """Create the notifier's output topics before anything is sent to them."""
    for topic in (reminders_due_topic, notification_log_topic, operator_notifications_topic,
                  reminders_sent_topic, dead_letter_topic):
        await topic.maybe_declare()


async def request_manual_reminder(abandonment_id: str, cart_id: str, store_id: str) -> None:
    """Ask the scheduler owning the cart to send the abandonment's next step now."""
    request = ManualReminder(abandonment_id=abandonment_id, cart_id=cart_id, store_id=store_id)
    await (await reminder_ticks_topic.send(key=cart_id.encode(),
                                           value=request.model_dump_json().encode()))


async def until_kafka_answers(handle: Callable[[EventT], Awaitable[None]], event: EventT) -> None:
    """Retry ``handle(event)`` while Kafka is unreachable (a broker restart): the message is not
    bad, so it must neither be dead-lettered nor skipped. Durable records make a retry safe."""
    delay = KAFKA_RETRY_INITIAL
    while True:
        try:
            await handle(event)
            return
        except KafkaError as exc:
            topic = event.message.topic
            log.warning("%s: Kafka did not answer (%s); retrying in %.1f s", topic, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, KAFKA_RETRY_MAX)


async def reminder_scheduler(stream: StreamT) -> None:
    """Plan reminder steps per abandonment, cancel them, and emit the due ones."""
    await declare_topics()
    async for event in stream.events():
        try:
            await until_kafka_answers(scheduler.handle, event)
        except Exception as exc:  # a bug must cost one message, never the stream
            log.exception("reminder scheduler failed on %s", event.message.topic)
            await scheduler.failed(event, exc)


async def request_reminder_ticks() -> None:
    await timers.request_ticks()


async def rebuild_reminder_index() -> None:
    """After a rebalance, rebuild the reminder deadline index of the owned partitions."""
    scheduler.rebuild_index(table_stored_items(reminder_plans))


async def reminder_sender(stream: StreamT) -> None:
    """Screen and deliver due reminders; keep unsubscribes, caps and delivery records.

    Messages of different addresses are processed concurrently, those of one address (one
    Kafka key) one after the other in offset order (``KeyedLanes``). Each message holds one
    more reference while it is processed: the stream's own ack, when the loop moves on, does
    not release it; the end of its processing does. So Faust commits an offset only once every
    message before it on the partition is done, and a rebalance waits for the ones in flight.
    (A ``stream.noack()`` clone lost a message at a rebalance in the broker-restart scenario.)
    """
    await declare_topics()
    lanes = KeyedLanes(SENDER_WINDOW)

    async def process(event: EventT) -> None:
        message = event.message
        release = True
        try:
            await until_kafka_answers(sender.handle, event)
        except asyncio.CancelledError:  # stopping mid-delivery: never committed, redelivered
            release = False
            raise
        except Exception as exc:  # a bug must cost one message, never the stream
            log.exception("notifier failed on %s", message.topic)
            await outputs.reject(event, f"processing failed: {type(exc).__name__}")
        finally:
            if release and event.ack():  # the last reference: the offset may be committed
                app.sensors.on_message_out(message.tp, message.offset, message)

    try:
        async for event in stream.events():
            event.message.incref()  # released by process(), not by the loop moving on
            await lanes.submit(event.message.key, functools.partial(process, event))
    finally:
        await lanes.drain(SENDER_DRAIN_TIMEOUT)


if notifier.enabled:
    app.agent(_source(ABANDONED, RECOVERED, REACTIVATED, REMINDER_TICKS),
              name="cartwatch.reminder_scheduler")(reminder_scheduler)
    app.agent(_source(REMINDERS_DUE, UNSUBSCRIBES),
              name="cartwatch.reminder_sender")(reminder_sender)
    app.timer(interval=settings.timer_resolution)(request_reminder_ticks)
    reminder_plans.on_recover(rebuild_reminder_index)
