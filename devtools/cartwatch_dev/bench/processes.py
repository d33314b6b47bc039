"""Benchmark processes: start a contender or a real `cartwatch worker`, watch it, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import urlopen

READY_LINE = "deadline index rebuilt"
"""Logged by a cartwatch worker once it owns partitions with recovered state."""


class BenchError(RuntimeError):
    """A contender failed or missed its deadline; the message carries its log tail."""


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return result


@dataclass
class Process:
    """One benchmark process with its log file, in its own process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> Process:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.workdir, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> bool:
        """Raise if the process exited, else False: ``check_alive() or done()`` polls ``done``
        and fails at once when the process it waits for died."""
        if not self.alive():
            raise BenchError(f"{self.name} exited:\n{self.log()[-3000:]}")
        return False

    def rss_bytes(self) -> int:
        """Resident memory now, from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError(f"no VmRSS for {self.name}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if not self.alive():
            return
        popen = self.popen
        assert popen is not None
        os.killpg(self.pid, sig)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            popen.wait(timeout)


def contender(name: str, module: str, env: Mapping[str, str], workdir: Path) -> Process:
    return Process(name, [sys.executable, "-m", module], environment(env), workdir)


def cartwatch_worker(name: str, env: Mapping[str, str], workdir: Path) -> Process:
    return Process(
        name, [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
        environment(env), workdir,
    )


def environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARTWATCH_", "BENCH_"))}
    env.update(extra)
    return env


def wait_result(process: Process, result: Path, timeout: float) -> dict[str, Any]:
    """Wait for a contender's result file (see ``cartwatch_dev.bench.contenders.Tally``)."""

    def ready() -> bool:
        process.check_alive() if not result.exists() else None
        return result.exists()

    poll(ready, timeout, f"{process.name} to process every event")
    return dict(json.loads(result.read_text()))


def counters(web_url: str) -> dict[str, int]:
    """A cartwatch worker's counters page."""
    with urlopen(f"{web_url}/cartwatch/counters/", timeout=5) as response:
        return dict(json.load(response))


def ready_count(process: Process) -> int:
    return process.log().count(READY_LINE)
