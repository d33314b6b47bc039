"""What a fault scenario saw, and the one-table report ``cartwatch chaos`` prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cartwatch_dev.loadgen.ledger import KINDS, Expected, Kind, Verdict, compare


@dataclass
class ScenarioResult:
    """Expected versus seen for one scenario; ``ok`` is the verdict the tests assert."""

    name: str
    faults: list[str]
    carts: int
    messages: int
    expected: Expected
    outputs: dict[Kind, list[dict[str, Any]]]
    """Every record seen on each output topic (contract JSON), repeats included."""
    duplicate_outputs: int
    """Output records repeating a (type, abandonment_id): tolerated, consumers de-duplicate."""
    dead_letters_expected: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    emails_expected: int | None = None
    emails: int | None = None
    duplicate_emails: int | None = None
    missing_emails: list[tuple[str, int]] = field(default_factory=list)
    """Due reminders (abandonment, step) that never arrived."""
    max_delay: float | None = None
    """Worst time from an abandonment's ``abandoned_at`` to its first output record."""
    delay_bound: float | None = None
    """The worst delay allowed (the measured rebalance time plus slack), if the scenario has one."""
    producer_lag: float = 0.0
    blackouts: list[tuple[float, float]] = field(default_factory=list)
    """Wall-clock windows in which reminders could not be decided (a worker down until its
    successor owned the partitions): a follow-up inside one leaves the reminder to timing."""
    recovery: float | None = None
    """Network faults: seconds from the fault's end until every output came on time again."""
    stored_versions: dict[str, Counter[int]] = field(default_factory=dict)
    """Rolling upgrade: how many values of each format version each table's changelog holds."""
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Problems a scenario found itself (a worker exited, a partition did not move...)."""

    def _ids(self, kind: Kind) -> set[str]:
        return {record["abandonment_id"] for record in self.outputs.get(kind, ())}

    @property
    def abandoned(self) -> set[str]:
        return self._ids("abandoned")

    @property
    def recovered(self) -> set[str]:
        return self._ids("recovered")

    @property
    def reactivated(self) -> set[str]:
        return self._ids("reactivated")

    @property
    def verdict(self) -> Verdict:
        """The outputs judged against the ledger: missing, unexpected, different contents."""
        return compare(self.expected, self.outputs)

    @property
    def lost(self) -> set[str]:
        verdict = self.verdict
        return set().union(*(verdict.missing[kind] for kind in KINDS))

    @property
    def unexpected(self) -> set[str]:
        verdict = self.verdict
        return set().union(*(verdict.unexpected[kind] for kind in KINDS))

    def problems(self) -> list[str]:
        """Every way the run fell short; empty means nothing lost, nothing invented, every
        abandoned cart as the shopper left it, and nothing sent twice."""
        found = list(self.failures)
        found += self.verdict.problems()
        if self.dead_letters != self.dead_letters_expected:
            found.append(f"dead letters {dict(self.dead_letters)} != "
                         f"expected {dict(self.dead_letters_expected)}")
        if self.emails_expected is not None and self.emails != self.emails_expected:
            found.append(f"emails {self.emails} != expected {self.emails_expected}; "
                         f"missing {self.missing_emails[:5]}")
        if self.duplicate_emails:
            found.append(f"{self.duplicate_emails} duplicate email(s)")
        if (self.delay_bound is not None and self.max_delay is not None
                and self.max_delay > self.delay_bound):
            found.append(f"max delay {self.max_delay:.2f} s > bound {self.delay_bound:.2f} s")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()


def _pair(expected: int | None, seen: int | None) -> str:
    return "-" if expected is None else f"{expected}/{seen}"


def render(results: list[ScenarioResult]) -> str:
    """The report: one row per scenario, then the faults and any problem of each."""
    header = ("scenario", "carts", "abandoned exp/seen", "recovered", "reactivated",
              "dup outputs", "emails exp/seen", "dup emails", "dead letters", "max delay",
              "verdict")
    rows = [header]
    for r in results:
        delay = "-" if r.max_delay is None else f"{r.max_delay:.2f} s"
        if r.delay_bound is not None:
            delay += f" (<= {r.delay_bound:.2f})"
        rows.append((
            r.name, str(r.carts),
            f"{len(r.expected.abandonment_ids)}/{len(r.abandoned)}",
            f"{len(r.expected.recovered_ids)}/{len(r.recovered)}",
            f"{len(r.expected.reactivated_ids)}/{len(r.reactivated)}",
            str(r.duplicate_outputs),
            _pair(r.emails_expected, r.emails),
            "-" if r.duplicate_emails is None else str(r.duplicate_emails),
            _pair(sum(r.dead_letters_expected.values()), sum(r.dead_letters.values())),
            delay,
            "OK" if r.ok else "FAILED",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]
    for r in results:
        lines.append(f"\n{r.name}: {r.messages} messages, producer lag <= {r.producer_lag:.2f} s")
        lines.extend(f"  fault: {fault}" for fault in r.faults)
        if r.recovery is not None:
            lines.append(f"  recovered: outputs on time again {r.recovery:.1f} s after the "
                         f"fault ended")
        lines.extend(f"  note: {note}" for note in r.notes)
        lines.extend(f"  PROBLEM: {problem}" for problem in r.problems())
    return "\n".join(lines)
