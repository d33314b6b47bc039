"""The Prometheus text exposition format (version 0.0.4), written without a client library.

Every metric cartwatch exposes is read from state the worker already keeps at scrape time
(counters, offsets, table sizes), so plain families rendered on request are all that is needed.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Kind = Literal["counter", "gauge", "summary", "histogram", "untyped"]


@dataclass
class Family:
    """One metric: its name, type, help text and samples ``(suffix, labels, value)``."""

    name: str
    kind: Kind
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> None:
        self.samples.append((suffix, dict(labels or {}), value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(families: Iterable[Family]) -> str:
    """All families as exposition text, ending with a newline."""
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            label_text = ",".join(
                f'{key}="{_escape_label(str(label))}"' for key, label in sorted(labels.items())
            )
            name = family.name + suffix
            lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text
                         else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class Histogram:
    """A cumulative histogram with fixed buckets, observed in-process."""

    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, help_text: str) -> Family:
        family = Family(name, "histogram", help_text)
        for bound, count in zip(self.buckets, self.counts, strict=True):
            family.add(count, {"le": _number(bound)}, "_bucket")
        family.add(self.count, {"le": "+Inf"}, "_bucket")
        family.add(self.total, suffix="_sum")
        family.add(self.count, suffix="_count")
        return family
