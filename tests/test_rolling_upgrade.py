"""A rolling upgrade under load with a real previous release (issue #17): a worker of the
previous release and one of the current release share the partitions through rebalances, and
nothing is lost, invented or sent twice.

The previous release is ``cartwatch_dev.chaos.releases.PREVIOUS_RELEASE`` (its module says
which commit and why), its code from git history run with this venv's dependencies. The current
release writes carts the previous one must read best effort, and reads the previous one's
through its migrations.
"""

import os
from pathlib import Path

import pytest
from cartwatch_dev.chaos import Deployment, render, rolling_upgrade
from cartwatch_dev.chaos.releases import (
    PREVIOUS_CART_FORMAT,
    PREVIOUS_RELEASE,
    ReleaseUnavailable,
    release_environment,
    release_tree,
)
from fault_helpers import assert_exact

from streams.lifecycle import CART_FORMAT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_rolling_upgrade_from_the_previous_release_under_load_loses_nothing(
    deployment: Deployment, tmp_path: Path,
) -> None:
    """``w1`` on the previous release owns every partition under live load; ``w2`` on the
    current release joins, is stopped and started again (so the previous release takes back
    state the current one wrote), then ``w1`` is stopped with SIGTERM and started on the current
    release (``cartwatch_dev.chaos.rolling_upgrade``). Exactly the ledger's abandonments,
    recoveries, reactivations and reminders, each reminder once; the carts changelog holds both
    releases' formats, and the previous release logged reading the current one's carts."""
    try:
        tree = release_tree(PREVIOUS_RELEASE, tmp_path / "previous-release")
    except ReleaseUnavailable as exc:  # CI runs on a full clone, so it runs there
        pytest.skip(f"the previous release's code is not available: {exc}")
    result = await rolling_upgrade(deployment, release_environment(tree, os.environ))
    print(render([result]))  # the measured run, with -s or -rP
    assert_exact(result)
    assert set(result.stored_versions["carts"]) == {PREVIOUS_CART_FORMAT, CART_FORMAT.version}, (
        render([result]))
    previous = next(worker for worker in deployment.workers if worker.name == "w1")
    assert (f"cart records of format version {CART_FORMAT.version}, newer than this worker's "
            f"{PREVIOUS_CART_FORMAT}") in previous.log(), render([result])
