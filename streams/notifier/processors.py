"""The notifier's two processors, built from the collaborators they are given.

``ReminderScheduler`` (partitioned by cart) keeps each cart's ``ReminderPlan`` and emits the due
steps; ``ReminderSender`` (partitioned by address) screens each due step and delivers it. Neither
imports the Faust app: ``streams.notifier.worker`` hands them its tables, topics, timers, mailer
and clock and registers them as agents, and the unit tests hand them fakes that record the order
of every side effect (``tests/unit/test_notifier_shell.py``). That order is what exactly-once
delivery rests on:

- scheduler: every message of a decision acknowledged by the broker *before* any plan is
  written (a crash in between re-decides the plan, it never loses a step); a decision that
  failed to publish leaves its carts' deadlines in the index, to be decided again;
- sender: the step's delivery record durably ``sending`` *before* the attempt (a redelivered
  step finds it and is skipped), and the log entry and the feedback published *before* the
  record says ``sent``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from faust.types import TP
from jinja2 import Environment
from pydantic import BaseModel, ValidationError

from config.notifier import NotifierSettings, ReminderPolicy
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
from streams.intake import RefusedMessage, Rejected, refuse
from streams.notifier.channels import DeliveryError, RetryPolicy, deliver_with_retries
from streams.notifier.planning import (
    Decision,
    ReminderPlan,
    cancel_reminders,
    decide_due_step,
    plan_reminders,
    remind_now,
)
from streams.notifier.rendering import render
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
from streams.scheduling import PartitionTimers
from streams.stored import json_entries, readable

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Outgoing = tuple[Any, bytes, BaseModel]
"""(topic, key, message): the topic is whatever ``Publish`` knows how to send to."""
Publish = Callable[[list[Outgoing]], Awaitable[None]]
"""Sends messages and returns once the broker acknowledged them all."""
WriteEntry = Callable[[Any, str, Any], Awaitable[Awaitable[object]]]
"""``write(table, key, value)``: writes a table entry (``None`` deletes it) and queues its
changelog record; returns an awaitable that completes once the broker acknowledged it."""
SchedulerInput = CartAbandoned | CartRecovered | CartReactivated

FIRE_BATCH = 500
EXIT_AFTER_SEND = os.environ.get("CARTWATCH_FAULT_EXIT_AFTER_SEND") == "1"
"""Test-only fault injection: exit with ``os._exit(70)`` right after a successful delivery,
before anything is recorded or committed."""


class Message(RefusedMessage, Protocol):
    """What the processors read of a Faust message."""

    tp: TP


class Event(Protocol):
    """What the processors read of a Faust event: its message."""

    @property
    def message(self) -> Message: ...


class Mailer(Protocol):
    async def send(self, message: bytes, sender: str, recipients: Sequence[str]) -> None: ...


class Poster(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout: float) -> None: ...


@dataclass(frozen=True)
class Destinations:
    """Where the notifier's messages go (Faust topics in the worker, names in the tests)."""

    reminders_due: Any
    notification_log: Any
    operator_notifications: Any
    reminders_sent: Any
    dead_letter: Any


@dataclass
class Outputs:
    """Publishing, dead-lettering and the log entries both processors write."""

    publish: Publish
    to: Destinations
    policy: Callable[[str], ReminderPolicy]
    counters: MutableMapping[str, int]
    clock: Callable[[], float]

    async def reject(self, event: Event, error: str) -> None:
        """Log and dead-letter a message the notifier cannot read; the stream goes on."""
        message = event.message
        letter = refuse(message, Rejected("invalid", error[:1000]), self.clock(), self.counters)
        await self.publish([(self.to.dead_letter, message.key or b"", letter)])

    async def decode(self, event: Event, model: type[M]) -> M | None:
        """The message as ``model``, or None after dead-lettering it."""
        try:
            return model.model_validate_json(event.message.value or b"")
        except ValidationError as exc:
            await self.reject(event, f"not a valid {model.__name__}: {exc}")
            return None

    def log_messages(self, entry: NotificationLogEntry, policy: ReminderPolicy
                     ) -> list[Outgoing]:
        """The log entry, plus an operator notification if the store subscribed to its
        status."""
        messages: list[Outgoing] = [(self.to.notification_log, entry.cart_id.encode(), entry)]
        self.counters[f"log:{entry.status}"] += 1
        if entry.status in policy.operator_events:
            notification = OperatorNotification(
                store_id=entry.store_id, event=entry.status,
                abandonment_id=entry.abandonment_id, step=entry.step, channel=entry.channel,
                detail=entry.error or entry.reason, at=entry.at,
            )
            messages.append((self.to.operator_notifications, entry.store_id.encode(),
                             notification))
        return messages


class ReminderScheduler:
    """Plans reminder steps per abandonment, cancels them, and emits the due ones.

    ``plans`` is the cart-keyed table of plans (stored dicts), written with ``write``
    (``WriteEntry``); ``timers`` the deadline index and event-time clock of ``input_topics``
    (``streams.scheduling``); ``tick_topic`` names the topic whose empty messages ask for due
    steps and whose other messages are manual reminders.
    """

    def __init__(self, *, plans: Mapping[str, Any], write: WriteEntry,
                 timers: PartitionTimers, outputs: Outputs,
                 inputs: Mapping[str, type[SchedulerInput]], tick_topic: str) -> None:
        self.plans = plans
        self.write = write
        self.timers = timers
        self.outputs = outputs
        self.inputs = inputs
        self.tick_topic = tick_topic

    def load_plan(self, cart_id: str) -> ReminderPlan | None:
        stored = self.plans.get(cart_id)
        return None if stored is None else ReminderPlan.from_dict(stored)

    async def forget_plan(self, cart_id: str) -> None:
        """Delete a cart's plan, if it has one."""
        if cart_id in self.plans:
            await self.write(self.plans, cart_id, None)

    async def commit(self, cart_id: str, decision: Decision,
                     scheduled_before: float | None) -> None:
        """Publish the decision's messages, then write the plan (at-least-once)."""
        await self.commit_all([(cart_id, decision, scheduled_before)])

    async def commit_all(self, decisions: Sequence[tuple[str, Decision, float | None]]) -> None:
        """``commit`` for several carts: every message is acknowledged before any plan is
        written, so the broker's round trip is paid once for all of them."""
        outputs = self.outputs
        changed = [(cart_id, d, before) for cart_id, d, before in decisions if d.changed]
        messages: list[Outgoing] = []
        for _, decision, _ in changed:
            for message in decision.messages:
                if isinstance(message, ReminderDue):
                    messages.append((outputs.to.reminders_due, recipient_key(message), message))
                    outputs.counters["due"] += 1
                else:
                    assert isinstance(message, NotificationLogEntry)
                    messages.extend(outputs.log_messages(
                        message, outputs.policy(message.store_id)))
        await outputs.publish(messages)
        for cart_id, decision, scheduled_before in changed:
            plan = decision.plan
            if plan is None:
                await self.forget_plan(cart_id)
                continue
            if plan.scheduled_at is not None and plan.scheduled_at != scheduled_before:
                self.timers.deadlines.schedule(plan.partition, plan.scheduled_at, cart_id)
            await self.write(self.plans, cart_id, plan.to_dict())

    async def fire_due(self, partition: int, horizon: float) -> None:
        """Decide every plan of the partition whose next step is due at ``horizon``,
        committing them ``FIRE_BATCH`` at a time."""
        timers = self.timers
        while due := timers.deadlines.pop_due(partition, horizon, FIRE_BATCH):
            decisions: list[tuple[str, Decision, float]] = []
            for deadline, cart_id in dict.fromkeys(due):
                plan = self.load_plan(cart_id)
                if plan is None or plan.scheduled_at != deadline:
                    continue  # stale entry: the plan ended or moved
                try:
                    decision = decide_due_step(plan, self.outputs.policy(plan.store_id),
                                               self.outputs.clock())
                except Exception:  # a bug must cost one plan, never the stream
                    log.exception("deciding reminder of %s failed; plan dropped", cart_id)
                    await self.forget_plan(cart_id)
                    continue
                decisions.append((cart_id, decision, deadline))
            try:
                await self.commit_all(decisions)
            except BaseException:  # nothing was written: the retry must find them due again
                for cart_id, _, deadline in decisions:
                    timers.deadlines.schedule(partition, deadline, cart_id)
                raise

    async def handle_input(self, event: Event) -> None:
        """An abandonment plans the cart's steps; a recovery or reactivation cancels them."""
        message = event.message
        timers = self.timers
        now = self.outputs.clock()
        parsed = await self.outputs.decode(event, self.inputs[message.topic])
        if parsed is None:
            timers.processed(message.tp, message.offset)
            return
        event_time = (parsed.abandoned_at if isinstance(parsed, CartAbandoned)
                      else parsed.recovered_at if isinstance(parsed, CartRecovered)
                      else parsed.reactivated_at)
        timers.observe(message.tp, message.offset, event_time.timestamp(), now)
        await self.fire_due(message.partition, timers.safe_time(message.partition))
        current = self.load_plan(parsed.cart_id)
        policy = self.outputs.policy(parsed.store_id)
        if isinstance(parsed, CartAbandoned):
            decision = plan_reminders(current, parsed, policy, message.partition, now)
        else:
            decision = cancel_reminders(current, parsed, policy, now)
        await self.commit(parsed.cart_id, decision, current.scheduled_at if current else None)
        timers.processed(message.tp, message.offset)
        await self.fire_due(message.partition, timers.safe_time(message.partition))

    async def handle_manual_reminder(self, event: Event) -> None:
        request = await self.outputs.decode(event, ManualReminder)
        if request is None:
            return
        current = self.load_plan(request.cart_id)
        decision = remind_now(current, request.abandonment_id,
                              self.outputs.policy(request.store_id), self.outputs.clock())
        log.info("manual reminder for %s: %s", request.abandonment_id,
                 "decided" if decision.changed else "nothing pending")
        await self.commit(request.cart_id, decision,
                          current.scheduled_at if current else None)

    async def handle(self, event: Event) -> None:
        """One message of the scheduler's topics."""
        message = event.message
        if message.topic == self.tick_topic and message.value:
            await self.handle_manual_reminder(event)
        elif message.topic == self.tick_topic:
            self.timers.tick_seen(message.partition)
            await self.fire_due(message.partition, self.timers.fire_horizon(message.partition))
        else:
            await self.handle_input(event)

    async def failed(self, event: Event, exc: Exception) -> None:
        """``handle`` raised (a bug): the message is dead-lettered and counted as read."""
        message = event.message
        await self.outputs.reject(event, f"processing failed: {type(exc).__name__}")
        if message.topic in self.inputs:
            self.timers.processed(message.tp, message.offset)

    def rebuild_index(self, stored: Any) -> None:
        """After a rebalance, rebuild the deadline index of the owned partitions from the
        plans' stored items (``(key, value)`` pairs, undecoded)."""
        owned = set(self.timers.owned_partitions())
        plans = readable(json_entries(stored, "reminder plan"), ReminderPlan.from_dict,
                         "reminder plan")
        self.timers.rebuild(owned, ((cart_id, plan.partition, plan.scheduled_at)
                                    for cart_id, plan in plans))
        log.info("reminder index rebuilt: %d plans on partitions %s",
                 len(self.timers.deadlines), sorted(owned))


class ReminderSender:
    """Screens and delivers due reminders; keeps unsubscribes, caps and delivery records.

    ``contacts`` (by address) and ``deliveries`` (by idempotency key) are tables of stored
    dicts, read directly and written with ``write(table, key, value)``: it makes the write and
    queues its changelog record, and returns an awaitable that completes once the broker
    acknowledged that record (the write a crash right after must not lose is awaited twice).
    """

    def __init__(self, *, contacts: Mapping[str, Any], deliveries: Mapping[str, Any],
                 outputs: Outputs, write: WriteEntry, mailer: Mailer, webhooks: Poster,
                 environments: Mapping[Any, Environment],
                 settings: NotifierSettings, retry_policy: RetryPolicy,
                 unsubscribe_topic: str) -> None:
        self.contacts = contacts
        self.deliveries = deliveries
        self.outputs = outputs
        self.write = write
        self.mailer = mailer
        self.webhooks = webhooks
        self.environments = environments
        self.settings = settings
        self.retry_policy = retry_policy
        self.unsubscribe_topic = unsubscribe_topic

    async def handle(self, event: Event) -> None:
        """One message of the sender's topics."""
        if event.message.topic == self.unsubscribe_topic:
            await self.handle_unsubscribe(event)
        else:
            await self.handle_due(event)

    async def handle_unsubscribe(self, event: Event) -> None:
        message = event.message
        unsubscribe = await self.outputs.decode(event, Unsubscribe)
        if unsubscribe is None:
            return
        key = unsubscribe_key(unsubscribe.email)
        if message.key != key:
            await self.outputs.reject(event, "message key must be the normalized email "
                                             "(schemas.notifications.unsubscribe_key)")
            return
        contact = apply_unsubscribe(Contact.from_dict(self.contacts.get(key.decode())),
                                    unsubscribe)
        await self.write(self.contacts, key.decode(), contact.to_dict())
        self.outputs.counters["unsubscribed"] += 1

    def log_entry(self, due: ReminderDue, status: str, now: float,
                  **extra: Any) -> NotificationLogEntry:
        return NotificationLogEntry(
            abandonment_id=due.abandonment_id, cart_id=due.cart_id, store_id=due.store_id,
            step=due.step, channel=due.channel, status=status,
            idempotency_key=due.idempotency_key, at=utc_from_epoch(now),
            campaign=due.campaign, variant=due.variant, **extra,
        )

    async def attempt_delivery(self, due: ReminderDue, policy: ReminderPolicy) -> None:
        """One delivery attempt, after its record is durably marked ``sending``."""
        now = self.outputs.clock()
        secret = self.settings.secret
        await (await self.write(self.deliveries, due.idempotency_key,
                                delivery_record("sending", now)))
        if due.channel == "email":
            env = self.environments.get(policy.templates_dir)
            context = reminder_context(due, policy, secret, now)
            try:
                rendered = render(env, due.template, context) if env else None
            except Exception as exc:  # a template that passed the start-up check fails here
                raise DeliveryError(f"rendering failed: {type(exc).__name__}: {exc}"[:500],
                                    transient=False) from None
            if rendered is None:
                raise DeliveryError("templates of this store were not loaded", transient=False)
            if due.subject:  # the variant's subject line (an A/B test of subjects)
                rendered = dataclasses.replace(rendered, subject=due.subject)
            message = build_email(due, rendered, policy, context["unsubscribe_link"], now)
            assert due.recipient is not None
            await self.mailer.send(message, policy.from_address, [due.recipient, *policy.bcc])
        else:
            assert policy.webhook_url is not None
            body = webhook_body(due, policy, secret, now)
            await self.webhooks.post(policy.webhook_url, body, {
                "Idempotency-Key": due.idempotency_key,
                "X-Cartwatch-Signature": webhook_signature(secret, body),
            }, policy.webhook_timeout)
        if EXIT_AFTER_SEND:
            log.warning("CARTWATCH_FAULT_EXIT_AFTER_SEND: exiting right after a delivery")
            os._exit(70)

    async def handle_due(self, event: Event) -> None:
        outputs = self.outputs
        due = await outputs.decode(event, ReminderDue)
        if due is None:
            return
        policy = outputs.policy(due.store_id)
        key = recipient_key(due).decode()
        contact = Contact.from_dict(self.contacts.get(key))
        now = outputs.clock()
        reason = screen(due, contact, read_delivery(self.deliveries.get(due.idempotency_key)),
                        policy, now)
        if reason is not None:
            await outputs.publish(outputs.log_messages(
                self.log_entry(due, "skipped", now, reason=reason), policy))
            return

        async def on_failure(attempt: int, error: DeliveryError, retrying: bool) -> None:
            log.warning("reminder %s step %d attempt %d failed (%s): %s", due.abandonment_id,
                        due.step, attempt, "will retry" if retrying else "giving up", error)
            await self.write(self.deliveries, due.idempotency_key, delivery_record(
                "pending" if retrying else "failed", outputs.clock()))
            entry = self.log_entry(due, "failed", outputs.clock(), error=str(error)[:500],
                                   retrying=retrying, attempt=attempt)
            await outputs.publish(outputs.log_messages(entry, policy))

        async def attempt() -> None:
            await self.attempt_delivery(due, policy)

        delivered, attempts = await deliver_with_retries(attempt, self.retry_policy, on_failure)
        if not delivered:
            return
        sent_at = outputs.clock()
        entry = self.log_entry(due, "sent", sent_at, attempt=attempts,
                               message_id=message_id(due, policy)
                               if due.channel == "email" else None)
        feedback = ReminderSent(abandonment_id=due.abandonment_id, cart_id=due.cart_id,
                                step=due.step, channel=due.channel,
                                sent_at=utc_from_epoch(sent_at), campaign=due.campaign,
                                variant=due.variant)
        await outputs.publish([*outputs.log_messages(entry, policy),
                               (outputs.to.reminders_sent, due.cart_id.encode(), feedback)])
        await self.write(self.deliveries, due.idempotency_key, delivery_record("sent", sent_at))
        await self.write(self.contacts, key, record_sent(contact, due, sent_at).to_dict())
