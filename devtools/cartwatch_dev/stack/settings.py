"""Settings for the local development stack (`cartwatch stack`), read from the environment.

The stack gives anyone without a Kafka cluster a real broker and a real mail server on
127.0.0.1. Everything here is plain data so tests can build settings without touching the
process environment (see `StackSettings.from_env` for the variables and their defaults).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from config.bootstrap import BootstrapError, parse_bootstrap

LOCALHOST = "127.0.0.1"
"""The only address the stack binds: Kafka 2.3 is end-of-life and must not face a network."""

_LOCAL_SMTP_HOSTS = frozenset({"", LOCALHOST, "localhost", "::1"})


class SettingsError(ValueError):
    """An environment variable holds a value the stack cannot use; the message names it."""


@dataclass(frozen=True)
class StackSettings:
    """Where the stack runs, on which ports, and which of its services it starts.

    `run_kafka` / `run_smtp` are separate from `broker` so a caller (e.g. the test harness)
    can start only the part of the stack it needs.
    """

    stack_dir: Path
    """State of one running stack: PID file, logs, Kafka/ZooKeeper data, the Maildir."""
    cache_dir: Path
    """Per-user cache of the unpacked Kafka distribution, shared by all stacks."""
    kafka_port: int = 9092
    zookeeper_port: int = 2181
    smtp_port: int = 1025
    broker: str | None = None
    """Bootstrap servers ("host:port,...") of an existing cluster, or None to start one."""
    run_kafka: bool = True
    run_smtp: bool = True
    start_timeout: float = 60.0
    """Seconds each service may take to become ready before `up` gives up."""

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients should use: the external cluster or our broker."""
        return self.broker or f"{LOCALHOST}:{self.kafka_port}"

    @property
    def maildir(self) -> Path:
        """Where the stack's SMTP server stores every message it receives."""
        return self.stack_dir / "mail"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> StackSettings:
        """Read the settings from `env` (default: `os.environ`).

        - `CARTWATCH_BROKER`: use this cluster (`kafka://host:port`, `host:port`, several
          separated by `,` or `;`) and start no broker.
        - `CARTWATCH_SMTP_HOST`: if it names a host other than this machine, mail goes there and
          no SMTP server is started; a loopback value (as printed by `stack up`) keeps ours.
        - `CARTWATCH_KAFKA_PORT` (9092), `CARTWATCH_ZOOKEEPER_PORT` (2181),
          `CARTWATCH_SMTP_PORT` (1025): ports on 127.0.0.1.
        - `CARTWATCH_STACK_DIR` (`./.cartwatch/stack`): state directory, relative to `cwd`.
        - `CARTWATCH_STACK_TIMEOUT` (60): seconds each service may take to start.
        - `XDG_CACHE_HOME`: the download cache is `$XDG_CACHE_HOME/cartwatch`
          (default `~/.cache/cartwatch`).
        """
        env = os.environ if env is None else env
        base = cwd or Path.cwd()
        try:
            broker = (parse_bootstrap(env["CARTWATCH_BROKER"]) if env.get("CARTWATCH_BROKER")
                      else None)
        except BootstrapError as exc:
            raise SettingsError(str(exc)) from None
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        cache_root = env.get("XDG_CACHE_HOME") or str(home / ".cache")
        return cls(
            stack_dir=(base / env.get("CARTWATCH_STACK_DIR", ".cartwatch/stack")).resolve(),
            cache_dir=Path(cache_root).expanduser().resolve() / "cartwatch",
            kafka_port=_port(env, "CARTWATCH_KAFKA_PORT", 9092),
            zookeeper_port=_port(env, "CARTWATCH_ZOOKEEPER_PORT", 2181),
            smtp_port=_port(env, "CARTWATCH_SMTP_PORT", 1025),
            broker=broker,
            run_kafka=broker is None,
            run_smtp=env.get("CARTWATCH_SMTP_HOST", "").strip().lower() in _LOCAL_SMTP_HOSTS,
            start_timeout=_positive_float(env, "CARTWATCH_STACK_TIMEOUT", 60.0),
        )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} is not a positive number of seconds")
    return value
