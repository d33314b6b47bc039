"""Which Kafka the stack runs: `CARTWATCH_STACK_KAFKA` picks one of the broker flavours.

Each flavour module (`kafka4`: Apache Kafka 4.x, KRaft; `kafka2`: Apache Kafka 2.3 with
ZooKeeper) offers the same four functions, gathered here so `lifecycle` and the chaos
scenarios never branch on the version themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.stack import KAFKA_2_3, KAFKA_4, StackSettings
from streams.stack import kafka2, kafka4
from streams.stack.kafka import KafkaAccess
from streams.stack.process import ServiceProcess


@dataclass(frozen=True)
class BrokerFlavour:
    """One way to run a local Kafka broker."""

    name: str
    ports: Callable[[StackSettings], dict[str, int]]
    """The ports it needs free, keyed by the setting that chooses each (for clear errors)."""
    check_before_start: Callable[[StackSettings], None]
    """Fail with a clear StackError, before anything starts, if a start cannot work."""
    start: Callable[[StackSettings, Callable[[ServiceProcess], None]], KafkaAccess]
    """Start every process (recording each at once, for cleanup) and say how to connect."""
    restart_broker: Callable[[StackSettings], ServiceProcess]
    """Start the broker process alone again, on the same ports and data."""


def _nothing_to_check(settings: StackSettings) -> None:
    """Kafka 2.3 comes from PyPI and Debian through pip and apt, always at hand."""


FLAVOURS = {
    KAFKA_4: BrokerFlavour(
        name=kafka4.NAME,
        ports=kafka4.ports,
        check_before_start=kafka4.check_before_start,
        start=kafka4.start,
        restart_broker=kafka4.restart_broker,
    ),
    KAFKA_2_3: BrokerFlavour(
        name=kafka2.NAME,
        ports=kafka2.ports,
        check_before_start=_nothing_to_check,
        start=kafka2.start,
        restart_broker=kafka2.restart_broker,
    ),
}


def broker_flavour(settings: StackSettings) -> BrokerFlavour:
    """The flavour `settings.kafka_flavour` names."""
    return FLAVOURS[settings.kafka_flavour]
