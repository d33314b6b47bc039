"""The reminder scheduler's core: plain functions from (plan, input) to (new plan, messages).

A cart has at most one ``ReminderPlan``: the steps of its latest abandonment still to decide.
Nothing here reads the clock or Kafka; ``now`` is a parameter, so quiet hours, staleness and
cancellation are unit-tested directly.

    abandoned -> the first campaign whose segment matches (none: logged no_campaign), its
        variant (a hash: ``campaigns.assign_variant``; a holdout is logged and sends nothing),
        and the campaign's steps at abandoned_at + after
    a step falls due -> send (ReminderDue), defer (quiet hours, send window; logged), or
        skip (logged);
        due steps before the latest due one are skipped as superseded by it
    recovered / reactivated (if the store says so) -> remaining steps skipped (logged)
"""

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo

from config.campaigns import ReminderStep
from config.notifier import QuietHours, ReminderPolicy
from schemas.common import Contract, utc_from_epoch
from schemas.notifications import Channel, NotificationLogEntry, ReminderDue
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.notifier.campaigns import (
    campaign_variant,
    choose_campaign,
    step_content,
    window_opens,
)
from streams.stored import StoredFormat


@dataclass(slots=True)
class ReminderPlan:
    """The pending reminder steps of one cart's latest abandonment (a table value)."""

    cart_id: str
    store_id: str
    partition: int
    abandonment_id: str
    abandoned: dict[str, Any]
    """The ``CartAbandoned`` message (contract JSON): the cart to show in every step."""
    due: list[float]
    """Planned due time of every step (abandoned_at + after)."""
    next_step: int = 0
    """Index of the first step not decided yet."""
    scheduled_at: float | None = None
    """Deadline the index holds for this plan: the next step's due time or its deferral."""
    campaign: str | None = None
    """The campaign the abandonment entered, decided once when planned (None: a plan stored
    before campaigns existed, which follows the policy's ``steps``)."""
    variant: str | None = None
    """Its variant in the campaign's experiment, decided once when planned."""

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the current format version (``streams.stored``) and every field."""
        return PLAN_FORMAT.dump(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReminderPlan":
        """A plan stored by any release (raises ``streams.stored.UnreadableRecord``)."""
        return cls(*PLAN_FORMAT.values(data))


PLAN_FORMAT = StoredFormat.of_dataclass("reminder plan", ReminderPlan, version=2, migrations=[
    lambda v0: v0,  # 1 = the un-versioned dicts of earlier releases, plus "v"
    lambda v1: v1,  # 2 = 1 plus campaign and variant (missing: None, the policy's own steps)
])


@dataclass(slots=True)
class Decision:
    """A plan's new value (``None``: nothing left, forget it) and the messages to publish."""

    plan: ReminderPlan | None
    messages: list[Contract] = field(default_factory=list)
    changed: bool = True


def idempotency_key(abandonment_id: str, step: int, channel: Channel) -> str:
    """Stable per (abandonment, step, channel): delivery record and Message-ID derive from it."""
    return hashlib.sha256(f"{abandonment_id}\x00{step}\x00{channel}".encode()).hexdigest()[:32]


def plan_reminders(
    current: ReminderPlan | None, abandoned: CartAbandoned, policy: ReminderPolicy,
    partition: int, now: float,
) -> Decision:
    """A new abandonment: plan its steps; an older plan of the cart is superseded (logged)."""
    if current is not None and current.abandonment_id == abandoned.abandonment_id:
        return Decision(current, changed=False)  # a redelivery
    messages: list[Contract] = []
    if current is not None:
        messages = _skip_rest(current, "superseded", now)
    ids = (abandoned.abandonment_id, abandoned.cart_id, abandoned.store_id)
    if not policy.enabled:
        return Decision(None, messages + [_log(*ids, 1, None, "skipped", now,
                                               reason="disabled")])
    campaign = choose_campaign(policy.campaign_list(), abandoned)
    if campaign is None:
        return Decision(None, messages + [_log(*ids, 1, None, "skipped", now,
                                               reason="no_campaign")])
    variant = campaign_variant(campaign, abandoned.abandonment_id)
    steps = policy.campaign_steps(campaign)
    arm = campaign.variant(variant)
    if arm is not None and arm.holdout:
        return Decision(None, messages + [
            _log(*ids, number, None, "skipped", now, reason="holdout",
                 campaign=campaign.name, variant=variant)
            for number in range(1, len(steps) + 1)
        ])
    start = abandoned.abandoned_at.timestamp()
    plan = ReminderPlan(
        cart_id=abandoned.cart_id,
        store_id=abandoned.store_id,
        partition=partition,
        abandonment_id=abandoned.abandonment_id,
        abandoned=abandoned.model_dump(mode="json"),
        due=[start + step.after for step in steps],
        campaign=campaign.name,
        variant=variant,
    )
    plan.scheduled_at = plan.due[0]
    return Decision(plan, messages)


def cancel_reminders(
    current: ReminderPlan | None, event: CartRecovered | CartReactivated,
    policy: ReminderPolicy, now: float,
) -> Decision:
    """A purchase (always) or new activity (if ``cancel_on_reactivation``) ends the plan."""
    if current is None or current.abandonment_id != event.abandonment_id:
        return Decision(current, changed=False)
    if isinstance(event, CartReactivated) and not policy.cancel_on_reactivation:
        return Decision(current, changed=False)
    reason = "cart_recovered" if isinstance(event, CartRecovered) else "cart_reactivated"
    return Decision(None, _skip_rest(current, reason, now))


def is_channel(value: str) -> TypeGuard[Channel]:
    """Is ``choose_channel``'s answer a channel (rather than the reason there is none)?"""
    return value in ("email", "webhook")


def choose_channel(customer: dict[str, Any] | None, policy: ReminderPolicy) -> Channel | str:
    """The channel for a customer, or the reason there is none (no_contact, no_consent)."""
    customer = customer or {}
    if customer.get("email"):
        if customer.get("marketing_consent") is True or not policy.require_marketing_consent:
            return "email"
        reason = "no_consent"
    else:
        reason = "no_contact"
    if policy.webhook_url is not None and policy.webhook_fallback:
        return "webhook"
    return reason


def quiet_until(moment: float, zone: ZoneInfo, quiet: QuietHours) -> float | None:
    """When the quiet hours around ``moment`` end (epoch seconds), or None if not inside them."""
    local = datetime.fromtimestamp(moment, zone)
    now_time = local.time().replace(tzinfo=None)
    start, end = quiet.start, quiet.end
    if start < end:
        inside = start <= now_time < end
        end_day = local.date()
    else:  # spans midnight
        inside = now_time >= start or now_time < end
        end_day = local.date() + timedelta(days=1) if now_time >= start else local.date()
    if not inside:
        return None
    # Wall time in the zone, resolved by zoneinfo (a DST gap moves it forward, never back).
    resume = datetime.combine(end_day, end, zone)
    return max(resume.timestamp(), moment)


def step_channel(step: ReminderStep, customer: dict[str, Any] | None, policy: ReminderPolicy
                 ) -> Channel | str:
    """The step's channel for this customer, or why it cannot reach them: an email step
    follows ``choose_channel`` (webhook fallback included); a webhook step needs the store's
    ``webhook_url`` (checked at start-up, but a store's settings may change under a plan)."""
    if step.channel == "webhook":
        return "webhook" if policy.webhook_url is not None else "no_webhook"
    return choose_channel(customer, policy)


def customer_zone(customer: dict[str, Any] | None, policy: ReminderPolicy) -> ZoneInfo:
    return ZoneInfo((customer or {}).get("timezone") or policy.timezone)


def latest_due_step(plan: ReminderPlan, now: float) -> int:
    """Index of the last step due at ``now``, from the next one on (the next one at least)."""
    latest = plan.next_step
    while latest + 1 < len(plan.due) and plan.due[latest + 1] <= now:
        latest += 1
    return latest


def supersede_overdue(plan: ReminderPlan, now: float) -> list[Contract]:
    """Skip (``superseded``) every due step before the latest due one, which is decided
    instead: after a stopped worker, a backlog or a long deferral a shopper gets the step
    meant for now, never the first reminder and the "last chance" in the same second.

    The latest step keeps the time it is overdue from: a deferral past it (quiet hours) if
    there was one, else its own due time, which the staleness rule then judges."""
    latest = latest_due_step(plan, now)
    if latest == plan.next_step:
        return []
    skipped: list[Contract] = [
        _plan_log(plan, index + 1, None, "skipped", now, reason="superseded")
        for index in range(plan.next_step, latest)
    ]
    deferred = plan.scheduled_at if plan.scheduled_at is not None else -math.inf
    plan.next_step = latest
    plan.scheduled_at = max(deferred, plan.due[latest])
    return skipped


def decide_due_step(plan: ReminderPlan, policy: ReminderPolicy, now: float) -> Decision:
    """The plan's next step fell due: emit it, defer it past quiet hours, or skip it (the
    steps due before the latest due one are superseded by it, ``supersede_overdue``)."""
    superseded = supersede_overdue(plan, now)
    decision = _decide_step(plan, policy, now)
    decision.messages[:0] = superseded
    return decision


def _decide_step(plan: ReminderPlan, policy: ReminderPolicy, now: float) -> Decision:
    step = plan.next_step + 1
    due_at = plan.due[plan.next_step]
    customer = plan.abandoned["cart"].get("customer")
    target = plan.scheduled_at if plan.scheduled_at is not None else due_at
    campaign = policy.campaign(plan.campaign)
    if campaign is None:  # the campaign left the configuration since the plan was made
        return Decision(None, _skip_rest(plan, "no_campaign", now))
    if now - target > policy.stale_after:
        return _advance(plan, [_plan_log(plan, step, None, "skipped", now, reason="stale")])
    steps = policy.campaign_steps(campaign)
    step_policy = steps[min(plan.next_step, len(steps) - 1)]
    channel = step_channel(step_policy, customer, policy)
    if not is_channel(channel):
        return _advance(plan, [_plan_log(plan, step, None, "skipped", now, reason=channel)])
    zone = customer_zone(customer, policy)
    if policy.quiet_hours is not None:
        resume = quiet_until(now, zone, policy.quiet_hours)
        if resume is not None:
            return _defer(plan, step, channel, now, "quiet_hours", resume)
    if campaign.send_window is not None:
        opens = window_opens(now, zone, campaign.send_window)
        if opens is not None:
            return _defer(plan, step, channel, now, "send_window", opens)
    content = step_content(step_policy, step, campaign, plan.variant, policy.discount_code)
    abandoned = CartAbandoned.model_validate(plan.abandoned)
    due = ReminderDue(
        idempotency_key=idempotency_key(plan.abandonment_id, step, channel),
        abandonment_id=plan.abandonment_id,
        cart_id=plan.cart_id,
        store_id=plan.store_id,
        step=step,
        steps=len(plan.due),
        template=content.template,
        channel=channel,
        recipient=(customer or {}).get("email"),
        cart=abandoned.cart,
        abandoned_at=abandoned.abandoned_at,
        due_at=utc_from_epoch(due_at),
        decided_at=utc_from_epoch(now),
        campaign=plan.campaign,
        variant=plan.variant,
        subject=content.subject,
        discount_code=content.discount_code,
    )
    return _advance(plan, [due])


def _defer(plan: ReminderPlan, step: int, channel: Channel, now: float, reason: str,
           until: float) -> Decision:
    """Wait until ``until`` (quiet hours end, a send window opens): logged, never dropped."""
    plan.scheduled_at = until
    return Decision(plan, [_plan_log(plan, step, channel, "deferred", now, reason=reason,
                                     deferred_until=until)])


def remind_now(plan: ReminderPlan | None, abandonment_id: str, policy: ReminderPolicy,
               now: float) -> Decision:
    """An operator asked for the abandonment's next reminder now (same consent, quiet hours and
    cap as a scheduled one); the steps after it keep their times. Nothing pending: no change."""
    if plan is None or plan.abandonment_id != abandonment_id:
        return Decision(plan, changed=False)
    return decide_due_step(plan, policy, now)


def _advance(plan: ReminderPlan, messages: list[Contract]) -> Decision:
    plan.next_step += 1
    if plan.next_step >= len(plan.due):
        return Decision(None, messages)
    plan.scheduled_at = plan.due[plan.next_step]
    return Decision(plan, messages)


def _skip_rest(plan: ReminderPlan, reason: str, now: float) -> list[Contract]:
    return [_plan_log(plan, step, None, "skipped", now, reason=reason)
            for step in range(plan.next_step + 1, len(plan.due) + 1)]


def _plan_log(plan: ReminderPlan, step: int, channel: Channel | None, status: str, now: float,
              **extra: Any) -> NotificationLogEntry:
    return _log(plan.abandonment_id, plan.cart_id, plan.store_id, step, channel, status, now,
                campaign=plan.campaign, variant=plan.variant, **extra)


def _log(abandonment_id: str, cart_id: str, store_id: str, step: int, channel: Channel | None,
         status: str, now: float, **extra: Any) -> NotificationLogEntry:
    if "deferred_until" in extra:
        extra["deferred_until"] = utc_from_epoch(extra["deferred_until"])
    return NotificationLogEntry(
        abandonment_id=abandonment_id, cart_id=cart_id, store_id=store_id, step=step,
        channel=channel, status=status, at=utc_from_epoch(now), **extra,
    )
