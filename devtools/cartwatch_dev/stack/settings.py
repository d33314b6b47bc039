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
"""The only address the stack binds: a dev/test broker (and end-of-life Kafka 2.3) must not
face a network, whatever its listeners' security."""

KAFKA_4 = "4"
KAFKA_2_3 = "2.3"
KAFKA_FLAVOURS = {
    # Accepted spellings of CARTWATCH_STACK_KAFKA -> the flavour.
    "4": KAFKA_4,
    "4.x": KAFKA_4,
    "4.4": KAFKA_4,
    "4.4.0": KAFKA_4,
    "2.3": KAFKA_2_3,
    "2.3.0": KAFKA_2_3,
}
_ON, _OFF = frozenset({"1", "on", "true", "yes"}), frozenset({"", "0", "off", "false", "no"})

_LOCAL_SMTP_HOSTS = frozenset({"", LOCALHOST, "localhost", "::1"})


class SettingsError(ValueError):
    """An environment variable holds a value the stack cannot use; the message names it."""


@dataclass(frozen=True)
class ProxiedListener:
    """The broker listens on `port` and tells clients of this listener to use `advertised`.

    Kafka clients connect to the addresses a metadata response gives them, never again to the
    bootstrap address, so a proxy in front of the plain listener would only carry the first
    request; a listener advertised at the proxy keeps every connection of its clients on it.
    """

    port: int
    advertised: str
    """host:port of the proxy that forwards to `port`."""

    NAME = "PROXIED"


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
    """The PLAINTEXT listener clients use (both flavours)."""
    zookeeper_port: int = 2181
    """Kafka 2.3 only: its ZooKeeper."""
    controller_port: int = 9093
    """Kafka 4.x only: the KRaft controller listener of the combined broker/controller."""
    sasl_ssl_port: int = 9094
    """Kafka 4.x with `security`: SASL_SSL listener (SCRAM-SHA-512 and PLAIN)."""
    ssl_port: int = 9095
    """Kafka 4.x with `security`: SSL listener that requires a client certificate (mTLS)."""
    smtp_port: int = 1025
    kafka_flavour: str = KAFKA_4
    """Which broker the stack runs: `KAFKA_4` (default, KRaft) or `KAFKA_2_3` (ZooKeeper)."""
    security: bool = False
    """Kafka 4.x: also open the SASL_SSL and SSL listeners (certificates made at start)."""
    authorizer: bool = False
    """Kafka 4.x with `security`: enforce ACLs (StandardAuthorizer, deny when no ACL)."""
    broker: str | None = None
    """Bootstrap servers ("host:port,...") of an existing cluster, or None to start one."""
    run_kafka: bool = True
    run_smtp: bool = True
    start_timeout: float = 60.0
    """Seconds each service may take to become ready before `up` gives up."""
    proxied: ProxiedListener | None = None
    """A second PLAINTEXT listener advertised at another address (a fault-injecting proxy's),
    so every client that bootstraps there reaches the broker only through that proxy."""

    def __post_init__(self) -> None:
        """Refuse combinations the stack cannot run, whichever way they were set."""
        if self.authorizer and not self.security:
            raise SettingsError(
                "the authorizer (CARTWATCH_STACK_AUTHORIZER=on, --authorizer) needs secured "
                "listeners (CARTWATCH_STACK_SECURITY=on, --secure): ACLs need authenticated users"
            )
        if self.security and self.kafka_flavour != KAFKA_4:
            raise SettingsError(
                "secured listeners (CARTWATCH_STACK_SECURITY=on, --secure) are implemented for "
                "Kafka 4.x only; unset CARTWATCH_STACK_KAFKA or set it to 4"
            )

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
        - `CARTWATCH_STACK_KAFKA` (`4`): the broker, `4` (also `4.x`, `4.4.0`: Apache Kafka
          4.4.0 in KRaft mode) or `2.3` (Apache Kafka 2.3.0 with ZooKeeper, the old broker
          users still run).
        - `CARTWATCH_STACK_SECURITY` (`off`): `on` adds, on Kafka 4.x, a SASL_SSL listener
          (SCRAM-SHA-512, PLAIN) and an SSL listener requiring client certificates.
        - `CARTWATCH_STACK_AUTHORIZER` (`off`): `on` (needs security) enforces ACLs.
        - `CARTWATCH_KAFKA_PORT` (9092), `CARTWATCH_ZOOKEEPER_PORT` (2181, 2.3 only),
          `CARTWATCH_KAFKA_CONTROLLER_PORT` (9093, 4.x only), `CARTWATCH_KAFKA_SASL_SSL_PORT`
          (9094) and `CARTWATCH_KAFKA_SSL_PORT` (9095) (secured 4.x only),
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
        flavour = env.get("CARTWATCH_STACK_KAFKA", KAFKA_4).strip().lower()
        if flavour not in KAFKA_FLAVOURS:
            raise SettingsError(
                f"CARTWATCH_STACK_KAFKA={flavour!r} is not a broker the stack runs "
                f"(use 4 or 2.3)"
            )
        return cls(
            stack_dir=(base / env.get("CARTWATCH_STACK_DIR", ".cartwatch/stack")).resolve(),
            cache_dir=Path(cache_root).expanduser().resolve() / "cartwatch",
            kafka_port=_port(env, "CARTWATCH_KAFKA_PORT", 9092),
            zookeeper_port=_port(env, "CARTWATCH_ZOOKEEPER_PORT", 2181),
            controller_port=_port(env, "CARTWATCH_KAFKA_CONTROLLER_PORT", 9093),
            sasl_ssl_port=_port(env, "CARTWATCH_KAFKA_SASL_SSL_PORT", 9094),
            ssl_port=_port(env, "CARTWATCH_KAFKA_SSL_PORT", 9095),
            kafka_flavour=KAFKA_FLAVOURS[flavour],
            security=_switch(env, "CARTWATCH_STACK_SECURITY"),
            authorizer=_switch(env, "CARTWATCH_STACK_AUTHORIZER"),
            smtp_port=_port(env, "CARTWATCH_SMTP_PORT", 1025),
            broker=broker,
            run_kafka=broker is None,
            run_smtp=env.get("CARTWATCH_SMTP_HOST", "").strip().lower() in _LOCAL_SMTP_HOSTS,
            start_timeout=_positive_float(env, "CARTWATCH_STACK_TIMEOUT", 60.0),
        )


def _switch(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise SettingsError(f"{name}={raw!r} is neither on nor off")


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
