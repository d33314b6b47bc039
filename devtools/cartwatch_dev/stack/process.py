"""Starting, watching and stopping the stack's background processes.

Each service runs in its own session (process group), so stopping it also stops anything it
spawned, and a process is identified by pid *and* start time, so a pid reused by an unrelated
process after a crash is never signalled.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from cartwatch_dev.stack.settings import LOCALHOST


class StackError(Exception):
    """An expected failure with a message meant for a human; the CLI prints it, no traceback."""


@dataclass(frozen=True)
class ServiceProcess:
    """One process the stack started, as recorded in its state file."""

    name: str
    pid: int
    started: str
    """Kernel start time of `pid` (from /proc), so a recycled pid is not mistaken for ours."""
    address: str
    log: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ServiceProcess:
        return cls(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            started=str(data["started"]),
            address=str(data["address"]),
            log=str(data["log"]),
        )

    def alive(self) -> bool:
        """True while the recorded process (not a later one with the same pid) runs."""
        return _start_time(self.pid) == self.started


def _start_time(pid: int) -> str | None:
    """The process' start time in clock ticks since boot, or None if it is gone or a zombie."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, started = fields[0], fields[19]
    return None if state in ("Z", "X") else started


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child, so it does not linger as a zombie."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    address: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Start `argv` detached in its own session with stdout/stderr in a fresh `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    started = _start_time(proc.pid)
    if started is None:
        proc.wait()
        raise StackError(f"{name} exited immediately (exit code {proc.returncode}); see {log}")
    return ServiceProcess(name=name, pid=proc.pid, started=started, address=address, log=str(log))


def stop(service: ServiceProcess, timeout: float = 30.0) -> bool:
    """Stop the service's process group: SIGTERM, then SIGKILL after `timeout` seconds.

    Returns False if the process was already dead (it crashed or was killed), True if we
    stopped it. A dead service is not signalled: its pid may belong to someone else by now.
    """
    if not service.alive():
        return False
    _signal_group(service.pid, signal.SIGTERM)
    if not wait_until(lambda: not service.alive(), timeout):
        _signal_group(service.pid, signal.SIGKILL)
        wait_until(lambda: not service.alive(), 10.0)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal the process group we created (pgid == leader pid) if it still exists."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def ensure_ports_free(ports: Mapping[str, int]) -> None:
    """Fail before starting anything if a port is taken; `ports` maps setting name to port."""
    seen: dict[int, str] = {}
    for setting, port in ports.items():
        if port in seen:
            raise StackError(f"{seen[port]} and {setting} are both {port}; use different ports")
        seen[port] = setting
        if not port_free(port):
            raise StackError(
                f"port {port} on {LOCALHOST} is already in use; "
                f"set {setting} to a free port (or stop whatever listens there)"
            )


def port_free(port: int) -> bool:
    """True if a server could listen on 127.0.0.1:`port` now (Java also uses SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def accepts_connections(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def tail(path: Path | str, lines: int = 20) -> str:
    """The last `lines` lines of a log file, led by its first ERROR line if that scrolled off.

    A JVM that fails to start logs the cause once and then pages of shutdown messages.
    """
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    last = text[-lines:]
    first_error = next((line for line in text if "ERROR" in line or "FATAL" in line), None)
    if first_error and first_error not in last:
        last = [f"first error: {first_error}", "...", *last]
    return "\n".join(last)


def wait_ready(
    service: ServiceProcess, ready: Callable[[], bool], timeout: float, setting: str
) -> None:
    """Wait until `ready()` holds; fail with the log's tail if the service dies or is too slow.

    A service that fails (or whose wait is interrupted) is stopped here: it was never handed
    to the caller, so nobody else could stop it.
    """
    try:
        finished = wait_until(lambda: not service.alive() or ready(), timeout, interval=0.2)
        if finished and service.alive():
            return
        what = "exited during startup" if not service.alive() else f"not ready after {timeout:g} s"
        raise StackError(
            f"{service.name} {what} (raise {setting} if it is just slow); "
            f"last lines of {service.log}:\n{tail(service.log)}"
        )
    except BaseException:
        stop(service)
        raise


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `directory`; the kernel drops it if the process dies."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
