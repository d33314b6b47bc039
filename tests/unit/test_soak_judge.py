"""The soak's verdict (``cartwatch_dev.chaos.soak.judge``): RSS growth after the warm-up, lag
back near zero after each rebalance; the metrics, CSV and plot around it; and how long an
outage counts for the reminders' verdict (``scenarios.caught_up_blackouts``)."""

import dataclasses
from pathlib import Path

from cartwatch_dev.chaos.scenarios import caught_up_blackouts
from cartwatch_dev.chaos.soak import (
    LAG_NEAR_ZERO,
    RECOVERY_WITHIN,
    Rebalance,
    Sample,
    interval_timer_lags,
    judge,
    parse_metrics,
    plot,
    write_csv,
)

MiB = 2**20
PARTITIONS = 8


def run(rss: list[float], lags: list[int] | None = None, timer: list[tuple[float, int]] | None
        = None, partitions: int = PARTITIONS) -> list[Sample]:
    """One worker ``w1`` sampled every 10 s from t=0: RSS in MiB, consumer lag, cumulative
    timer lag (sum, count)."""
    lags = lags or [0] * len(rss)
    timer = timer or [(0.0, 0)] * len(rss)
    return [Sample(n, 10.0 * n, "w1", 100, int(mib * MiB), 40, lag, partitions, t_sum, t_count)
            for n, (mib, lag, (t_sum, t_count)) in enumerate(zip(rss, lags, timer, strict=True))]


def test_rss_growth_is_judged_after_the_warm_up_on_medians() -> None:
    # the warm-up's growth (100 -> 150) does not count; a single spike does not either
    rss = [100, 120, 150, 150, 151, 149, 400, 152, 153, 154, 155, 156]
    verdict = judge(run(rss), [], warmup=20.0, partitions=PARTITIONS, long_lived="w1")
    assert verdict.ok, verdict.problems
    assert verdict.rss_growth is not None and 0.0 < verdict.rss_growth < 0.10


def test_rss_is_compared_only_while_the_worker_owns_its_warm_up_partitions() -> None:
    # all 8 partitions in the warm-up, half of them while a second worker is in, all again at
    # the end: the partitions taken back are not growth, 8 MiB more at equal ownership is
    rss = [100, 100, 100, 80, 80, 80, 80, 100, 101, 102, 106, 108, 108]
    owned = [8, 8, 8, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8]
    samples = [dataclasses.replace(sample, lag_partitions=partitions)
               for sample, partitions in zip(run(rss), owned, strict=True)]
    verdict = judge(samples, [], warmup=30.0, partitions=PARTITIONS, long_lived="w1")
    assert (verdict.rss_start, verdict.rss_end) == (101 * MiB, 108 * MiB)
    assert verdict.ok, verdict.problems
    taken_back = [dataclasses.replace(sample, lag_partitions=4) if sample.at >= 30 else sample
                  for sample in samples]  # never again owning all 8: nothing to compare
    assert "too few samples" in judge(taken_back, [], warmup=30.0, partitions=PARTITIONS,
                                      long_lived="w1").problems[0]


def test_rss_growing_more_than_ten_percent_after_the_warm_up_fails() -> None:
    rss = [100, 150, 150, 150, 155, 160, 165, 170, 175, 170, 172]
    verdict = judge(run(rss), [], warmup=10.0, partitions=PARTITIONS, long_lived="w1")
    assert not verdict.ok
    assert "RSS of w1 grew 14.7%" in verdict.problems[0]


def test_too_few_samples_after_the_warm_up_is_no_pass() -> None:
    verdict = judge(run([100] * 6), [], warmup=20.0, partitions=PARTITIONS, long_lived="w1")
    assert not verdict.ok and "too few samples" in verdict.problems[0]


def test_lag_back_near_zero_after_each_rebalance_passes() -> None:
    lags = [0, 0, 0, 900, 300, 10, 0, 0, 0, 0]
    rebalance = Rebalance(at=25.0, done=30.0, what="kill -9 w2")
    verdict = judge(run([100] * 10, lags), [rebalance], warmup=0.0, partitions=PARTITIONS,
                    long_lived="w1")
    assert verdict.ok, verdict.problems
    assert verdict.recoveries == [20.0]  # the sample at 50 s is the first near zero


def test_lag_that_stays_up_after_a_rebalance_fails() -> None:
    lags = [0, 0, 0, 900, 800, 700, 600, 500, 400, 300, 200, 100, LAG_NEAR_ZERO + 1, 0]
    rebalance = Rebalance(at=25.0, done=30.0, what="w2 joins")
    verdict = judge(run([100] * len(lags), lags), [rebalance], warmup=0.0,
                    partitions=PARTITIONS, long_lived="w1")
    assert verdict.recoveries == [None]
    assert f"within {RECOVERY_WITHIN:.0f} s of the rebalance 'w2 joins'" in verdict.problems[0]


def test_partitions_nobody_reports_are_not_caught_up() -> None:
    """After a kill -9, the dead worker's partitions have no lag reported by anyone until they
    move: zero from the survivor alone is not zero."""
    samples = run([100] * 10, partitions=PARTITIONS // 2)
    verdict = judge(samples, [Rebalance(at=5.0, done=6.0, what="kill -9 w2")], warmup=0.0,
                    partitions=PARTITIONS, long_lived="w1")
    assert verdict.recoveries == [None] and not verdict.ok


def test_timer_lag_must_come_back_too() -> None:
    # cumulative (sum, count): intervals of 5 s mean lag, then 0.2 s from the sample at 40 s on
    timer = [(0, 0), (10, 2), (20, 4), (30, 6), (30.2, 7), (30.4, 8), (30.6, 9), (30.8, 10),
             (31, 11), (31.2, 12)]
    samples = run([100] * 10, timer=timer)
    assert interval_timer_lags(samples)[(3, "w1")] == 5.0
    verdict = judge(samples, [Rebalance(at=5.0, done=10.0, what="w2 joins")], warmup=0.0,
                    partitions=PARTITIONS, long_lived="w1")
    assert verdict.ok and verdict.recoveries == [30.0]


def test_a_restarted_process_counts_its_timer_lag_from_zero() -> None:
    before = Sample(0, 0.0, "w2", 1, 0, 0, 0, 4, 100.0, 50)
    after = Sample(1, 10.0, "w2", 2, 0, 0, 0, 4, 1.0, 4)
    assert interval_timer_lags([before, after])[(1, "w2")] == 0.25


def test_metrics_are_read_from_the_exposition() -> None:
    text = "\n".join([
        "# TYPE cartwatch_consumer_lag gauge",
        'cartwatch_consumer_lag{topic="p.cart-events",partition="0"} 3',
        'cartwatch_consumer_lag{topic="p.cart-events",partition="1"} 4',
        'cartwatch_timer_lag_seconds_bucket{le="0.05"} 1',
        "cartwatch_timer_lag_seconds_sum 2.5",
        "cartwatch_timer_lag_seconds_count 10",
        'cartwatch_rocksdb_memory_bytes{kind="memtables",table="carts"} 2048',
        'cartwatch_rocksdb_memory_bytes{kind="block_cache",table="plans"} 1024',
    ])
    assert parse_metrics(text) == (7, 2, 2.5, 10, 3072)
    assert parse_metrics("cartwatch_consumer_lag{partition=\"0\"} 1")[4] is None


def test_rocksdb_share_is_judged_on_the_same_samples_as_the_rss() -> None:
    samples = [dataclasses.replace(sample, rocksdb_bytes=int(sample.at * MiB))
               for sample in run([100] * 12)]  # samples at 0, 10, ... 110 s
    verdict = judge(samples, [], warmup=30.0, partitions=4, long_lived="w1")
    assert (verdict.rocksdb_start, verdict.rocksdb_end) == (40 * MiB, 100 * MiB)


def test_csv_and_plot_are_written(tmp_path: Path) -> None:
    samples = run([100, 101, 102, 103], lags=[0, 5, 0, 0],
                  timer=[(0, 0), (1, 4), (2, 8), (2, 8)])
    samples[1] = dataclasses.replace(samples[1], rocksdb_bytes=4096)
    write_csv(samples, tmp_path / "soak.csv")
    lines = (tmp_path / "soak.csv").read_text().splitlines()
    assert lines[0].startswith("round,at_s,worker,pid,rss_bytes,fds,consumer_lag")
    assert lines[0].endswith(",timer_lag_interval_s,rocksdb_bytes")
    assert lines[2].endswith(",0.250,4096")
    assert lines[4].endswith(",,")  # nothing fell due, no RocksDB figure: empty
    plot(samples, [Rebalance(10.0, 15.0, "w2 joins")], 10.0, tmp_path / "soak.png", "test")
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_outage_lasts_until_its_late_outputs_were_published() -> None:
    # the worker owned its partitions again at 20 s (+2 s: 22), but a transition of 12 s was
    # published only at 27 s: its reminders were decided after that
    published = [(5.0, 5.1), (12.0, 27.0), (15.0, 21.0), (40.0, 40.1)]
    assert caught_up_blackouts([(10.0, 22.0)], published) == [(10.0, 29.0)]
    # caught up within the window, or nothing happened in it: the window stays
    assert caught_up_blackouts([(10.0, 22.0)], [(12.0, 14.0)]) == [(10.0, 22.0)]
    assert caught_up_blackouts([(10.0, 22.0)], [(5.0, 30.0)]) == [(10.0, 22.0)]
