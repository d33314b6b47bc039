"""What both of the stack's Kafka flavours share: the per-user download cache, Java, config
files, external tools, and the "does a broker answer?" check.

The flavours themselves live in `cartwatch_dev.stack.kafka4` (the default: Apache Kafka 4.x in
KRaft mode, from Maven Central) and `cartwatch_dev.stack.kafka2` (Apache Kafka 2.3 with ZooKeeper,
from PyPI); `cartwatch_dev.stack.brokers` picks one from the settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from cartwatch_dev.stack.process import StackError, accepts_connections, locked


@dataclass(frozen=True)
class Listener:
    """One way into the broker: a listener name, its security protocol and its address."""

    name: str
    protocol: str
    address: str
    note: str = ""
    """What a client needs to know beyond the protocol (e.g. the SASL mechanisms)."""


@dataclass(frozen=True)
class KafkaAccess:
    """Everything a client needs to reach the stack's broker; shown by `cartwatch stack status`.

    Paths only, never secrets: passwords stay in their 0600 files.
    """

    broker: str
    """Which Kafka runs, e.g. "Apache Kafka 4.4.0 (KRaft)"."""
    listeners: tuple[Listener, ...]
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    password_files: dict[str, str] = field(default_factory=dict)
    """SASL user name -> the file holding its password."""
    super_users: tuple[str, ...] = ()
    authorizer: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> KafkaAccess:
        listeners = data.get("listeners") or []
        assert isinstance(listeners, list)
        password_files = data.get("password_files") or {}
        assert isinstance(password_files, dict)
        super_users = data.get("super_users") or []
        assert isinstance(super_users, list)

        def optional(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            broker=str(data["broker"]),
            listeners=tuple(Listener(**listener) for listener in listeners),
            ca_file=optional("ca_file"),
            client_cert_file=optional("client_cert_file"),
            client_key_file=optional("client_key_file"),
            password_files={str(k): str(v) for k, v in password_files.items()},
            super_users=tuple(str(u) for u in super_users),
            authorizer=bool(data.get("authorizer", False)),
        )

    def listener(self, name: str) -> Listener:
        """The listener called `name` (e.g. "SASL_SSL"); KeyError if this broker has none."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)



SINGLE_BROKER: dict[str, object] = {
    "auto.create.topics.enable": "true",
    "num.partitions": 1,
    # A single broker: internal topics cannot have more than one replica.
    "offsets.topic.replication.factor": 1,
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    # Fewer offsets partitions make the first consumer group start in well under 1 s.
    "offsets.topic.num.partitions": 5,
    # Consumer groups (Faust workers, tests) join without the 3 s rebalance delay.
    "group.initial.rebalance.delay.ms": 0,
}
"""Broker properties both flavours share: one broker on a developer's machine."""

def cached(target: Path, unpack: Callable[[Path], Path]) -> Path:
    """Return `target` in the per-user cache, creating it with `unpack(tmp)` on first use.

    A lock on the cache directory serialises concurrent first starts (two engineers, or a test
    session and `make run`); `unpack` builds its result in a temporary directory next to
    `target`, which is then renamed into place, so the cache never holds a half-written copy.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent):
        if not target.is_dir():
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
                unpack(Path(tmp)).rename(target)
    return target


def run_tool(
    argv: list[str],
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    hint: str = "",
) -> str:
    """Run a short-lived tool; fail with `what`, its exit code and its last output lines."""
    if shutil.which(argv[0], path=(env or os.environ).get("PATH")) is None and not Path(
        argv[0]
    ).exists():
        raise StackError(f"{what} needs `{argv[0]}`, which is not installed{hint}")
    done = subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=dict(env) if env is not None else None,
    )
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip()).splitlines()[-10:]
        raise StackError(f"{what} failed (exit code {done.returncode}):\n" + "\n".join(output))
    return done.stdout


def verify_sha256(path: Path, expected: str) -> None:
    """Refuse a download whose SHA-256 differs from the pinned digest (and delete it)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        path.unlink()
        raise StackError(
            f"SHA-256 mismatch for {path.name}: expected {expected}, got {digest.hexdigest()}; "
            "the file was deleted - a corrupted or tampered download is never used"
        )


def java_executable(env: Mapping[str, str]) -> Path:
    """The `java` Kafka runs with ($JAVA_HOME/bin/java or PATH); fail clearly if there is none."""
    java_home = env.get("JAVA_HOME")
    java = (
        Path(java_home, "bin", "java") if java_home else shutil.which("java", path=env.get("PATH"))
    )
    if java is None or not Path(java).is_file():
        raise StackError(
            "Java is required to run Kafka but was not found (install a JDK, e.g. "
            "`apt-get install openjdk-17-jre-headless`, or set JAVA_HOME); "
            "or set CARTWATCH_BROKER to use an existing cluster"
        )
    return Path(java)


def require_java(env: Mapping[str, str]) -> None:
    """Fail clearly (before any download) unless Java is installed."""
    java_executable(env)


def write_properties(path: Path, props: Mapping[str, object], *, private: bool = False) -> Path:
    """Write a Java properties file; `private` (it holds secrets) makes it 0600 from birth."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{key}={value}\n" for key, value in props.items())
    if private:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    else:
        path.write_text(text)
    return path


def broker_reachable(bootstrap: str, timeout: float = 10.0) -> bool:
    """True if a broker in `bootstrap` ("host:port,...") answers a metadata request."""
    addresses = [server.rpartition(":") for server in bootstrap.split(",")]
    if not any(accepts_connections(host, int(port)) for host, _, port in addresses):
        return False  # aiokafka would log a connection error per attempt; stay quiet instead
    try:
        asyncio.run(asyncio.wait_for(_fetch_metadata(bootstrap, timeout), timeout))
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


async def _fetch_metadata(bootstrap: str, timeout: float) -> None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await client.bootstrap()
    finally:
        await client.close()


def log_says(log: Path, line: str) -> bool:
    """Has the service written `line` to its console log yet?"""
    try:
        return line in log.read_text(errors="replace")
    except OSError:
        return False
