"""The cart lifecycle agent: input events and timer ticks in, state transitions out.

One agent consumes the cart events, the purchase events and the timer ticks of a partition, so
every write to the cart table happens inside stream iteration, as Faust requires. A wall-clock
timer only *asks* for a tick on partitions whose earliest deadline is due; the agent then pops
the due carts from the deadline index and decides with the state machine.

Each event is one unit of work (``Batch``): the carts it touches (its own, and those whose
deadline it lets fire) are read once and folded in memory, then its outputs are sent and
acknowledged by the broker, and only then each changed cart is written once; Faust acknowledges
the input offset after that. So a crash anywhere repeats outputs (with the same
``abandonment_id``) rather than dropping them. (Faust's ``take_events`` would batch several
events, but a worker using it stopped consuming after a rebalance in our two-worker tests.)
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

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
"""Outputs that, when many carts fall due at once, are published before deciding more."""

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


class Batch:
    """The carts one event touches: read once, written once, after its outputs.

    All of them live in the event's partition (its own cart, or carts of that partition whose
    deadline it lets fire), which is where Faust writes while the event is current.
    """

    def __init__(self) -> None:
        self.states: dict[str, CartState | None] = {}
        self.changed: set[str] = set()
        self.outputs: list[tuple[bytes, Contract]] = []
        self.abandoned: list[CartAbandoned] = []

    def load(self, cart_id: str) -> CartState | None:
        if cart_id in self.states:
            return self.states[cart_id]
        stored = carts_table.get(cart_id)
        state = None if stored is None else CartState.from_dict(stored)
        self.states[cart_id] = state
        return state

    def apply(self, cart_id: str, transition: Transition) -> None:
        """Take a transition's outputs and state; keep the deadline index in step with it."""
        for output in transition.outputs:
            self.outputs.append((cart_id.encode(), output))
            if isinstance(output, CartAbandoned):
                self.abandoned.append(output)
        if not transition.changed:
            return
        state = transition.state
        if state is not None:
            deadline = next_deadline(state, settings)
            if state.scheduled_at is None or deadline < state.scheduled_at:
                state.scheduled_at = deadline
                timers.deadlines.schedule(state.partition, deadline, cart_id)
        self.states[cart_id] = state
        self.changed.add(cart_id)

    def reject(self, event: EventT, rejected: Rejected, now: float) -> None:
        """Log, count and dead-letter an input message; the stream moves past it."""
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
        self.outputs.append((message.key or b"", letter))
        if message.topic in INPUT_KIND:
            timers.processed(message.tp, message.offset)

    async def commit(self) -> None:
        """Outputs first, acknowledged by the broker; then each changed cart, once."""
        await publish(self.outputs)
        fired_at = time.time()
        for output in self.abandoned:
            for observe in abandon_observers:
                observe(output, fired_at)
        for cart_id in self.changed:
            state = self.states[cart_id]
            if state is None:
                carts_table.pop(cart_id, None)
            else:
                carts_table[cart_id] = state.to_dict()
        self.outputs.clear()
        self.abandoned.clear()
        self.changed.clear()


async def handle_input(batch: Batch, event: EventT) -> None:
    message = event.message
    now = time.time()
    decoded = decode_input(INPUT_KIND[message.topic], message.key, message.value, now, settings)
    counters[f"in:{message.topic}"] += 1
    if isinstance(decoded, Rejected):
        batch.reject(event, decoded, now)
        return
    # Deadlines up to the safe time fire first, as they would have live; an event beyond it
    # waits in its cart's pending list until the safe time reaches it (see apply_event).
    timers.observe(message.tp, decoded.occurred_at.timestamp(), now)
    horizon = timers.safe_time(message.partition)
    await fire_due(batch, event, horizon)
    try:
        state = batch.load(decoded.cart_id)
        transition = apply_event(state, decoded, settings, message.partition, horizon)
    except Exception as exc:  # a bug must cost one event, never the stream
        log.exception("processing %s failed", decoded.event_id)
        batch.reject(event, Rejected("processing_failed", f"{type(exc).__name__}: {exc}"), now)
        return
    batch.apply(decoded.cart_id, transition)
    # Only now is the message processed: if it was the partition's last, the wall clock may
    # fire what it holds back (such as this very purchase).
    timers.processed(message.tp, message.offset)
    await fire_due(batch, event)


def handle_reminder_sent(batch: Batch, event: EventT) -> None:
    """The notifier's feedback that a reminder went out for the cart's abandonment."""
    message = event.message
    try:
        feedback = ReminderSent.model_validate_json(message.value or b"")
    except ValidationError as exc:
        batch.reject(event, Rejected("invalid", str(exc)[:1000]), time.time())
        return
    state = batch.load(feedback.cart_id)
    batch.apply(feedback.cart_id, on_reminder_sent(state, feedback.abandonment_id))


async def fire_due(batch: Batch, event: EventT, horizon: float | None = None) -> None:
    """Decide every cart of the event's partition whose deadline the safe time has reached."""
    partition = event.message.partition
    earliest = timers.deadlines.earliest(partition)
    if earliest is None or earliest > time.time():
        return  # the safe time never passes the wall clock: nothing can be due
    if horizon is None:
        horizon = timers.safe_time(partition)
    while due := timers.deadlines.pop_due(partition, horizon, FIRE_BATCH):
        for deadline, cart_id in due:
            state = batch.load(cart_id)
            if state is None or state.scheduled_at != deadline:
                continue  # a stale entry: the cart was forgotten or rescheduled earlier
            state.scheduled_at = None
            batch.apply(cart_id, on_deadline(state, horizon, settings))
        if len(batch.outputs) >= FIRE_BATCH:
            await batch.commit()  # many carts due at once: publish them as they are decided


@app.agent(pipeline_source)
async def cart_lifecycle(stream: StreamT) -> None:
    """Fold cart and purchase events into cart state; fire due inactivity timers."""
    await declare_topics()
    async for event in stream.events():
        batch = Batch()
        topic = event.message.topic
        if topic == TICK_TOPIC:  # asked for by the wall-clock timer
            timers.tick_seen(event.message.partition)
            await fire_due(batch, event)
        elif topic == REMINDER_SENT_TOPIC:
            handle_reminder_sent(batch, event)
        else:
            await handle_input(batch, event)
        await batch.commit()


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
