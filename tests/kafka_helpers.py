"""Helpers for tests that talk to the stack: free ports, isolated stack settings, topics.

Importable from any test (`from tests.kafka_helpers import create_topics`) and used by
`tests/conftest.py` to start the session's stack.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cartwatch_dev.chaos.deployment import topics_led
from cartwatch_dev.stack.settings import LOCALHOST

from config.kafka import KafkaSettings, client_options

PORT_SETTINGS = (
    "CARTWATCH_KAFKA_PORT",
    "CARTWATCH_ZOOKEEPER_PORT",
    "CARTWATCH_KAFKA_CONTROLLER_PORT",
    "CARTWATCH_KAFKA_SASL_SSL_PORT",
    "CARTWATCH_KAFKA_SSL_PORT",
    "CARTWATCH_SMTP_PORT",
)
"""Every port a stack may listen on; a test stack gets a free one for each."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on right now (the kernel picks them)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOCALHOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def isolated_stack_env(stack_dir: Path) -> dict[str, str]:
    """The process environment for a stack in `stack_dir` on fresh free ports.

    Every `CARTWATCH_*` variable of the developer is dropped, so a test stack never uses or
    disturbs their own stack or cluster; the download cache (XDG_CACHE_HOME) is kept, and so
    is `CARTWATCH_STACK_KAFKA`, so `CARTWATCH_STACK_KAFKA=2.3 pytest` tests the old broker.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARTWATCH_")}
    if os.environ.get("CARTWATCH_STACK_KAFKA"):
        env["CARTWATCH_STACK_KAFKA"] = os.environ["CARTWATCH_STACK_KAFKA"]
    ports = free_ports(len(PORT_SETTINGS))
    env.update(zip(PORT_SETTINGS, map(str, ports), strict=True))
    env["CARTWATCH_STACK_DIR"] = str(stack_dir)
    return env


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    kafka: KafkaSettings | None = None,
) -> None:
    """Create topics with `partitions` partitions and wait until every partition has a leader.

    Waiting matters: a Faust worker that subscribes before the topic is fully created does not
    consume it on its first run. `config` holds topic configs such as `cleanup.policy`;
    `kafka` how to connect (plaintext when None).
    """
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                                **client_options(kafka or KafkaSettings()))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=dict(config or {})) for name in names],
            timeout_ms=int(timeout * 1000),
        )
        errors = [(name, code) for name, code, *_ in response.topic_errors if code != 0]
        if errors:
            raise RuntimeError(f"creating topics failed (topic, Kafka error code): {errors}")
        deadline = time.monotonic() + timeout
        while not topics_led(await admin.describe_topics(names), names, partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} have no leaders after {timeout} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
