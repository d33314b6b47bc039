"""The cart lifecycle agent: input events and timer ticks in, state transitions out.

One agent consumes the cart events, the purchase events and the timer ticks of a partition. A
wall-clock timer only *asks* for a tick on partitions whose earliest deadline is due; the agent
then pops the due carts from the deadline index and decides with the state machine.

Work is checkpointed per partition (``streams.checkpoint.Checkpoint``, committed every
``COMMIT_EVENTS`` events or ``COMMIT_INTERVAL`` seconds): outputs acknowledged by the broker,
then each changed cart written once, then the input events acknowledged. Events stay
unacknowledged for at most ``COMMIT_INTERVAL``, so a rebalance (which waits until every event is
acknowledged) finds every checkpoint committed by the ``commit_idle`` task. This module wires the
checkpoints' collaborators (producer, cart store, timers, counters) to the Faust app.
"""

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from aiokafka.errors import KafkaError
from faust import Stream, Table
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, Web
from pydantic import ValidationError

from schemas.common import Contract
from schemas.notifications import LinkClick, ReminderSent
from schemas.outputs import CartAbandoned, CartReactivated, CartRecovered, DeadLetter
from streams import collector
from streams.app import (
    abandoned_topic,
    app,
    carts_guard,
    carts_table,
    dead_letter_topic,
    pipeline_source,
    reactivated_topic,
    recovered_topic,
    settings,
    timer_ticks_topic,
)
from streams.batch import PartitionBatches
from streams.cartstore import CartStore
from streams.checkpoint import Checkpoint, CheckpointContext
from streams.compat import page, raw_producer, table_stored_items
from streams.consumer import on_seek, use_batches
from streams.counters import worker_counters
from streams.firing import Prepared, PreparedAbandonments
from streams.intake import InputKind, RefusedMessage, Rejected, decode_input, refuse
from streams.lifecycle import (
    CartState,
    Transition,
    abandoned_message,
    abandons_at,
    apply_event,
    horizon_before,
    mark_abandoned,
    next_deadline,
    on_click,
    on_deadline,
    on_reminder_sent,
)
from streams.quarantine import install as install_quarantine
from streams.recordbatches import BatchSender
from streams.scheduling import PartitionTimers
from streams.stored import json_entries, readable
from streams.timers import event_safe_time

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 1.0
"""Seconds after which a partition's checkpoint is committed even if its events stop.

Each commit writes every cart its checkpoint changed and the next one reads them again, so a
busy cart is written once per commit: at 0.2 s the throughput replay wrote 117k cart records
for 28k carts, at 1 s 80k (with ``checkpoint.COMMIT_EVENTS`` at 5,000), 25 % faster. Outputs
do not wait for it (they are sent as they are decided); a crash makes the next owner redo up
to this plus ``offset_commit_interval``, with the same output ids."""
FIRE_GRACE = 0.2
"""Seconds after its deadline that a cart is decided on the wall clock alone (``PartitionTimers
.fire_horizon``; an input event still fires every deadline before its own time first), so that
a purchase produced just before the deadline is read first. The tick path that the
prepared sender replaced had that much latency by construction; firing to the millisecond made
the live fault tests intermittently emit abandonments the seed does not expect."""
HORIZON_POLL = 0.02
"""Seconds between looks at a caught-up partition whose due abandonments wait for the fetch
that proves the broker's end (``PartitionTimers.fire_horizon``): it is answered within
``compat.FETCH_MAX_WAIT``, and waiting a whole ``timer_resolution`` for it put a quarter of a
second on every burst. A partition whose input is behind waits for the agent instead."""
PREPARE_AHEAD = 30.0
"""Seconds before its deadline that a cart's abandonment is prepared (``streams.firing``)."""
PREPARE_BATCH = 5000
"""Abandonments prepared per timer tick, so that input keeps flowing between ticks."""

CART_TOPIC = settings.topic("cart_events")
PURCHASE_TOPIC = settings.topic("purchase_events")
TICK_TOPIC = settings.topic("timer_ticks")
REMINDER_SENT_TOPIC = settings.topic("reminders_sent")
CLICKS_TOPIC = settings.topic("clicks")
INPUT_KIND: dict[str, InputKind] = {CART_TOPIC: "cart", PURCHASE_TOPIC: "purchase"}
ABANDONED_TOPIC = abandoned_topic.get_topic_name()
OUTPUT_TOPICS: dict[type[Contract], str] = {
    CartAbandoned: abandoned_topic.get_topic_name(),
    CartReactivated: reactivated_topic.get_topic_name(),
    CartRecovered: recovered_topic.get_topic_name(),
    DeadLetter: dead_letter_topic.get_topic_name(),
}

timers = PartitionTimers(
    app,
    (CART_TOPIC, PURCHASE_TOPIC),
    timer_ticks_topic,
    prepare_ahead=PREPARE_AHEAD,
    grace=FIRE_GRACE,
)
store = CartStore(app, cast(Table, carts_table))  # app.Table is annotated TableT
prepared = PreparedAbandonments()
install_quarantine(app, carts_table, carts_guard, dead_letter_topic)


class FaustOutputProducer:
    """The worker's producer in the shape ``Checkpoint`` needs: records straight to a topic
    name and partition (``Topic.send`` costs ten times as much, measured)."""

    async def send(self, topic: str, key: bytes, value: bytes,
                   partition: int) -> Awaitable[object]:
        return await app.producer.send(topic, key, value, partition, None, None)


context = CheckpointContext(
    settings=settings,
    store=store,
    producer=FaustOutputProducer(),
    deadlines=timers.deadlines,
    prepared=prepared,
    output_topics=OUTPUT_TOPICS,
    counters=worker_counters,
)
counters = context.counters
abandon_observers = context.abandon_observers
"""Called with each abandonment's deadline and the wall time it was published (timer lag)."""


async def declare_topics() -> None:
    """Create the output topics before anything is sent, with the configured partitions."""
    for topic in (abandoned_topic, recovered_topic, reactivated_topic, dead_letter_topic):
        await topic.maybe_declare()


async def reject(checkpoint: Checkpoint, tp: TP, message: RefusedMessage, rejected: Rejected,
                 now: float) -> None:
    """Log, count and dead-letter an input message; the stream moves past it."""
    letter = refuse(message, rejected, now, counters)
    await checkpoint.send(message.key or b"", letter)
    if message.topic in INPUT_KIND:
        timers.processed(tp, message.offset)


checkpoints: dict[int, Checkpoint] = {}
commit_lock = asyncio.Lock()
"""Held while an event is processed or a checkpoint committed: a commit never sees half an event."""


def checkpoint_for(partition: int) -> Checkpoint:
    checkpoint = checkpoints.get(partition)
    if checkpoint is None:
        checkpoint = checkpoints[partition] = Checkpoint(partition, context)
    return checkpoint


async def handle_input(checkpoint: Checkpoint, tp: TP, message: RefusedMessage,
                       fire_after: bool = True, held_back: float | None = None) -> None:
    """One cart or purchase event (a Faust message, or a record of a batch: the batch fires
    what its records made due once, after the last, ``fire_after=False``, and tells how the
    partition's other inputs hold its safe time back, ``held_back``, worked out once per
    batch: ``PartitionTimers.held_back_by_others``)."""
    now = time.time()
    decoded = decode_input(INPUT_KIND[message.topic], message.key, message.value, now, settings)
    counters[f"in:{message.topic}"] += 1
    stamp = int(now * 1000)
    if "in_first_ms" not in counters:
        counters["in_first_ms"] = stamp  # the worker's own timing of its input (the bench)
    counters["in_last_ms"] = stamp
    if isinstance(decoded, Rejected):
        await reject(checkpoint, tp, message, decoded, now)
        return
    # Deadlines up to the safe time fire first, as they would have live; an event beyond it
    # waits in its cart's pending list until the safe time reaches it (see apply_event).
    event_time = decoded.occurred_at.timestamp()
    timers.observe(tp, message.offset, event_time, now)
    if held_back is None:
        horizon = timers.safe_time(tp.partition)
    else:
        horizon = event_safe_time(held_back, event_time, now)
    await fire_due(checkpoint, horizon_before(decoded, horizon))
    try:
        state = checkpoint.load(decoded.cart_id)
        transition = apply_event(state, decoded, settings, tp.partition, horizon)
    except Exception as exc:  # a bug must cost one event, never the stream
        log.exception("processing %s failed", decoded.event_id)
        await processing_failed(checkpoint, tp, message, exc)
        return
    await checkpoint.apply(decoded.cart_id, transition)
    # Only now is the message processed: if it was the partition's last, the wall clock may
    # fire what it holds back (such as this very purchase).
    timers.processed(tp, message.offset)
    if fire_after:
        await fire_due(checkpoint)


batch_held_back: dict[int, float] = {}
"""Per partition, how its other inputs hold back the safe time of the batch being processed
(``begin_batch``)."""


def begin_batch(checkpoint: Checkpoint, tp: TP) -> None:
    """Work out once per batch what the safe time of each of its records depends on besides
    the record itself (``PartitionTimers.held_back_by_others``)."""
    batch_held_back[tp.partition] = timers.held_back_by_others(tp)


async def handle_batch_record(checkpoint: Checkpoint, tp: TP, record: RefusedMessage) -> None:
    """A record of a batch: deadlines before it fire first, as for any event; those that
    only the wall clock makes due wait for the end of the batch (``fire_due`` once), which
    is never later than the next record's own firing."""
    await handle_input(checkpoint, tp, record, fire_after=False,
                       held_back=batch_held_back[tp.partition])


async def processing_failed(checkpoint: Checkpoint, tp: TP, message: RefusedMessage,
                            exc: Exception) -> None:
    """Dead-letter an input event whose processing raised (a bug): it is kept, not lost."""
    failure = Rejected("processing_failed", f"{type(exc).__name__}: {exc}"[:1000])
    await reject(checkpoint, tp, message, failure, time.time())


async def handle_reminder_sent(checkpoint: Checkpoint, event: EventT) -> None:
    """The notifier's feedback that a reminder went out for the cart's abandonment."""
    feedback = await decode_feedback(checkpoint, event, ReminderSent)
    if feedback is not None:
        state = checkpoint.load(feedback.cart_id)
        await checkpoint.apply(feedback.cart_id, on_reminder_sent(state, feedback))


async def handle_click(checkpoint: Checkpoint, event: EventT) -> None:
    """A counted click on a reminder link of the cart (``cartwatch-clicks``, keyed by cart,
    so on this partition): the state remembers it for the recovery's attribution. The event
    is acknowledged with the checkpoint that writes the state, so a click counts once even
    after a crash, and reading it again changes nothing (``on_click`` keeps the earliest)."""
    click = await decode_feedback(checkpoint, event, LinkClick)
    if click is not None:
        await checkpoint.apply(click.cart_id, on_click(checkpoint.load(click.cart_id), click))


Feedback = TypeVar("Feedback", ReminderSent, LinkClick)


async def decode_feedback(
        checkpoint: Checkpoint, event: EventT, model: type[Feedback]) -> Feedback | None:
    """The message as ``model`` (None: dead-lettered), after the due deadlines fired: the
    abandonment it is about may be out but not yet decided."""
    message = event.message
    await fire_due(checkpoint)
    try:
        return model.model_validate_json(message.value or b"")
    except ValidationError as exc:
        await reject(checkpoint, message.tp, message, Rejected("invalid", str(exc)[:1000]),
                     time.time())
        return None


async def fire_due(checkpoint: Checkpoint, horizon: float | None = None) -> None:
    """Decide every cart of the partition whose deadline the safe time has reached.

    Prepared abandonments go out first, all of them, before any cart is read or written;
    then the carts they were about, and those without one, are decided and written.
    """
    partition = checkpoint.partition
    earliest = timers.earliest(partition)
    sent_ahead_waiting = prepared.has_sent(partition)
    nothing_due = earliest is None or earliest > time.time()
    if nothing_due and not sent_ahead_waiting:
        return  # the safe time never passes the wall clock: nothing can be due
    if horizon is None:
        horizon = timers.fire_horizon(partition)
    if earliest is not None and earliest > horizon and not sent_ahead_waiting:
        return  # a replay: due by the wall clock, not yet by the event time of the inputs
    sent_ahead = prepared.take_sent(partition)
    due = [] if nothing_due else timers.pop_due(partition, horizon, sys.maxsize)
    sent: list[tuple[float, str]] = []
    if due and prepared.has_any(partition):
        burst = BatchSender(raw_producer(app))
        sent = take_prepared(burst, partition, due, horizon)
        if not await send_burst(burst, {partition: [deadline for deadline, _ in sent]}):
            sent = []  # each due cart is decided and sent the ordinary way below
    for deadline, cart_id in sent_ahead + sent:
        state = checkpoint.load(cart_id)
        if state is None or state.scheduled_at != deadline:
            log.error("a prepared abandonment of %s went out for a changed cart", cart_id)
            continue
        state.scheduled_at = None
        mark_abandoned(state, deadline)
        await checkpoint.apply(cart_id, Transition(state))
        if checkpoint.due():
            await checkpoint.commit()  # many carts due at once: commit as they are decided
    decided = {cart_id for _, cart_id in sent}
    for deadline, cart_id in due:
        if cart_id in decided:
            continue
        state = checkpoint.load(cart_id)
        if state is None or state.scheduled_at != deadline:
            continue  # a stale entry: the cart was forgotten or rescheduled earlier
        state.scheduled_at = None
        await checkpoint.apply(cart_id, on_deadline(state, horizon, settings))
        if checkpoint.due():
            await checkpoint.commit()


def take_prepared(
    burst: BatchSender, partition: int, due: list[tuple[float, str]], horizon: float
) -> list[tuple[float, str]]:
    """Add the prepared abandonments of ``due`` to ``burst``; return their entries."""
    taken = []
    for deadline, cart_id in due:
        value = prepared.take(partition, cart_id, deadline, horizon)
        if value is not None:
            burst.add(ABANDONED_TOPIC, partition, cart_id.encode(), value)
            taken.append((deadline, cart_id))
    return taken


async def send_burst(burst: BatchSender, deadlines: Mapping[int, Sequence[float]]) -> bool:
    """Send a burst; each partition's checkpoint waits for its batches before writing, and
    its abandonments (``deadlines``, by partition) are observed once its last batch is
    acknowledged.

    False when the producer refused a batch (no broker within its request timeout): the
    caller must then decide those carts the ordinary way, as if nothing had been prepared. A
    batch the producer took before the refusal may still go out, and its abandonments then go
    out twice, with the same ``abandonment_id`` (at least once, never lost).
    """
    try:
        flushed = await burst.flush()
    except KafkaError as exc:
        log.warning("prepared abandonments not sent (%s: %s); deciding those carts one by one",
                    type(exc).__name__, exc)
        return False
    last: dict[int, Awaitable[object]] = {}
    for sent in flushed:
        checkpoint_for(sent.partition).sent([sent.future])
        last[sent.partition] = sent.future
    for partition, acked in last.items():
        checkpoint_for(partition).observe_when_acked(deadlines.get(partition, ()), acked)
    counters["out:cart_abandoned"] += burst.messages
    return True


@app.task
async def send_prepared_on_time() -> None:
    """Send prepared abandonments the moment they fall due, for every partition at once.

    A tick would wait for the next timer run and a round trip through Kafka, and the agent
    decides partitions one at a time. What went out is handed to the agent with a tick, to
    decide the carts (``fire_due``) before any later event of theirs; due entries without a
    prepared message go back to the index for it.
    """
    while True:
        now, wait, due_partitions = time.time(), settings.timer_resolution, []
        for partition in timers.owned_partitions():
            earliest = timers.staged.earliest(partition)
            if earliest is None:
                continue
            if earliest > now - timers.grace:
                wait = min(wait, earliest + timers.grace - now)
            elif earliest <= timers.fire_horizon(partition):
                due_partitions.append(partition)
            elif timers.safe_time(partition) >= earliest:
                # caught up, but the broker's end of an input is not known that far yet: the
                # fetch that proves it is answered within compat.FETCH_MAX_WAIT
                wait = min(wait, HORIZON_POLL)
            # else its input is behind: the agent fires it once the safe time gets there
        if not due_partitions:
            await asyncio.sleep(wait)
            continue
        async with commit_lock:
            burst = BatchSender(raw_producer(app))
            taken: dict[int, list[tuple[float, str]]] = {}
            for partition in due_partitions:
                horizon = timers.fire_horizon(partition)
                due = timers.staged.pop_due(partition, horizon, sys.maxsize)
                taken[partition] = take_prepared(burst, partition, due, horizon)
                decided = {cart_id for _, cart_id in taken[partition]}
                for deadline, cart_id in due:
                    if cart_id not in decided:
                        timers.deadlines.schedule(partition, deadline, cart_id)
            delivered = await send_burst(burst, {
                partition: [deadline for deadline, _ in entries]
                for partition, entries in taken.items()})
            for partition, entries in taken.items():
                if delivered:  # the agent decides them with the tick asked for below
                    prepared.mark_sent(partition, entries)
                else:  # back to the index, to be decided and sent the ordinary way
                    for deadline, cart_id in entries:
                        timers.deadlines.schedule(partition, deadline, cart_id)
            for partition in due_partitions:
                await timers.request_tick(partition)
        await asyncio.sleep(0)  # whatever happened, let the other tasks run


def prepare_due(checkpoint: Checkpoint) -> None:
    """Prepare the abandonments of carts due within ``PREPARE_AHEAD`` (``streams.firing``)."""
    partition = checkpoint.partition
    for deadline, cart_id in timers.stage(partition, PREPARE_BATCH):
        if cart_id in checkpoint.changed:
            continue  # being changed now: decided the ordinary way at its deadline
        state = store.get(partition, cart_id)  # a copy of its own, free to change
        if state is None or state.scheduled_at != deadline:
            continue
        if abandons_at(state, deadline, settings):
            mark_abandoned(state, deadline)
            value = abandoned_message(state).model_dump_json().encode()
            after = next_deadline(state, settings)
            prepared.put(partition, cart_id, Prepared(deadline, value, after))


@app.agent(pipeline_source)
async def cart_lifecycle(stream: StreamT) -> None:
    """Fold cart and purchase events into cart state; fire due inactivity timers."""
    await declare_topics()
    async for event in cast(Stream, stream).noack().events():  # StreamT lacks noack
        message = event.message
        async with commit_lock:
            checkpoint = checkpoint_for(message.partition)
            if message.topic == TICK_TOPIC:  # asked for by the wall-clock timer
                timers.tick_seen(message.partition)
                await fire_due(checkpoint)
                prepare_due(checkpoint)
            elif message.topic == REMINDER_SENT_TOPIC:
                await handle_reminder_sent(checkpoint, event)
            elif message.topic == CLICKS_TOPIC:
                await handle_click(checkpoint, event)
            else:
                await handle_input(checkpoint, message.tp, message)
            checkpoint.events.append(event)
            if checkpoint.due():
                await checkpoint.commit()


batches = PartitionBatches(
    topics=INPUT_KIND,
    lock=commit_lock,
    checkpoint_for=checkpoint_for,
    checkpoints=lambda: checkpoints.values(),
    process=handle_batch_record,
    fail=processing_failed,
    finish=fire_due,
    begin=begin_batch,
)
"""Cart and purchase events a partition batch at a time, below Faust's stream
(``settings.batch_input``; ``streams.batch``)."""
use_batches(batches if settings.batch_input else None)
on_seek(timers)


@app.task
async def commit_idle() -> None:
    """Commit checkpoints older than ``COMMIT_INTERVAL`` whose partition went quiet.

    A task of its own, not an ``app.timer``: timers end as soon as the worker starts to stop,
    and Faust then waits for every event to be acknowledged before it lets go of partitions.
    """
    while True:
        await asyncio.sleep(COMMIT_INTERVAL / 2)
        async with commit_lock:
            for checkpoint in list(checkpoints.values()):
                if checkpoint.events and checkpoint.age() >= COMMIT_INTERVAL:
                    await checkpoint.commit()


@app.timer(interval=settings.timer_resolution)
async def request_ticks() -> None:
    """Ask the agent to fire timers on partitions whose earliest deadline is due, and to
    prepare the abandonments of those due soon.

    Its cost is counted (``ticks``, ``tick_ns``, ``tick_ns_max``): it runs every
    ``timer_resolution`` whatever the number of carts, so it must stay cheap.
    """
    started = time.perf_counter_ns()
    await timers.request_ticks()
    spent = time.perf_counter_ns() - started
    counters["ticks"] += 1
    counters["tick_ns"] += spent
    counters["tick_ns_max"] = max(counters["tick_ns_max"], spent)


def scheduled_carts(stored: Iterable[tuple[str, dict[str, Any]]]
                    ) -> Iterator[tuple[str, int, float | None]]:
    """``(cart_id, partition, deadline)`` of every stored cart, for ``PartitionTimers.rebuild``
    (a cart no format rule can read is logged and left out, not fatal to the rebuild)."""
    for cart_id, state in readable(stored, CartState.from_dict, "cart"):
        yield cart_id, state.partition, state.scheduled_at or next_deadline(state, settings)


@carts_table.on_recover
async def rebuild_deadlines() -> None:
    """After a rebalance, rebuild the deadline index of the owned partitions from the table."""
    owned = set(timers.owned_partitions())
    timers.rebuild(owned, scheduled_carts(json_entries(table_stored_items(carts_table), "cart")))
    prepared.clear()
    for checkpoint in checkpoints.values():
        checkpoint.forget_committed()  # a partition kept may have been another worker's since
    for partition in set(checkpoints) - owned:
        # Committed before the rebalance (it waits for every acknowledgement); what is left
        # unacknowledged is replayed by the partition's new owner.
        if checkpoints.pop(partition).events:
            log.warning("dropped the uncommitted checkpoint of lost partition %d", partition)
    log.info(
        "deadline index rebuilt: %d carts on partitions %s", len(timers), sorted(owned)
    )
    collector.settle()  # the index lives until the next rebalance


@page(app, "/cartwatch/counters/")
async def counters_page(web: Web, request: Request) -> Response:
    """This worker's event, output and dead-letter counts since it started."""
    return web.json(dict(counters))
