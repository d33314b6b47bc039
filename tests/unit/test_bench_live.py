"""The live-rate figure's arithmetic (``cartwatch_dev.bench.live``): how far behind a worker is,
which step it kept up with, and traffic of the asked-for rate."""

import asyncio
import time

from cartwatch_dev.bench.live import (
    MAX_LAG,
    Step,
    behind,
    highest_sustained,
    hold,
    live_messages,
    upcoming_messages,
)
from hypothesis import given
from hypothesis import strategies as st


def test_behind_is_the_age_of_the_oldest_due_message_not_processed():
    sent_at = [10.0, 11.0, 12.0, 13.0]

    assert behind(sent_at, processed=4, now=20.0) == 0.0
    assert behind(sent_at, processed=1, now=14.5) == 3.5  # 11.0 still unread
    assert behind(sent_at, processed=2, now=11.5) == 0.0  # 12.0 is not due yet


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50).map(sorted), st.data())
def test_reading_more_never_puts_the_worker_further_behind(sent_at, data):
    fewer = data.draw(st.integers(0, len(sent_at)))
    more = data.draw(st.integers(fewer, len(sent_at)))
    now = data.draw(st.floats(0, 2e6))

    assert behind(sent_at, more, now) <= behind(sent_at, fewer, now)


def test_the_highest_sustained_step_is_the_fastest_kept_up_with():
    steps = [Step(1000, 60_000, 60.0, 0.3), Step(2000, 119_000, 60.0, 1.9),
             Step(4000, 200_000, 60.0, MAX_LAG + 5)]

    best = highest_sustained(steps)

    assert best is steps[1] and round(best.rate) == 1983
    assert highest_sustained(steps[2:]) is None


def test_live_traffic_has_about_the_rate_asked_for_within_its_window():
    messages = live_messages(500.0, 20.0, start=1_000.0, seed=7, abandon_after=30.0)

    assert all(1_000.0 <= m.sent_at < 1_020.0 for m in messages)
    assert 0.8 * 500 * 20 <= len(messages) <= 1.2 * 500 * 20


def test_a_worker_that_keeps_up_is_never_behind_and_one_that_stops_is():
    messages = live_messages(200.0, 1.0, start=0.0, seed=3, abandon_after=30.0)
    messages = [type(m)(m.topic, m.key, m.value, m.sent_at + _now()) for m in messages]
    read = 0

    async def publish(batch, on_sent):
        nonlocal read
        for message in batch:
            await asyncio.sleep(max(0.0, message.sent_at - _now()))
            on_sent(1)
            read += 1
        return len(batch)

    step = asyncio.run(hold(messages, 200.0, publish, lambda: read, baseline=0, interval=0.05))

    assert step.sent == len(messages) and step.sustained and step.max_lag < 0.5

    stuck = asyncio.run(hold(
        [type(m)(m.topic, m.key, m.value, m.sent_at + 1.2) for m in messages], 200.0,
        _publish_only, lambda: 0, baseline=0, interval=0.05, catch_up=MAX_LAG + 0.5))
    assert not stuck.sustained


async def _publish_only(batch, on_sent):
    for message in batch:
        await asyncio.sleep(max(0.0, message.sent_at - _now()))
        on_sent(1)
    return len(batch)


def _now() -> float:
    return time.time()


def test_a_steps_window_starts_after_its_traffic_is_generated_however_long_that_takes() -> None:
    now = [1_000.0]
    windows: list[float] = []

    def slow_generate(rate: float, seconds: float, start: float, **kwargs: object) -> list:
        windows.append(start)
        now[0] += 3.8 if len(windows) == 1 else 1.0  # the first try outlasts its lead
        return live_messages(rate, seconds, start, **kwargs)  # type: ignore[arg-type]

    messages = upcoming_messages(100.0, 2.0, seed=5, abandon_after=30.0,
                                 clock=lambda: now[0], generate=slow_generate)

    assert len(windows) == 2 and windows[0] == 1_001.0
    assert now[0] < windows[-1] <= messages[0].sent_at
