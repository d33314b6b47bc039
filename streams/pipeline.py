"""The cart lifecycle agent: input events and timer ticks in, state transitions out.

One agent consumes the cart events, the purchase events and the timer ticks of a partition, so
every write to the cart table happens inside stream iteration, as Faust requires. A wall-clock
timer only *asks* for a tick on partitions whose earliest deadline is due; the agent then pops
the due carts from the deadline index and decides with the state machine.

Delivery order gives at-least-once without loss: an output is acknowledged by the broker before
the state change that caused it is written, so a crash in between repeats the output (with the
same ``abandonment_id``) rather than dropping it.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from faust.types import EventT, StreamT
from faust.web import Request, Response, Web
from pydantic import ValidationError

from schemas.common import Contract
from schemas.notifications import ReminderSent
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered, DeadLetter
from streams.app import (
    abandoned_topic,
    app,
    carts_table,
    dead_letter_topic,
    pipeline_source,
    reactivated_topic,
    recovered_topic,
    settings,
    timer_ticks_topic,
)
from streams.intake import Rejected, dead_letter, decode_input
from streams.lifecycle import (
    CartState,
    Transition,
    apply_event,
    next_deadline,
    on_deadline,
    on_reminder_sent,
)
from streams.scheduling import PartitionTimers

log = logging.getLogger(__name__)

FIRE_BATCH = 1000
"""Due carts decided together: their outputs are awaited at once, then their states written."""

CART_TOPIC = settings.topic("cart_events")
PURCHASE_TOPIC = settings.topic("purchase_events")
TICK_TOPIC = settings.topic("timer_ticks")
REMINDER_SENT_TOPIC = settings.topic("reminders_sent")
INPUT_KIND = {CART_TOPIC: "cart", PURCHASE_TOPIC: "purchase"}
OUTPUT_TOPICS = {
    CartAbandoned: abandoned_topic,
    CartReactivated: reactivated_topic,
    CartRecovered: recovered_topic,
    DeadLetter: dead_letter_topic,
}

timers = PartitionTimers(app, (CART_TOPIC, PURCHASE_TOPIC), timer_ticks_topic)
counters: Counter[str] = Counter()
abandon_observers: list[Callable[[CartAbandoned, float], None]] = []
"""Called with each abandonment and the wall time it was published (timer lag metric)."""


async def declare_topics() -> None:
    """Create the output topics before anything is sent, with the configured partitions."""
    for topic in (abandoned_topic, recovered_topic, reactivated_topic, dead_letter_topic):
        await topic.maybe_declare()


async def publish(outputs: Iterable[tuple[bytes, Contract]]) -> None:
    """Send outputs and wait until the broker has them all."""
    pending = []
    for key, output in outputs:
        topic = OUTPUT_TOPICS[type(output)]
        pending.append(await topic.send(key=key, value=output.model_dump_json().encode()))
        counters[f"out:{output.type}"] += 1  # type: ignore[attr-defined]
    if pending:
        await asyncio.gather(*pending)


def save(cart_id: str, state: CartState | None) -> None:
    """Write the cart's state and keep the deadline index in step with it."""
    if state is None:
        carts_table.pop(cart_id, None)
        return
    deadline = next_deadline(state, settings)
    if state.scheduled_at is None or deadline < state.scheduled_at:
        state.scheduled_at = deadline
        timers.deadlines.schedule(state.partition, deadline, cart_id)
    carts_table[cart_id] = state.to_dict()


def load(cart_id: str) -> CartState | None:
    stored = carts_table.get(cart_id)
    return None if stored is None else CartState.from_dict(stored)


async def handle_input(event: EventT) -> None:
    message = event.message
    now = time.time()
    decoded = decode_input(INPUT_KIND[message.topic], message.key, message.value, now, settings)
    counters[f"in:{message.topic}"] += 1
    if isinstance(decoded, Rejected):
        await reject(event, decoded, now)
        return
    # Deadlines the event's time has passed fire first, exactly as they would have live.
    timers.observe(message.tp, decoded.occurred_at.timestamp(), now)
    await fire_due(message.partition, timers.safe_time(message.partition))
    try:
        transition = apply_event(load(decoded.cart_id), decoded, settings, message.partition)
    except Exception as exc:  # a bug must cost one event, never the stream
        log.exception("processing %s failed", decoded.event_id)
        await reject(event, Rejected("processing_failed", f"{type(exc).__name__}: {exc}"), now)
        return
    await commit_transitions([(decoded.cart_id, transition)])
    # Only now is the message processed: if it was the partition's last, the wall clock may
    # fire what it holds back (such as this very purchase).
    timers.processed(message.tp, message.offset)
    await fire_due(message.partition, timers.safe_time(message.partition))


async def handle_reminder_sent(event: EventT) -> None:
    """The notifier's feedback that a reminder went out for the cart's abandonment."""
    message = event.message
    try:
        feedback = ReminderSent.model_validate_json(message.value or b"")
    except ValidationError as exc:
        await reject(event, Rejected("invalid", str(exc)[:1000]), time.time())
        return
    transition = on_reminder_sent(load(feedback.cart_id), feedback.abandonment_id)
    if transition.changed:
        save(feedback.cart_id, transition.state)


async def reject(event: EventT, rejected: Rejected, now: float) -> None:
    """Log, count and dead-letter an input message, then move past it."""
    message = event.message
    log.error(
        "dead-lettered %s[%d]@%d (%s): %s",
        message.topic, message.partition, message.offset, rejected.kind, rejected.error,
    )
    counters["dead_lettered"] += 1
    letter = dead_letter(
        rejected,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        now=now,
    )
    await publish([(message.key or b"", letter)])
    if message.topic in INPUT_KIND:
        timers.processed(message.tp, message.offset)


async def commit_transitions(transitions: Sequence[tuple[str, Transition]]) -> None:
    await publish(
        (cart_id.encode(), output)
        for cart_id, transition in transitions
        for output in transition.outputs
    )
    for cart_id, transition in transitions:
        if transition.changed:
            save(cart_id, transition.state)


async def fire_due(partition: int, horizon: float) -> None:
    """Decide every cart of the partition whose deadline is at or before ``horizon``."""
    while (due := timers.deadlines.pop_due(partition, horizon, FIRE_BATCH)):
        transitions = []
        for deadline, cart_id in due:
            state = load(cart_id)
            if state is None or state.scheduled_at != deadline:
                continue  # a stale entry: the cart was forgotten or rescheduled earlier
            state.scheduled_at = None
            transitions.append((cart_id, on_deadline(state, horizon, settings)))
        await commit_transitions(transitions)
        fired_at = time.time()
        for _, transition in transitions:
            for output in transition.outputs:
                if isinstance(output, CartAbandoned):
                    for observe in abandon_observers:
                        observe(output, fired_at)


async def handle_tick(partition: int) -> None:
    """A tick asked for by the wall-clock timer: fire what the partition's safe time allows."""
    timers.tick_seen(partition)
    await fire_due(partition, timers.safe_time(partition))


@app.agent(pipeline_source)
async def cart_lifecycle(stream: StreamT) -> None:
    """Fold cart and purchase events into cart state; fire due inactivity timers."""
    await declare_topics()
    async for event in stream.events():
        if event.message.topic == TICK_TOPIC:
            await handle_tick(event.message.partition)
        elif event.message.topic == REMINDER_SENT_TOPIC:
            await handle_reminder_sent(event)
        else:
            await handle_input(event)


@app.timer(interval=settings.timer_resolution)
async def request_ticks() -> None:
    """Ask the agent to fire timers on partitions whose earliest deadline is due.

    Its cost is counted (``ticks``, ``tick_ns``, ``tick_ns_max``): it runs every
    ``timer_resolution`` whatever the number of carts, so it must stay cheap.
    """
    started = time.perf_counter_ns()
    await timers.request_ticks()
    spent = time.perf_counter_ns() - started
    counters["ticks"] += 1
    counters["tick_ns"] += spent
    counters["tick_ns_max"] = max(counters["tick_ns_max"], spent)


@carts_table.on_recover
async def rebuild_deadlines() -> None:
    """After a rebalance, rebuild the deadline index of the owned partitions from the table."""
    owned = set(timers.owned_partitions())
    entries: dict[int, list[tuple[float, str]]] = {partition: [] for partition in owned}
    for cart_id, stored in carts_table.items():
        state = CartState.from_dict(stored)
        if state.partition in owned:
            deadline = state.scheduled_at or next_deadline(state, settings)
            entries[state.partition].append((deadline, cart_id))
    timers.reset(owned, entries)
    log.info(
        "deadline index rebuilt: %d carts on partitions %s", len(timers.deadlines), sorted(owned)
    )


@app.page("/cartwatch/counters/")
async def counters_page(web: Web, request: Request) -> Response:
    """This worker's event, output and dead-letter counts since it started."""
    return web.json(dict(counters))
