"""A throw-away PostgreSQL server for the tests: Debian's binaries, a private data directory.

The server listens on 127.0.0.1 only, on a free port, with no Unix socket (nothing outside the
data directory is touched), and is tuned for tests, not durability (``fsync=off``): a crash
loses a test database, never anything else. The application connects as a non-superuser
role with a password over TCP, as in production, so permission and authentication mistakes
show in the tests; the superuser is only used to create and drop each test's database.

PostgreSQL refuses to run as root, and CI runs as root: then every server command runs as the
``postgres`` system user the Debian package creates (``runuser``), the data directory is
handed to that user, and the temporary directories above it get the search bit for others
(``o+x``: enter, not list) so that user can reach it. pytest makes its temporary directories
``0700`` and takes the bit away again from its root directory at the next session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from cartwatch_dev.stack.process import StackError, tail
from cartwatch_dev.stack.settings import LOCALHOST

SERVER_USER = "postgres"
"""The system user the server runs as when the tests run as root (the Debian package's)."""
SUPERUSER = "postgres"
APP_USER = "cartwatch"
START_TIMEOUT = 60
TEST_SETTINGS = {
    "listen_addresses": LOCALHOST,
    "unix_socket_directories": "''",  # pg_ctl passes the options through a shell
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "32MB",
}
"""Loopback only, no socket file, no durability (a test server's data is thrown away)."""


def bin_dir() -> Path | None:
    """The newest PostgreSQL's binaries (``$CARTWATCH_PG_BIN``, else Debian's layout)."""
    if configured := os.environ.get("CARTWATCH_PG_BIN"):
        return Path(configured) if (Path(configured) / "initdb").exists() else None
    candidates = [path for path in Path("/usr/lib/postgresql").glob("*/bin")
                  if (path / "initdb").exists() and (path / "pg_ctl").exists()]
    return max(candidates, key=lambda path: _major(path.parent.name), default=None)


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


@dataclass(frozen=True)
class PostgresServer:
    """A running server; ``superuser_url`` administers it, ``url(db)`` is the app's view."""

    data_dir: Path
    bin_dir: Path
    port: int
    superuser_password: str
    app_password: str
    settings: Mapping[str, str] = field(default_factory=lambda: dict(TEST_SETTINGS))
    """The server's ``-c`` settings (kept to start it again the same way)."""
    host: str = LOCALHOST

    @property
    def log(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def superuser_url(self, database: str = "postgres") -> str:
        return (f"postgresql://{SUPERUSER}:{quote(self.superuser_password, safe='')}@"
                f"{self.host}:{self.port}/{database}")

    def url(self, database: str) -> str:
        """The application's URL of ``database``, without the password (a secret apart)."""
        return f"postgresql://{APP_USER}@{self.host}:{self.port}/{database}"


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick); the server binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: Sequence[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(argv)
    return ["runuser", "-u", SERVER_USER, "--", *argv]


def _run(argv: Sequence[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(_as_server_user(argv), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        if log is not None:
            detail += "\n" + tail(log, 30)
        raise StackError(f"{what} failed (exit code {result.returncode}): {detail}")


def _hand_to_server_user(root: Path) -> None:
    """Let the server user own ``root`` and reach it through the 0700 directories above."""
    if os.geteuid() != 0:
        return
    shutil.chown(root, SERVER_USER, SERVER_USER)
    for parent in root.resolve().parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        parent.chmod(mode | stat.S_IXOTH)


def start(root: Path, settings: Mapping[str, str] | None = None) -> PostgresServer:
    """initdb a cluster in ``root/data`` and start it; returns once it accepts connections.

    ``settings`` override ``TEST_SETTINGS`` (the benchmark's server is durable)."""
    binaries = bin_dir()
    if binaries is None:
        raise StackError("PostgreSQL is not installed (apt-get install postgresql)")
    root.mkdir(parents=True, exist_ok=True)
    _hand_to_server_user(root)
    data = root / "data"
    superuser_password = secrets.token_urlsafe(16)
    app_password = secrets.token_urlsafe(16)
    password_file = root / "superuser-password"
    password_file.write_text(superuser_password + "\n")
    if os.geteuid() == 0:
        shutil.chown(password_file, SERVER_USER, SERVER_USER)
    _run([str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER,
          f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8",
          "--locale=C.UTF-8", "--no-sync"], "initdb")
    password_file.unlink()
    server = None
    for _attempt in range(3):  # another process may take the free port before we bind it
        candidate = PostgresServer(data, binaries, free_port(), superuser_password,
                                   app_password, {**TEST_SETTINGS, **(settings or {})})
        try:
            _pg_ctl_start(candidate)
        except StackError:
            if "could not bind" not in candidate.log.read_text(errors="replace"):
                raise
            continue
        server = candidate
        break
    if server is None:
        raise StackError(f"PostgreSQL found no free port; see {root / 'postgres.log'}")
    _create_app_user(server)
    return server


def _pg_ctl_start(server: PostgresServer) -> None:
    options = " ".join(f"-c {name}={value}" for name, value in server.settings.items())
    _run([str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log),
          "-w", "-t", str(START_TIMEOUT), "-o", f"-p {server.port} {options}", "start"],
         "pg_ctl start", server.log)


def start_again(server: PostgresServer) -> None:
    """Start a stopped server on its port and data again (the end of an outage)."""
    _pg_ctl_start(server)


def _create_app_user(server: PostgresServer) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.superuser_url(), autocommit=True) as db:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(APP_USER), sql.Literal(server.app_password)))


def create_database(server: PostgresServer, name: str) -> str:
    """A new empty database owned by the application user; returns its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.superuser_url(), autocommit=True) as db:
        db.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(APP_USER)))
    return server.url(name)


def drop_database(server: PostgresServer, name: str) -> None:
    """Drop ``name``, closing whatever connections a failed test left open to it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.superuser_url(), autocommit=True) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def stop(server: PostgresServer) -> None:
    """Fast shutdown (SIGINT to the postmaster: sessions are ended), polling until it is gone.

    A signal, not ``pg_ctl stop``: pg_ctl runs as the server user, who may no longer reach the
    data directory when another pytest session, started meanwhile, has taken the search bit
    back from pytest's root directory; the server itself keeps running inside it.
    """
    try:
        pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return  # never started, or already gone
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + START_TIMEOUT
    while _running(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the data is thrown away anyway
            raise StackError(f"PostgreSQL (pid {pid}) did not stop within {START_TIMEOUT} s; "
                             f"see {server.log}")
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
