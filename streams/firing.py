"""Abandonments prepared ahead of their deadline, and sent in record batches when it comes.

Deciding a cart at its deadline (read it, run the state machine, build and serialize the
snapshot) costs tens of microseconds, so when 100k carts fall silent at once the last of them
would go out seconds late. The lifecycle agent therefore prepares each abandonment shortly
before its deadline (``PartitionTimers.stage``): the serialized message is kept with the
deadline it was prepared for, and any change to the cart drops it. At the deadline the prepared
messages go straight into one record batch per partition (``streams.recordbatches``); the
carts' state is updated after they are on their way, and a cart whose message was dropped is
decided the ordinary way.
"""

from dataclasses import dataclass


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
