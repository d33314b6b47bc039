"""The thin Kafka shell of the load generator: publish messages, paced or as fast as possible."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TextIO

from aiokafka import AIOKafkaProducer

from cartwatch_dev.loadgen.model import Message, Topic
from config.kafka import KafkaSettings, client_options

WINDOW = 5_000
"""Sends in flight before waiting for the broker: bounds memory, keeps the pipe full."""


class Progress:
    """A one-line progress bar with the live rate, redrawn at most every 0.2 s."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.out, self.width = total, out, width
        self.started = self.drawn_at = time.monotonic()
        self.done = self._done_at_draw = 0
        self.rate = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.drawn_at >= 0.2 or self.done >= self.total:
            self.rate = (self.done - self._done_at_draw) / max(now - self.drawn_at, 1e-9)
            self.drawn_at, self._done_at_draw = now, self.done
            self.draw()

    def draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.out.write(
            f"\r[{bar}] {self.done:,}/{self.total:,}  {self.rate:,.0f} msg/s"
        )
        self.out.flush()

    def close(self) -> float:
        """End the line; return the average rate over the whole run."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.out.write(f"\n{self.done:,} messages in {elapsed:.1f} s "
                       f"({self.done / elapsed:,.0f} msg/s)\n")
        self.out.flush()
        return self.done / elapsed


async def produce(
    bootstrap: str,
    messages: Iterable[Message],
    topics: Mapping[Topic, str],
    *,
    rate: float | None = None,
    on_sent: Callable[[int], None] | None = None,
    kafka: KafkaSettings | None = None,
) -> int:
    """Publish ``messages`` in order (per cart: keyed), ``rate`` per second or unpaced.

    Returns the number sent once the broker has acknowledged every one. ``kafka``: how to
    connect (TLS, SASL); plaintext when None.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024,
        **client_options(kafka or KafkaSettings()),
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    pending: list[asyncio.Future[object]] = []
    try:
        for message in messages:
            if rate and sent % 100 == 0:
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing to the requested rate
            pending.append(
                await producer.send(topics[message.topic], message.value, key=message.key)
            )
            sent += 1
            if len(pending) >= WINDOW:
                await asyncio.gather(*pending)
                if on_sent:
                    on_sent(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        if on_sent:
            on_sent(len(pending))
    finally:
        await producer.stop()
    return sent


async def produce_live(
    bootstrap: str,
    messages: Iterable[Message],
    topics: Mapping[Topic, str],
    *,
    until: float | None = None,
    on_sent: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
    kafka: KafkaSettings | None = None,
) -> int:
    """Publish each message when the wall clock reaches its ``sent_at``, as a shop would.

    ``messages`` may be endless (``shoppers.continuous``): sending stops at the first message
    due after ``until`` (epoch seconds), or on cancellation. Waiting for each message's own
    time, not a rate, keeps the gaps that decide which carts are abandoned. Returns how many
    were sent, each acknowledged by the broker. ``kafka``: how to connect (as ``produce``).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                **client_options(kafka or KafkaSettings()))
    await producer.start()
    sent = 0
    pending: list[asyncio.Future[object]] = []
    try:
        for message in messages:
            if until is not None and message.sent_at > until:
                break
            if message.sent_at > clock():
                if pending:  # what is due goes out before we wait for the next one
                    await asyncio.gather(*pending)
                    if on_sent:
                        on_sent(len(pending))
                    pending.clear()
                await asyncio.sleep(message.sent_at - clock())  # the shopper's own pace
            pending.append(
                await producer.send(topics[message.topic], message.value, key=message.key)
            )
            sent += 1
        await asyncio.gather(*pending)
        if on_sent:
            on_sent(len(pending))
    finally:
        await producer.stop()
    return sent
