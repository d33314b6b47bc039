"""KeyedLanes: concurrent across keys, in submission order within a key, bounded in flight."""

import asyncio
import contextvars

import pytest

from streams.notifier.lanes import KeyedLanes


class Recorder:
    """Jobs that log their start and end and finish when the test releases them."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.running = 0
        self.most_running = 0

    def job(self, name: str, fail: bool = False):
        gate = self.gates.setdefault(name, asyncio.Event())

        async def run() -> None:
            self.log.append(("start", name))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                await gate.wait()
                if fail:
                    raise RuntimeError(f"{name} failed")
            finally:
                self.running -= 1
                self.log.append(("end", name))

        return run

    def started(self) -> list[str]:
        return [name for event, name in self.log if event == "start"]


async def settle() -> None:
    """Let every runnable task run until all wait again (no timing involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_jobs_of_one_key_run_in_order_and_other_keys_overlap():
    lanes, rec = KeyedLanes(window=10), Recorder()
    await lanes.submit("ann", rec.job("ann-1"))
    await lanes.submit("bob", rec.job("bob-1"))
    await lanes.submit("ann", rec.job("ann-2"))
    await lanes.submit("ann", rec.job("ann-3"))
    await settle()
    assert rec.started() == ["ann-1", "bob-1"]  # ann-2 waits for ann-1, bob does not

    rec.gates["ann-1"].set()
    await settle()
    assert rec.started() == ["ann-1", "bob-1", "ann-2"]
    rec.gates["ann-2"].set()
    rec.gates["ann-3"].set()
    rec.gates["bob-1"].set()
    await lanes.drain()
    ann = [(event, name) for event, name in rec.log if name.startswith("ann")]
    assert ann == [("start", "ann-1"), ("end", "ann-1"), ("start", "ann-2"), ("end", "ann-2"),
                   ("start", "ann-3"), ("end", "ann-3")]
    assert len(lanes) == 0


async def test_submit_waits_while_the_window_is_full():
    lanes, rec = KeyedLanes(window=2), Recorder()
    await lanes.submit("a", rec.job("a"))
    await lanes.submit("b", rec.job("b"))
    third = asyncio.create_task(lanes.submit("c", rec.job("c")))
    await settle()
    assert not third.done() and rec.started() == ["a", "b"]
    rec.gates["a"].set()
    await settle()
    assert third.done() and rec.started() == ["a", "b", "c"]
    rec.gates["b"].set()
    rec.gates["c"].set()
    await lanes.drain()
    assert rec.most_running == 2


async def test_a_failing_job_is_logged_and_its_lane_goes_on(caplog):
    lanes, rec = KeyedLanes(window=4), Recorder()
    await lanes.submit("ann", rec.job("ann-1", fail=True))
    await lanes.submit("ann", rec.job("ann-2"))
    rec.gates["ann-1"].set()
    rec.gates["ann-2"].set()
    await lanes.drain()
    assert rec.started() == ["ann-1", "ann-2"]
    assert "job failed" in caplog.text


async def test_each_job_runs_in_the_context_it_was_submitted_from():
    """Faust's current event is a context variable: each job must see its own."""
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current")
    seen: list[str] = []

    async def job() -> None:
        await asyncio.sleep(0)
        seen.append(current.get())

    lanes = KeyedLanes(window=8)
    for name in ("e1", "e2", "e3"):
        current.set(name)
        await lanes.submit(name, job)
    await lanes.drain()
    assert sorted(seen) == ["e1", "e2", "e3"]


async def test_drain_cancels_jobs_still_running_after_the_timeout():
    lanes, rec = KeyedLanes(window=4), Recorder()
    await lanes.submit("stuck", rec.job("stuck"))
    await settle()
    await lanes.drain(timeout=0)
    assert rec.log == [("start", "stuck"), ("end", "stuck")] and len(lanes) == 0


def test_the_window_holds_at_least_one_job():
    with pytest.raises(ValueError):
        KeyedLanes(window=0)
