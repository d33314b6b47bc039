"""Figure i: notifier throughput, in emails per second accepted by a local SMTP server.

The bench owns everything the figure depends on:

- an SMTP sink (a thread of the bench process, on 127.0.0.1) that accepts every message and
  records when it arrived, its Message-ID and its envelope recipients; it keeps nothing else,
  so it costs far less CPU per message than the stack's aiosmtpd/Maildir server;
- the input: ``emails`` ``CartAbandoned`` messages pre-loaded on the run's abandoned topic,
  one per cart and customer (distinct addresses, marketing consent given), abandoned a minute
  ago with a one-step sequence due one second after the abandonment: every step is due the
  moment the worker reads it, and no consent, frequency cap or purchase check suppresses one;
- a real ``cartwatch worker`` with the notifier enabled, pointing at the sink.

The rate is measured at the sink, from the first to the last accepted email. The run then
waits until the worker has committed every due reminder (so a duplicate would have arrived)
and checks that each expected email arrived exactly once, to its customer only.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cartwatch_dev.bench.processes import BenchError, Process, poll
from cartwatch_dev.stack.settings import LOCALHOST
from config.kafka import KafkaSettings, client_options
from schemas.common import Customer, utc_from_epoch
from schemas.outputs import CartAbandoned, CartLine, CartSnapshot
from streams.notifier.planning import idempotency_key

STORE = "bench"
FROM_DOMAIN = "cartwatch.invalid"
"""Domain of the default ``from_address``: the Message-ID of each reminder ends with it."""
LINK_SECRET = "bench-link-secret-not-for-production"
TOPICS = {
    "cart_events": "cart-events", "purchase_events": "purchase-events",
    "abandoned": "cart-abandoned", "recovered": "cart-recovered",
    "reactivated": "cart-reactivated", "unsubscribes": "cartwatch-unsubscribes",
}
"""Inputs of the worker's agents, created before it subscribes (see ``create_topics``)."""
REMINDERS_DUE = "cartwatch-reminders-due"
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


# --- the SMTP sink ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    message_id: str
    recipients: tuple[str, ...]


class Sink:
    """What the sink accepted, in arrival order (appended from the sink's thread)."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []

    def count(self) -> int:
        return len(self.arrivals)

    def accept(self, content: bytes, recipients: list[str]) -> None:
        headers = content.split(b"\r\n\r\n", 1)[0]
        match = _MESSAGE_ID.search(headers)
        message_id = match.group(1).decode(errors="replace") if match else ""
        self.arrivals.append(Arrival(time.time(), message_id, tuple(recipients)))


class SinkProtocol(asyncio.Protocol):
    """The server side of one SMTP connection: enough of RFC 5321 for any client to deliver.

    Advertises what the stack's aiosmtpd server does (SIZE, 8BITMIME, SMTPUTF8), accepts every
    message and keeps only what ``Sink.accept`` records; replies to pipelined commands in one
    write.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = b""
        self.in_data = False
        self.recipients: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 localhost cartwatch bench sink\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies: list[bytes] = []
        while True:
            if self.in_data:
                if self.buffer.startswith(b".\r\n"):
                    content, rest = b"", self.buffer[3:]
                elif (end := self.buffer.find(b"\r\n.\r\n")) >= 0:
                    content, rest = self.buffer[:end + 2], self.buffer[end + 5:]
                else:
                    break
                self.buffer, self.in_data = rest, False
                self.sink.accept(content, self.recipients)
                self.recipients = []
                replies.append(b"250 OK: queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
            reply = self.command(line)
            replies.append(reply)
            if reply.startswith(b"221"):
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
        if replies:
            self.transport.write(b"".join(replies))

    def command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return b"250-localhost\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        if verb == b"HELO":
            return b"250 localhost\r\n"
        if verb in (b"MAIL", b"RSET"):
            self.recipients = []
            return b"250 OK\r\n"
        if verb == b"RCPT":
            address = line.partition(b"<")[2].partition(b">")[0]
            self.recipients.append(address.decode(errors="replace"))
            return b"250 OK\r\n"
        if verb == b"DATA":
            if not self.recipients:
                return b"503 Error: need RCPT command\r\n"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"NOOP":
            return b"250 OK\r\n"
        if verb == b"QUIT":
            return b"221 Bye\r\n"
        return b"500 Error: command not recognized\r\n"


@contextmanager
def smtp_sink(port: int) -> Iterator[Sink]:
    """Serve SMTP on 127.0.0.1:``port`` from a thread of this process while the block runs.

    A lean sink rather than the stack's aiosmtpd server: this one costs the shared cores about
    a tenth of aiosmtpd's CPU per message, so the figure is about the notifier.
    """
    sink = Sink()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    connections: list[SinkProtocol] = []

    def protocol() -> SinkProtocol:
        connections.append(SinkProtocol(sink))
        return connections[-1]

    def serve() -> None:
        try:
            server = loop.run_until_complete(loop.create_server(protocol, LOCALHOST, port))
        except BaseException as exc:  # reported to the bench thread below
            failure.append(exc)
            return
        finally:
            started.set()
        loop.run_forever()
        server.close()
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, name="smtp-sink", daemon=True)
    thread.start()
    started.wait(30)
    if failure or not started.is_set():
        raise BenchError(f"the SMTP sink could not listen on {LOCALHOST}:{port}: {failure}")
    try:
        yield sink
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


# --- input ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reminder:
    """One expected email."""

    abandonment_id: str
    email: str

    @property
    def message_id(self) -> str:
        return f"<{idempotency_key(self.abandonment_id, 1, 'email')}@{FROM_DOMAIN}>"


def abandonments(count: int, run_id: str, now: float) -> list[tuple[Reminder, CartAbandoned]]:
    """``count`` carts of distinct consenting customers, abandoned a minute before ``now``."""
    abandoned_at = utc_from_epoch(now - 60)
    out = []
    for number in range(count):
        cart_id = f"{run_id}-cart-{number}"
        email = f"shopper-{number}@{run_id}.example"
        lines = [
            CartLine(sku="TEA-1", name="Green tea", quantity=2, unit_price=Decimal("4.50"),
                     line_total=Decimal("9.00"), url="https://shop.example/tea-1",
                     image_url="https://shop.example/img/tea-1.png"),
            CartLine(sku="MUG-1", name="Mug", quantity=1, unit_price=Decimal("12.00"),
                     line_total=Decimal("12.00")),
        ]
        message = CartAbandoned(
            abandonment_id=f"{cart_id}:1", sequence=1, cart_id=cart_id, store_id=STORE,
            cart=CartSnapshot(
                lines=lines, item_count=3, total=Decimal("21.00"), currency="EUR",
                customer=Customer(email=email, name=f"Shopper {number}",
                                  marketing_consent=True),
                cart_url=f"https://shop.example/cart/{cart_id}",
            ),
            created_at=abandoned_at - timedelta(minutes=40),
            last_activity_at=abandoned_at - timedelta(minutes=30),
            abandoned_at=abandoned_at,
        )
        out.append((Reminder(message.abandonment_id, email), message))
    return out


async def load(bootstrap: str, topic: str, messages: list[CartAbandoned],
               kafka: KafkaSettings) -> None:
    """Publish the abandonments keyed by cart_id (the worker's partitioner) and wait for acks."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=512 * 1024, **client_options(kafka))
    await producer.start()
    try:
        pending = [await producer.send(topic, m.model_dump_json().encode(),
                                       key=m.cart_id.encode()) for m in messages]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# --- the run ----------------------------------------------------------------------------------


@dataclass
class NotifierResult:
    expected: int
    rate: float | None
    first_at: float | None
    last_at: float | None
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        return bool(self.checks.get("exactly_once"))


def verify(reminders: list[Reminder], arrivals: list[Arrival]) -> dict[str, Any]:
    """Did every expected email arrive exactly once, to its customer only?"""
    expected = {r.message_id: r.email for r in reminders}
    seen = Counter(a.message_id for a in arrivals)
    wrong_recipients = sum(1 for a in arrivals if a.message_id in expected
                           and a.recipients != (expected[a.message_id],))
    checks = {
        "expected": len(expected),
        "received": len(arrivals),
        "missing": sum(1 for mid in expected if mid not in seen),
        "duplicates": sum(n - 1 for mid, n in seen.items() if mid in expected and n > 1),
        "unexpected": sum(n for mid, n in seen.items() if mid not in expected),
        "wrong_recipients": wrong_recipients,
    }
    checks["exactly_once"] = (checks["missing"] == checks["duplicates"] == checks["unexpected"]
                              == checks["wrong_recipients"] == 0)
    return checks


@dataclass
class NotifierRun:
    """Figure i for one bench run (see the module doc)."""

    bootstrap: str
    run_id: str
    prefix: str
    emails: int
    timeout: float
    say: Callable[[str], None]
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def worker_settings(self, smtp_port: int) -> dict[str, str]:
        return {
            "CARTWATCH_NOTIFIER_ENABLED": "true",
            "CARTWATCH_LINK_SECRET": LINK_SECRET,
            "CARTWATCH_SMTP_HOST": LOCALHOST,
            "CARTWATCH_SMTP_PORT": str(smtp_port),
            "CARTWATCH_REMINDER_STEPS": "1s:reminder",
            "CARTWATCH_READ_MODEL": "off",
        }

    def measure(self, start_worker: Callable[[dict[str, str]], Process], smtp_port: int
                ) -> NotifierResult:
        """Pre-load the input, run a worker against the sink, measure and verify."""
        from cartwatch_dev.bench.measurements import create_topics  # (measurements imports us)

        inputs = abandonments(self.emails, self.run_id, time.time())
        reminders = [reminder for reminder, _ in inputs]
        asyncio.run(create_topics(self.bootstrap, [self.topic(t) for t in TOPICS.values()],
                                  self.kafka))
        asyncio.run(load(self.bootstrap, self.topic(TOPICS["abandoned"]),
                         [message for _, message in inputs], self.kafka))
        self.say(f"i: {self.emails:,} due reminders loaded; worker sends them to the sink")
        with smtp_sink(smtp_port) as sink:
            worker = start_worker(self.worker_settings(smtp_port))
            worker.start()
            try:
                poll(lambda: worker.check_alive() or sink.count() >= self.emails,
                     self.timeout, f"{self.emails:,} emails at the SMTP sink", 0.05)
                # Everything due is processed and committed: a duplicate would be here by now.
                asyncio.run(self._wait_committed(worker.env["CARTWATCH_APP_ID"]))
                arrivals = list(sink.arrivals)
            finally:
                worker.stop()
        checks = verify(reminders, arrivals)
        times = sorted(a.at for a in arrivals)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        rate = (len(times) - 1) / span if span > 0 else None
        checks["seconds"] = round(span, 3)
        return NotifierResult(self.emails, rate, times[0] if times else None,
                              times[-1] if times else None, checks)

    async def _wait_committed(self, group: str) -> None:
        """Until ``group`` committed every partition of the abandoned and reminders-due topics."""
        topics = (self.topic(TOPICS["abandoned"]), self.topic(REMINDERS_DUE))
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **client_options(self.kafka))
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                    **client_options(self.kafka))
        await admin.start()
        await consumer.start()
        try:
            partitions = [TopicPartition(t["topic"], p["partition"])
                          for t in await admin.describe_topics(list(topics))
                          for p in t["partitions"]]
            deadline = time.monotonic() + min(self.timeout, 120.0)
            while True:
                committed = await admin.list_consumer_group_offsets(group)
                ends = await consumer.end_offsets(partitions)
                behind = {f"{tp.topic}[{tp.partition}]": end for tp, end in ends.items()
                          if end > 0 and (tp not in committed or committed[tp].offset < end)}
                if partitions and not behind:
                    return
                if time.monotonic() > deadline:
                    raise BenchError(f"the notifier worker did not commit its inputs: {behind}")
                await asyncio.sleep(0.2)
        finally:
            await consumer.stop()
            await admin.close()
