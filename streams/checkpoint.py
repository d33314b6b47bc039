"""A partition's work since its last commit, with its collaborators passed in.

As in Kafka Streams and Quix Streams, the carts a partition's events touch are read once and
folded in memory, their outputs are handed to the producer as they are decided, and on commit:

1. every output is awaited until the broker has acknowledged it,
2. then each changed cart is written once (state store and changelog),
3. then the input events are acknowledged, so the consumer may commit their offsets.

That order is the at-least-once guarantee: a crash anywhere repeats outputs (with the same
``abandonment_id``) rather than dropping them, and an offset never passes its state, nor state
its outputs. Nothing here imports Faust or talks to Kafka, so the order is unit-tested with
fakes (``tests/unit/test_checkpoint.py``); ``streams.pipeline`` wires the real producer, cart
store and timers in.

The carts stay in memory after the commit, as the committed values (up to ``CACHED_CARTS``
per partition, those read first forgotten first, as Kafka Streams' record cache keeps them):
a busy cart is not read and decoded again at every checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from config.settings import Settings
from schemas.common import Contract
from schemas.outputs import CartAbandoned
from streams.lifecycle import CartState, Transition, next_deadline

COMMIT_EVENTS = 5000
"""Events, or changed carts, after which a partition's checkpoint is committed: it bounds the
carts a checkpoint holds in memory (``pipeline.COMMIT_INTERVAL`` says why fewer commits pay)."""


CACHED_CARTS = COMMIT_EVENTS
"""Committed carts a partition's checkpoint keeps in memory for its next events: no more
than an open checkpoint may hold anyway. On the throughput replay (28k carts on 4
partitions) the store reads went from 98k to 50k, 28k of which are of new carts."""


class StateStore(Protocol):
    """Where cart state lives (``streams.cartstore.CartStore``)."""

    def get(self, partition: int, cart_id: str) -> CartState | None: ...

    async def write(self, partition: int, changes: Mapping[str, CartState | None]) -> None: ...


class OutputProducer(Protocol):
    """Hands a record to the producer; the awaitable it returns resolves once the broker has it
    (the shape of Faust's ``app.producer.send``)."""

    async def send(self, topic: str, key: bytes, value: bytes,
                   partition: int) -> Awaitable[object]: ...


class Acknowledgeable(Protocol):
    """An input event (Faust's ``EventT``): acknowledging it lets its offset be committed."""

    def ack(self) -> bool: ...


class DeadlineSchedule(Protocol):
    def schedule(self, partition: int, deadline: float, cart_id: str) -> None: ...


class PreparedOutputs(Protocol):
    def discard(self, partition: int, cart_id: str) -> None: ...


@dataclass
class CheckpointContext:
    """What every checkpoint of a worker shares: its collaborators and counters."""

    settings: Settings
    store: StateStore
    producer: OutputProducer
    deadlines: DeadlineSchedule
    prepared: PreparedOutputs
    output_topics: Mapping[type[Contract], str]
    counters: Counter[str] = field(default_factory=Counter)
    abandon_observers: list[Callable[[float, float], None]] = field(default_factory=list)
    """Called with each abandonment's deadline and the wall time the broker acknowledged it
    (``Checkpoint.observe_when_acked``), not the later commit's: the timer lag the operator
    sees must not depend on how often checkpoints commit."""
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


class Checkpoint:
    """A partition's work since its last commit (see the module doc).

    Outputs go to the partition of the cart they are about (its input partition), so each
    cart's outputs keep their order on one partition of every output topic.
    """

    def __init__(self, partition: int, context: CheckpointContext) -> None:
        self.partition = partition
        self.context = context
        self.states: dict[str, CartState | None] = {}
        """The carts read or changed since the last commit, and those kept from before it."""
        self.changed: set[str] = set()
        """The carts whose state differs from the store's (written by the next commit)."""
        self.sends: list[Awaitable[object]] = []
        self.events: list[Acknowledgeable] = []
        self.opened_at = context.monotonic()

    def load(self, cart_id: str) -> CartState | None:
        if cart_id in self.states:
            return self.states[cart_id]
        state = self.states[cart_id] = self.context.store.get(self.partition, cart_id)
        return state

    async def apply(self, cart_id: str, transition: Transition) -> None:
        """Send a transition's outputs; take its state; keep the deadline index in step."""
        for output in transition.outputs:
            sent = await self.send(cart_id.encode(), output)
            if isinstance(output, CartAbandoned):
                self.observe_when_acked([output.abandoned_at.timestamp()], sent)
        if not transition.changed:
            return
        self.context.prepared.discard(self.partition, cart_id)
        state = transition.state
        if state is not None:
            deadline = next_deadline(state, self.context.settings)
            if state.scheduled_at is None or deadline < state.scheduled_at:
                state.scheduled_at = deadline
                self.context.deadlines.schedule(state.partition, deadline, cart_id)
        self.states[cart_id] = state
        self.changed.add(cart_id)

    async def send(self, key: bytes, output: Contract) -> Awaitable[object]:
        """Hand an output to the producer (``Topic.send`` costs ten times as much, measured);
        returns what completes on the broker's acknowledgement."""
        topic = self.context.output_topics[type(output)]
        value = output.model_dump_json().encode()
        sent = await self.context.producer.send(topic, key, value, self.partition)
        self.sends.append(sent)
        self.context.counters[f"out:{output.type}"] += 1  # type: ignore[attr-defined]
        return sent

    def observe_when_acked(self, deadlines: Sequence[float], sent: Awaitable[object]) -> None:
        """Tell the abandon observers about abandonments at ``deadlines`` once the broker
        acknowledged ``sent``, which carries them (a failed send tells nothing)."""
        observers, clock = self.context.abandon_observers, self.context.clock

        def acked(future: asyncio.Future[object]) -> None:
            if observers and not future.cancelled() and future.exception() is None:
                at = clock()
                for deadline in deadlines:
                    for observe in observers:
                        observe(deadline, at)

        asyncio.ensure_future(sent).add_done_callback(acked)

    def sent(self, awaitables: Sequence[Awaitable[object]]) -> None:
        """Records sent for this partition by someone else (a burst of prepared abandonments):
        the commit waits for them too."""
        self.sends.extend(awaitables)

    def forget_committed(self) -> None:
        """Drop the carts kept from earlier commits (a rebalance: until the partition comes
        back, another worker may change them)."""
        self.states = {cart_id: self.states[cart_id] for cart_id in self.changed}

    def due(self) -> bool:
        return len(self.events) >= COMMIT_EVENTS or len(self.changed) >= COMMIT_EVENTS

    def age(self) -> float:
        return self.context.monotonic() - self.opened_at

    async def commit(self) -> None:
        """Outputs first, acknowledged by the broker; then each changed cart, once; then the
        input events, so their offsets may be committed."""
        if self.sends:
            await asyncio.gather(*self.sends)
        if self.changed:
            changes = {cart_id: self.states[cart_id] for cart_id in self.changed}
            await self.context.store.write(self.partition, changes)
        for event in self.events:
            event.ack()
        self.context.counters["commits"] += 1
        self.changed.clear()
        for cart_id in list(islice(self.states, max(0, len(self.states) - CACHED_CARTS))):
            del self.states[cart_id]
        self.sends.clear()
        self.events.clear()
        self.opened_at = self.context.monotonic()
