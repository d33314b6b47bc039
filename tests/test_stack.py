"""`cartwatch stack`: real processes on free ports in temporary stack directories."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from aiokafka.helpers import create_ssl_context
from cartwatch_dev.stack import ServiceProcess, StackError, StackState, down, kafka4, status, up
from cartwatch_dev.stack.cli import STATUS_DEAD, STATUS_NOT_RUNNING, stack
from cartwatch_dev.stack.kafka import KafkaAccess, broker_reachable, verify_sha256
from cartwatch_dev.stack.kafka2 import no_broker_registered
from cartwatch_dev.stack.process import port_free, wait_until
from cartwatch_dev.stack.security import make_pki
from cartwatch_dev.stack.settings import KAFKA_4, SettingsError, StackSettings
from click.testing import CliRunner, Result
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kafka_helpers import create_topics, free_ports, isolated_stack_env

from config.bootstrap import BootstrapError, parse_bootstrap


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated stack environment for the CLI; whatever a test started is stopped after it."""
    directory = tmp_path / "stack"
    for key in [key for key in os.environ if key.startswith("CARTWATCH_")]:
        monkeypatch.delenv(key)
    for key, value in isolated_stack_env(directory).items():
        monkeypatch.setenv(key, value)
    yield directory
    cli("down")
    assert leftover_processes(directory) == []


def cli(*args: str) -> Result:
    return CliRunner().invoke(stack, list(args))


def settings() -> StackSettings:
    return StackSettings.from_env()


def leftover_processes(stack_dir: Path) -> list[str]:
    """Command lines of live processes that mention `stack_dir` (zombies have none)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked
        if str(stack_dir) in args:
            found.append(args[:200])
    return found


def running(stack_dir: Path) -> list[ServiceProcess]:
    state = status(stack_dir)
    assert state is not None, f"no stack recorded in {stack_dir}"
    return list(state.services)


FLAVOURS = [
    pytest.param("4", ["kafka", "smtp"], "Apache Kafka 4.4.0 (KRaft)", id="kafka-4"),
    pytest.param("2.3", ["zookeeper", "kafka", "smtp"], "Apache Kafka 2.3.0 (ZooKeeper)",
                 id="kafka-2.3"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("flavour", "names", "broker"), FLAVOURS)
def test_up_status_down_leaves_nothing_running(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, flavour: str, names: list[str], broker: str
) -> None:
    monkeypatch.setenv("CARTWATCH_STACK_KAFKA", flavour)
    started = cli("up")
    assert started.exit_code == 0, started.output
    config = settings()
    bootstrap = f"127.0.0.1:{config.kafka_port}"
    assert f"export CARTWATCH_BROKER=kafka://{bootstrap}" in started.output
    assert f"export CARTWATCH_SMTP_PORT={config.smtp_port}" in started.output
    assert f"Maildir {config.maildir}" in started.output
    assert f"Broker: {broker}" in started.output
    assert broker_reachable(bootstrap)

    services = running(stack_dir)
    assert [s.name for s in services] == names
    shown = cli("status")
    assert shown.exit_code == 0, shown.output
    for service in services:
        assert f"pid {service.pid}" in shown.output

    stopped = cli("down")
    assert stopped.exit_code == 0, stopped.output
    assert not any(s.alive() for s in services)
    assert leftover_processes(stack_dir) == []
    assert not (stack_dir / "stack.json").exists()
    ports = (config.kafka_port, config.zookeeper_port, config.controller_port, config.smtp_port)
    assert all(port_free(p) for p in ports)
    assert cli("status").exit_code == STATUS_NOT_RUNNING


@pytest.mark.integration
def test_second_up_reports_the_running_stack(stack_dir: Path) -> None:
    assert cli("up").exit_code == 0
    services = running(stack_dir)

    again = cli("up")

    assert again.exit_code == 1
    assert "already running" in again.stderr and str(stack_dir) in again.stderr
    assert all(f"pid {s.pid}" in again.stderr for s in services)
    assert "Traceback" not in again.output
    assert running(stack_dir) == services and all(s.alive() for s in services)

    reused = cli("up", "--reuse")  # what `make run` does: the running stack is used

    assert reused.exit_code == 0, reused.output
    assert f"already running in {stack_dir}: using it" in reused.stdout
    assert "CARTWATCH_BROKER=" in reused.stdout
    assert running(stack_dir) == services


@pytest.mark.parametrize(
    ("setting", "extra"),
    [
        ("CARTWATCH_KAFKA_PORT", {}),
        ("CARTWATCH_KAFKA_CONTROLLER_PORT", {}),
        ("CARTWATCH_KAFKA_SASL_SSL_PORT", {"CARTWATCH_STACK_SECURITY": "on"}),
        ("CARTWATCH_KAFKA_SSL_PORT", {"CARTWATCH_STACK_SECURITY": "on"}),
        ("CARTWATCH_ZOOKEEPER_PORT", {"CARTWATCH_STACK_KAFKA": "2.3"}),
        ("CARTWATCH_SMTP_PORT", {}),
    ],
)
def test_busy_port_is_named_and_nothing_starts(
    stack_dir: Path, setting: str, extra: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(setting, str(port))

        result = cli("up")

    assert result.exit_code == 1
    assert f"port {port}" in result.stderr and setting in result.stderr
    assert status(stack_dir) is None and leftover_processes(stack_dir) == []


@pytest.mark.integration
@pytest.mark.parametrize(("flavour", "names", "broker"), FLAVOURS)
def test_down_after_broker_was_killed_cleans_up_and_up_recovers(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, flavour: str, names: list[str], broker: str
) -> None:
    monkeypatch.setenv("CARTWATCH_STACK_KAFKA", flavour)
    assert cli("up").exit_code == 0
    services = {s.name: s for s in running(stack_dir)}
    kafka = services["kafka"]
    os.kill(kafka.pid, signal.SIGKILL)
    assert wait_until(lambda: not kafka.alive(), timeout=10)

    shown = cli("status")
    assert shown.exit_code == STATUS_DEAD
    assert "DEAD" in shown.output

    stopped = cli("down")

    assert stopped.exit_code == 0, stopped.output
    assert f"kafka (pid {kafka.pid}) was not running any more" in stopped.output
    assert all(f"stopped {name}" in stopped.output for name in names if name != "kafka")
    assert not any(s.alive() for s in services.values())
    assert leftover_processes(stack_dir) == []
    assert not (stack_dir / "stack.json").exists()

    # 2.3: ZooKeeper restores the dead broker's registration; `up` must wait it out, not fail.
    # 4.x: the formatted log directory is reused (a second format would refuse to run).
    restarted = cli("up")
    assert restarted.exit_code == 0, restarted.output
    assert broker_reachable(settings().bootstrap)


@pytest.mark.parametrize(
    ("dump", "free"),
    [
        ("SessionTracker dump:\nephemeral nodes dump:\nSessions with Ephemerals (0):\n", True),
        ("ephemeral nodes dump:\nSessions with Ephemerals (1):\n0x1000:\n\t/brokers/ids/0\n",
         False),
        ("This ZooKeeper instance is not currently serving requests\n", False),
        ("", False),
    ],
)
def test_zookeeper_is_free_for_a_broker_only_once_it_lists_its_nodes(dump: str, free: bool) -> None:
    assert no_broker_registered(dump) is free


@pytest.mark.integration
def test_broker_not_ready_in_time_shows_its_log_and_stops_everything(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARTWATCH_STACK_TIMEOUT", "0.5")

    result = cli("up")

    assert result.exit_code == 1
    assert "not ready after 0.5 s" in result.stderr and "CARTWATCH_STACK_TIMEOUT" in result.stderr
    assert "last lines of" in result.stderr
    assert status(stack_dir) is None
    assert leftover_processes(stack_dir) == []


def test_missing_java_is_reported_before_any_download(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))

    result = cli("up")

    assert result.exit_code == 1
    assert "Java is required" in result.stderr
    assert status(stack_dir) is None


def test_missing_maven_is_reported_before_a_first_kafka4_start(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    java = shutil.which("java")
    assert java, "these tests need Java"
    (tools / "java").symlink_to(java)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    result = cli("up")

    assert result.exit_code == 1
    assert "Maven (`mvn`) is needed once to download Apache Kafka 4.4.0" in result.stderr
    assert "apt-get install maven" in result.stderr and "CARTWATCH_STACK_KAFKA=2.3" in result.stderr
    assert status(stack_dir) is None and leftover_processes(stack_dir) == []


def test_unreachable_external_broker_is_reported(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    monkeypatch.setenv("CARTWATCH_BROKER", f"kafka://127.0.0.1:{port}")

    result = cli("up")

    assert result.exit_code == 1
    assert f"no Kafka broker answers at CARTWATCH_BROKER (127.0.0.1:{port})" in result.stderr
    assert status(stack_dir) is None


@pytest.mark.integration
def test_external_broker_starts_only_smtp(
    stack_dir: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARTWATCH_BROKER", f"kafka://{kafka_bootstrap}")

    result = cli("up")

    assert result.exit_code == 0, result.output
    assert [s.name for s in running(stack_dir)] == ["smtp"]
    assert f"Kafka bootstrap: {kafka_bootstrap} (external cluster" in result.output


def test_digest_mismatch_is_refused_and_the_file_deleted(tmp_path: Path) -> None:
    download = tmp_path / "kafka.tgz"
    download.write_bytes(b"not the Apache release")
    verify_sha256(download, hashlib.sha256(b"not the Apache release").hexdigest())

    with pytest.raises(StackError, match="SHA-256 mismatch for kafka.tgz"):
        verify_sha256(download, "0" * 64)
    assert not download.exists()


@pytest.mark.integration
async def test_smtp_server_stores_messages_in_the_maildir(smtp_server) -> None:
    smtp_server.clear()
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "alice@example.com"
    message["Subject"] = "You left something in your cart"
    message.set_content("Your cart misses you.")

    await aiosmtplib.send(message, hostname=smtp_server.host, port=smtp_server.port)

    (received,) = smtp_server.wait_for_messages(1)
    assert received["Subject"] == "You left something in your cart"
    assert received["X-RcptTo"] == "alice@example.com"
    assert received.get_content().strip() == "Your cart misses you."
    smtp_server.clear()
    assert smtp_server.messages() == []


@pytest.mark.integration
async def test_create_topics_makes_partitions_with_leaders(kafka_bootstrap, unique_names) -> None:
    topic = unique_names.topic("carts")

    await create_topics(kafka_bootstrap, [topic], partitions=3)

    with pytest.raises(RuntimeError, match="creating topics failed"):
        await create_topics(kafka_bootstrap, [topic], partitions=3)


def test_settings_from_env() -> None:
    defaults = StackSettings.from_env({"HOME": "/home/u"}, cwd=Path("/srv/app"))
    assert defaults.stack_dir == Path("/srv/app/.cartwatch/stack")
    assert defaults.cache_dir == Path("/home/u/.cache/cartwatch")
    assert (defaults.kafka_port, defaults.zookeeper_port, defaults.smtp_port) == (9092, 2181, 1025)
    assert defaults.run_kafka and defaults.run_smtp and defaults.bootstrap == "127.0.0.1:9092"

    external = StackSettings.from_env(
        {"CARTWATCH_BROKER": "kafka://k1:9093;kafka://k2", "CARTWATCH_SMTP_HOST": "mail.example"}
    )
    assert external.bootstrap == "k1:9093,k2:9092"
    assert not external.run_kafka and not external.run_smtp
    assert StackSettings.from_env({"CARTWATCH_SMTP_HOST": "127.0.0.1"}).run_smtp

    assert defaults.kafka_flavour == KAFKA_4 and not defaults.security
    assert not defaults.authorizer
    assert (defaults.controller_port, defaults.sasl_ssl_port, defaults.ssl_port) == (
        9093, 9094, 9095,
    )
    for spelling in ("2.3", "2.3.0"):
        assert StackSettings.from_env({"CARTWATCH_STACK_KAFKA": spelling}).kafka_flavour == "2.3"
    for spelling in ("4", "4.x", "4.4.0"):
        assert StackSettings.from_env({"CARTWATCH_STACK_KAFKA": spelling}).kafka_flavour == "4"
    secured = StackSettings.from_env(
        {"CARTWATCH_STACK_SECURITY": "on", "CARTWATCH_STACK_AUTHORIZER": "true"}
    )
    assert secured.security and secured.authorizer

    with pytest.raises(SettingsError, match="CARTWATCH_STACK_KAFKA='3.9'"):
        StackSettings.from_env({"CARTWATCH_STACK_KAFKA": "3.9"})
    with pytest.raises(SettingsError, match="CARTWATCH_STACK_SECURITY='maybe'"):
        StackSettings.from_env({"CARTWATCH_STACK_SECURITY": "maybe"})
    with pytest.raises(SettingsError, match="Kafka 4.x only"):
        StackSettings.from_env({"CARTWATCH_STACK_KAFKA": "2.3", "CARTWATCH_STACK_SECURITY": "on"})
    with pytest.raises(SettingsError, match="needs secured listeners"):
        StackSettings.from_env({"CARTWATCH_STACK_AUTHORIZER": "on"})
    with pytest.raises(SettingsError, match="CARTWATCH_SMTP_PORT"):
        StackSettings.from_env({"CARTWATCH_SMTP_PORT": "70000"})
    with pytest.raises(BootstrapError, match="CARTWATCH_BROKER"):
        parse_bootstrap("kafka://k1:port")
    with pytest.raises(SettingsError, match="CARTWATCH_BROKER"):
        StackSettings.from_env({"CARTWATCH_BROKER": "kafka://k1:port"})


# --- Kafka 4.x with secured listeners (`cartwatch stack up --secure`) -------------------------


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    """One Kafka 4.x broker with SASL_SSL and SSL listeners for this module's tests."""
    stack_dir = tmp_path_factory.mktemp("secure-stack")
    config = StackSettings.from_env(isolated_stack_env(stack_dir))
    state = up(replace(config, kafka_flavour=KAFKA_4, security=True, run_smtp=False))
    try:
        yield state
    finally:
        down(stack_dir)
        assert leftover_processes(stack_dir) == []


def access_of(state: StackState) -> KafkaAccess:
    assert state.kafka is not None, "the stack runs no broker of its own"
    return state.kafka


def sasl_client(
    access: KafkaAccess, user: str, mechanism: str = "SCRAM-SHA-512", password: str | None = None
) -> dict[str, object]:
    """aiokafka settings for the SASL_SSL listener as `user` (their real password by default)."""
    assert access.ca_file
    if password is None:
        password = Path(access.password_files[user]).read_text().strip()
    return {
        "bootstrap_servers": access.listener("SASL_SSL").address,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        "ssl_context": create_ssl_context(cafile=access.ca_file),
    }


def mtls_client(access: KafkaAccess, *, with_certificate: bool = True) -> dict[str, object]:
    """aiokafka settings for the SSL listener, presenting the worker's certificate or none."""
    assert access.ca_file and access.client_cert_file and access.client_key_file
    certificate = (
        {"certfile": access.client_cert_file, "keyfile": access.client_key_file}
        if with_certificate
        else {}
    )
    return {
        "bootstrap_servers": access.listener("SSL").address,
        "security_protocol": "SSL",
        "ssl_context": create_ssl_context(cafile=access.ca_file, **certificate),
    }


async def round_trip(topic: str, client: dict[str, object], timeout: float = 20.0) -> bytes:
    """Produce one unique record to `topic` and read it back, both through `client`'s listener."""
    value = f"cart-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **client)
    await asyncio.wait_for(producer.start(), timeout)
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value), timeout)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, auto_offset_reset="earliest", request_timeout_ms=10_000, **client
    )
    await asyncio.wait_for(consumer.start(), timeout)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values = [record.value for records in batches.values() for record in records]
            if value in values:
                return value
        raise AssertionError(f"{value!r} not read back from {topic} within {timeout} s")
    finally:
        await consumer.stop()


async def refused(client: dict[str, object], caplog: pytest.LogCaptureFixture) -> str:
    """Connect with `client`; return aiokafka's logged reason once the broker refused it."""
    producer = AIOKafkaProducer(request_timeout_ms=5_000, **client)
    with (
        caplog.at_level(logging.ERROR, logger="aiokafka"),
        pytest.raises(KafkaConnectionError, match="Unable to bootstrap"),
    ):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
    return caplog.text


@pytest.mark.integration
async def test_kafka4_creates_topics_and_round_trips_records(
    kafka_bootstrap: str, unique_names
) -> None:
    """The session broker (the stack's default, Kafka 4.x unless CARTWATCH_BROKER says
    otherwise) makes topics, takes records and gives them back."""
    topic = unique_names.topic("carts")
    await create_topics(kafka_bootstrap, [topic], partitions=3)

    assert await round_trip(topic, {"bootstrap_servers": kafka_bootstrap})


@pytest.mark.integration
async def test_secured_listeners_take_scram_plain_and_mtls_clients(
    secure_stack: StackState, unique_names
) -> None:
    access = access_of(secure_stack)
    assert access.broker == "Apache Kafka 4.4.0 (KRaft)"
    assert [listener.name for listener in access.listeners] == ["PLAINTEXT", "SASL_SSL", "SSL"]
    topic = unique_names.topic("secure")
    await create_topics(access.listener("PLAINTEXT").address, [topic])

    await round_trip(topic, sasl_client(access, "cartwatch"))
    await round_trip(topic, sasl_client(access, "admin"))
    await round_trip(topic, sasl_client(access, "cartwatch", mechanism="PLAIN"))
    await round_trip(topic, mtls_client(access))


@pytest.mark.integration
async def test_secured_listeners_refuse_a_wrong_password_and_a_missing_certificate(
    secure_stack: StackState, caplog: pytest.LogCaptureFixture
) -> None:
    access = access_of(secure_stack)

    log = await refused(sasl_client(access, "cartwatch", password="not-the-password"), caplog)
    assert "Authentication failed" in log and "SCRAM-SHA-512" in log
    caplog.clear()
    log = await refused(
        sasl_client(access, "cartwatch", mechanism="PLAIN", password="not-the-password"), caplog
    )
    assert "SaslAuthenticationFailed: Authentication failed: Invalid username or password" in log
    caplog.clear()
    await refused(mtls_client(access, with_certificate=False), caplog)


@pytest.mark.integration
async def test_secured_listener_refuses_a_certificate_from_another_ca(
    secure_stack: StackState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    access = access_of(secure_stack)
    other = make_pki(tmp_path / "other-ca", "someone-else", "cartwatch")
    client = mtls_client(access)
    client["ssl_context"] = create_ssl_context(
        cafile=access.ca_file, certfile=other.client_cert_file, keyfile=other.client_key_file
    )

    await refused(client, caplog)


def test_secure_status_names_files_and_users_but_never_a_password(
    secure_stack: StackState, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = access_of(secure_stack)
    monkeypatch.setenv("CARTWATCH_STACK_DIR", str(secure_stack.stack_dir))

    shown = cli("status")

    assert shown.exit_code == 0, shown.output
    for listener in access.listeners:
        assert f"{listener.name}" in shown.output and listener.address in shown.output
    assert access.ca_file and access.client_cert_file and access.client_key_file
    for path in (access.ca_file, access.client_cert_file, access.client_key_file):
        assert path in shown.output and Path(path).is_file()
    for user, path in access.password_files.items():
        assert f"SASL user {user}" in shown.output and path in shown.output
        password = Path(path).read_text().strip()
        assert len(password) >= 32 and password not in shown.output
        assert Path(path).stat().st_mode & 0o777 == 0o600
    assert Path(access.client_key_file).stat().st_mode & 0o777 == 0o600
    server_properties = secure_stack.stack_dir / "kafka4" / "server.properties"
    assert server_properties.stat().st_mode & 0o777 == 0o600  # it holds the PLAIN passwords


@pytest.mark.integration
async def test_authorizer_denies_users_without_acls_until_the_admin_grants_them(
    stack_dir: Path, unique_names
) -> None:
    started = await asyncio.to_thread(cli, "up", "--authorizer")  # implies --secure
    assert started.exit_code == 0, started.output
    assert "super users: User:admin, User:cartwatch-broker" in started.output
    state = status(stack_dir)
    assert state is not None
    access = access_of(state)
    assert access.authorizer
    topic = unique_names.topic("acl")
    await round_trip(topic, sasl_client(access, "admin"))  # the super user may do anything

    worker = AIOKafkaProducer(request_timeout_ms=10_000, **sasl_client(access, "cartwatch"))
    await worker.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(worker.send_and_wait(topic, b"denied"), 30)
    finally:
        await worker.stop()

    await asyncio.to_thread(grant, access, topic, "User:cartwatch")

    # The SASL user and the client certificate CN=cartwatch are the same principal.
    for client in (sasl_client(access, "cartwatch"), mtls_client(access)):
        producer = AIOKafkaProducer(request_timeout_ms=10_000, **client)
        await producer.start()
        try:
            await asyncio.wait_for(producer.send_and_wait(topic, b"allowed"), 30)
        finally:
            await producer.stop()


def grant(access: KafkaAccess, topic: str, principal: str) -> None:
    """Allow `principal` to write and describe `topic`, as the admin over SASL_SSL.

    confluent-kafka, because aiokafka has no ACL API.
    """
    assert access.ca_file
    admin = AdminClient({
        "bootstrap.servers": access.listener("SASL_SSL").address,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "admin",
        "sasl.password": Path(access.password_files["admin"]).read_text().strip(),
        "ssl.ca.location": access.ca_file,
    })
    bindings = [
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*",
                   operation, AclPermissionType.ALLOW)
        for operation in (AclOperation.WRITE, AclOperation.DESCRIBE)
    ]
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=30)


def test_the_checked_in_pom_pins_the_kafka_the_stack_names() -> None:
    assert kafka4.cache_home(Path("/c")).name.startswith(f"kafka-{kafka4.KAFKA_VERSION}-maven-")
    assert "4.4.0" in kafka4.NAME


def test_kraft_cluster_ids_look_like_kafkas() -> None:
    ids = {kafka4.cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster) and not cluster.startswith("-")
