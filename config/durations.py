"""Human-friendly durations ("45s", "30m", "2h", "3d", "1w", "1mo") for settings.

Stores configure how long a cart may stay silent before it counts as abandoned, from seconds
(tests, flash sales) to months (B2B quotes). A month is 30 days: deadlines stay plain
arithmetic on epoch seconds, independent of calendars and time zones.
"""

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

UNIT_SECONDS: dict[str, int] = {
    "s": 1,
    "m": 60,
    "h": 3_600,
    "d": 86_400,
    "w": 7 * 86_400,
    "mo": 30 * 86_400,
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mo|s|m|h|d|w)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (a bare number is seconds); ``ValueError`` with a readable message."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a positive number, optionally followed by one "
            "of s, m, h, d, w, mo (for example '45s', '30m', '2h', '3d', '1w', '1mo')"
        )
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]
    if not 0 < seconds < math.inf:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero and finite")
    return seconds



def _seconds(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0, allow_inf_nan=False)]
"""Seconds, for settings; accepts "45s", "30m", "2h", "3d", "1w", "1mo" or a number of seconds."""
