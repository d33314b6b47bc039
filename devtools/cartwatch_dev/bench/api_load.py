"""Figure k's client: concurrent operator API requests from a process of its own.

``python -m cartwatch_dev.bench.api_load --url http://127.0.0.1:PORT --seconds S
--concurrency C --output result.json`` keeps ``C`` requests in flight for ``S`` seconds, each a
request drawn from ``MIX`` (what a dashboard, an export job and a Prometheus scrape ask), and
writes how many were answered, their latencies' percentiles per endpoint, and every status or
error that was not a 2xx. A process of its own so that its work never slows the worker it
measures, and the worker's event loop is the only thing between request and answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

MIX: tuple[tuple[str, str, int], ...] = (
    ("carts", "/cartwatch/api/carts/?status=abandoned&limit=50", 30),
    ("cart", "/cartwatch/api/carts/{cart_id}/", 20),
    ("carts.csv", "/cartwatch/api/carts.csv?status=abandoned", 5),
    ("insights", "/cartwatch/api/insights/?period=day", 10),
    ("log", "/cartwatch/api/log/?limit=50", 10),
    ("metrics", "/metrics", 15),
    ("readyz", "/readyz", 10),
)
"""(name, path, weight): ``{cart_id}`` is one of the abandoned carts the list returned."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Tally:
    """Latencies (seconds) of the 2xx answers per endpoint, and everything else counted."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    """``"<endpoint> <status>"`` or ``"<endpoint> <exception type>"``."""
    examples: dict[str, str] = field(default_factory=dict)
    """The first answer (or error) of each kind of failure, to say why."""

    def record(self, name: str, seconds: float, status: int | None, detail: str = "") -> None:
        if status is not None and 200 <= status < 300:
            self.latencies.setdefault(name, []).append(seconds)
            return
        failure = f"{name} {status if status is not None else detail.split(':')[0]}"
        self.failures[failure] += 1
        self.examples.setdefault(failure, detail[:300])

    def summary(self, seconds: float, concurrency: int) -> dict[str, Any]:
        every = [value for values in self.latencies.values() for value in values]
        answered = len(every)
        return {
            "seconds": round(seconds, 2),
            "concurrency": concurrency,
            "answered": answered,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "failure_examples": self.examples,
            "requests_per_s": round(answered / max(seconds, 1e-6), 1),
            "p50_ms": round(1000 * percentile(every, 0.50), 1) if every else None,
            "p99_ms": round(1000 * percentile(every, 0.99), 1) if every else None,
            "endpoints": {
                name: {"answered": len(values),
                       "p50_ms": round(1000 * percentile(values, 0.50), 1),
                       "p99_ms": round(1000 * percentile(values, 0.99), 1)}
                for name, values in sorted(self.latencies.items())},
        }


async def _client(session: aiohttp.ClientSession, base: str, until: float, rng: random.Random,
                  carts: list[str], tally: Tally) -> None:
    names = [name for name, _, _ in MIX]
    paths = {name: path for name, path, _ in MIX}
    weights = [weight for _, _, weight in MIX]
    while time.monotonic() < until:
        name = rng.choices(names, weights)[0]
        if name == "cart" and not carts:
            name = "carts"
        path = paths[name].format(cart_id=rng.choice(carts) if carts else "")
        started = time.perf_counter()
        try:
            async with session.get(base + path) as response:
                body = await response.read()
                tally.record(name, time.perf_counter() - started, response.status,
                             body.decode(errors="replace"))
                if name == "carts" and response.status == 200:
                    found = [item["cart_id"] for item in json.loads(body).get("carts", [])]
                    if found:
                        carts[:] = found
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.record(name, time.perf_counter() - started, None,
                         f"{type(exc).__name__}: {exc}")


async def run(base: str, seconds: float, concurrency: int, seed: int = 5) -> dict[str, Any]:
    """``concurrency`` clients, each sending its next request when the last was answered."""
    tally = Tally()
    carts: list[str] = []
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(
            _client(session, base, until, random.Random(seed + number), carts, tally)
            for number in range(concurrency)))
        elapsed = time.monotonic() - started
    return tally.summary(elapsed, concurrency)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the worker's web address")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url.rstrip("/"), args.seconds, args.concurrency))
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
