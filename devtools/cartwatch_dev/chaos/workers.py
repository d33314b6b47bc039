"""Real ``cartwatch worker`` processes that a fault scenario can start, kill -9 and restart.

Each worker runs in its own session (process group), so a kill reaches everything it spawned,
and logs to its own file, which is how readiness and partition ownership are observed: the
lifecycle agent logs ``deadline index rebuilt: N carts on partitions [...]`` after every
rebalance, once the table state of its partitions is recovered.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from config.kafka import KafkaSettings

READY_LINE = "deadline index rebuilt"
_OWNED = re.compile(r"deadline index rebuilt: \d+ carts on partitions \[([0-9, ]*)\]")



def worker_environment(*, bootstrap: str, app_id: str, prefix: str, partitions: int,
                       data_dir: Path, web_port: int, kafka: KafkaSettings) -> dict[str, str]:
    """The environment of one worker of a test or scenario deployment: this process's
    environment without its ``CARTWATCH_*`` settings, then the deployment's (broker and how to
    reach it, app id, topic prefix, partitions, its own data dir and web port, a fast timer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTWATCH_")}
    env.update(
        CARTWATCH_BROKER=f"kafka://{bootstrap}",
        CARTWATCH_APP_ID=app_id,
        CARTWATCH_TOPIC_PREFIX=f"{prefix}.",
        CARTWATCH_PARTITIONS=str(partitions),
        CARTWATCH_DATA_DIR=str(data_dir),
        CARTWATCH_WEB_PORT=str(web_port),
        CARTWATCH_TIMER_RESOLUTION="0.1",
        **kafka.environment(),
    )
    return env

class WorkerError(AssertionError):
    """A worker exited or did not become ready in time; the message ends with its log."""


@dataclass
class WorkerProcess:
    """One ``cartwatch worker`` process, restartable with the same data dir and log file."""

    name: str
    env: dict[str, str]
    workdir: Path
    loglevel: str = "info"
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CARTWATCH_WEB_PORT']}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> WorkerProcess:
        """Start the worker (appending to its log, so earlier ready lines still count)."""
        if self.alive:
            raise WorkerError(f"worker {self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "-l", self.loglevel],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def ready_count(self) -> int:
        """How many rebalances this worker finished (over all its runs)."""
        return self.log().count(READY_LINE)

    def owned_partitions(self) -> set[int]:
        """The partitions the worker owned after its latest rebalance (empty before the first)."""
        found = _OWNED.findall(self.log())
        if not found:
            return set()
        return {int(number) for number in found[-1].split(",") if number.strip()}

    def _ready(self, after: int, deadline: float) -> bool:
        """Has the worker finished its ``after``+1-th rebalance, and does its ``/readyz`` say so
        (its services, such as the operator read model, start after the rebalance)? Raise if it
        never will."""
        if self.ready_count() > after and self._readyz():
            return True
        if not self.alive:
            raise WorkerError(f"worker {self.name} exited:\n{self.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise WorkerError(f"worker {self.name} not ready in time:\n{self.log()[-4000:]}")
        return False

    def _readyz(self) -> bool:
        url = f"http://127.0.0.1:{self.env['CARTWATCH_WEB_PORT']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:  # refused, 503 (HTTPError), or timed out
            return False

    async def wait_ready(self, after: int, timeout: float = 90.0) -> float:
        """Wait for the worker's ``after``+1-th finished rebalance; return when it was seen."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._ready, after, deadline):  # urlopen blocks
            await asyncio.sleep(0.05)
        return time.time()

    def wait_ready_blocking(self, after: int, timeout: float = 90.0) -> None:
        """``wait_ready`` for synchronous callers (the test harness)."""
        deadline = time.monotonic() + timeout
        while not self._ready(after, deadline):
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Signal the worker's process group and wait for it; SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def kill(self) -> None:
        """kill -9: no shutdown code runs, nothing is committed or flushed."""
        self.stop(signal.SIGKILL)
