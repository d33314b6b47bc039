"""Security of what runs: the local stack and the worker listen on 127.0.0.1 only, and secrets
given to a worker never reach its log."""

import asyncio
import ipaddress
import os
from pathlib import Path

import pytest

from streams.chaos import Deployment, PrivateStack
from streams.chaos.scenarios import live_load
from streams.stack.brokers import broker_flavour

pytestmark = pytest.mark.integration

SECRETS = {
    "CARTWATCH_SMTP_PASSWORD": "smtp-pw-Zq8wX1-never-logged",
    "CARTWATCH_LINK_SECRET": "link-secret-Kj3mN9pQ2rT5vW8y-never-logged",
    "CARTWATCH_API_TOKEN": "api-token-Hf6gD4sA2-never-logged",
}


def _descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process below them (a start script may fork its JVM)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found = set(pids)
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def listening_sockets(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by ``pids`` or their children."""
    inodes = set()
    for pid in _descendants(pids):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.add((_decode_address(address), int(port, 16)))
    return found


def test_local_stack_listens_on_loopback_only(tmp_path: Path) -> None:
    with PrivateStack(tmp_path / "stack", smtp=True) as stack:
        assert stack.state is not None
        sockets = listening_sockets({service.pid for service in stack.state.services})
        settings = stack.settings
    ports = {port for _, port in sockets}
    expected = {*broker_flavour(settings).ports(settings).values(), settings.smtp_port}
    assert expected <= ports, (expected, ports)
    assert {address for address, _ in sockets} == {"127.0.0.1"}, sorted(sockets)


async def test_worker_with_secrets_listens_on_loopback_and_never_logs_them(
    kafka_bootstrap: str, unique_names, tmp_path: Path
) -> None:
    deployment = Deployment(kafka_bootstrap, tmp_path, prefix=unique_names.prefix)
    await deployment.create_topics()
    config = tmp_path / "cartwatch.toml"
    config.write_text('[notifier.reminders]\nrequire_marketing_consent = false\n'
                      'steps = [{after = "1s"}]\n')
    deployment.settings.update(
        SECRETS, CARTWATCH_CONFIG=str(config), CARTWATCH_SMTP_USERNAME="mailer",
        CARTWATCH_NOTIFIER_ENABLED="true", CARTWATCH_ABANDON_AFTER="1",
        CARTWATCH_SMTP_PORT="1",  # nothing listens: every send fails and is logged
    )
    worker = deployment.worker("w1")
    worker.loglevel = "debug"
    try:
        worker.start()
        await worker.wait_ready(after=0)
        load = live_load(seed=5, carts=20, abandon_after=1.0, span=1.0, lead=0.5)
        await deployment.send((m.topic, m.key, m.value) for m in load.messages)
        log = deployment.output_log()
        deadline = asyncio.get_running_loop().time() + 60
        while log.ids("abandoned") < load.expected.abandonment_ids:
            assert asyncio.get_running_loop().time() < deadline, "no abandonments"
            await asyncio.sleep(0.5)
            await log.reread()
        await asyncio.sleep(3)  # the reminders fall due 1 s after abandonment and fail
        assert worker.process is not None
        sockets = listening_sockets({worker.process.pid})
    finally:
        deployment.stop_all()
    text = worker.log()
    assert "deadline index rebuilt" in text and "DEBUG" in text
    assert [name for name, value in SECRETS.items() if value in text] == []
    assert sockets and {address for address, _ in sockets} == {"127.0.0.1"}, sorted(sockets)
