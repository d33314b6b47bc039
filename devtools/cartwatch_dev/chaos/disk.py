"""The data directory running out of space, for real: the worker's data directory is a small
tmpfs made for the scenario, filled to the last byte while the worker runs under load.

A tmpfs rather than an injected write error: RocksDB, SQLite and Faust each meet ENOSPC in
their own place (a WAL append, a flush, a checkpoint), and only a full filesystem makes all of
them meet it. Mounting one needs root (``mount -t tmpfs``); without it the scenario reports
that it could not run rather than pretending.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from cartwatch_dev.chaos.deployment import Deployment
from cartwatch_dev.chaos.report import ScenarioResult
from cartwatch_dev.chaos.scenarios import CATCH_UP_SECONDS, _run_live, _start, live_load
from cartwatch_dev.chaos.workers import WorkerProcess

FILESYSTEM_MB = 64
"""Room for a worker's RocksDB tables and read model under the scenario's load, with slack."""
EXIT_TIMEOUT = 60.0
"""How long a worker with a full data directory may take to stop (it must stop by itself)."""
STOP_LINE = "cartwatch: the data directory "


class CannotMount(RuntimeError):
    """This machine does not let the scenario mount a filesystem (not root)."""


@contextlib.contextmanager
def small_filesystem(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` at ``path`` for the duration (unmounted lazily after, so a
    process still holding a file there cannot keep it busy)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise CannotMount(f"cannot mount a tmpfs at {path}: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until the filesystem refuses another byte."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    out.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


async def wait_exit(worker: WorkerProcess, timeout: float) -> int | None:
    """The worker's exit code, or None if it still runs after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while worker.alive:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)
    assert worker.process is not None
    return worker.process.returncode


def stop_line(log: str) -> str | None:
    """The line a worker stopped by a full data directory ends its log with."""
    lines = [line for line in log.splitlines() if line.startswith(STOP_LINE)]
    return lines[-1] if lines else None


async def disk_full(deployment: Deployment, *, carts: int = 300, abandon_after: float = 3.0,
                    megabytes: int = FILESYSTEM_MB, seed: int = 19) -> ScenarioResult:
    """Fill the worker's data directory under load. It must stop by itself, non-zero, with one
    line naming the directory; once space is freed and it is restarted, nothing is lost and
    no reminder is sent twice."""
    deployment.settings["CARTWATCH_ABANDON_AFTER"] = str(abandon_after)
    worker = deployment.worker("w1")
    data_dir = Path(worker.env["CARTWATCH_DATA_DIR"])
    problems: list[str] = []
    with small_filesystem(data_dir, megabytes):
        await _start(worker)
        load = live_load(seed, carts, abandon_after, span=20.0)

        async def inject(faults: list[str], blackouts: list[tuple[float, float]]) -> None:
            await asyncio.sleep(max(0.0, load.start + 6.0 - time.time()))
            filled_at = time.time()
            filler = await asyncio.to_thread(fill, data_dir)
            code = await wait_exit(worker, EXIT_TIMEOUT)
            stopped_at = time.time()
            line = stop_line(worker.log())
            if code is None:
                problems.append(f"the worker still runs {EXIT_TIMEOUT:.0f} s after its data "
                                "directory filled up")
                worker.kill()
            elif code == 0 or line is None or str(data_dir) not in line:
                problems.append(f"the worker exited with code {code} and last line {line!r}; "
                                f"expected non-zero and a line naming {data_dir}")
            os.unlink(filler)
            ready_at = await _start(worker)
            blackouts.append((filled_at, ready_at + CATCH_UP_SECONDS))
            faults.append(f"data directory filled at +{filled_at - load.start:.1f} s; the "
                          f"worker stopped {stopped_at - filled_at:.1f} s later (exit code "
                          f"{code}); space freed, restarted, owning its partitions again "
                          f"{ready_at - stopped_at:.1f} s after")
            if line is not None:
                faults.append(f"its last line: {line}")

        try:
            result = await _run_live(deployment, load, "disk-full", inject, timeout=90.0)
        finally:
            worker.stop()
    result.failures += problems
    return result
