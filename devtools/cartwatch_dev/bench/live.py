"""The live rate: the highest steady input rate a worker keeps up with.

A backlog replay (figure d) measures how fast a worker reads what is already there. A shop
sends events as its shoppers act, near the wall clock: the safe time keeps up and nothing waits
in ``pending``. Here shoppers' traffic is published live (each message at its own time, as
``cartwatch loadgen --live`` does) in steps of rising rate; every second the worker's input
count is read, and how far it is behind is the age of the oldest message published but not yet
processed. A step is sustained when that stays under ``MAX_LAG`` for the whole step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from cartwatch_dev.loadgen import LoadSpec, Message, generate_traffic

MAX_LAG = 2.0
"""Seconds a worker may be behind the newest published message and still keep up."""


@dataclass(frozen=True)
class Step:
    """One rate held for a while, and how far behind the worker fell."""

    target: float
    """Events per second asked for."""
    sent: int
    seconds: float
    max_lag: float

    @property
    def rate(self) -> float:
        """Events per second actually published (the producer may fall short of the target)."""
        return self.sent / max(self.seconds, 1e-6)

    @property
    def sustained(self) -> bool:
        return self.max_lag < MAX_LAG


def behind(sent_at: Sequence[float], processed: int, now: float) -> float:
    """Seconds the worker is behind at ``now``: the age of the oldest message it has not
    processed among those due by then (``sent_at``, in order: each is published at its time);
    0 when it has read every message due. A producer that cannot keep to the times counts as
    the pipeline falling behind, which is what a shop would see."""
    if processed >= len(sent_at) or sent_at[processed] > now:
        return 0.0
    return now - sent_at[processed]


def highest_sustained(steps: Sequence[Step]) -> Step | None:
    """The fastest step the worker kept up with (steps rise: later ones failing end the run)."""
    kept = [step for step in steps if step.sustained]
    return max(kept, key=lambda step: step.rate) if kept else None


def live_messages(rate: float, seconds: float, start: float, seed: int,
                  abandon_after: float) -> list[Message]:
    """Shoppers' traffic of about ``rate`` events/s, sent within ``[start, start + seconds)``.

    Sessions start uniformly over the window; a session's later messages (a purchase, a
    comeback) past the window are left out, so the rate is the window's own.
    """
    probe = generate_traffic(LoadSpec(seed=seed, carts=500, abandon_after=abandon_after,
                                      span=seconds, start=start))
    per_cart = len([m for m in probe.messages if m.sent_at < start + seconds]) / 500
    spec = replace(LoadSpec(seed=seed, abandon_after=abandon_after, span=seconds, start=start),
                   carts=max(1, round(rate * seconds / max(per_cart, 1e-6))))
    return [m for m in generate_traffic(spec).messages if m.sent_at < start + seconds]


def upcoming_messages(rate: float, seconds: float, seed: int, abandon_after: float,
                      lead: float = 1.0, clock: Callable[[], float] = time.time,
                      generate: Callable[..., list[Message]] = live_messages) -> list[Message]:
    """``live_messages`` for a window that starts after they are generated.

    Generating a step's traffic takes seconds at thousands of events a second (120k messages:
    3.8 s here); a window that had already begun made a step's first messages due before the
    first was published, and the 2,000 events/s step was measured 2.6 s behind while the
    worker, sampled four times a second, never was more than 0.1 s. So the window starts
    ``lead`` s after generating ends, and the traffic is generated again, later, if it was not.
    """
    while True:
        began = clock()
        start = began + lead
        messages = generate(rate, seconds, start, seed=seed, abandon_after=abandon_after)
        if clock() < start:
            return messages
        lead = 2 * (clock() - began) + 1.0


Publish = Callable[[list[Message], Callable[[int], None]], Awaitable[int]]
"""Publishes messages live, calling back with each count the broker acknowledged."""


async def hold(messages: list[Message], target: float, publish: Publish,
               processed: Callable[[], int], baseline: int, interval: float = 1.0,
               catch_up: float = MAX_LAG * 4 + 5) -> Step:
    """Publish ``messages`` live (``publish(messages, on_sent)``) while sampling how far
    behind the worker is (``processed()`` counts every input it read, ``baseline`` of them
    before this step). A worker that has not read everything ``catch_up`` s after the last
    message was published counts as that far behind."""
    sent_at = [m.sent_at for m in messages]
    sent = 0
    worst = 0.0

    def on_sent(count: int) -> None:
        nonlocal sent
        sent += count

    async def sample_until(done: asyncio.Future[int]) -> None:
        nonlocal worst
        while True:
            count = await asyncio.to_thread(processed)
            worst = max(worst, behind(sent_at, count - baseline, time.time()))
            if done.done() and count - baseline >= len(sent_at):
                return
            await asyncio.sleep(interval)

    publishing = asyncio.ensure_future(publish(messages, on_sent))
    sampling = asyncio.ensure_future(sample_until(publishing))
    await publishing
    seconds = time.time() - sent_at[0] if sent_at else 0.0
    try:
        # The step ends when the worker has read what was sent, or has fallen MAX_LAG behind.
        await asyncio.wait_for(sampling, timeout=catch_up)
    except TimeoutError:
        worst = max(worst, catch_up)
    finally:
        sampling.cancel()
    return Step(target=target, sent=sent, seconds=seconds, max_lag=worst)
