"""The test harness's own checks: they must call a lagging or misplaced output what it is."""

from types import SimpleNamespace

from aiokafka import TopicPartition
from pipeline_harness import Located, Outputs, uncommitted

A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)


def test_a_partition_without_any_commit_is_behind() -> None:
    committed = {A0: SimpleNamespace(offset=5)}
    assert uncommitted(committed, {A0: 5, A1: 3}) == {A1: (None, 3)}


def test_caught_up_and_empty_partitions_are_not_behind() -> None:
    committed = {A0: SimpleNamespace(offset=5)}
    assert uncommitted(committed, {A0: 5, A1: 0}) == {}
    assert uncommitted(committed, {A0: 6}) == {A0: (5, 6)}


def located(partition: int, offset: int, abandonment_id: str) -> Located:
    cart = abandonment_id.split(":")[0]
    return Located("cart-abandoned", partition, offset,
                   {"cart_id": cart, "abandonment_id": abandonment_id})


def test_outputs_off_their_input_partition_or_out_of_order_are_reported() -> None:
    outputs = Outputs({"cart-abandoned": []})
    outputs.located += [located(1, 0, "c:1"), located(1, 1, "c:2"), located(2, 0, "d:1")]
    assert outputs.misplaced({"c": 1, "d": 2}) == []
    assert outputs.misplaced({"c": 1, "d": 3}) == ["cart-abandoned d:1 on partition 2, input on 3"]
    outputs.located[:2] = [located(1, 0, "c:2"), located(1, 1, "c:1")]
    assert outputs.misplaced({"c": 1, "d": 2}) == ["cart-abandoned c:1 after :2"]


def test_partition_for_is_where_the_producer_puts_a_key() -> None:
    from aiokafka.partitioner import DefaultPartitioner
    from pipeline_harness import partition_for

    for key in ("c-ann", "c-ann2", "cart-0", "x" * 50):
        assert partition_for(key) == DefaultPartitioner()(key.encode(), [0, 1, 2, 3], [])
