"""Results per campaign, variant and step, and the uplift of each variant over the holdout.

Pure: the facts come from the read model (``facts_sql`` and ``steps_sql`` select them, the web
layer runs them), everything else is arithmetic here, so every rule is unit-tested without a
worker.

What is counted (the README's "Results per campaign" says the same):

- An abandonment belongs to the campaign and variant its log entries name (decided once, when
  it was planned). It is counted as **entered** once the read model has such an entry: a
  holdout's steps are logged at once, the other variants' when their first step is decided or
  the plan is cancelled. Abandonments without any log entry yet are reported as ``pending``.
- Per step, each abandonment has one **outcome**: ``sent`` if any attempt was sent (a later
  ``duplicate`` skip of the same step does not undo it), else ``skipped`` with the reason of
  its latest skip, else ``failed``, else it is still waiting (deferred, retrying).
- **recovered** and **revenue** of a variant count every recovered abandonment of the variant,
  reminded or not (intention to treat: the only comparison with the holdout that chance made
  fair). Per step, a recovery counts toward the last step sent before the order (last touch),
  so the steps' recoveries add up to the variant's recoveries after a reminder.
- **clicked** counts abandonments, not clicks: those of the variant with at least one counted
  click on a reminder link (``cartwatch-clicks``, which holds only the clicks of people: the
  click rule of ``streams.notifier.clicks`` drops robots and prefetches before the topic), and
  per step those with a click on that step's link. A person clicking three times, or a click
  read again, is one clicked abandonment, so ``clicked <= entered`` and the figure compares
  with ``recovered``. A click counts toward the variant of its abandonment (the same one the
  click's token names). Per step it is counted once the step has a log entry: a click read
  before the entry of the step it came from is in the variant's total only until then.

Uplift is the difference of recovery rates, variant minus holdout, with Newcombe's hybrid score
interval (method 10 of Newcombe 1998, from two Wilson score intervals). The Wald interval
``d ± z·sqrt(p1·q1/n1 + p2·q2/n2)`` is shorter but wrong exactly where this data lives: it has
zero width when a rate is 0 or 1, and its coverage falls well below 95 % for small holdouts
and recovery rates of a few per cent. Newcombe's interval keeps close to 95 %, never leaves
[-1, 1], and needs no iteration.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from streams.operator.export import defuse
from streams.operator.insights import rate

Z_95 = 1.959963984540054
"""The 97.5 % quantile of the standard normal distribution (a two-sided 95 % interval)."""
UPLIFT_METHOD = "newcombe-wilson"
CENT = Decimal("0.01")


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (``trials`` > 0)."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p = successes / trials
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    denominator = 1 + z2 / trials
    low, high = (centre - spread) / denominator, (centre + spread) / denominator
    # at 0 and n successes the bound is exactly 0 (1); rounding must not push it past p
    return (0.0 if successes == 0 else min(low, p), 1.0 if successes == trials else max(high, p))


@dataclass(frozen=True, slots=True)
class Uplift:
    """``difference`` = rate of the variant minus rate of the holdout, and its interval."""

    difference: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"difference": round(self.difference, 4), "low": round(self.low, 4),
                "high": round(self.high, 4)}


def uplift(recovered: int, entered: int, baseline_recovered: int, baseline_entered: int,
           z: float = Z_95) -> Uplift:
    """Newcombe's hybrid score interval for ``recovered/entered - baseline_recovered/
    baseline_entered`` (both groups non-empty)."""
    l1, u1 = wilson_interval(recovered, entered, z)
    l2, u2 = wilson_interval(baseline_recovered, baseline_entered, z)
    p1, p2 = recovered / entered, baseline_recovered / baseline_entered
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Uplift(difference, max(-1.0, min(low, difference)), min(1.0, max(high, difference)))


# -- facts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One abandonment in a campaign, as ``facts_sql`` selects it."""

    abandonment_id: str
    store_id: str
    campaign: str
    variant: str
    status: str
    recovered_at: float | None = None
    revenue: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One log entry of an abandonment in a campaign, as ``steps_sql`` selects it."""

    abandonment_id: str
    step: int
    status: str
    reason: str | None
    at: float


@dataclass(frozen=True, slots=True)
class Click:
    """One counted click of an abandonment in a campaign, as ``clicks_sql`` selects it."""

    abandonment_id: str
    step: int


@dataclass
class Figures:
    """Counts of one variant, or of one step of it."""

    entered: int = 0
    sent: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    clicked: int = 0
    recovered: int = 0
    revenue: dict[str, Decimal] = field(default_factory=dict)

    def add_revenue(self, entry: Entry) -> None:
        if entry.revenue is not None and entry.currency:
            self.revenue[entry.currency] = self.revenue.get(entry.currency, Decimal(0)) + (
                entry.revenue)

    def as_dict(self) -> dict[str, Any]:
        return {
            "entered": self.entered,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": dict(sorted(self.skipped.items())),
            "clicked": self.clicked,
            "recovered": self.recovered,
            "recovery_rate": rate(self.recovered, self.entered),
            "revenue": {currency: format(amount, "f")
                        for currency, amount in sorted(self.revenue.items())},
            "revenue_per_reminder": {
                currency: format((amount / self.sent).quantize(CENT), "f")
                for currency, amount in sorted(self.revenue.items())} if self.sent else {},
        }


@dataclass
class Arm:
    """One variant of one campaign of one store."""

    store_id: str
    campaign: str
    variant: str
    holdout: bool = False
    reminded: int = 0
    total: Figures = field(default_factory=Figures)
    steps: dict[int, Figures] = field(default_factory=dict)


def step_outcome(attempts: Iterable[Attempt]) -> tuple[str, str | None] | None:
    """The one outcome of a step from its log entries (see the module's docstring): ``("sent",
    None)``, ``("skipped", reason)``, ``("failed", None)``, or None while it is still waiting."""
    ordered = sorted(attempts, key=lambda attempt: attempt.at)
    if any(attempt.status == "sent" for attempt in ordered):
        return "sent", None
    skips = [attempt for attempt in ordered if attempt.status == "skipped"]
    if skips:
        return "skipped", skips[-1].reason or "unknown"
    if any(attempt.status == "failed" for attempt in ordered):
        return "failed", None
    return None


def aggregate(entries: Iterable[Entry], attempts: Iterable[Attempt],
              clicks: Iterable[Click]) -> list[Arm]:
    """The arms of every campaign, sorted by store, campaign, variant; steps by number.

    ``clicks`` has no default: a caller that forgot them would report 0 clicked, which looks
    like a real figure."""
    by_abandonment: dict[str, dict[int, list[Attempt]]] = {}
    for attempt in attempts:
        by_abandonment.setdefault(attempt.abandonment_id, {}).setdefault(
            attempt.step, []).append(attempt)
    clicked_steps: dict[str, set[int]] = {}
    for click in clicks:
        clicked_steps.setdefault(click.abandonment_id, set()).add(click.step)
    arms: dict[tuple[str, str, str], Arm] = {}
    for entry in entries:
        key = (entry.store_id, entry.campaign, entry.variant)
        arm = arms.setdefault(key, Arm(*key))
        arm.total.entered += 1
        recovered = entry.status == "recovered"
        if recovered:
            arm.total.recovered += 1
            arm.total.add_revenue(entry)
        clicked = clicked_steps.get(entry.abandonment_id, set())
        arm.total.clicked += bool(clicked)
        last_touch: tuple[float, int] | None = None
        reminded = False
        for number, step_attempts in sorted(by_abandonment.get(entry.abandonment_id, {}).items()):
            step = arm.steps.setdefault(number, Figures())
            step.entered += 1
            step.clicked += number in clicked
            outcome = step_outcome(step_attempts)
            if outcome is None:
                continue
            status, reason = outcome
            if status == "skipped" and reason is not None:
                arm.holdout |= reason == "holdout"
                step.skipped[reason] = step.skipped.get(reason, 0) + 1
                arm.total.skipped[reason] = arm.total.skipped.get(reason, 0) + 1
            elif status == "failed":
                step.failed += 1
                arm.total.failed += 1
            else:
                step.sent += 1
                arm.total.sent += 1
                reminded = True
                sent_at = min(a.at for a in step_attempts if a.status == "sent")
                if entry.recovered_at is None or sent_at <= entry.recovered_at:
                    last_touch = max(last_touch or (sent_at, number), (sent_at, number))
        arm.reminded += reminded
        if recovered and last_touch is not None:
            touched = arm.steps[last_touch[1]]
            touched.recovered += 1
            touched.add_revenue(entry)
    return [arms[key] for key in sorted(arms)]


def results(arms: list[Arm], pending: int) -> dict[str, Any]:
    """The API's answer: per store and campaign its variants (with uplift over the pooled
    holdout variants when the campaign has one) and their steps."""
    campaigns: dict[tuple[str, str], list[Arm]] = {}
    for arm in arms:
        campaigns.setdefault((arm.store_id, arm.campaign), []).append(arm)
    out = []
    for (store_id, campaign), members in sorted(campaigns.items()):
        holdouts = [arm for arm in members if arm.holdout]
        base_entered = sum(arm.total.entered for arm in holdouts)
        base_recovered = sum(arm.total.recovered for arm in holdouts)
        variants = []
        for arm in members:
            lift = None
            if not arm.holdout and base_entered and arm.total.entered:
                lift = uplift(arm.total.recovered, arm.total.entered, base_recovered,
                              base_entered).as_dict()
            variants.append({
                "variant": arm.variant,
                "holdout": arm.holdout,
                "reminded": arm.reminded,
                **arm.total.as_dict(),
                "uplift": lift,
                "steps": [{"step": number, **figures.as_dict()}
                          for number, figures in sorted(arm.steps.items())],
            })
        out.append({"store_id": store_id, "campaign": campaign,
                    "holdout_variants": [arm.variant for arm in holdouts],
                    "variants": variants})
    return {"uplift_method": UPLIFT_METHOD, "confidence": 0.95, "pending": pending,
            "campaigns": out}


# -- SQL (against ``abandonments a`` with the carts list's filters) ------------------------


def facts_sql(where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The abandonments in scope that entered a campaign."""
    return (
        "SELECT a.abandonment_id, a.store_id, a.campaign, coalesce(a.variant, ''), a.status, "
        "a.recovered_at, a.revenue, a.revenue_currency FROM abandonments a "
        f"WHERE {where} AND a.campaign IS NOT NULL", params)


def steps_sql(where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The log entries of those abandonments that decided or are deciding a step."""
    return (
        "SELECT n.abandonment_id, n.step, n.status, n.reason, n.at FROM notifications n "
        "JOIN abandonments a ON a.abandonment_id = n.abandonment_id "
        f"WHERE {where} AND a.campaign IS NOT NULL AND n.step IS NOT NULL", params)


def clicks_sql(where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The steps clicked of those abandonments, once per (abandonment, step) however often
    that step's link was clicked."""
    return (
        "SELECT DISTINCT c.abandonment_id, c.step FROM clicks c "
        "JOIN abandonments a ON a.abandonment_id = c.abandonment_id "
        f"WHERE {where} AND a.campaign IS NOT NULL", params)


def pending_sql(where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """Abandonments in scope without any log entry: their campaign is not known yet."""
    return (
        f"SELECT count(*) FROM abandonments a WHERE {where} AND a.campaign IS NULL AND NOT "
        "EXISTS (SELECT 1 FROM notifications n WHERE n.abandonment_id = a.abandonment_id)",
        params)


def entries(rows: Iterable[Any]) -> list[Entry]:
    return [Entry(row[0], row[1], row[2], row[3], row[4], row[5],
                  None if row[6] is None else Decimal(row[6]), row[7]) for row in rows]


def attempts(rows: Iterable[Any]) -> list[Attempt]:
    return [Attempt(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def clicks(rows: Iterable[Any]) -> list[Click]:
    return [Click(row[0], row[1]) for row in rows]


# -- CSV -----------------------------------------------------------------------------------

CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("store_id", "the store"),
    ("campaign", "the campaign"),
    ("variant", "the variant"),
    ("holdout", "true for a holdout variant (sends nothing)"),
    ("step", "the step (empty: the variant's total)"),
    ("entered", "abandonments in the variant (of a step: that reached it)"),
    ("reminded", "abandonments sent at least one reminder (totals only)"),
    ("sent", "reminders sent"),
    ("failed", "steps that failed for good"),
    ("skipped", "steps skipped"),
    ("skipped_reasons", "skipped steps per reason, e.g. holdout=10;no_consent=2"),
    ("clicked", "abandonments with a counted click on a reminder link (of a step: on its link)"),
    ("recovered", "recovered abandonments (of a step: last reminder before the order)"),
    ("recovery_rate", "recovered / entered"),
    ("revenue", "revenue of those recoveries, per currency, e.g. 120.00 EUR"),
    ("revenue_per_reminder", "revenue / sent, per currency"),
    ("uplift", "recovery rate minus the holdout's (totals only)"),
    ("uplift_low", "lower bound of its 95 % interval"),
    ("uplift_high", "upper bound of its 95 % interval"),
)


def _money(amounts: Mapping[str, str]) -> str:
    return " ".join(f"{amount} {currency}" for currency, amount in amounts.items())


def csv_rows(answer: Mapping[str, Any]) -> list[list[str]]:
    """One row per variant (its totals) followed by one per step of it."""
    def text(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    rows = []
    for campaign in answer["campaigns"]:
        for variant in campaign["variants"]:
            lift = variant["uplift"] or {}
            for figures in [variant, *variant["steps"]]:
                is_total = figures is variant
                rows.append([defuse(campaign["store_id"]), defuse(campaign["campaign"]),
                             defuse(variant["variant"])] + [text(value) for value in (
                    variant["holdout"], None if is_total else figures["step"],
                    figures["entered"], variant["reminded"] if is_total else None,
                    figures["sent"], figures["failed"], sum(figures["skipped"].values()),
                    ";".join(f"{reason}={n}" for reason, n in figures["skipped"].items()),
                    figures["clicked"], figures["recovered"], figures["recovery_rate"],
                    _money(figures["revenue"]), _money(figures["revenue_per_reminder"]),
                    lift.get("difference") if is_total else None,
                    lift.get("low") if is_total else None,
                    lift.get("high") if is_total else None,
                )])
    return rows
