"""The stack's default broker: Apache Kafka 4.x in KRaft combined mode, from Maven Central.

Kafka 4 dropped ZooKeeper, so one JVM is broker and controller (`process.roles=broker,
controller`) and its log directory is formatted once before the first start. The broker's
jars come from Maven Central through the version-pinned descriptor `maven/pom.xml` next to
this module (`mvn -C`: checksums enforced), into the per-user cache; they are the `libs/` of
the Apache release tarball plus a log4j2 binding, and the stack runs `kafka.Kafka` from them
directly (the tarball's shell scripts only build that classpath).

With `settings.security` the broker also opens a SASL_SSL listener (SCRAM-SHA-512 and PLAIN)
and an SSL listener that requires a client certificate; the broker then talks to its own
controller and to itself over mTLS as `User:cartwatch-broker`, so with the authorizer on,
the PLAINTEXT listener's anonymous clients are ordinary, unprivileged principals.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path

from cartwatch_dev.stack.kafka import (
    SINGLE_BROKER,
    KafkaAccess,
    Listener,
    broker_reachable,
    cached,
    java_executable,
    log_says,
    run_tool,
    write_properties,
)
from cartwatch_dev.stack.process import ServiceProcess, StackError, spawn, wait_ready
from cartwatch_dev.stack.settings import LOCALHOST, StackSettings

KAFKA_VERSION = "4.4.0"
NAME = f"Apache Kafka {KAFKA_VERSION} (KRaft)"
POM = Path(__file__).with_name("maven") / "pom.xml"
READY_LINE = "Kafka Server started (kafka.server.KafkaRaftServer)"
HEAP = ("-Xmx512m", "-Xms128m")
ADMIN_USER = "admin"
"""A SASL super user (with the authorizer on), for setting ACLs."""
WORKER_USER = "cartwatch"
"""The worker's principal, both as SASL user and as the CN of its client certificate."""
BROKER_USER = "cartwatch-broker"
"""The broker's own principal (its certificate's CN), for controller and inter-broker traffic."""
SASL_USERS = (ADMIN_USER, WORKER_USER)
SUPER_USERS = (f"User:{ADMIN_USER}", f"User:{BROKER_USER}")
PRINCIPAL_MAPPING_RULES = r"RULE:^CN=([^,]+)$/$1/,DEFAULT"
"""Certificate "CN=cartwatch" becomes `User:cartwatch`, the same principal as the SASL user of
that name, so one set of ACLs covers every listener."""
STORAGE_TOOL = "kafka.tools.StorageTool"

LOG4J2_CONFIG = """\
# Written by `cartwatch stack up`: everything to stdout, which the stack keeps in console.log.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# The request log and the state-change log are loud and say nothing a developer needs here.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def libs_dir(cache_dir: Path) -> Path:
    """The broker's jars in the per-user cache, downloaded with Maven on first use."""
    return cached(cache_home(cache_dir), _download) / "libs"


def cache_home(cache_dir: Path) -> Path:
    """Where this descriptor's download lives in the cache.

    The entry is named after the Kafka version *and* the descriptor's digest, so an edited
    `pom.xml` (another log4j, say) gets a fresh download instead of stale jars.
    """
    pom = POM.read_bytes()
    pinned = _pom_kafka_version(pom)
    if pinned != KAFKA_VERSION:
        raise StackError(f"{POM} pins Kafka {pinned} but the stack expects {KAFKA_VERSION}")
    digest = hashlib.sha256(pom).hexdigest()[:12]
    return cache_dir / f"kafka-{KAFKA_VERSION}-maven-{digest}"


def _pom_kafka_version(pom: bytes) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.fromstring(pom).find("m:properties/m:kafka.version", ns)
    if version is None or not version.text:
        raise StackError(f"{POM} has no <kafka.version> property")
    return version.text.strip()


def require_maven() -> None:
    """Fail clearly before a first start that would need Maven to download the broker."""
    if shutil.which("mvn") is None:
        raise StackError(
            f"Maven (`mvn`) is needed once to download {NAME} from Maven Central into the "
            "cache; install it (`apt-get install maven`), or select the older broker with "
            "CARTWATCH_STACK_KAFKA=2.3, or set CARTWATCH_BROKER to use an existing cluster"
        )


def _download(tmp: Path) -> Path:
    require_maven()
    shutil.copy(POM, tmp / "pom.xml")
    run_tool(
        [
            "mvn",
            "--batch-mode",
            "--quiet",
            "--strict-checksums",  # -C: a download whose checksum differs is refused
            "--file",
            str(tmp / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp / 'libs'}",
        ],
        what=f"downloading {NAME} from Maven Central with {POM.name}",
        cwd=tmp,
    )
    if not (tmp / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise StackError(f"Maven finished but {tmp / 'libs'} holds no kafka_2.13-{KAFKA_VERSION}")
    return tmp


def ports(settings: StackSettings) -> dict[str, int]:
    """The ports this flavour listens on, by the setting that chooses each."""
    chosen = {
        "CARTWATCH_KAFKA_PORT": settings.kafka_port,
        "CARTWATCH_KAFKA_CONTROLLER_PORT": settings.controller_port,
    }
    if settings.proxied is not None:
        chosen["proxied listener"] = settings.proxied.port
    if settings.security:
        chosen["CARTWATCH_KAFKA_SASL_SSL_PORT"] = settings.sasl_ssl_port
        chosen["CARTWATCH_KAFKA_SSL_PORT"] = settings.ssl_port
    return chosen


def check_before_start(settings: StackSettings) -> None:
    """What must hold before anything starts: Maven, if the broker is not cached yet."""
    if not cache_home(settings.cache_dir).is_dir():
        require_maven()


def start(settings: StackSettings, record: Callable[[ServiceProcess], None]) -> KafkaAccess:
    """Provision, configure, format (first start only) and start the broker; `record` it."""
    record(restart_broker(settings))
    return access(settings)


def restart_broker(settings: StackSettings) -> ServiceProcess:
    """Start the broker on the stack directory's data (formatting it first if it is new)."""
    libs = libs_dir(settings.cache_dir)
    java = java_executable(os.environ)
    base = _base(settings)
    passwords = scram_passwords(base / "security")
    props = _server_properties(settings, passwords)
    config = write_properties(base / "server.properties", props, private=settings.security)
    log4j = base / "log4j2.properties"
    log4j.write_text(LOG4J2_CONFIG)
    jvm = [
        str(java),
        *HEAP,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        str(libs / "*"),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("CLASSPATH", "JAVA_TOOL_OPTIONS")}
    if not (base / "data" / "meta.properties").is_file():
        _format(jvm, config, passwords, env)
    console = base / "logs" / "console.log"
    service = spawn(
        "kafka",
        [*jvm, "kafka.Kafka", str(config)],
        log=console,
        address=f"{LOCALHOST}:{settings.kafka_port}",
        env=env,
    )
    wait_ready(
        service,
        lambda: log_says(console, READY_LINE) and broker_reachable(service.address, timeout=5.0),
        settings.start_timeout,
        "CARTWATCH_STACK_TIMEOUT",
    )
    return service


def _base(settings: StackSettings) -> Path:
    return settings.stack_dir / "kafka4"


def _format(
    jvm: list[str], config: Path, passwords: Mapping[str, Path], env: Mapping[str, str]
) -> None:
    """Format the empty log directory as a one-node KRaft cluster with the SCRAM users.

    The users are always created, secured listeners or not, so turning security on later
    needs no reformat. `--add-scram` only takes passwords as arguments: they are visible in
    this machine's process list for the second the tool runs (the stack is a dev tool).
    """
    scram = [
        arg
        for user, path in passwords.items()
        for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={_read(path)}]")
    ]
    run_tool(
        [*jvm, STORAGE_TOOL, "format", "--standalone", "-t", cluster_id(), "-c", str(config),
         *scram],
        what="formatting the Kafka 4 log directory (kafka.tools.StorageTool format)",
        env=env,
    )


def cluster_id() -> str:
    """A fresh KRaft cluster id, as `kafka-storage.sh random-uuid` makes it, without a JVM.

    Kafka's ids are 16 random bytes in URL-safe base64 without padding, never starting with
    "-" (it would read as a command-line option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def scram_passwords(directory: Path) -> dict[str, Path]:
    """Each SASL user's password file, made once (random, 0600) and kept with the data."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {user: directory / f"{user}.password" for user in SASL_USERS}
    for path in files.values():
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                # Hex: safe inside `--add-scram`'s brackets and JAAS quotes.
                out.write(base64.b16encode(os.urandom(24)).decode().lower() + "\n")
    return files


def _read(path: Path) -> str:
    return path.read_text().strip()


def _server_properties(
    settings: StackSettings, passwords: Mapping[str, Path]
) -> dict[str, object]:
    base = _base(settings)
    plaintext = f"PLAINTEXT://{LOCALHOST}:{settings.kafka_port}"
    controller = f"CONTROLLER://{LOCALHOST}:{settings.controller_port}"
    client_listeners = [plaintext]
    if settings.security:
        client_listeners += [
            f"SASL_SSL://{LOCALHOST}:{settings.sasl_ssl_port}",
            f"SSL://{LOCALHOST}:{settings.ssl_port}",
        ]
    advertised = list(client_listeners)
    protocols = (
        "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,"
        f"CONTROLLER:{'SSL' if settings.security else 'PLAINTEXT'}"
    )
    if settings.proxied is not None:
        name = settings.proxied.NAME
        client_listeners.append(f"{name}://{LOCALHOST}:{settings.proxied.port}")
        advertised.append(f"{name}://{settings.proxied.advertised}")
        protocols += f",{name}:PLAINTEXT"
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.listener.names": "CONTROLLER",
        "listeners": ",".join([*client_listeners, controller]),
        "advertised.listeners": ",".join(advertised),
        "controller.quorum.bootstrap.servers": f"{LOCALHOST}:{settings.controller_port}",
        "listener.security.protocol.map": protocols,
        "inter.broker.listener.name": "SSL" if settings.security else "PLAINTEXT",
        "log.dirs": base / "data",
        **SINGLE_BROKER,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
    }
    if settings.security:
        props.update(_security_properties(settings, passwords))
    return props


def _security_properties(
    settings: StackSettings, passwords: Mapping[str, Path]
) -> dict[str, object]:
    """TLS for SASL_SSL, SSL and CONTROLLER; SASL users; the authorizer if asked for."""
    try:
        from cartwatch_dev.stack import security
    except ImportError as exc:
        raise StackError(
            "secured listeners need the `cryptography` package to make certificates: "
            "pip install --constraint constraints.txt -e '.[test]'"
        ) from exc
    pki = security.make_pki(_base(settings) / "security", BROKER_USER, WORKER_USER)
    plain_users = " ".join(f'user_{user}="{_read(path)}"' for user, path in passwords.items())
    props: dict[str, object] = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": pki.broker_keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": pki.ca_file,
        "ssl.principal.mapping.rules": PRINCIPAL_MAPPING_RULES,
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        ),
    }
    if settings.authorizer:
        props.update(
            {
                "authorizer.class.name": (
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
                ),
                "allow.everyone.if.no.acl.found": "false",
                "super.users": ";".join(SUPER_USERS),
            }
        )
    return props


def access(settings: StackSettings) -> KafkaAccess:
    """How clients reach this broker: listeners, and with security the files they need."""
    base = _base(settings)
    listeners = [
        Listener(
            "PLAINTEXT",
            "PLAINTEXT",
            f"{LOCALHOST}:{settings.kafka_port}",
            "no authentication" + (" (User:ANONYMOUS, no ACLs)" if settings.authorizer else ""),
        )
    ]
    if not settings.security:
        return KafkaAccess(broker=NAME, listeners=tuple(listeners))
    security_dir = base / "security"
    listeners += [
        Listener(
            "SASL_SSL",
            "SASL_SSL",
            f"{LOCALHOST}:{settings.sasl_ssl_port}",
            f"SASL SCRAM-SHA-512 or PLAIN, users {', '.join(SASL_USERS)}",
        ),
        Listener(
            "SSL",
            "SSL",
            f"{LOCALHOST}:{settings.ssl_port}",
            f"client certificate required (mTLS); the client certificate is User:{WORKER_USER}",
        ),
    ]
    return KafkaAccess(
        broker=NAME,
        listeners=tuple(listeners),
        ca_file=str(security_dir / "ca.pem"),
        client_cert_file=str(security_dir / "client.pem"),
        client_key_file=str(security_dir / "client-key.pem"),
        password_files={user: str(security_dir / f"{user}.password") for user in SASL_USERS},
        super_users=SUPER_USERS if settings.authorizer else (),
        authorizer=settings.authorizer,
    )
