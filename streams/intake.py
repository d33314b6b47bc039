"""Turning raw input messages into contract events, or into a precise reason for refusal.

Decoding happens here, not in Faust's serializers, so that one bad message becomes a dead letter
with its raw bytes and the stream never stops on it.
"""

import base64
import json
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import ValidationError

from config.settings import Settings
from schemas.common import utc_from_epoch
from schemas.events import CartEvent, CartEventType, PurchaseEvent
from schemas.outputs import DeadLetter

log = logging.getLogger("streams.intake")

InputKind = Literal["cart", "purchase"]
ErrorKind = Literal[
    "not_json", "invalid", "unknown_type", "out_of_range_time", "processing_failed",
    "unreadable_state",
]
KEPT_RAW_BYTES = 256 * 1024
"""A dead letter must itself fit in a Kafka message (1 MB by default)."""

CART_EVENT_TYPES: frozenset[str] = frozenset(CartEventType.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an input message was refused."""

    kind: ErrorKind
    error: str


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors()[:5]:
        location = ".".join(str(part) for part in detail["loc"]) or "message"
        parts.append(f"{location}: {detail['msg']}")
    return "; ".join(parts)[:1000]


def decode_input(
    kind: InputKind, key: bytes | None, value: bytes | None, now: float, settings: Settings
) -> CartEvent | PurchaseEvent | Rejected:
    """Validate one message of the cart or purchase topic against the contract.

    Valid messages take pydantic's JSON parser in one step; only a refused one is parsed
    again to say precisely why (not JSON, unknown type, invalid field).
    """
    if value is None:
        return Rejected("invalid", "empty message value")
    model = CartEvent if kind == "cart" else PurchaseEvent
    try:
        event = model.model_validate_json(value)
    except ValidationError:
        return _refusal(kind, model, value)
    return _checked(event, key, now, settings)


def _refusal(
    kind: InputKind, model: type[CartEvent] | type[PurchaseEvent], value: bytes
) -> Rejected:
    try:
        document = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return Rejected("not_json", f"not UTF-8 JSON: {exc}"[:300])
    if not isinstance(document, dict):
        return Rejected("invalid", f"expected a JSON object, got {type(document).__name__}")
    event_type = document.get("type")
    known_types = CART_EVENT_TYPES if kind == "cart" else {"order_completed"}
    if not isinstance(event_type, str) or event_type not in known_types:
        return Rejected(
            "unknown_type",
            f"unknown {kind} event type {str(event_type)[:50]!r}; expected one of "
            + ", ".join(sorted(known_types)),
        )
    try:
        model.model_validate(document)
    except ValidationError as exc:
        return Rejected("invalid", _describe(exc))
    return Rejected("invalid", "not valid JSON for the contract")  # JSON only pydantic refuses


def _checked(
    event: CartEvent | PurchaseEvent, key: bytes | None, now: float, settings: Settings
) -> CartEvent | PurchaseEvent | Rejected:
    if key is None or key.decode("utf-8", "replace") != event.cart_id:
        return Rejected("invalid", "message key must be the cart_id (it decides the partition)")
    occurred = event.occurred_at.timestamp()
    if occurred > now + settings.max_clock_skew:
        return Rejected("out_of_range_time", f"occurred_at {event.occurred_at} is in the future")
    if occurred < now - settings.max_event_age:
        return Rejected("out_of_range_time", f"occurred_at {event.occurred_at} is too old")
    return event


def dead_letter(
    rejected: Rejected,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    now: float,
) -> DeadLetter:
    """The dead-letter record for a refused message, with its raw bytes for a later replay."""

    def encode(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw[:KEPT_RAW_BYTES]).decode("ascii")

    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key_base64=encode(key),
        value_base64=encode(value),
        value_truncated=value is not None and len(value) > KEPT_RAW_BYTES,
        error=rejected.error,
        error_kind=rejected.kind,
        failed_at=utc_from_epoch(now),
    )


class RefusedMessage(Protocol):
    """Where a refused message was read (a Faust ``Message``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def refuse(message: RefusedMessage, rejected: Rejected, now: float,
           counters: MutableMapping[str, int]) -> DeadLetter:
    """Log a refused message in one line, count it, and return its dead-letter record.

    Every processor refuses this way (the lifecycle pipeline and the notifier), so the log line
    and ``cartwatch_dead_lettered_total`` mean the same whichever refused it.
    """
    log.error("dead-lettered %s[%d]@%d (%s): %s", message.topic, message.partition,
              message.offset, rejected.kind, rejected.error)
    counters["dead_lettered"] += 1
    return dead_letter(rejected, topic=message.topic, partition=message.partition,
                       offset=message.offset, key=message.key, value=message.value, now=now)
