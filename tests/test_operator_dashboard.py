"""The dashboard in headless Chromium, driven over the DevTools protocol, against a real worker.

No WebDriver or npm: Chromium is started with a debugging port and driven through its
websocket with aiohttp (``Cdp`` below). The screenshot is kept next to the test's files.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pipeline_harness import Pipeline, Shop

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1280,1000"]


class Cdp:
    """Commands to one page over the Chrome DevTools protocol; events are ignored."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        await self.socket.send_json({"id": number, "method": method, "params": params})
        while True:
            message = json.loads((await self.socket.receive(timeout=30)).data)
            if message.get("id") == number:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    async def js(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Evaluate until the value is truthy; fail with the last value after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (value := await self.js(expression)) in (None, False, "", 0):
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout} s: {expression} -> {value!r}")
            await asyncio.sleep(0.1)
        return value


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Cdp]:
    if CHROMIUM is None:
        # CI installs it (.ci/run): there a missing browser is a broken setup, not a skip
        missing = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    profile = tmp_path / "chromium-profile"
    process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not open its debugging port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                       max_msg_size=0) as socket:
                yield Cdp(socket)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_dashboard_lists_searches_and_charts(pipeline: Pipeline, browser: Cdp,
                                                   tmp_path: Path) -> None:
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="60s", CARTWATCH_API_TOKEN=TOKEN)
    shop = Shop("demo", base=datetime.now(UTC) - timedelta(days=2))
    messages = []
    for n in range(40):
        sku, price = ("LAMP-9", "89.00") if n % 4 == 0 else ("MUG-1", "12.50")
        messages.append(shop.add(f"cart-{n:02d}", sku, offset=n * 60, price=price,
                                 customer={"name": f"Shopper {n}", "email": f"s{n}@example.com"}))
    messages += [shop.purchase(f"cart-{n:02d}", offset=n * 60 + 900, total="12.50")
                 for n in (1, 2, 3)]
    messages.sort(key=lambda message: json.loads(message[2])["occurred_at"])
    await pipeline.send(messages)
    worker = pipeline.worker("w1").start()
    worker.wait_ready()

    cdp = browser
    await cdp.send("Page.enable")
    await cdp.send("Page.navigate", url=f"{worker.web_url}/cartwatch/dashboard/")
    await cdp.wait_for("location.pathname === '/cartwatch/dashboard/'"
                       " && document.readyState === 'complete'")
    # Without the token the API refuses and the page asks for it, as an operator would see.
    await cdp.wait_for("!document.querySelector('#token-form').hidden")
    await cdp.js(f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
                 "document.querySelector('#token-form').requestSubmit(); true")
    counted = "document.querySelector('#count').textContent"
    deadline = time.monotonic() + 60
    while await cdp.js(counted) != "40 carts":  # the read model fills as abandonments fire
        assert time.monotonic() < deadline, await cdp.js(counted)
        await asyncio.sleep(0.5)
        await cdp.js("document.querySelector('#filters').requestSubmit(); true")
    await cdp.wait_for("document.body.dataset.carts === 'ready'")
    assert await cdp.js("document.querySelectorAll('#cart-table tr.cart').length") == 25

    await cdp.js("document.querySelector('[name=product]').value = 'lamp';"
                 "document.querySelector('#filters').requestSubmit(); true")
    await cdp.wait_for(f"{counted} === '10 carts' && document.body.dataset.carts === 'ready'")
    rows = await cdp.js("[...document.querySelectorAll('#cart-table tr.cart')]"
                        ".map(row => row.dataset.id)")
    assert rows == [f"cart-{n:02d}:1" for n in range(36, -1, -4)]

    await cdp.js("document.querySelector('#cart-table tr.cart').click(); true")
    lines = await cdp.wait_for(
        "(() => { const row = document.querySelector('#cart-table tr.lines');"
        " return row.hidden ? '' : row.textContent; })()")
    assert "LAMP-9" in lines and "s36@example.com" in lines

    await cdp.js("document.querySelector('[name=product]').value = '';"
                 "document.querySelector('#filters').requestSubmit(); true")
    await cdp.wait_for(f"{counted} === '40 carts' && document.body.dataset.insights === 'ready'")
    bars = await cdp.js("document.querySelectorAll('#chart-carts rect[data-series]').length")
    assert bars >= 3  # abandoned, reminded, recovered for at least one period
    kpis = await cdp.js("document.querySelector('#kpis').innerText")
    assert "40\nCarts created" in kpis and "40\nAbandoned" in kpis and "3\nRecovered" in kpis

    shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp_path / "dashboard.png").write_bytes(png)
