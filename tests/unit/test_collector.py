"""The worker's garbage collector settings: long-lived objects frozen, young collections rarer."""

import gc
from collections.abc import Iterator

import pytest

from streams import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_a_tuned_worker_freezes_what_is_alive_and_collects_young_objects_less_often() -> None:
    gc.unfreeze()
    alive = [[n] for n in range(1000)]  # tracked containers, alive when the worker settles

    collector.tune()

    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_threshold()[0] > 700  # Python's default
    assert gc.get_freeze_count() >= len(alive)


@pytest.mark.usefixtures("restored_collector")
def test_settling_again_freezes_what_a_recovery_built_since() -> None:
    collector.tune()
    frozen = gc.get_freeze_count()
    index = [[n] for n in range(1000)]  # a rebuilt deadline index

    collector.settle()

    assert gc.get_freeze_count() >= frozen + len(index)
