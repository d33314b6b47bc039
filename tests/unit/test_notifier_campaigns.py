"""Campaigns (issue #16): segments, variant assignment, send windows, re-entry limits, their
settings, and how the planning core and the sender use them."""

import hashlib
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.campaigns import WEEKDAYS, Campaign, ReentryLimit, Segment, SendWindow
from config.notifier import ReminderPolicy, ReminderStep
from config.settings import SettingsError, load_settings
from schemas.notifications import NotificationLogEntry, ReminderDue
from schemas.outputs import CartAbandoned
from streams.notifier.campaigns import (
    assign_variant,
    choose_campaign,
    reentry_exceeded,
    segment_matches,
    window_opens,
)
from streams.notifier.planning import ReminderPlan, decide_due_step, plan_reminders
from streams.notifier.sending import Contact, record_sent, screen

from .factories import HOUR, T0, iso

CONSENTING = {"id": "u-1", "email": "ann@example.com", "marketing_consent": True,
              "locale": "de-DE", "timezone": "Europe/Berlin"}


def abandoned(cart_id="c-1", n=1, total="5.00", customer=CONSENTING, lines=None,
              currency="EUR", store="tea", when=T0):
    lines = lines or [{"sku": "MUG-BLUE", "name": "Blue mug", "quantity": 1,
                       "unit_price": total, "line_total": total}]
    return CartAbandoned.model_validate({
        "abandonment_id": f"{cart_id}:{n}", "sequence": n, "cart_id": cart_id,
        "store_id": store,
        "cart": {"lines": lines, "item_count": sum(line["quantity"] for line in lines),
                 "total": total, "currency": currency, "customer": customer},
        "created_at": iso(when - 60), "last_activity_at": iso(when - 30),
        "abandoned_at": iso(when),
    })


def independent_variant(abandonment_id, campaign, experiment, weights):
    """The documented rule, written out again: sha256 of the NUL-joined names, its first 8
    bytes big-endian times the total weight over 2**64, against cumulative weights."""
    digest = hashlib.sha256(
        (abandonment_id + "\0" + campaign + "\0" + experiment).encode("utf-8")).digest()
    total = sum(w for _, w in weights)
    point = int(digest[:8].hex(), 16) * total // 2**64
    for name, weight in weights:
        if point < weight:
            return name
        point -= weight
    raise AssertionError


# --- variant assignment -------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=20),
       st.lists(st.integers(0, 100), min_size=1, max_size=6).filter(lambda w: sum(w) > 0))
def test_assignment_is_the_documented_hash_rule_and_never_a_zero_weight(aid, experiment, w):
    weights = [(f"v{i}", weight) for i, weight in enumerate(w)]

    chosen = assign_variant(aid, "camp", experiment, weights)

    assert chosen == independent_variant(aid, "camp", experiment, weights)
    assert chosen == assign_variant(aid, "camp", experiment, list(weights))  # stable
    assert dict(weights)[chosen] > 0


def test_assignment_follows_the_weights_within_tolerance():
    weights = [("a", 45), ("b", 45), ("holdout", 10)]
    ids = [f"cart-{i}:1" for i in range(20_000)]

    counts = Counter(assign_variant(aid, "big", "subject-test", weights) for aid in ids)

    for name, weight in weights:  # 4 standard deviations at most: a failure is a real skew
        expected = len(ids) * weight / 100
        assert abs(counts[name] - expected) < 4 * (expected * (1 - weight / 100)) ** 0.5


def test_another_experiment_reshuffles_the_assignment():
    weights = [("a", 1), ("b", 1)]
    ids = [f"c-{i}:1" for i in range(2_000)]
    first = [assign_variant(aid, "big", "one", weights) for aid in ids]
    second = [assign_variant(aid, "big", "two", weights) for aid in ids]

    assert 0.4 < sum(x != y for x, y in zip(first, second, strict=True)) / len(ids) < 0.6


# --- segments -----------------------------------------------------------------------------


@given(st.decimals(min_value=0, max_value=1000, places=2),
       st.one_of(st.none(), st.integers(0, 1000)), st.one_of(st.none(), st.integers(0, 1000)))
def test_total_bounds_are_inclusive(total, low, high):
    if low is not None and high is not None and low > high:
        low, high = high, low
    segment = Segment(total_min=low, total_max=high)

    expected = (low is None or total >= low) and (high is None or total <= high)
    assert segment_matches(segment, abandoned(total=str(total))) is expected


@pytest.mark.parametrize(("condition", "matches"), [
    ({"items_min": 1, "items_max": 1}, True),
    ({"items_min": 2}, False),
    ({"sku_contains": ["mug"]}, True),
    ({"sku_contains": ["TEA"]}, False),
    ({"sku_excludes": ["blue"]}, False),
    ({"name_contains": ["MUG"]}, True),
    ({"name_excludes": ["green"]}, True),
    ({"stores": ["tea"]}, True),
    ({"stores": ["coffee"]}, False),
    ({"currencies": ["eur"]}, True),
    ({"currencies": ["USD"]}, False),
    ({"locale_prefixes": ["de"]}, True),
    ({"locale_prefixes": ["fr"]}, False),
    ({"timezone_prefixes": ["Europe/"]}, True),
    ({"timezone_prefixes": ["America/"]}, False),
    ({"customer": "known"}, True),
    ({"customer": "guest"}, False),
    ({"marketing_consent": True}, True),
    ({"marketing_consent": False}, False),
    ({"total_min": 1, "stores": ["tea"], "currencies": ["USD"]}, False),  # AND
])
def test_each_segment_condition(condition, matches):
    assert segment_matches(Segment(**condition), abandoned()) is matches


def test_guests_and_carts_without_customer():
    guest = abandoned(customer={"email": "g@example.com"})
    nobody = abandoned(customer=None)

    assert segment_matches(Segment(customer="guest"), guest)
    assert segment_matches(Segment(customer="guest"), nobody)
    assert not segment_matches(Segment(customer="known"), nobody)
    assert segment_matches(Segment(marketing_consent=False), nobody)
    assert not segment_matches(Segment(locale_prefixes=["de"]), nobody)


def test_the_first_matching_campaign_in_order_wins():
    big = Campaign(name="big", segment=Segment(total_min=100))
    everyone = Campaign(name="everyone")
    campaigns = [big, everyone]

    assert choose_campaign(campaigns, abandoned(total="150.00")) is big
    assert choose_campaign(campaigns, abandoned(total="5.00")) is everyone
    assert choose_campaign([big], abandoned(total="5.00")) is None


# --- send windows -------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@st.composite
def windows(draw):
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    start = draw(st.integers(0, 23 * 4)) * 15
    end = draw(st.one_of(st.just(0), st.integers(start // 15 + 1, 24 * 4 - 1).map(
        lambda q: q * 15)))
    return SendWindow(days=days, start=time(start // 60, start % 60),
                      end=time(end // 60, end % 60))


def inside(moment: float, zone: ZoneInfo, window: SendWindow) -> bool:
    """Checked by wall clock, independently of ``window_opens``: the local day is allowed and
    the local time is within [start, end) (end 00:00: to midnight). A DST gap may move an
    opening forward, so wall times just after a gap are accepted as the window's start."""
    local = datetime.fromtimestamp(moment, zone)
    if WEEKDAYS[local.weekday()] not in window.days:
        return False
    wall = local.time().replace(tzinfo=None)
    return window.start <= wall and (window.end == time(0) or wall < window.end)


@settings(max_examples=300, deadline=None)
@given(st.floats(1.6e9, 1.9e9), st.sampled_from(ZONES), windows())
def test_a_step_outside_a_window_waits_for_the_next_opening_and_lands_inside(moment, name,
                                                                            window):
    zone = ZoneInfo(name)
    opens = window_opens(moment, zone, window)

    if opens is None:
        assert inside(moment, zone, window) or _near_gap(moment, zone)
    else:
        assert moment < opens <= moment + 8 * 86_400  # never dropped, at most a week on
        assert window_opens(opens, zone, window) is None  # lands inside
        assert inside(opens, zone, window) or _near_gap(opens, zone)
        # nothing earlier was open: every quarter hour before it is outside
        probe = moment
        while probe < opens:
            assert window_opens(probe, zone, window) is not None
            probe += 900


def _near_gap(moment: float, zone: ZoneInfo) -> bool:
    """Within a day of a UTC offset change (where wall times jump)."""
    offsets = {datetime.fromtimestamp(moment + d * 3600, zone).utcoffset() for d in (-24, 24)}
    return len(offsets) > 1


def test_window_examples_and_dst():
    berlin = ZoneInfo("Europe/Berlin")
    weekdays_9_to_17 = SendWindow(days=["mon", "tue", "wed", "thu", "fri"], start=time(9),
                                  end=time(17))
    saturday = datetime(2024, 3, 30, 12, tzinfo=berlin).timestamp()  # clocks change Sunday
    opens = window_opens(saturday, berlin, weekdays_9_to_17)

    assert datetime.fromtimestamp(opens, berlin) == datetime(2024, 4, 1, 9, tzinfo=berlin)
    assert datetime.fromtimestamp(opens, berlin).utcoffset() == timedelta(hours=2)
    tuesday_noon = datetime(2024, 4, 2, 12, tzinfo=berlin).timestamp()
    assert window_opens(tuesday_noon, berlin, weekdays_9_to_17) is None
    gap = SendWindow(start=time(2, 30), end=time(4))  # 02:30 does not exist on 31 March
    before = datetime(2024, 3, 31, 1, tzinfo=berlin).timestamp()
    assert datetime.fromtimestamp(window_opens(before, berlin, gap), UTC) == datetime(
        2024, 3, 31, 1, 30, tzinfo=UTC)  # 03:30 CEST: moved forward, never back


# --- re-entry -----------------------------------------------------------------------------


@given(st.lists(st.floats(0, 30 * 86_400), max_size=20), st.integers(1, 5),
       st.floats(3_600, 14 * 86_400), st.floats(0, 30 * 86_400))
def test_reentry_counts_the_sends_of_the_period(times, count, period, now):
    limit = ReentryLimit(count=count, period=period)
    recent = [t for t in times if now - period < t <= now]

    assert reentry_exceeded(times, limit, now) is (len(recent) >= count)


# --- settings -----------------------------------------------------------------------------


def write_config(tmp_path, text):
    path = tmp_path / "cartwatch.toml"
    path.write_text(text)
    return {"CARTWATCH_CONFIG": str(path)}


@pytest.mark.parametrize(("toml", "message"), [
    ('[[notifier.reminders.campaigns]]\nname = "big"\nsegment = {total_min = 10, colour = 1}',
     "campaign 'big': segment.colour: Extra inputs are not permitted"),
    ('[[notifier.reminders.campaigns]]\nname = "big"\nsegment = {total_min = 50, '
     'total_max = 10}', "campaign 'big': segment: total_min (50) is above"),
    ('[[notifier.reminders.campaigns]]\nname = "big"\nvariants = [{name = "a", weight = 0}]',
     "campaign 'big': variant weights must not all be 0"),
    ('[[notifier.reminders.campaigns]]\nname = "big"\nsend_window = {days = []}',
     "campaign 'big': send_window.days"),
    ('[[notifier.reminders.campaigns]]\nname = "big"\nsteps = [{after = "1h", '
     'channel = "webhook"}]', "campaign 'big': steps.1.channel: a webhook step needs"),
    ('[[notifier.reminders.campaigns]]\nname = "big"\n'
     'variants = [{name = "a", steps = {3 = {template = "x"}}}]',
     "campaign 'big': variants.a.steps.3: no such step"),
    ('[notifier.stores.tea]\ncampaigns = [{name = "sms", segment = {locale = "de"}}]',
     "store 'tea': campaigns: Value error, campaign 'sms': segment.locale"),
])
def test_a_campaign_mistake_stops_start_up_naming_campaign_and_field(tmp_path, toml, message):
    with pytest.raises(SettingsError) as raised:
        load_settings(write_config(tmp_path, toml))

    assert message in str(raised.value)


def test_a_configuration_without_campaigns_is_one_default_campaign(tmp_path):
    settings = load_settings(write_config(tmp_path, '[notifier.reminders]\n'
                                          'steps = [{after = "1h"}, {after = "1d"}]'))
    policy = settings.notifier.policy("tea")
    (campaign,) = policy.campaign_list()

    assert (campaign.name, [arm.name for arm in campaign.arms()]) == ("default", ["control"])
    assert policy.campaign_steps(campaign) == policy.steps


# --- planning -----------------------------------------------------------------------------

WEBHOOK = "https://hooks.test/sms"
POLICY = ReminderPolicy(
    webhook_url=WEBHOOK,
    campaigns=[
        Campaign(
            name="big", segment=Segment(total_min=100), experiment="subject-test",
            steps=[ReminderStep(after=HOUR), ReminderStep(after=24 * HOUR, channel="webhook",
                                                          template="last-chance")],
            variants=[{"name": "a", "weight": 1, "subject": "Your cart misses you"},
                      {"name": "b", "weight": 1, "discount_code": "BIG10",
                       "steps": {2: {"template": "reminder"}}},
                      {"name": "holdout", "weight": 1, "holdout": True}],
        ),
        Campaign(name="small", segment=Segment(total_max=Decimal("99.99")),
                 send_window=SendWindow(days=["mon"], start=time(9), end=time(17))),
    ],
)


def first_with(variant, total="150.00"):
    for i in range(200):
        if assign_variant(f"c-{i}:1", "big", "subject-test",
                          [("a", 1), ("b", 1), ("holdout", 1)]) == variant:
            return abandoned(cart_id=f"c-{i}", total=total)
    raise AssertionError


def entries(decision):
    return [m for m in decision.messages if isinstance(m, NotificationLogEntry)]


def test_an_abandonment_no_campaign_takes_is_logged_no_campaign():
    policy = POLICY.model_copy(update={"campaigns": POLICY.campaigns[:1]})
    decision = plan_reminders(None, abandoned(total="5.00"), policy, 0, T0)

    assert decision.plan is None
    assert [(e.step, e.status, e.reason, e.campaign) for e in entries(decision)] == [
        (1, "skipped", "no_campaign", None)]


def test_the_holdout_sends_nothing_and_logs_every_step():
    decision = plan_reminders(None, first_with("holdout"), POLICY, 0, T0)

    assert decision.plan is None
    assert [(e.step, e.status, e.reason, e.campaign, e.variant) for e in entries(decision)] == [
        (1, "skipped", "holdout", "big", "holdout"), (2, "skipped", "holdout", "big", "holdout")]


def test_campaign_and_variant_are_decided_once_and_reach_every_message():
    plan = plan_reminders(None, first_with("b"), POLICY, 0, T0).plan
    assert (plan.campaign, plan.variant, plan.due) == ("big", "b", [T0 + HOUR, T0 + 24 * HOUR])
    replayed = ReminderPlan.from_dict(plan.to_dict())

    first = decide_due_step(replayed, POLICY, T0 + HOUR)
    (due,) = first.messages
    assert isinstance(due, ReminderDue)
    assert (due.campaign, due.variant, due.channel, due.discount_code, due.template) == (
        "big", "b", "email", "BIG10", "reminder")
    second = decide_due_step(first.plan, POLICY, T0 + 24 * HOUR)
    (sms,) = second.messages
    assert (sms.channel, sms.template, sms.step) == ("webhook", "reminder", 2)  # override


def test_variant_a_overrides_the_subject_and_keeps_the_step_template():
    plan = plan_reminders(None, first_with("a"), POLICY, 0, T0).plan
    first = decide_due_step(plan, POLICY, T0 + HOUR)
    second = decide_due_step(first.plan, POLICY, T0 + 24 * HOUR)

    assert [(m.subject, m.template, m.discount_code) for m in first.messages + second.messages
            ] == [("Your cart misses you", "reminder", None),
                  ("Your cart misses you", "last-chance", None)]


def test_a_step_outside_the_send_window_is_deferred_to_its_opening():
    monday_8 = datetime(2024, 1, 1, 8, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    plan = plan_reminders(None, abandoned(total="5.00", when=monday_8 - HOUR), POLICY, 0,
                          monday_8).plan
    decision = decide_due_step(plan, POLICY, monday_8)

    (entry,) = entries(decision)
    assert (entry.status, entry.reason, entry.campaign, entry.variant) == (
        "deferred", "send_window", "small", "control")
    assert entry.deferred_until == datetime(2024, 1, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))
    sent = decide_due_step(decision.plan, POLICY, decision.plan.scheduled_at)
    assert isinstance(sent.messages[0], ReminderDue)


def test_an_email_step_that_cannot_reach_the_customer_is_skipped_with_its_reason():
    policy = POLICY.model_copy(update={"webhook_fallback": False})
    nobody = {"id": "u-2"}
    plan = plan_reminders(None, abandoned(total="5.00", customer=nobody), policy, 0, T0).plan
    monday = datetime(2024, 1, 1, 10, tzinfo=ZoneInfo("UTC")).timestamp()
    plan.due = [monday]
    decision = decide_due_step(plan, policy, monday)

    assert [(e.status, e.reason, e.campaign) for e in entries(decision)] == [
        ("skipped", "no_contact", "small")]


def test_a_plan_of_a_removed_campaign_ends_logged():
    plan = plan_reminders(None, first_with("b"), POLICY, 0, T0).plan
    policy = POLICY.model_copy(update={"campaigns": POLICY.campaigns[1:]})
    decision = decide_due_step(plan, policy, T0 + HOUR)

    assert decision.plan is None
    assert {(e.status, e.reason) for e in entries(decision)} == {("skipped", "no_campaign")}


# --- sender: re-entry limit ----------------------------------------------------------------


def due_of(campaign="small", abandonment="c-9:1", channel="email"):
    return ReminderDue.model_validate({
        "idempotency_key": "k", "abandonment_id": abandonment, "cart_id": "c-9",
        "store_id": "tea", "step": 1, "steps": 1, "template": "reminder", "channel": channel,
        "recipient": "ann@example.com", "campaign": campaign, "variant": "control",
        "cart": {"lines": [], "item_count": 0, "total": "0", "currency": "EUR"},
        "abandoned_at": iso(T0), "due_at": iso(T0), "decided_at": iso(T0),
    })


def test_the_reentry_limit_counts_sends_across_carts_and_campaigns_and_channels():
    policy = POLICY.model_copy(update={"frequency_cap": None,
                                       "reentry_limit": ReentryLimit(count=3, period=7 * 86_400)})
    contact = Contact()
    now = T0
    for n, (campaign, channel) in enumerate([("small", "email"), ("big", "webhook"),
                                             ("small", "email")]):
        due = due_of(campaign, f"c-{n}:1", channel)
        assert screen(due, contact, None, policy, now) is None
        contact = record_sent(contact, due, now)
        now += 86_400

    assert screen(due_of("big", "c-8:1"), contact, None, policy, now) == "reentry_limit"
    assert screen(due_of("big", "c-8:1"), contact, None, policy, T0 + 7 * 86_400 + 1) is None


def test_a_campaign_limit_overrides_the_stores():
    big = POLICY.campaigns[0].model_copy(update={
        "reentry_limit": ReentryLimit(count=1, period=86_400)})
    policy = POLICY.model_copy(update={"frequency_cap": None, "campaigns": [big]})
    contact = record_sent(Contact(), due_of("small", "c-1:1"), T0)

    assert screen(due_of("big", "c-2:1"), contact, None, policy, T0 + 60) == "reentry_limit"
    assert screen(due_of("small", "c-2:1"), contact, None, policy, T0 + 60) is None


def test_contacts_keep_only_what_a_limit_can_ask_for():
    contact = Contact()
    for n in range(60):
        contact = record_sent(contact, due_of(abandonment=f"c-{n}:1"), T0 + n)
    assert len(contact.sent_times) == 50 and contact.sent_times[-1] == T0 + 59
    contact = record_sent(contact, due_of(), T0 + 91 * 86_400)
    assert contact.sent_times == [T0 + 91 * 86_400]
    assert Contact.from_dict(contact.to_dict()) == contact


def test_a_send_exactly_one_period_ago_no_longer_counts():
    limit = ReentryLimit(count=1, period=7 * 86_400)

    assert reentry_exceeded([T0], limit, T0 + 7 * 86_400 - 1)
    assert not reentry_exceeded([T0], limit, T0 + 7 * 86_400)


def test_the_readme_example_loads_and_its_templates_check(tmp_path):
    from pathlib import Path

    from streams.notifier.rendering import check_templates

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```toml", readme.index("### Campaigns")) + len("```toml")
    example = readme[start:readme.index("```", start)]
    policy = load_settings(write_config(tmp_path, example)).notifier.policy("tea")

    assert [c.name for c in policy.campaign_list()] == ["big-carts", "everyone-else"]
    assert [(v.name, v.weight, v.holdout) for v in policy.campaigns[0].variants] == [
        ("plain", 45, False), ("discount", 45, False), ("holdout", 10, True)]
    assert policy.campaigns[0].steps[1].channel == "webhook"
    check_templates([("tea", policy)])
