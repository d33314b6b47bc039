"""`cartwatch demo`, shortened, as a newcomer runs it: a real broker, a real SMTP server (the
demo's own stack), live shoppers; carts are abandoned and recovered and reminders arrive."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cartwatch_dev.demo import STORES
from cartwatch_dev.stack import down, read_maildir
from kafka_helpers import free_ports, isolated_stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Output:
    """The demo's stdout, read by a thread so the test never blocks on it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        self.thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "".join(self.lines)

    def field(self, name: str) -> str | None:
        """The value printed after ``name`` in the introduction ("  Dashboard   http://...")."""
        for line in list(self.lines):
            if line.strip().startswith(name + " "):
                return line.split(None, 1)[1].split("  (")[0].strip()
        return None


def poll(check: Callable[[], Any], timeout: float, what: str, output: Output) -> Any:
    """``check()`` until it returns something true; fail with the demo's output at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen in {timeout} s; demo output:\n{output.text()[-4000:]}")


def total(url: str, status: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}?status={status}&limit=1", timeout=5) as response:
            return int(json.load(response)["total"])
    except OSError:  # not serving yet
        return 0


def test_demo_abandons_recovers_and_reminds(kafka_bootstrap: str, tmp_path: Path,
                                            unique_names: Any) -> None:
    stack_dir = tmp_path / "stack"
    env = isolated_stack_env(stack_dir)
    env["CARTWATCH_BROKER"] = f"kafka://{kafka_bootstrap}"  # the demo's stack starts only SMTP
    web_port = free_ports(1)[0]
    command = [sys.executable, "-m", "streams.cli", "demo", "--abandon-after", "4s",
               "--reminders", "2s,6s", "--carts-per-minute", "60", "--prefix",
               unique_names.prefix, "--web-port", str(web_port), "--duration", "600"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    output = Output(process)
    try:
        dashboard = poll(lambda: output.field("Dashboard"), 180, "the dashboard URL", output)
        assert dashboard == f"http://127.0.0.1:{web_port}/cartwatch/dashboard/"
        maildir = Path(poll(lambda: output.field("Emails"), 5, "the Maildir", output))
        assert maildir == stack_dir / "mail" / "new"
        assert "Ctrl-C" in output.text()
        with urllib.request.urlopen(dashboard, timeout=5) as response:
            assert response.status == 200

        carts = dashboard.replace("/dashboard/", "/api/carts/")
        poll(lambda: total(carts, "abandoned"), 90, "an abandoned cart", output)
        poll(lambda: total(carts, "recovered"), 90, "a recovered cart", output)
        messages = poll(lambda: read_maildir(maildir.parent), 60, "a reminder email", output)
        first = messages[0]
        assert first["To"].addresses[0].domain == "example.com"
        assert any(name in first["Subject"] for name in STORES.values()), first["Subject"]
        printed = first["Subject"]
        poll(lambda: printed in output.text(), 10, "the email's subject in the output", output)

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, output.text()[-4000:]
        output.thread.join(timeout=10)
        assert "Worker stopped" in output.text()
        assert not _serving(web_port)  # the worker is gone too
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        down(stack_dir)



def _serving(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
