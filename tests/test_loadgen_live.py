"""`cartwatch loadgen --live` through its CLI, on the test broker: events go out at their own
time, dressed as shops send them (an opt-in, a cart link), and --duration ends the run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from kafka_helpers import create_topics

pytestmark = pytest.mark.integration


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def test_live_load_is_timed_and_dressed(kafka_bootstrap: str, unique_names: Any,
                                              tmp_path: Path) -> None:
    prefix = unique_names.prefix
    topics = [f"{prefix}.cart-events", f"{prefix}.purchase-events"]
    await create_topics(kafka_bootstrap, topics, 2)
    env = {"PATH": "/usr/bin:/bin", "CARTWATCH_BROKER": f"kafka://{kafka_bootstrap}",
           "CARTWATCH_TOPIC_PREFIX": f"{prefix}.", "CARTWATCH_ABANDON_AFTER": "4s"}
    started = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "loadgen", "--live", "--carts", "20", "--span",
         "2", "--duration", "4", "--seed", "3"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "messages sent" in run.stderr

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        documents: list[dict[str, Any]] = []
        early: list[float] = []
        """How long before its event time each message was produced."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and documents:
                break
            for records in batch.values():
                for record in records:
                    documents.append(json.loads(record.value))
                    early.append(epoch(documents[-1]["occurred_at"]) - record.timestamp / 1000)
    finally:
        await consumer.stop()
    carts = [d for d in documents if d["type"] != "order_completed"]
    assert len(carts) > 20
    assert all(d["cart_url"].endswith(f"/cart/{d['cart_id']}") for d in carts)
    consents = {d["customer"]["marketing_consent"] for d in carts if "customer" in d}
    assert consents == {True, False}
    # each went out at its event's time, not ahead of it (late events are stamped earlier)
    assert max(early) < 0.3, sorted(early)[-5:]
    times = [epoch(d["occurred_at"]) for d in documents]
    assert started < min(times) and max(times) - min(times) > 3.0
