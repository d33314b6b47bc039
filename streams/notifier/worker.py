"""The reminder notifier's Faust agents: a scheduler partitioned by cart, a sender by address.

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
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import faust
from aiokafka.errors import KafkaError
from faust.types import EventT, StreamT
from pydantic import BaseModel, ValidationError

from config.notifier import ReminderPolicy
from config.settings import SettingsError
from schemas.common import utc_from_epoch
from schemas.notifications import (
    ManualReminder,
    NotificationLogEntry,
    OperatorNotification,
    ReminderDue,
    ReminderSent,
    Unsubscribe,
    unsubscribe_key,
)
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
from streams.intake import Rejected, refuse
from streams.notifier.channels import (
    DeliveryError,
    RetryPolicy,
    SmtpMailer,
    WebhookPoster,
    deliver_with_retries,
)
from streams.notifier.lanes import KeyedLanes
from streams.notifier.planning import (
    Decision,
    ReminderPlan,
    cancel_reminders,
    decide_due_step,
    plan_reminders,
    remind_now,
)
from streams.notifier.rendering import TemplateError, check_templates, render
from streams.notifier.sending import (
    Contact,
    apply_unsubscribe,
    build_email,
    delivery_record,
    message_id,
    read_delivery,
    recipient_key,
    record_sent,
    reminder_context,
    screen,
    webhook_body,
    webhook_signature,
)
from streams.quarantine import ChangelogGuard
from streams.quarantine import install as install_quarantine
from streams.scheduling import PartitionTimers
from streams.stored import json_entries, readable

log = logging.getLogger(__name__)
KAFKA_RETRY_INITIAL = 0.5
KAFKA_RETRY_MAX = 10.0
"""Seconds between retries while Kafka is away, doubling from the first to the cap."""
M = TypeVar("M", bound=BaseModel)

FIRE_BATCH = 500
SENDER_WINDOW = 64
"""Reminder messages the sender processes at once (of different addresses, see KeyedLanes)."""
SENDER_DRAIN_TIMEOUT = 30.0
"""Seconds a stopping sender lets the deliveries in flight finish before cancelling them."""
EXIT_AFTER_SEND = os.environ.get("CARTWATCH_FAULT_EXIT_AFTER_SEND") == "1"

notifier = settings.notifier
ABANDONED = settings.topic("abandoned")
RECOVERED = settings.topic("recovered")
REACTIVATED = settings.topic("reactivated")
REMINDER_TICKS = settings.topic("reminder_ticks")
REMINDERS_DUE = settings.topic("reminders_due")
UNSUBSCRIBES = settings.topic("unsubscribes")
SCHEDULER_INPUTS: dict[str, type[CartAbandoned | CartRecovered | CartReactivated]] = {
    ABANDONED: CartAbandoned, RECOVERED: CartRecovered, REACTIVATED: CartReactivated,
}
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

timers = PartitionTimers(app, (ABANDONED, RECOVERED, REACTIVATED), reminder_ticks_topic)
on_seek(timers)
mailer = SmtpMailer(notifier.smtp)
webhooks = WebhookPoster()
retry_policy = RetryPolicy(notifier.retry_initial, notifier.retry_max, notifier.give_up_after)



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


# --- shared -----------------------------------------------------------------------------------


async def publish(messages: list[tuple[faust.TopicT, bytes, BaseModel]]) -> None:
    """Send messages and wait until the broker has them all."""
    pending = [await topic.send(key=key, value=message.model_dump_json().encode())
               for topic, key, message in messages]
    for future in pending:
        await future


async def reject(event: EventT, error: str) -> None:
    """Log and dead-letter a message the notifier cannot read; the stream goes on."""
    message = event.message
    letter = refuse(message, Rejected("invalid", error[:1000]), time.time(), counters)
    await publish([(dead_letter_topic, message.key or b"", letter)])


async def decode(event: EventT, model: type[M]) -> M | None:
    """The message as ``model``, or None after dead-lettering it."""
    try:
        return model.model_validate_json(event.message.value or b"")
    except ValidationError as exc:
        await reject(event, f"not a valid {model.__name__}: {exc}")
        return None


def operator_messages(entry: NotificationLogEntry, policy: ReminderPolicy
                      ) -> list[tuple[faust.TopicT, bytes, BaseModel]]:
    """The log entry, plus an operator notification if the store subscribed to its status."""
    messages: list[tuple[faust.TopicT, bytes, BaseModel]] = [
        (notification_log_topic, entry.cart_id.encode(), entry)
    ]
    counters[f"log:{entry.status}"] += 1
    if entry.status in policy.operator_events:
        notification = OperatorNotification(
            store_id=entry.store_id, event=entry.status, abandonment_id=entry.abandonment_id,
            step=entry.step, channel=entry.channel, detail=entry.error or entry.reason,
            at=entry.at,
        )
        messages.append((operator_notifications_topic, entry.store_id.encode(), notification))
    return messages


async def set_durably(table: Any, key: str, value: Any) -> None:
    """Write a table entry and wait until its changelog record is acknowledged by the broker.

    ``table[key] = value`` only queues the changelog record; this is the write a crash right
    after must not lose.
    """
    future = table.send_changelog(table.partition_for_key(key), key, value)
    table.data[key] = value
    await future


# --- scheduler --------------------------------------------------------------------------------


def load_plan(cart_id: str) -> ReminderPlan | None:
    stored = reminder_plans.get(cart_id)
    return None if stored is None else ReminderPlan.from_dict(stored)


def forget_plan(cart_id: str) -> None:
    """Delete a cart's plan (``pop`` would read and decode the whole plan first)."""
    if cart_id in reminder_plans:
        del reminder_plans[cart_id]


async def commit(cart_id: str, decision: Decision, scheduled_before: float | None) -> None:
    """Publish the decision's messages, then write the plan (at-least-once, like the lifecycle)."""
    await commit_all([(cart_id, decision, scheduled_before)])


async def commit_all(decisions: Sequence[tuple[str, Decision, float | None]]) -> None:
    """``commit`` for several carts: every message is acknowledged before any plan is written,
    so the broker's round trip is paid once for all of them."""
    changed = [(cart_id, d, before) for cart_id, d, before in decisions if d.changed]
    messages: list[tuple[faust.TopicT, bytes, BaseModel]] = []
    for _, decision, _ in changed:
        for message in decision.messages:
            if isinstance(message, ReminderDue):
                messages.append((reminders_due_topic, recipient_key(message), message))
                counters["due"] += 1
            else:
                assert isinstance(message, NotificationLogEntry)
                messages.extend(operator_messages(message, notifier.policy(message.store_id)))
    await publish(messages)
    for cart_id, decision, scheduled_before in changed:
        plan = decision.plan
        if plan is None:
            forget_plan(cart_id)
            continue
        if plan.scheduled_at is not None and plan.scheduled_at != scheduled_before:
            timers.deadlines.schedule(plan.partition, plan.scheduled_at, cart_id)
        reminder_plans[cart_id] = plan.to_dict()


async def fire_due(partition: int, horizon: float) -> None:
    """Decide every plan of the partition whose next step is due at ``horizon``, committing
    them ``FIRE_BATCH`` at a time."""
    while due := timers.deadlines.pop_due(partition, horizon, FIRE_BATCH):
        decisions: list[tuple[str, Decision, float]] = []
        for deadline, cart_id in dict.fromkeys(due):
            plan = load_plan(cart_id)
            if plan is None or plan.scheduled_at != deadline:
                continue  # stale entry: the plan ended or moved
            try:
                decision = decide_due_step(plan, notifier.policy(plan.store_id), time.time())
            except Exception:  # a bug must cost one plan, never the stream
                log.exception("deciding reminder of %s failed; plan dropped", cart_id)
                forget_plan(cart_id)
                continue
            decisions.append((cart_id, decision, deadline))
        try:
            await commit_all(decisions)
        except BaseException:  # nothing was written: the retry must find them due again
            for cart_id, _, deadline in decisions:
                timers.deadlines.schedule(partition, deadline, cart_id)
            raise


async def handle_scheduler_input(event: EventT) -> None:
    message = event.message
    now = time.time()
    parsed = await decode(event, SCHEDULER_INPUTS[message.topic])
    if parsed is None:
        timers.processed(message.tp, message.offset)
        return
    event_time = (parsed.abandoned_at if isinstance(parsed, CartAbandoned)
                  else parsed.recovered_at if isinstance(parsed, CartRecovered)
                  else parsed.reactivated_at)
    timers.observe(message.tp, message.offset, event_time.timestamp(), now)
    await fire_due(message.partition, timers.safe_time(message.partition))
    current = load_plan(parsed.cart_id)
    policy = notifier.policy(parsed.store_id)
    if isinstance(parsed, CartAbandoned):
        decision = plan_reminders(current, parsed, policy, message.partition, now)
    else:
        decision = cancel_reminders(current, parsed, policy, now)
    await commit(parsed.cart_id, decision, current.scheduled_at if current else None)
    timers.processed(message.tp, message.offset)
    await fire_due(message.partition, timers.safe_time(message.partition))


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


async def handle_manual_reminder(event: EventT) -> None:
    request = await decode(event, ManualReminder)
    if request is None:
        return
    current = load_plan(request.cart_id)
    decision = remind_now(current, request.abandonment_id, notifier.policy(request.store_id),
                          time.time())
    log.info("manual reminder for %s: %s", request.abandonment_id,
             "decided" if decision.changed else "nothing pending")
    await commit(request.cart_id, decision, current.scheduled_at if current else None)


async def reminder_scheduler(stream: StreamT) -> None:
    """Plan reminder steps per abandonment, cancel them, and emit the due ones."""
    await declare_topics()
    async for event in stream.events():
        message = event.message
        try:
            await until_kafka_answers(schedule, event)
        except Exception as exc:  # a bug must cost one message, never the stream
            log.exception("reminder scheduler failed on %s", message.topic)
            await reject(event, f"processing failed: {type(exc).__name__}")
            if message.topic in SCHEDULER_INPUTS:
                timers.processed(message.tp, message.offset)


async def request_reminder_ticks() -> None:
    await timers.request_ticks()


async def rebuild_reminder_index() -> None:
    """After a rebalance, rebuild the reminder deadline index of the owned partitions."""
    owned = set(timers.owned_partitions())
    entries = json_entries(table_stored_items(reminder_plans), "reminder plan")
    plans = readable(entries, ReminderPlan.from_dict, "reminder plan")
    timers.rebuild(owned, ((cart_id, plan.partition, plan.scheduled_at)
                           for cart_id, plan in plans))
    log.info("reminder index rebuilt: %d plans on partitions %s", len(timers.deadlines),
             sorted(owned))


# --- sender -----------------------------------------------------------------------------------


async def handle_unsubscribe(event: EventT) -> None:
    message = event.message
    unsubscribe = await decode(event, Unsubscribe)
    if unsubscribe is None:
        return
    key = unsubscribe_key(unsubscribe.email)
    if message.key != key:
        await reject(event, "message key must be the normalized email (schemas.notifications."
                            "unsubscribe_key)")
        return
    contact = apply_unsubscribe(Contact.from_dict(contacts.get(key.decode())), unsubscribe)
    contacts[key.decode()] = contact.to_dict()
    counters["unsubscribed"] += 1


def log_entry(due: ReminderDue, status: str, now: float, **extra: Any) -> NotificationLogEntry:
    return NotificationLogEntry(
        abandonment_id=due.abandonment_id, cart_id=due.cart_id, store_id=due.store_id,
        step=due.step, channel=due.channel, status=status,
        idempotency_key=due.idempotency_key, at=utc_from_epoch(now),
        campaign=due.campaign, variant=due.variant, **extra,
    )


async def attempt_delivery(due: ReminderDue, policy: ReminderPolicy) -> None:
    """One delivery attempt, after its record is durably marked ``sending``."""
    now = time.time()
    await set_durably(deliveries, due.idempotency_key, delivery_record("sending", now))
    if due.channel == "email":
        env = environments.get(policy.templates_dir)
        context = reminder_context(due, policy, notifier.secret, now)
        try:
            rendered = render(env, due.template, context) if env else None
        except Exception as exc:  # a template that passed the start-up check but fails here
            raise DeliveryError(f"rendering failed: {type(exc).__name__}: {exc}"[:500],
                                transient=False) from None
        if rendered is None:
            raise DeliveryError("templates of this store were not loaded", transient=False)
        if due.subject:  # the variant's subject line (an A/B test of subjects)
            rendered = dataclasses.replace(rendered, subject=due.subject)
        message = build_email(due, rendered, policy, context["unsubscribe_link"], now)
        assert due.recipient is not None
        await mailer.send(message, policy.from_address, [due.recipient, *policy.bcc])
    else:
        assert policy.webhook_url is not None
        body = webhook_body(due, policy, notifier.secret, now)
        await webhooks.post(policy.webhook_url, body, {
            "Idempotency-Key": due.idempotency_key,
            "X-Cartwatch-Signature": webhook_signature(notifier.secret, body),
        }, policy.webhook_timeout)
    if EXIT_AFTER_SEND:
        log.warning("CARTWATCH_FAULT_EXIT_AFTER_SEND: exiting right after a delivery")
        os._exit(70)


async def handle_due(event: EventT) -> None:
    due = await decode(event, ReminderDue)
    if due is None:
        return
    policy = notifier.policy(due.store_id)
    key = recipient_key(due).decode()
    contact = Contact.from_dict(contacts.get(key))
    now = time.time()
    reason = screen(due, contact, read_delivery(deliveries.get(due.idempotency_key)), policy,
                    now)
    if reason is not None:
        await publish(operator_messages(log_entry(due, "skipped", now, reason=reason), policy))
        return

    async def on_failure(attempt: int, error: DeliveryError, retrying: bool) -> None:
        log.warning("reminder %s step %d attempt %d failed (%s): %s", due.abandonment_id,
                    due.step, attempt, "will retry" if retrying else "giving up", error)
        deliveries[due.idempotency_key] = delivery_record(
            "pending" if retrying else "failed", time.time())
        entry = log_entry(due, "failed", time.time(), error=str(error)[:500],
                          retrying=retrying, attempt=attempt)
        await publish(operator_messages(entry, policy))

    async def attempt() -> None:
        await attempt_delivery(due, policy)

    delivered, attempts = await deliver_with_retries(attempt, retry_policy, on_failure)
    if not delivered:
        return
    sent_at = time.time()
    entry = log_entry(due, "sent", sent_at, attempt=attempts,
                      message_id=message_id(due, policy) if due.channel == "email" else None)
    feedback = ReminderSent(abandonment_id=due.abandonment_id, cart_id=due.cart_id,
                            step=due.step, channel=due.channel, sent_at=utc_from_epoch(sent_at),
                            campaign=due.campaign, variant=due.variant)
    await publish([*operator_messages(entry, policy),
                   (reminders_sent_topic, due.cart_id.encode(), feedback)])
    deliveries[due.idempotency_key] = delivery_record("sent", sent_at)
    contacts[key] = record_sent(contact, due, sent_at).to_dict()


async def schedule(event: EventT) -> None:
    message = event.message
    if message.topic == REMINDER_TICKS and message.value:
        await handle_manual_reminder(event)
    elif message.topic == REMINDER_TICKS:
        timers.tick_seen(message.partition)
        await fire_due(message.partition, timers.fire_horizon(message.partition))
    else:
        await handle_scheduler_input(event)


async def send(event: EventT) -> None:
    if event.message.topic == UNSUBSCRIBES:
        await handle_unsubscribe(event)
    else:
        await handle_due(event)


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
            await until_kafka_answers(send, event)
        except asyncio.CancelledError:  # stopping mid-delivery: never committed, redelivered
            release = False
            raise
        except Exception as exc:  # a bug must cost one message, never the stream
            log.exception("notifier failed on %s", message.topic)
            await reject(event, f"processing failed: {type(exc).__name__}")
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
