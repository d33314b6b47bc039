"""Campaign decisions (pure): which campaign an abandonment enters, which variant it gets, when
a send window opens, what a step of a variant says, and whether an address had enough.

Everything here is a function of its arguments: no clock, no randomness, no Kafka. The variant
in particular is a hash of names, so every worker, restart and replay assigns the same one.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from config.campaigns import WEEKDAYS, Campaign, ReentryLimit, ReminderStep, Segment, SendWindow
from schemas.outputs import CartAbandoned

HASH_SPACE = 2**64


def segment_matches(segment: Segment, abandoned: CartAbandoned) -> bool:
    """Do all of the segment's conditions hold for this abandonment (AND)?"""
    cart = abandoned.cart
    customer = cart.customer
    total = Decimal(cart.total)
    if segment.total_min is not None and total < segment.total_min:
        return False
    if segment.total_max is not None and total > segment.total_max:
        return False
    if segment.items_min is not None and cart.item_count < segment.items_min:
        return False
    if segment.items_max is not None and cart.item_count > segment.items_max:
        return False
    skus = [line.sku.lower() for line in cart.lines]
    names = [(line.name or "").lower() for line in cart.lines]
    if segment.sku_contains and not _any_contains(skus, segment.sku_contains):
        return False
    if segment.sku_excludes and _any_contains(skus, segment.sku_excludes):
        return False
    if segment.name_contains and not _any_contains(names, segment.name_contains):
        return False
    if segment.name_excludes and _any_contains(names, segment.name_excludes):
        return False
    if segment.stores and abandoned.store_id not in segment.stores:
        return False
    if segment.currencies and (cart.currency or "").upper() not in {
        c.upper() for c in segment.currencies
    }:
        return False
    locale = (customer.locale if customer else None) or ""
    if segment.locale_prefixes and not _starts(locale, segment.locale_prefixes):
        return False
    zone = (customer.timezone if customer else None) or ""
    if segment.timezone_prefixes and not _starts(zone, segment.timezone_prefixes):
        return False
    known = customer is not None and customer.id is not None
    if segment.customer == "known" and not known or segment.customer == "guest" and known:
        return False
    if segment.marketing_consent is not None:
        consented = customer is not None and customer.marketing_consent is True
        if consented != segment.marketing_consent:
            return False
    return True


def _any_contains(values: Sequence[str], needles: Sequence[str]) -> bool:
    return any(needle.lower() in value for value in values for needle in needles)


def _starts(value: str, prefixes: Sequence[str]) -> bool:
    return any(value.lower().startswith(prefix.lower()) for prefix in prefixes)


def choose_campaign(campaigns: Sequence[Campaign], abandoned: CartAbandoned) -> Campaign | None:
    """The first campaign, in configuration order, whose segment matches (None: no campaign)."""
    return next((c for c in campaigns if segment_matches(c.segment, abandoned)), None)


def assignment_point(abandonment_id: str, campaign: str, experiment: str, total: int) -> int:
    """``floor(u * total)`` for ``u`` = the first 8 bytes of
    ``sha256(abandonment_id NUL campaign NUL experiment)`` as a big-endian integer over 2**64:
    uniform over ``[0, total)``, exact (integer arithmetic), the same in every process."""
    digest = hashlib.sha256(f"{abandonment_id}\x00{campaign}\x00{experiment}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * total // HASH_SPACE


def assign_variant(abandonment_id: str, campaign: str, experiment: str,
                   weights: Sequence[tuple[str, int]]) -> str:
    """The variant of an abandonment: the first whose cumulative weight exceeds its point.

    A pure function of the ids and the weights (``hashlib``, never Python's salted ``hash``),
    so restarts, replays and other workers all agree; weights need not sum to anything."""
    total = sum(weight for _, weight in weights)
    if total <= 0:
        raise ValueError("variant weights must not all be 0")
    point = assignment_point(abandonment_id, campaign, experiment, total)
    cumulative = 0
    for name, weight in weights:
        cumulative += weight
        if point < cumulative:
            return name
    raise AssertionError("unreachable: point < total")  # pragma: no cover


def campaign_variant(campaign: Campaign, abandonment_id: str) -> str:
    """``assign_variant`` with the campaign's arms and experiment name."""
    return assign_variant(abandonment_id, campaign.name, campaign.experiment or campaign.name,
                          [(arm.name, arm.weight) for arm in campaign.arms()])


@dataclass(frozen=True, slots=True)
class StepContent:
    """What one step of one variant sends: template, subject override, discount code."""

    template: str
    subject: str | None
    discount_code: str | None


def step_content(step: ReminderStep, number: int, campaign: Campaign, variant: str | None,
                 discount_code: str | None) -> StepContent:
    """The step as the variant sends it: the variant's per-step override, else the variant's
    own, else the step's template and the policy's ``discount_code``."""
    arm = campaign.variant(variant)
    template, subject = step.template, None
    if arm is not None:
        layers = [arm, arm.steps.get(number)]
        for layer in layers:
            if layer is None:
                continue
            template = layer.template or template
            subject = layer.subject or subject
            discount_code = layer.discount_code or discount_code
    return StepContent(template, subject, discount_code)


WINDOW_SEARCH_DAYS = 9
"""A window opens on some weekday within a week; two more days cover DST and day edges."""


def window_opens(moment: float, zone: ZoneInfo, window: SendWindow) -> float | None:
    """When the send window next opens after ``moment`` (epoch seconds), or None if open now.

    Openings and closings are wall times of the zone turned into instants by zoneinfo (a time in
    a DST gap moves forward, never back), and ``moment`` is compared with those instants, so the
    answer is inside a window even on the days the clocks change."""
    day = datetime.fromtimestamp(moment, zone).date() - timedelta(days=1)
    for _ in range(WINDOW_SEARCH_DAYS):
        if WEEKDAYS[day.weekday()] in window.days:
            opens = datetime.combine(day, window.start, zone).timestamp()
            end_day = day + timedelta(days=1) if window.end.hour == window.end.minute == 0 \
                and window.end.second == 0 and window.end.microsecond == 0 else day
            closes = datetime.combine(end_day, window.end, zone).timestamp()
            if opens <= moment < closes:
                return None
            if moment < opens and opens < closes:
                return opens
        day += timedelta(days=1)
    raise AssertionError("a send window with a day opens within a week")  # pragma: no cover


def reentry_exceeded(sent_times: Sequence[float], limit: ReentryLimit, now: float) -> bool:
    """Has the address had ``limit.count`` reminders in the ``limit.period`` before ``now``?"""
    recent = sum(1 for at in sent_times if now - limit.period < at <= now)
    return recent >= limit.count
