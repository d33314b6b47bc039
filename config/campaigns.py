"""Reminder campaigns of a store: segment, steps, variants (A/B/n with holdout), limits.

A store's policy (``config.notifier.ReminderPolicy``) holds an ordered list of campaigns; an
abandonment enters the first one whose segment matches. A policy without campaigns has one
implicit campaign, ``default``, made of its own ``steps`` (``default_campaign``), so every
configuration written before campaigns keeps its behaviour.

Every model forbids unknown fields, and the policy validates each campaign on its own so a
mistake names the campaign and the field (``campaign 'big-carts': segment.colour: Extra inputs
are not permitted``) and stops the worker at start-up.
"""

from datetime import time
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.durations import Duration

TemplateName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
CampaignName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""In ``date.weekday()`` order."""
DEFAULT_CAMPAIGN = "default"
DEFAULT_VARIANT = "control"
MAX_REENTRY_PERIOD = 90 * 86_400.0
MAX_REENTRY_COUNT = 50
"""Bounds of a re-entry limit: a contact keeps at most this many send times, this long."""


class ReminderStep(BaseModel):
    """One reminder of a sequence: how long after the abandonment, which template, which channel.

    ``channel = "email"`` (the default) emails the customer and, when they cannot be emailed,
    uses the store's webhook if ``webhook_fallback`` allows; ``"webhook"`` always posts to the
    store's ``webhook_url`` (an SMS gateway, a CRM).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: Duration
    template: TemplateName = "reminder"
    channel: Literal["email", "webhook"] = "email"


class Segment(BaseModel):
    """Which abandonments a campaign takes: every condition set must hold (AND).

    Amounts are in the cart's own currency (no conversion): combine ``total_min`` with
    ``currencies`` when a store sells in several. Text conditions are case-insensitive
    substrings; ``*_contains`` needs one line matching one of the strings, ``*_excludes``
    refuses a cart with any line matching any of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    total_min: Decimal | None = Field(None, ge=0)
    total_max: Decimal | None = Field(None, ge=0)
    items_min: int | None = Field(None, ge=0)
    items_max: int | None = Field(None, ge=0)
    sku_contains: list[str] = []
    sku_excludes: list[str] = []
    name_contains: list[str] = []
    name_excludes: list[str] = []
    stores: list[str] = []
    currencies: list[str] = []
    locale_prefixes: list[str] = []
    timezone_prefixes: list[str] = []
    customer: Literal["any", "known", "guest"] = "any"
    """``known``: the cart has a customer id; ``guest``: it has none."""
    marketing_consent: bool | None = None
    """``true``: only customers who consented; ``false``: only those who did not (or unknown)."""

    @model_validator(mode="after")
    def _possible(self) -> Self:
        for low, high in (("total_min", "total_max"), ("items_min", "items_max")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is above {high} ({hi}): nothing can match")
        for name in ("sku_contains", "sku_excludes", "name_contains", "name_excludes",
                     "stores", "currencies", "locale_prefixes", "timezone_prefixes"):
            if any(not value.strip() for value in getattr(self, name)):
                raise ValueError(f"{name} must not contain an empty string (it matches all)")
        return self


class StepOverride(BaseModel):
    """What a variant changes in one step (unset: the step's or the variant's own)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: TemplateName | None = None
    subject: str | None = Field(None, min_length=1, max_length=200)
    discount_code: str | None = Field(None, max_length=100)


class Variant(StepOverride):
    """One arm of a campaign's experiment: its weight, and what it changes in every step
    (``steps`` overrides single steps, keyed by step number from 1). A ``holdout`` arm sends
    nothing: its abandonments are logged ``skipped`` / ``holdout``, the baseline of uplift."""

    name: CampaignName
    weight: int = Field(1, ge=0, le=1_000_000)
    holdout: bool = False
    steps: dict[int, StepOverride] = {}


class SendWindow(BaseModel):
    """When a campaign may send, in the customer's local time (else the store's ``timezone``):
    on ``days``, from ``start`` to ``end`` (``end = "00:00"`` is midnight, the end of the day).
    A step due outside waits for the next opening (logged ``deferred`` / ``send_window``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: time = time(0)
    end: time = time(0)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.end != time(0) and self.end <= self.start:
            raise ValueError("send_window end must be after start (or 00:00, midnight)")
        if len(set(self.days)) != len(self.days):
            raise ValueError("send_window days must not repeat")
        return self


class ReentryLimit(BaseModel):
    """At most ``count`` reminders per address in any ``period``, across carts and campaigns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=MAX_REENTRY_COUNT)
    period: Duration = Field(gt=0, le=MAX_REENTRY_PERIOD)


class Campaign(BaseModel):
    """A segment, its steps (default: the policy's ``steps``), its variants and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CampaignName
    experiment: CampaignName | None = None
    """Name of the experiment the variants belong to (default: the campaign's name); renaming
    it reshuffles the assignment, as starting a new experiment should."""
    segment: Segment = Segment()
    steps: list[ReminderStep] | None = Field(None, min_length=1, max_length=10)
    variants: list[Variant] = Field(default_factory=list, max_length=20)
    send_window: SendWindow | None = None
    reentry_limit: ReentryLimit | None = None
    """Overrides the policy's ``reentry_limit`` for reminders of this campaign."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.steps is not None:
            afters = [step.after for step in self.steps]
            if afters != sorted(set(afters)):
                raise ValueError("steps must have strictly increasing 'after' delays")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.variants and sum(variant.weight for variant in self.variants) == 0:
            raise ValueError("variant weights must not all be 0")
        return self

    def arms(self) -> list[Variant]:
        """The variants, or the one implicit ``control`` arm of a campaign without any."""
        return self.variants or [Variant(name=DEFAULT_VARIANT)]

    def variant(self, name: str | None) -> Variant | None:
        return next((arm for arm in self.arms() if arm.name == name), None)


def default_campaign(steps: list[ReminderStep]) -> Campaign:
    """The campaign of a policy that declares none: its steps, every abandonment, no variants."""
    return Campaign(name=DEFAULT_CAMPAIGN, steps=steps)
