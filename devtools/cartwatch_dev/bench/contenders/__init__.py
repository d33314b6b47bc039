"""Contender processes and the tally they all keep: first and last event processed.

Each contender is started as its own process (``python -m cartwatch_dev.bench.contenders.<name>``)
with its settings in ``BENCH_*`` variables, consumes the pre-loaded topics with a fresh
consumer group, and writes ``{"first_at", "last_at", "count"}`` to ``BENCH_RESULT`` once it has
processed ``BENCH_EXPECT`` events.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from config.kafka import KafkaSettings, kafka_from_environment


@dataclass(frozen=True)
class ContenderConfig:
    """What every contender reads from its environment."""

    bootstrap: str
    topics: tuple[str, ...]
    group: str
    expect: int
    result: Path
    workdir: Path
    output_topic: str = ""
    partitions: int = 4
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """How to connect, passed on as ``CARTWATCH_KAFKA_*`` (the worker's own variables)."""

    @classmethod
    def from_env(cls) -> ContenderConfig:
        env = os.environ
        return cls(
            bootstrap=env["BENCH_BOOTSTRAP"],
            topics=tuple(env["BENCH_TOPICS"].split(",")),
            group=env["BENCH_GROUP"],
            expect=int(env["BENCH_EXPECT"]),
            result=Path(env["BENCH_RESULT"]),
            workdir=Path(env["BENCH_WORKDIR"]),
            output_topic=env.get("BENCH_OUTPUT_TOPIC", ""),
            partitions=int(env.get("BENCH_PARTITIONS", "4")),
            kafka=KafkaSettings.model_validate(kafka_from_environment(env)),
        )

    def to_env(self) -> dict[str, str]:
        return {
            "BENCH_BOOTSTRAP": self.bootstrap,
            "BENCH_TOPICS": ",".join(self.topics),
            "BENCH_GROUP": self.group,
            "BENCH_EXPECT": str(self.expect),
            "BENCH_RESULT": str(self.result),
            "BENCH_WORKDIR": str(self.workdir),
            "BENCH_OUTPUT_TOPIC": self.output_topic,
            "BENCH_PARTITIONS": str(self.partitions),
            **self.kafka.environment(),
        }


@dataclass
class Tally:
    """Counts processed events; writes the result file when the expected count is reached."""

    expect: int
    result: Path
    count: int = 0
    first_at: float | None = None
    done: bool = field(default=False)

    def add(self, events: int = 1) -> bool:
        """Record ``events`` processed now; true once every expected event was processed."""
        now = time.time()
        if self.first_at is None:
            self.first_at = now
        self.count += events
        if not self.done and self.count >= self.expect:
            self.done = True
            partial = self.result.with_suffix(".tmp")
            partial.write_text(json.dumps(
                {"first_at": self.first_at, "last_at": now, "count": self.count}
            ))
            partial.replace(self.result)  # the harness never reads a half-written file
        return self.done


def fold(state: dict | None, event: dict) -> dict:
    """The per-cart state every stateful baseline keeps: event count, last type and time."""
    state = state or {"events": 0}
    return {
        "events": state["events"] + 1,
        "last_type": event.get("type"),
        "last_at": event.get("occurred_at"),
    }
