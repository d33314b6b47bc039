"""Network faults between the workers and the broker, under live load (issue #17).

The scenarios are ``cartwatch chaos``'s ``net-*`` ones (``cartwatch_dev.chaos.network``),
shortened: the faults last less long here than in the command, but the blackhole still outlasts
the group session. The workers reach the broker only through ``FaultProxy`` (a listener
advertised at the proxy's address), the load and the output reader go direct. Each test asserts
the exact output set, every due reminder once and none twice, both workers still running and
sharing the partitions without a restart, and that the outputs came on time again.

One private stack serves the whole module: starting a broker costs more than a scenario's
fault, and the scenarios use their own topics, consumer group and (cleared) Maildir.
"""

from collections.abc import Iterator

import pytest
from cartwatch_dev.chaos import (
    PrivateStack,
    ScenarioResult,
    net_blackhole,
    net_latency,
    net_loss,
    net_reset,
)
from cartwatch_dev.chaos.network import RECOVERY_BOUND, SESSION_TIMEOUT
from fault_helpers import assert_exact

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """Kafka (workers' listener behind the fault proxy) and SMTP, for every test here."""
    private = PrivateStack(tmp_path_factory.mktemp("net-stack"), smtp=True, proxied=True).up()
    try:
        yield private
    finally:
        private.down()


def assert_recovered(result: ScenarioResult) -> None:
    """The outputs came on time again after the fault, with no worker restarted by hand."""
    assert result.recovery is not None, "some abandonments never came after the fault"
    assert result.recovery <= RECOVERY_BOUND, f"recovered only after {result.recovery:.1f} s"


async def test_connection_resets_under_load_lose_nothing(stack: PrivateStack, tmp_path) -> None:
    result = await net_reset(stack, tmp_path, resets=2, every=4.0)
    # each reset hit live worker connections (both workers: consumer, producer, coordinator)
    assert [int(f.split(": ")[1].split()[0]) >= 2 for f in result.faults] == [True, True]
    assert_exact(result)
    assert_recovered(result)


async def test_blackhole_longer_than_the_session_then_workers_rejoin_by_themselves(
    stack: PrivateStack, tmp_path,
) -> None:
    down_for = SESSION_TIMEOUT + 2.0
    result = await net_blackhole(stack, tmp_path, down_for=down_for)
    assert_exact(result)  # includes: each worker rejoined, partitions shared out once
    assert_recovered(result)


async def test_500ms_latency_each_way_loses_nothing(stack: PrivateStack, tmp_path) -> None:
    result = await net_latency(stack, tmp_path, latency=0.5, duration=5.0)
    assert_exact(result)
    assert_recovered(result)


async def test_emulated_packet_loss_loses_nothing(stack: PrivateStack, tmp_path) -> None:
    result = await net_loss(stack, tmp_path, loss=0.05, duration=8.0)
    assert_exact(result)
    assert_recovered(result)
