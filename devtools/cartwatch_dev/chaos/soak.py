"""The soak scenario's measurements and their judgement: what a long run under steady load must
not show (``cartwatch chaos --scenario soak``; the run itself is ``scenarios.soak``).

A fault scenario proves nothing about slow leaks: a worker that grows a few MB per minute, keeps
a file descriptor per rebalance, or lags further behind after each rebalance passes a one-minute
test. The soak samples each worker every ``SAMPLE_EVERY`` seconds (RSS and open descriptors
from ``/proc``, consumer lag and timer lag from its ``/metrics``) and fails when

- the long-lived worker's RSS grew more than ``RSS_GROWTH_LIMIT`` after the warm-up (the median
  of the last samples against the median of the first ones after the warm-up: one sample taken
  in a burst must not decide; both taken while it owned the partitions it owned in the warm-up,
  ``owning_as_in_the_warm_up``), or
- consumer lag (all input partitions reported, summed) and timer lag did not come back near zero
  within ``RECOVERY_WITHIN`` seconds of each rebalance having completed.

The judging is pure (``judge``), so its thresholds have unit tests; sampling, CSV and plot are
the shell around it.
"""

from __future__ import annotations

import csv
import os
import statistics
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_EVERY = 10.0
"""Seconds between samples."""
RSS_GROWTH_LIMIT = 0.10
"""Largest allowed RSS growth of the long-lived worker after the warm-up (a fraction)."""
RSS_WINDOW = 3
"""Samples whose median is the RSS at the start (after the warm-up) and at the end."""
LAG_NEAR_ZERO = 50
"""Input messages behind, summed over all partitions, that still count as caught up: at the
soak's rate a few hundred milliseconds of traffic, whatever the moment of the sample."""
TIMER_LAG_NEAR_ZERO = 1.0
"""Mean seconds from deadline to abandonment over a sample interval that count as on time."""
RECOVERY_WITHIN = 60.0
"""Seconds after a rebalance completed within which both lags must be near zero again."""


@dataclass(frozen=True)
class Sample:
    """One worker at one sampling round."""

    round: int
    at: float
    """Seconds since the load started."""
    worker: str
    pid: int
    rss_bytes: int
    fds: int
    consumer_lag: int | None
    """Input messages behind, summed over the partitions the worker reported (None: no
    answer from ``/metrics``)."""
    lag_partitions: int
    timer_lag_sum: float | None
    """The cumulative ``cartwatch_timer_lag_seconds`` sum and count of the worker's process."""
    timer_lag_count: int | None
    rocksdb_bytes: int | None = None
    """Native memory of the worker's RocksDB tables (``cartwatch_rocksdb_memory_bytes``,
    summed): the part of the RSS that grows until every partition's memtables are full."""


@dataclass(frozen=True)
class Rebalance:
    at: float
    """Seconds since the load started, when the fault was injected."""
    done: float
    """When every remaining worker owned its partitions again (same clock)."""
    what: str


@dataclass(frozen=True)
class Point:
    """The whole deployment at one sampling round."""

    at: float
    consumer_lag: int
    partitions: int
    timer_lag: float | None
    """The worst interval mean timer lag of the workers (None: nothing fell due)."""


@dataclass
class SoakVerdict:
    problems: list[str] = field(default_factory=list)
    rss_start: int | None = None
    rss_end: int | None = None
    rocksdb_start: int | None = None
    rocksdb_end: int | None = None
    """RocksDB's share at the same samples (medians), to tell its warm-up from a leak."""
    recoveries: list[float | None] = field(default_factory=list)
    """Seconds from each rebalance's completion until both lags were near zero."""

    @property
    def rss_growth(self) -> float | None:
        if self.rss_start is None or self.rss_end is None or not self.rss_start:
            return None
        return self.rss_end / self.rss_start - 1.0

    @property
    def ok(self) -> bool:
        return not self.problems


def interval_timer_lags(samples: Sequence[Sample]) -> dict[tuple[int, str], float | None]:
    """Per (round, worker): the mean timer lag of the abandonments since the worker's previous
    sample (from the histogram's sum and count deltas; a new process starts from zero)."""
    lags: dict[tuple[int, str], float | None] = {}
    previous: dict[str, Sample] = {}
    for sample in sorted(samples, key=lambda s: s.round):
        before = previous.get(sample.worker)
        lag: float | None = None
        if sample.timer_lag_sum is not None and sample.timer_lag_count is not None:
            base_sum, base_count = 0.0, 0
            if (before is not None and before.pid == sample.pid
                    and before.timer_lag_sum is not None and before.timer_lag_count is not None):
                base_sum, base_count = before.timer_lag_sum, before.timer_lag_count
            if sample.timer_lag_count > base_count:
                lag = (sample.timer_lag_sum - base_sum) / (sample.timer_lag_count - base_count)
        lags[(sample.round, sample.worker)] = lag
        previous[sample.worker] = sample
    return lags


def points(samples: Sequence[Sample]) -> list[Point]:
    """The deployment's lag at each sampling round (workers' lags summed, the worst timer lag)."""
    timer = interval_timer_lags(samples)
    rounds: dict[int, list[Sample]] = {}
    for sample in samples:
        rounds.setdefault(sample.round, []).append(sample)
    found = []
    for number in sorted(rounds):
        members = rounds[number]
        lags = [timer[(number, s.worker)] for s in members]
        known = [lag for lag in lags if lag is not None]
        found.append(Point(
            at=min(s.at for s in members),
            consumer_lag=sum(s.consumer_lag or 0 for s in members),
            partitions=sum(s.lag_partitions for s in members if s.consumer_lag is not None),
            timer_lag=max(known) if known else None,
        ))
    return found


def caught_up(point: Point, partitions: int) -> bool:
    """Every input partition reported by some worker, little behind, deadlines on time."""
    return (point.partitions >= partitions and point.consumer_lag <= LAG_NEAR_ZERO
            and (point.timer_lag is None or point.timer_lag <= TIMER_LAG_NEAR_ZERO))


def owning_as_in_the_warm_up(samples: Sequence[Sample], warmup: float,
                             worker: str) -> list[Sample]:
    """The worker's samples after the warm-up taken while it owned as many input partitions as
    at the end of the warm-up, in time order.

    A worker's memory follows what it owns: each table partition it holds has its RocksDB
    (memtables, block cache, open files) and its share of the state. Between rebalances the
    long-lived worker owns half the partitions or all of them, so RSS growth is only measured
    between samples of equal ownership; otherwise a soak that ends with a second worker gone
    would count the partitions taken back as a leak.
    """
    own = sorted((s for s in samples if s.worker == worker and s.lag_partitions),
                 key=lambda s: s.at)
    warm = [s for s in own if s.at < warmup]
    later = [s for s in own if s.at >= warmup]
    owned = warm[-1].lag_partitions if warm else max((s.lag_partitions for s in later),
                                                      default=0)
    return [s for s in later if s.lag_partitions == owned]


def judge(samples: Sequence[Sample], rebalances: Iterable[Rebalance], *, warmup: float,
          partitions: int, long_lived: str) -> SoakVerdict:
    """The soak's verdict from its samples (see the module doc for the rules)."""
    verdict = SoakVerdict()
    steady = owning_as_in_the_warm_up(samples, warmup, long_lived)
    if len(steady) < 2 * RSS_WINDOW:
        verdict.problems.append(f"too few samples of {long_lived} after the {warmup:.0f} s "
                                f"warm-up, owning its warm-up partitions, to judge its RSS "
                                f"({len(steady)})")
    else:
        verdict.rss_start = int(statistics.median(s.rss_bytes for s in steady[:RSS_WINDOW]))
        verdict.rss_end = int(statistics.median(s.rss_bytes for s in steady[-RSS_WINDOW:]))
        rocksdb = [s.rocksdb_bytes for s in steady if s.rocksdb_bytes is not None]
        if len(rocksdb) >= 2 * RSS_WINDOW:
            verdict.rocksdb_start = int(statistics.median(rocksdb[:RSS_WINDOW]))
            verdict.rocksdb_end = int(statistics.median(rocksdb[-RSS_WINDOW:]))
        growth = verdict.rss_growth
        if growth is not None and growth > RSS_GROWTH_LIMIT:
            verdict.problems.append(
                f"RSS of {long_lived} grew {growth:.1%} after the warm-up "
                f"({verdict.rss_start / 2**20:.0f} -> {verdict.rss_end / 2**20:.0f} MiB; "
                f"limit {RSS_GROWTH_LIMIT:.0%})")
    lag_points = points(samples)
    for rebalance in rebalances:
        back = next((p for p in lag_points if rebalance.done <= p.at
                     <= rebalance.done + RECOVERY_WITHIN and caught_up(p, partitions)), None)
        verdict.recoveries.append(None if back is None else back.at - rebalance.done)
        if back is None:
            verdict.problems.append(
                f"lag not back near zero within {RECOVERY_WITHIN:.0f} s of the rebalance "
                f"'{rebalance.what}' (done at +{rebalance.done:.0f} s)")
    return verdict


# -- sampling (the shell) ------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a worker may spawn helpers; their memory counts too)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                pending.extend(int(child) for child in children)
        except OSError:
            continue
    return found


def rss_and_fds(pid: int) -> tuple[int, int]:
    """Resident memory (bytes) and open file descriptors of a process and its descendants."""
    rss = fds = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            fds += len(os.listdir(f"/proc/{member}/fd"))
        except OSError:
            continue  # it exited meanwhile
    return rss, fds


def parse_metrics(text: str) -> tuple[int | None, int, float | None, int | None, int | None]:
    """(consumer lag summed, partitions reported, timer lag sum, timer lag count, RocksDB
    memory summed) from a Prometheus text exposition."""
    lag, partitions = 0, 0
    timer_sum: float | None = None
    timer_count: int | None = None
    rocksdb: int | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("cartwatch_consumer_lag{"):
            lag += int(float(value))
            partitions += 1
        elif name == "cartwatch_timer_lag_seconds_sum":
            timer_sum = float(value)
        elif name == "cartwatch_timer_lag_seconds_count":
            timer_count = int(float(value))
        elif name.startswith("cartwatch_rocksdb_memory_bytes{"):
            rocksdb = (rocksdb or 0) + int(float(value))
    return lag, partitions, timer_sum, timer_count, rocksdb


def scrape(web_url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(f"{web_url}/metrics", timeout=timeout) as response:
            return str(response.read().decode())
    except OSError:
        return None


CSV_FIELDS = ("round", "at_s", "worker", "pid", "rss_bytes", "fds", "consumer_lag",
              "lag_partitions", "timer_lag_interval_s", "rocksdb_bytes")


def write_csv(samples: Sequence[Sample], path: Path) -> None:
    """One row per worker and sampling round; the timer lag as the interval mean."""
    timer = interval_timer_lags(samples)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        for s in samples:
            lag = timer[(s.round, s.worker)]
            writer.writerow([s.round, f"{s.at:.1f}", s.worker, s.pid, s.rss_bytes, s.fds,
                             "" if s.consumer_lag is None else s.consumer_lag,
                             s.lag_partitions, "" if lag is None else f"{lag:.3f}",
                             "" if s.rocksdb_bytes is None else s.rocksdb_bytes])


def plot(samples: Sequence[Sample], rebalances: Sequence[Rebalance], warmup: float,
         path: Path, title: str) -> None:
    """RSS, open descriptors and both lags over time, with the warm-up shaded and each
    rebalance marked (matplotlib, from the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = sorted({s.worker for s in samples})
    figure, (rss_axis, fd_axis, lag_axis) = plt.subplots(3, 1, sharex=True, figsize=(10, 9))
    for worker in workers:
        own = [s for s in samples if s.worker == worker]
        line, = rss_axis.plot([s.at for s in own], [s.rss_bytes / 2**20 for s in own], ".-",
                              label=f"{worker} RSS")
        native = [s for s in own if s.rocksdb_bytes is not None]
        rss_axis.plot([s.at for s in native], [(s.rocksdb_bytes or 0) / 2**20 for s in native],
                      ":", color=line.get_color(), label=f"{worker} RocksDB")
        fd_axis.plot([s.at for s in own], [s.fds for s in own], ".-", label=worker)
    lag_points = points(samples)
    lag_axis.plot([p.at for p in lag_points], [p.consumer_lag for p in lag_points], ".-",
                  color="tab:blue", label="consumer lag (messages)")
    timer_axis = lag_axis.twinx()
    timed = [p for p in lag_points if p.timer_lag is not None]
    timer_axis.plot([p.at for p in timed], [p.timer_lag for p in timed], ".-",
                    color="tab:red", label="timer lag (s, interval mean)")
    rss_axis.set_ylabel("memory (MiB)")
    fd_axis.set_ylabel("open fds")
    lag_axis.set_ylabel("consumer lag (messages)")
    timer_axis.set_ylabel("timer lag (s)")
    lag_axis.set_xlabel("seconds since the load started")
    for axis in (rss_axis, fd_axis, lag_axis):
        axis.axvspan(min((s.at for s in samples), default=0.0), warmup, color="0.9")
        for rebalance in rebalances:
            axis.axvline(rebalance.at, color="tab:orange", linestyle="--", linewidth=1)
    rss_axis.legend(loc="upper left")
    lag_axis.legend(loc="upper left")
    timer_axis.legend(loc="upper right")
    rss_axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
