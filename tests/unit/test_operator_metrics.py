"""``/metrics`` reads the processors only through the ``WorkerMetrics`` it is given: consumer lag
from the assignment, the high watermarks and the agent's positions; sizes and counters as they
are now."""

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import faust
from faust.types import TP

from streams.app import ROCKSDB_MEMORY, rocksdb_memory
from streams.compat import table_partition_db
from streams.operator.metrics import WorkerMetrics
from streams.operator.prometheus import render

CARTS, PURCHASES = "cart-events", "purchases"


class Positions:
    """The lifecycle's input positions and deadline index, as ``PartitionTimers`` exposes them."""

    def __init__(self, positions: dict[TP, int], deadlines: int) -> None:
        self.positions = positions
        self.deadlines = deadlines

    @property
    def input_topics(self) -> Sequence[str]:
        return (CARTS, PURCHASES)

    def position(self, tp: TP) -> int:
        return self.positions.get(tp, 0)

    def __len__(self) -> int:
        return self.deadlines


def metrics(positions: dict[TP, int], highwaters: dict[TP, int | None],
            counters: Counter[str] | None = None, carts: int = 0,
            deadlines: int = 0) -> WorkerMetrics:
    return WorkerMetrics(
        counters=counters if counters is not None else Counter(),
        positions=Positions(positions, deadlines),
        carts=range(carts),
        assigned=lambda: list(highwaters),
        highwater=highwaters.__getitem__,
    )


def exposition(worker: WorkerMetrics) -> str:
    return render(asyncio.run(worker.collect(None, None)))


def test_consumer_lag_is_the_high_watermark_minus_the_next_offset_to_process() -> None:
    worker = metrics(
        positions={TP(CARTS, 0): 40, TP(CARTS, 1): 7, TP(PURCHASES, 0): 5},
        highwaters={TP(CARTS, 0): 50, TP(CARTS, 1): 7, TP(PURCHASES, 0): 5,
                    TP(PURCHASES, 1): 3, TP(CARTS, 2): None,
                    TP("carts-changelog", 0): 900},
    )
    lines = [line for line in exposition(worker).splitlines()
             if line.startswith("cartwatch_consumer_lag{")]
    assert lines == [
        'cartwatch_consumer_lag{partition="0",topic="cart-events"} 10',
        'cartwatch_consumer_lag{partition="1",topic="cart-events"} 0',
        'cartwatch_consumer_lag{partition="0",topic="purchases"} 0',
        # never processed: everything up to the high watermark is lag
        'cartwatch_consumer_lag{partition="1",topic="purchases"} 3',
    ]  # no high watermark yet: no sample; a changelog is not input


def test_sizes_counters_and_timer_lag_are_read_at_scrape_time() -> None:
    counters: Counter[str] = Counter({"in:cart-events": 3})
    worker = metrics({}, {}, counters=counters, carts=4, deadlines=6)
    counters["in:cart-events"] += 2
    worker.observe_abandonment(deadline=100.0, published_at=100.3)
    text = exposition(worker)
    assert 'cartwatch_events_in_total{topic="cart-events"} 5' in text
    assert "cartwatch_carts_in_table 4" in text
    assert "cartwatch_deadline_index_entries 6" in text
    assert 'cartwatch_timer_lag_seconds_bucket{le="0.25"} 0' in text
    assert 'cartwatch_timer_lag_seconds_bucket{le="0.5"} 1' in text
    assert "cartwatch_timer_lag_seconds_count 1" in text


def test_rocksdb_memory_is_reported_per_table_and_kind() -> None:
    worker = metrics({}, {})
    worker.rocksdb_memory = lambda: {("carts", "memtables"): 2048, ("carts", "block_cache"): 0}
    text = exposition(worker)
    assert 'cartwatch_rocksdb_memory_bytes{kind="memtables",table="carts"} 2048' in text
    assert 'cartwatch_rocksdb_memory_bytes{kind="block_cache",table="carts"} 0' in text


def test_rocksdb_memory_reads_the_open_partitions_of_a_real_table(tmp_path: Path) -> None:
    app = faust.App("memory-check", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path))
    table = cast(faust.Table, app.Table("carts", partitions=2))  # app.Table is annotated TableT
    assert rocksdb_memory([table]) == {("carts", kind): 0 for kind in ROCKSDB_MEMORY}
    db = table_partition_db(table, 1)
    for number in range(2000):
        db[f"cart-{number}".encode()] = b"x" * 200
    memory = rocksdb_memory([table])
    assert memory[("carts", "memtables")] > 2000 * 200  # the writes sit in the memtable
    assert set(memory) == {("carts", kind) for kind in ROCKSDB_MEMORY}
