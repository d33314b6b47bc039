"""Field types shared by the input and output contracts.

Limits are part of the contract: a value outside them is rejected to the dead-letter topic
instead of bending the state of a cart (a 1 MB product name, a quantity of 10^12).
"""

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
)

MAX_QUANTITY = 10_000

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Text = Annotated[str, Field(max_length=500)]
Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Email = Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Phone = Annotated[str, Field(max_length=40, pattern=r"^\+?[0-9 ()./-]{3,40}$")]
Locale = Annotated[str, Field(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY, strict=True)]


def _decimal_from_string(value: Any) -> Any:
    if not isinstance(value, str | Decimal):
        raise ValueError("money amounts are decimal strings, for example \"19.90\"")
    return value


_AS_DECIMAL_TEXT = PlainSerializer(lambda amount: format(amount, "f"), return_type=str)

Money = Annotated[
    Decimal,
    BeforeValidator(_decimal_from_string),
    Field(ge=0, le=Decimal("1000000000"), max_digits=16, decimal_places=4),
    _AS_DECIMAL_TEXT,
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,12}(\.\d{1,4})?$"}),
]
"""A non-negative amount, written as a decimal string so no float rounding creeps in."""

Total = Annotated[
    Decimal,
    Field(ge=0, max_digits=20, decimal_places=4),
    _AS_DECIMAL_TEXT,
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,16}(\.\d{1,4})?$"}),
]
"""A computed sum of ``Money`` amounts (line or cart total), beyond the cap of one input."""


def _valid_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_valid_time_zone)]

_RFC3339_START = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, datetime) or isinstance(value, str) and _RFC3339_START.match(value):
        return value
    raise ValueError("timestamps are RFC 3339 strings, for example 2026-11-25T10:00:00Z")


Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    PlainSerializer(
        lambda moment: moment.astimezone(UTC).isoformat().replace("+00:00", "Z"), return_type=str
    ),
]
"""RFC 3339 time with an explicit offset; written back in UTC with a ``Z``."""


def utc_from_epoch(seconds: float) -> datetime:
    """Convert internal epoch seconds back to the contract's aware datetimes."""
    return datetime.fromtimestamp(seconds, UTC)


class Contract(BaseModel):
    """Base of every message: unknown fields are ignored so producers can add fields first."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Customer(Contract):
    """Who owns the cart; every field is optional and later events fill in what they know."""

    id: Identifier | None = None
    email: Email | None = None
    name: Text | None = None
    phone: Phone | None = None
    locale: Locale | None = None
    timezone: TimeZone | None = None
    marketing_consent: StrictBool | None = None
