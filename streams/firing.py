"""Abandonments prepared ahead of their deadline, and sent in record batches when it comes.

Deciding a cart at its deadline (read it, run the state machine, build and serialize the
snapshot) costs tens of microseconds, so when 100k carts fall silent at once the last of them
would go out seconds late. The lifecycle agent therefore prepares each abandonment shortly
before its deadline (``PartitionTimers.stage``): the serialized message is kept with the
deadline it was prepared for, and any change to the cart drops it. At the deadline the prepared
messages go straight into one record batch per partition; the carts' state is updated after
they are on their way, and a cart whose message was dropped is decided the ordinary way.
"""

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder


@dataclass(slots=True, frozen=True)
class Prepared:
    """An abandonment message, valid while the cart stays as it was when prepared."""

    deadline: float
    value: bytes
    after: float
    """The cart's next deadline once abandoned: a safe time past it needs the full decision."""


class PreparedAbandonments:
    """Prepared messages by partition and cart."""

    def __init__(self) -> None:
        self._partitions: dict[int, dict[str, Prepared]] = {}
        self._sent: dict[int, list[tuple[float, str]]] = {}

    def put(self, partition: int, cart_id: str, prepared: Prepared) -> None:
        self._partitions.setdefault(partition, {})[cart_id] = prepared

    def discard(self, partition: int, cart_id: str) -> None:
        """The cart changed: its prepared message no longer says what its deadline will."""
        carts = self._partitions.get(partition)
        if carts:
            carts.pop(cart_id, None)

    def take(self, partition: int, cart_id: str, deadline: float, horizon: float) -> bytes | None:
        """The prepared message of a cart due at ``deadline``, if it still holds at ``horizon``."""
        carts = self._partitions.get(partition)
        prepared = carts.pop(cart_id, None) if carts else None
        if prepared is None or prepared.deadline != deadline or prepared.after <= horizon:
            return None
        return prepared.value

    def mark_sent(self, partition: int, entries: list[tuple[float, str]]) -> None:
        """These ``(deadline, cart_id)`` went out ahead of the agent, which has to decide them."""
        self._sent.setdefault(partition, []).extend(entries)

    def has_any(self, partition: int) -> bool:
        return bool(self._partitions.get(partition))

    def has_sent(self, partition: int) -> bool:
        return bool(self._sent.get(partition))

    def take_sent(self, partition: int) -> list[tuple[float, str]]:
        return self._sent.pop(partition, [])

    def clear(self) -> None:
        """After a rebalance the timer index is rebuilt from the table, and so is this."""
        self._partitions.clear()
        self._sent.clear()

    def __len__(self) -> int:
        return sum(len(carts) for carts in self._partitions.values())


class BatchSender:
    """Appends messages to record batches, one open batch per topic partition, then sends them.

    aiokafka's batch API costs a few microseconds a message where ``send`` costs about ten.
    Nothing is awaited while messages are appended, so no other task runs in between; each
    record's timestamp is the time it was appended.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._full: list[tuple[str, int, BatchBuilder]] = []
        self.messages = 0

    def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.messages += 1
        batch = self._open.get((topic, partition))
        if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
            return
        if batch is not None:
            self._full.append((topic, partition, batch))
        batch = self._open[topic, partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            raise ValueError(f"a {len(value)} byte message does not fit in a record batch")

    async def flush(self) -> list[tuple[int, asyncio.Future[object]]]:
        """Send every batch; returns ``(partition, future)`` of each, to await."""
        batches = self._full + [(topic, partition, batch)
                                for (topic, partition), batch in self._open.items()]
        self._full, self._open = [], {}
        return [
            (partition, await self._producer.send_batch(batch, topic, partition=partition))
            for topic, partition, batch in batches
        ]
