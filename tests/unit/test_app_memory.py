"""A worker's memory (the 1M-cart RSS floor): bounded RocksDB, freed memory given back."""

import os
from pathlib import Path

import pytest
from faust.stores.rocksdb import RocksDBOptions

from streams import app
from streams.app import carts_table, release_freed_memory, table_options

MIB = 2**20


def test_the_cart_table_store_gets_bounded_options():
    options = carts_table.data.rocksdb_options

    assert options.write_buffer_size == 8 * MIB
    assert options.max_write_buffer_number == 2
    assert options.block_cache_size == 8 * MIB


def test_a_new_partition_database_is_created_with_them(tmp_path):
    db = RocksDBOptions(**table_options()).open(tmp_path / "carts-0.db")
    try:
        assert db.property_int_value("rocksdb.block-cache-capacity") == 8 * MIB
        written = (tmp_path / "carts-0.db").glob("OPTIONS-*")
        text = "\n".join(path.read_text() for path in written)
        assert "write_buffer_size=8388608" in text
        assert "max_write_buffer_number=2" in text
    finally:
        db.close()


def test_each_table_gets_its_own_dict():
    """Faust's store pops keys from the options mapping; tables must not share one."""
    assert table_options() is not table_options()


def resident_mib() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // MIB


@pytest.mark.skipif(app._trim is None, reason="malloc_trim is glibc's")
def test_memory_freed_after_a_burst_goes_back_to_the_os():
    burst = [bytes(1000 + i % 300) for i in range(150_000)]  # ~170 MB of serialized messages
    pinned = [bytes(2000) for _ in range(10)]  # allocated after it: glibc keeps the burst's heap
    before = resident_mib()
    del burst

    release_freed_memory()

    assert resident_mib() < before - 100
    assert len(pinned) == 10
