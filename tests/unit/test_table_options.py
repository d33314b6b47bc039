"""RocksDB options of the cart table: memory bounded per partition (the 1M-cart RSS floor)."""

from faust.stores.rocksdb import RocksDBOptions

from streams.app import carts_table, table_options

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
