"""Concurrency across keys, arrival order within a key: the reminder sender's in-flight window.

A delivery spends most of its time waiting: for the broker to acknowledge its durable delivery
record, for the SMTP server, for the broker again. ``KeyedLanes`` lets the sender overlap the
deliveries of different addresses while those of one address still run one after the other,
in the order they arrived (an address's suppression, frequency cap and delivery records are
read and written by one job at a time). At most ``window`` jobs are in flight: ``submit`` waits
for a free slot, which is the stream's back-pressure.

Each job runs as its own task, started in a copy of the submitter's context: inside a Faust
agent, that copy holds the event being submitted as Faust's *current event*, so the job's table
writes go to that event's partition.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class KeyedLanes:
    """Runs jobs concurrently across keys and in submission order within a key."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._slots = asyncio.Semaphore(window)
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Jobs submitted and not finished yet."""
        return len(self._running)

    async def submit(self, key: Hashable, job: Job) -> None:
        """Start ``job`` after every job submitted before with this ``key`` has finished.

        Waits while ``window`` jobs are in flight. A job should handle its own errors; one that
        raises is logged and does not stop the lane.
        """
        await self._slots.acquire()
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run(previous, job))
        self._tails[key] = task
        self._running.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    async def _run(self, previous: asyncio.Task[None] | None, job: Job) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await job()
        finally:
            self._slots.release()

    def _finished(self, key: Hashable, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("a %s job failed", type(self).__name__, exc_info=task.exception())

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for every job in flight; cancel those still running after ``timeout`` s."""
        if not self._running:
            return
        running = set(self._running)
        _, pending = await asyncio.wait(running, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
