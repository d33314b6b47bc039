"""The reminder scheduler's pure core: plans, cancellation, channels, quiet hours, staleness."""

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.notifier import QuietHours, ReminderPolicy, ReminderStep
from schemas.notifications import NotificationLogEntry, ReminderDue
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered
from streams.notifier.planning import (
    cancel_reminders,
    choose_channel,
    decide_due_step,
    idempotency_key,
    plan_reminders,
    quiet_until,
    remind_now,
)

from .factories import HOUR, T0, iso

POLICY = ReminderPolicy(steps=[ReminderStep(after=HOUR, template="reminder"),
                               ReminderStep(after=24 * HOUR, template="last-chance")])
CONSENTING = {"email": "ann@example.com", "marketing_consent": True, "name": "Ann"}


def abandoned(cart_id="c-1", n=1, customer=CONSENTING, when=T0):
    return CartAbandoned.model_validate({
        "abandonment_id": f"{cart_id}:{n}", "sequence": n, "cart_id": cart_id,
        "store_id": "tea",
        "cart": {"lines": [{"sku": "MUG", "quantity": 1, "unit_price": "5.00",
                            "line_total": "5.00"}],
                 "item_count": 1, "total": "5.00", "currency": "EUR", "customer": customer},
        "created_at": iso(when - 60), "last_activity_at": iso(when - 30),
        "abandoned_at": iso(when),
    })


def planned(policy=POLICY, **kwargs):
    return plan_reminders(None, abandoned(**kwargs), policy, 3, T0).plan


def logs(decision):
    return [(m.step, m.status, m.reason) for m in decision.messages
            if isinstance(m, NotificationLogEntry)]


def test_a_plan_has_one_deadline_per_step_from_the_abandonment():
    plan = planned()

    assert plan.due == [T0 + HOUR, T0 + 24 * HOUR]
    assert (plan.next_step, plan.scheduled_at, plan.partition) == (0, T0 + HOUR, 3)


def test_a_redelivered_abandonment_changes_nothing():
    plan = planned()

    assert plan_reminders(plan, abandoned(), POLICY, 3, T0).changed is False


def test_a_new_abandonment_supersedes_the_steps_left_of_the_previous_one():
    decision = plan_reminders(planned(), abandoned(n=2, when=T0 + 5 * HOUR), POLICY, 3,
                              T0 + 5 * HOUR)

    assert decision.plan.abandonment_id == "c-1:2"
    assert logs(decision) == [(1, "skipped", "superseded"), (2, "skipped", "superseded")]


def test_a_disabled_store_plans_nothing_and_says_so():
    decision = plan_reminders(None, abandoned(), POLICY.model_copy(update={"enabled": False}),
                              0, T0)

    assert decision.plan is None and logs(decision) == [(1, "skipped", "disabled")]


def test_due_steps_are_emitted_in_order_then_the_plan_ends():
    plan = planned()
    first = decide_due_step(plan, POLICY, T0 + HOUR)
    [due] = first.messages

    assert isinstance(due, ReminderDue)
    assert (due.step, due.steps, due.template, due.channel, due.recipient) == (
        1, 2, "reminder", "email", "ann@example.com")
    assert due.idempotency_key == idempotency_key("c-1:1", 1, "email")
    assert first.plan.scheduled_at == T0 + 24 * HOUR

    second = decide_due_step(first.plan, POLICY, T0 + 24 * HOUR)
    assert second.plan is None
    assert [(m.step, m.template) for m in second.messages] == [(2, "last-chance")]


def test_idempotency_keys_differ_per_step_and_channel_and_are_stable():
    keys = {idempotency_key("c-1:1", 1, "email"), idempotency_key("c-1:1", 2, "email"),
            idempotency_key("c-1:1", 1, "webhook"), idempotency_key("c-1:2", 1, "email")}

    assert len(keys) == 4
    assert idempotency_key("c-1:1", 1, "email") == idempotency_key("c-1:1", 1, "email")


def test_recovery_cancels_the_remaining_steps():
    plan = decide_due_step(planned(), POLICY, T0 + HOUR).plan
    recovered = CartRecovered(
        abandonment_id="c-1:1", cart_id="c-1", store_id="tea", order_id="o", revenue="5.00",
        currency="EUR", abandoned_at=iso(T0), recovered_at=iso(T0 + 2 * HOUR),
        seconds_to_recover=7200, reminder_sent=True)

    decision = cancel_reminders(plan, recovered, POLICY, T0 + 2 * HOUR)

    assert decision.plan is None and logs(decision) == [(2, "skipped", "cart_recovered")]


def reactivated(abandonment_id="c-1:1"):
    return CartReactivated(abandonment_id=abandonment_id, cart_id="c-1", store_id="tea",
                           event_id="e", abandoned_at=iso(T0), reactivated_at=iso(T0 + 60))


def test_reactivation_cancels_only_when_the_store_says_so():
    plan = planned()
    keep = POLICY.model_copy(update={"cancel_on_reactivation": False})

    assert logs(cancel_reminders(plan, reactivated(), POLICY, T0)) == [
        (1, "skipped", "cart_reactivated"), (2, "skipped", "cart_reactivated")]
    assert cancel_reminders(planned(), reactivated(), keep, T0).changed is False


def test_events_of_an_older_abandonment_do_not_cancel():
    assert cancel_reminders(planned(), reactivated("c-1:0"), POLICY, T0).changed is False
    assert cancel_reminders(None, reactivated(), POLICY, T0).changed is False


@pytest.mark.parametrize(("customer", "policy_update", "expected"), [
    (CONSENTING, {}, "email"),
    ({"email": "a@b.example", "marketing_consent": False}, {}, "no_consent"),
    ({"email": "a@b.example"}, {}, "no_consent"),
    ({"email": "a@b.example"}, {"require_marketing_consent": False}, "email"),
    ({"name": "Nobody"}, {}, "no_contact"),
    (None, {}, "no_contact"),
    (None, {"webhook_url": "https://h.example/r"}, "webhook"),
    ({"email": "a@b.example"}, {"webhook_url": "https://h.example/r"}, "webhook"),
    (None, {"webhook_url": "https://h.example/r", "webhook_fallback": False}, "no_contact"),
])
def test_channel_choice(customer, policy_update, expected):
    assert choose_channel(customer, POLICY.model_copy(update=policy_update)) == expected


def test_a_step_without_a_channel_is_skipped_with_the_reason_and_the_plan_goes_on():
    plan = planned(customer={"email": "a@b.example", "marketing_consent": False})
    decision = decide_due_step(plan, POLICY, T0 + HOUR)

    assert logs(decision) == [(1, "skipped", "no_consent")]
    assert decision.plan.next_step == 1


def test_a_step_decided_long_after_its_deadline_is_stale():
    one_step = ReminderPolicy(steps=[ReminderStep(after=HOUR)])
    decision = decide_due_step(planned(one_step), one_step, T0 + HOUR + one_step.stale_after + 1)

    assert logs(decision) == [(1, "skipped", "stale")]


def sent_steps(decision):
    return [m.step for m in decision.messages if isinstance(m, ReminderDue)]


def test_overdue_steps_send_only_the_latest_due_one():
    """The worker was down through both steps: the "last chance" goes out, the first
    reminder is logged as superseded, never sent in the same second."""
    decision = decide_due_step(planned(), POLICY, T0 + 25 * HOUR)

    assert logs(decision) == [(1, "skipped", "superseded")]
    assert sent_steps(decision) == [2]
    assert decision.plan is None  # nothing left


def test_a_step_due_alone_is_decided_as_before():
    decision = decide_due_step(planned(), POLICY, T0 + 2 * HOUR)

    assert sent_steps(decision) == [1] and logs(decision) == []
    assert decision.plan.next_step == 1 and decision.plan.scheduled_at == T0 + 24 * HOUR


def test_the_latest_overdue_step_is_judged_stale_on_its_own_due_time():
    decision = decide_due_step(planned(), POLICY, T0 + 24 * HOUR + POLICY.stale_after + 1)

    assert logs(decision) == [(1, "skipped", "superseded"), (2, "skipped", "stale")]
    assert sent_steps(decision) == []


@given(afters=st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True),
       decided=st.integers(0, 5), late=st.integers(0, 120))
def test_exactly_the_steps_before_the_latest_due_one_are_superseded(afters, decided, late):
    policy = ReminderPolicy(steps=[ReminderStep(after=after * HOUR) for after in sorted(afters)],
                            stale_after=1_000 * HOUR)
    plan = planned(policy)
    plan.next_step = min(decided, len(afters) - 1)
    plan.scheduled_at = plan.due[plan.next_step]
    now = plan.due[plan.next_step] + late * HOUR
    first = plan.next_step
    latest = max(i for i, due in enumerate(plan.due) if due <= now)

    decision = decide_due_step(plan, policy, now)

    superseded = range(first + 1, latest + 1)
    assert logs(decision) == [(step, "skipped", "superseded") for step in superseded]
    assert sent_steps(decision) == [latest + 1]
    remaining = len(afters) - latest - 1
    assert (decision.plan is None) == (remaining == 0)
    if decision.plan is not None:
        assert decision.plan.scheduled_at == plan.due[latest + 1] > now


NIGHT = QuietHours(start=time(21, 0), end=time(8, 0))
BERLIN = ZoneInfo("Europe/Berlin")


def epoch(zone, *args):
    return datetime(*args, tzinfo=zone).timestamp()


@pytest.mark.parametrize(("local", "resume"), [
    ((2024, 3, 5, 22, 30), (2024, 3, 6, 8, 0)),   # evening: to tomorrow morning
    ((2024, 3, 6, 3, 0), (2024, 3, 6, 8, 0)),     # after midnight: to this morning
    ((2024, 3, 6, 21, 0), (2024, 3, 7, 8, 0)),    # the start is quiet
    ((2024, 3, 6, 8, 0), None),                   # the end is not
    ((2024, 3, 6, 12, 0), None),
])
def test_quiet_hours_across_midnight(local, resume):
    expected = None if resume is None else epoch(BERLIN, *resume)

    assert quiet_until(epoch(BERLIN, *local), BERLIN, NIGHT) == expected


def test_quiet_hours_within_a_day():
    lunch = QuietHours(start=time(12, 0), end=time(13, 30))

    assert quiet_until(epoch(UTC, 2024, 1, 1, 12, 10), UTC, lunch) == epoch(UTC, 2024, 1, 1, 13, 30)
    assert quiet_until(epoch(UTC, 2024, 1, 1, 13, 30), UTC, lunch) is None


def test_quiet_hours_end_in_a_dst_gap_resumes_after_it():
    # Berlin springs forward on 2024-03-31 at 02:00 -> 03:00; quiet hours ending at 02:30
    gap = QuietHours(start=time(1, 0), end=time(2, 30))
    resume = quiet_until(epoch(BERLIN, 2024, 3, 31, 1, 30), BERLIN, gap)

    assert resume is not None and resume > epoch(BERLIN, 2024, 3, 31, 1, 30)
    assert datetime.fromtimestamp(resume, BERLIN).hour == 3


def test_quiet_hours_defer_in_the_customers_zone_and_never_drop():
    policy = POLICY.model_copy(update={"quiet_hours": NIGHT})
    tokyo = {**CONSENTING, "timezone": "Asia/Tokyo"}
    plan = planned(policy, customer=tokyo)
    now = epoch(ZoneInfo("Asia/Tokyo"), 2024, 1, 1, 23, 0)   # 15:00 in Berlin
    deferred = decide_due_step(plan, policy, now)

    assert logs(deferred) == [(1, "deferred", "quiet_hours")]
    resume = epoch(ZoneInfo("Asia/Tokyo"), 2024, 1, 2, 8, 0)
    assert deferred.plan.scheduled_at == resume and deferred.plan.next_step == 0
    assert deferred.messages[0].deferred_until.timestamp() == resume

    sent = decide_due_step(deferred.plan, policy, resume)
    assert [type(m) for m in sent.messages] == [ReminderDue]


def test_quiet_hours_use_the_store_zone_for_customers_without_one():
    policy = POLICY.model_copy(update={"quiet_hours": NIGHT, "timezone": "Europe/Berlin"})
    now = epoch(BERLIN, 2024, 1, 1, 23, 0)

    assert logs(decide_due_step(planned(policy), policy, now)) == [
        (1, "deferred", "quiet_hours")]


def test_plans_survive_the_table_round_trip():
    from streams.notifier.planning import ReminderPlan

    plan = planned()

    assert ReminderPlan.from_dict(plan.to_dict()) == plan


def test_a_manual_reminder_sends_the_next_step_now_and_keeps_the_later_times():
    decision = remind_now(planned(), "c-1:1", POLICY, T0 + 60)

    assert [(m.step, m.due_at.timestamp(), m.decided_at.timestamp()) for m in decision.messages
            ] == [(1, T0 + HOUR, T0 + 60)]
    assert decision.plan.scheduled_at == T0 + 24 * HOUR


def test_a_manual_reminder_without_pending_steps_changes_nothing():
    assert remind_now(None, "c-1:1", POLICY, T0).changed is False
    assert remind_now(planned(), "c-1:0", POLICY, T0).changed is False
