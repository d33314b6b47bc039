"""The API load client's arithmetic (``cartwatch_dev.bench.api_load``): percentiles, tallies."""

from cartwatch_dev.bench.api_load import Tally, percentile


def test_nearest_rank_percentiles():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0  # sorts first


def test_only_2xx_answers_count_and_every_failure_is_kept_with_an_example():
    tally = Tally()
    tally.record("carts", 0.010, 200)
    tally.record("carts", 0.030, 204)
    tally.record("readyz", 0.002, 503, '{"ready": false}')
    tally.record("readyz", 0.002, 503, "second")
    tally.record("log", 0.5, None, "ServerDisconnectedError: gone")
    summary = tally.summary(seconds=2.0, concurrency=3)
    assert summary["answered"] == 2 and summary["failed"] == 3
    assert summary["requests_per_s"] == 1.0
    assert summary["failures"] == {"readyz 503": 2, "log ServerDisconnectedError": 1}
    assert summary["failure_examples"]["readyz 503"] == '{"ready": false}'
    assert summary["p99_ms"] == 30.0 and summary["endpoints"]["carts"]["p50_ms"] == 10.0
