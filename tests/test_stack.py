"""`cartwatch stack`: real processes on free ports in temporary stack directories."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from cartwatch_dev.stack import ServiceProcess, StackError, status
from cartwatch_dev.stack.cli import STATUS_DEAD, STATUS_NOT_RUNNING, stack
from cartwatch_dev.stack.kafka import broker_reachable, no_broker_registered, verify_sha256
from cartwatch_dev.stack.process import port_free, wait_until
from cartwatch_dev.stack.settings import SettingsError, StackSettings
from click.testing import CliRunner, Result
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


@pytest.mark.integration
def test_up_status_down_leaves_nothing_running(stack_dir: Path) -> None:
    started = cli("up")
    assert started.exit_code == 0, started.output
    config = settings()
    bootstrap = f"127.0.0.1:{config.kafka_port}"
    assert f"export CARTWATCH_BROKER=kafka://{bootstrap}" in started.output
    assert f"export CARTWATCH_SMTP_PORT={config.smtp_port}" in started.output
    assert f"Maildir {config.maildir}" in started.output
    assert broker_reachable(bootstrap)

    services = running(stack_dir)
    assert [s.name for s in services] == ["zookeeper", "kafka", "smtp"]
    shown = cli("status")
    assert shown.exit_code == 0, shown.output
    for service in services:
        assert f"pid {service.pid}" in shown.output

    stopped = cli("down")
    assert stopped.exit_code == 0, stopped.output
    assert not any(s.alive() for s in services)
    assert leftover_processes(stack_dir) == []
    assert not (stack_dir / "stack.json").exists()
    assert all(port_free(p) for p in (config.kafka_port, config.zookeeper_port, config.smtp_port))
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


@pytest.mark.parametrize(
    "setting", ["CARTWATCH_KAFKA_PORT", "CARTWATCH_ZOOKEEPER_PORT", "CARTWATCH_SMTP_PORT"]
)
def test_busy_port_is_named_and_nothing_starts(
    stack_dir: Path, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
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
def test_down_after_broker_was_killed_cleans_up_and_up_recovers(stack_dir: Path) -> None:
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
    assert "stopped zookeeper" in stopped.output and "stopped smtp" in stopped.output
    assert not any(s.alive() for s in services.values())
    assert leftover_processes(stack_dir) == []
    assert not (stack_dir / "stack.json").exists()

    # ZooKeeper restores the dead broker's registration; `up` must wait it out, not fail.
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

    with pytest.raises(SettingsError, match="CARTWATCH_SMTP_PORT"):
        StackSettings.from_env({"CARTWATCH_SMTP_PORT": "70000"})
    with pytest.raises(BootstrapError, match="CARTWATCH_BROKER"):
        parse_bootstrap("kafka://k1:port")
    with pytest.raises(SettingsError, match="CARTWATCH_BROKER"):
        StackSettings.from_env({"CARTWATCH_BROKER": "kafka://k1:port"})
