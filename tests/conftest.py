"""Shared fixtures: a real Kafka broker and SMTP server for the whole test session.

The stack is started at most once per session, lazily (a test that needs only mail starts no
broker), in a temporary directory on free ports, and stopped at session end whatever the
tests did. The broker is the stack's default (Kafka 4.x, KRaft); `CARTWATCH_STACK_KAFKA=2.3`
runs the session on Kafka 2.3 with ZooKeeper instead. Set `CARTWATCH_BROKER` to run the tests
against an existing cluster.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path

import pytest
from cartwatch_dev.chaos import Deployment, PrivateStack
from cartwatch_dev.stack import StackState, clear_maildir, down, postgres, read_maildir, up
from cartwatch_dev.stack.settings import StackSettings
from kafka_helpers import isolated_stack_env
from pipeline_harness import Pipeline

from config.bootstrap import parse_bootstrap

WORKER_LOG_LINES = 200
"""How much of each worker's log a failed test's report shows (CI keeps no temp files)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that ran workers shows the end of their logs: the worker is another
    process, so its log is otherwise lost with the temporary directory."""
    outcome = yield
    report = outcome.get_result()
    funcargs = getattr(item, "funcargs", {})
    deployment = funcargs.get("pipeline") or funcargs.get("deployment")
    if not report.failed or not isinstance(deployment, Pipeline | Deployment):
        return
    for worker in deployment.workers:
        tail = worker.log().splitlines()[-WORKER_LOG_LINES:]
        report.sections.append((f"worker {worker.name} log (last {len(tail)} lines)",
                                "\n".join(tail)))


def _start(stack_dir: Path, *, kafka: bool, smtp: bool) -> StackState:
    settings = StackSettings.from_env(isolated_stack_env(stack_dir))
    return up(replace(settings, run_kafka=kafka, run_smtp=smtp))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("127.0.0.1:PORT") of a real broker: `CARTWATCH_BROKER` or our own."""
    if os.environ.get("CARTWATCH_BROKER"):
        yield parse_bootstrap(os.environ["CARTWATCH_BROKER"])
        return
    state = _start(tmp_path_factory.mktemp("kafka-stack"), kafka=True, smtp=False)
    assert state.bootstrap
    try:
        yield state.bootstrap
    finally:
        down(state.stack_dir)


@dataclass(frozen=True)
class SmtpServer:
    """The session's SMTP server and the Maildir it stores every received message in.

    It is shared by all tests: call `clear()` first, or tell your messages apart by recipient.
    """

    host: str
    port: int
    maildir: Path

    def messages(self) -> list[EmailMessage]:
        """Every message received so far (oldest first), with the envelope in X-* headers."""
        return read_maildir(self.maildir)

    def clear(self) -> None:
        clear_maildir(self.maildir)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Poll until at least `count` messages arrived; fail the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(messages := self.messages()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} message(s) within {timeout} s, got {len(messages)}: "
                    f"{[m['Subject'] for m in messages]}"
                )
            time.sleep(0.05)
        return messages


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """A real SMTP server (our stack's aiosmtpd process) on 127.0.0.1 with a Maildir."""
    state = _start(tmp_path_factory.mktemp("smtp-stack"), kafka=False, smtp=True)
    assert state.smtp_address and state.maildir
    host, _, port = state.smtp_address.rpartition(":")
    try:
        yield SmtpServer(host=host, port=int(port), maildir=state.maildir)
    finally:
        down(state.stack_dir)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[postgres.PostgresServer]:
    """A real PostgreSQL server (Debian's package) on 127.0.0.1, its data in the session's
    temporary directory, stopped at session end. Skipped where PostgreSQL is not installed,
    except in CI (which installs it in .ci/run): there a missing server is a broken setup."""
    if postgres.bin_dir() is None:
        missing = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    server = postgres.start(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        postgres.stop(server)


@dataclass(frozen=True)
class PostgresDatabase:
    """One test's own empty database: its URL (no password in it) and the password."""

    url: str
    password: str


@pytest.fixture
def postgres_database(postgres_server: postgres.PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh database per test, owned by the unprivileged application role, dropped after."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(postgres_server, name)
    try:
        yield PostgresDatabase(url, postgres_server.app_password)
    finally:
        postgres.drop_database(postgres_server, name)


@dataclass(frozen=True)
class UniqueNames:
    """Names private to one test, so tests never see each other's topics or consumer groups."""

    prefix: str
    app_id: str

    def topic(self, name: str) -> str:
        """A topic name under this test's prefix, e.g. `test_x-1a2b3c4d.cart-events`."""
        return f"{self.prefix}.{name}"


@pytest.fixture
def unique_names(request: pytest.FixtureRequest) -> UniqueNames:
    """A fresh topic prefix and Faust app id, readable (test name) and unique (uuid)."""
    test = re.sub(r"[^a-zA-Z0-9_-]+", "-", request.node.name)[:40].strip("-")
    token = uuid.uuid4().hex[:8]
    return UniqueNames(prefix=f"{test}-{token}", app_id=f"cartwatch-{test}-{token}")


@pytest.fixture
async def pipeline(
    kafka_bootstrap: str, unique_names: UniqueNames, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    """A private cartwatch deployment (topics created, no worker started yet)."""
    deployment = Pipeline(
        bootstrap=kafka_bootstrap,
        prefix=unique_names.prefix,
        app_id=unique_names.app_id,
        workdir=tmp_path,
    )
    await deployment.create_topics()
    try:
        yield deployment
    finally:
        deployment.stop_all()


@pytest.fixture
async def deployment(kafka_bootstrap: str, unique_names: UniqueNames, tmp_path: Path
                     ) -> AsyncIterator[Deployment]:
    """A private fault-scenario deployment (``cartwatch_dev.chaos``) whose workers send
    reminders to a private SMTP server (a scenario judges every message in its Maildir)."""
    mail = PrivateStack(tmp_path / "mail-stack", kafka=False, smtp=True).up()
    deployment = Deployment(kafka_bootstrap, tmp_path, prefix=unique_names.prefix,
                            mail=mail.smtp)
    await deployment.create_topics()
    try:
        yield deployment
    finally:
        deployment.stop_all()
        mail.down()
