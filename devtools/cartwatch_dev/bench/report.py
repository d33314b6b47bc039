"""Benchmark figures: the printed table and the JSON file, with ratios and floors."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured figure; ``value`` is None when it could not be measured (``note`` says why)."""

    key: str
    label: str
    value: float | None
    unit: str
    floor: str = ""
    """Human spelling of the floor, e.g. ``<= 1 s``; empty when there is none."""
    ok: bool | None = None
    """Whether the floor holds (None: no floor, or not measured)."""
    note: str = ""


@dataclass
class Report:
    """Everything one ``cartwatch bench`` run found."""

    mode: str
    command: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict[str, Any] = field(default_factory=lambda: machine())
    figures: list[Figure] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    """More Markdown tables a group prints after the figures (the read model's side by side)."""

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def value(self, key: str) -> float | None:
        return next((f.value for f in self.figures if f.key == key), None)

    def ratio(self, name: str, numerator: str, denominator: str, times: float = 1.0) -> None:
        top, bottom = self.value(numerator), self.value(denominator)
        self.ratios[name] = round(times * top / bottom, 3) if top and bottom else None

    def floors_hold(self) -> bool:
        return all(figure.ok is not False for figure in self.figures)

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    def table(self) -> str:
        """The results as a Markdown table (it reads the same in a terminal)."""
        rows = ["| | figure | value | floor | holds | note |", "|---|---|---|---|---|---|"]
        for figure in self.figures:
            value = (
                "not measured" if figure.value is None else f"{_fmt(figure.value)} {figure.unit}"
            )
            holds = {True: "yes", False: "**NO**", None: ""}[figure.ok]
            rows.append(f"| {figure.key} | {figure.label} | {value} | {figure.floor} | {holds} "
                        f"| {figure.note} |")
        ratios = ", ".join(
            f"{name} = {'n/a' if value is None else f'{value:.2f}'}"
            for name, value in self.ratios.items()
        )
        return "\n".join(rows) + f"\n\nRatios (same run): {ratios}\n" + "".join(
            f"\n{table}" for table in self.tables)


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def machine() -> dict[str, Any]:
    """What the figures ran on: they only compare within one run, but say where."""
    cpu = platform.processor() or ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = int(meminfo.read_text().split()[1]) * 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }
