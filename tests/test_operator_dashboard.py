"""The dashboard in headless Chromium, driven over the DevTools protocol, against a real worker.

No WebDriver or npm: Chromium is started with a debugging port and driven through its
websocket with aiohttp (``Cdp`` below). Screenshots at 1400 px and at 390 px (a phone) are kept
next to the test's files, and copied to ``$CARTWATCH_SCREENSHOTS`` when that is set.
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
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from conftest import SmtpServer
from pipeline_harness import Pipeline, Shop

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dashboard-test-token"
CONFIG = """
abandon_after = "60s"
[notifier.reminders]
steps = [{after = "1s"}]
stale_after = "30d"
frequency_cap = "1s"
operator_events = ["sent", "skipped", "failed"]
"""
"""One reminder a second after abandonment; every outcome is also an operator notification."""
ZONE = "America/New_York"
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


async def test_dashboard_lists_searches_and_charts(
    pipeline: Pipeline, browser: Cdp, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    config = tmp_path / "cartwatch.toml"
    config.write_text(CONFIG)
    pipeline.settings.update(
        CARTWATCH_CONFIG=str(config), CARTWATCH_API_TOKEN=TOKEN,
        CARTWATCH_NOTIFIER_ENABLED="true", CARTWATCH_LINK_SECRET="dashboard-test-link-secret",
        CARTWATCH_SMTP_HOST=smtp_server.host, CARTWATCH_SMTP_PORT=str(smtp_server.port),
    )
    base = datetime.now(UTC) - timedelta(days=2)
    shops = {"north": Shop("north", base=base), "south": Shop("south", base=base)}
    messages = []
    for n in range(40):  # even carts in north, odd in south; every fifth consents to email
        sku, price = ("LAMP-9", "89.00") if n % 4 == 0 else ("MUG-1", "12.50")
        shop = shops["north" if n % 2 == 0 else "south"]
        customer = {"name": f"Shopper {n}", "email": f"dash-{n}@example.com",
                    "marketing_consent": n % 5 == 0}
        messages.append(shop.add(f"cart-{n:02d}", sku, offset=n * 60, price=price,
                                 customer=customer))
    messages += [shops["south"].purchase(f"cart-{n:02d}", offset=n * 60 + 900, total="12.50")
                 for n in (1, 3)]
    messages += [shops["north"].purchase("cart-02", offset=2 * 60 + 900, total="12.50")]
    messages.sort(key=lambda message: json.loads(message[2])["occurred_at"])
    await pipeline.send(messages)
    worker = pipeline.worker("w1").start()
    worker.wait_ready()

    cdp = browser
    await cdp.send("Page.enable")
    await cdp.send("Emulation.setTimezoneOverride", timezoneId=ZONE)
    await cdp.send("Page.navigate", url=f"{worker.web_url}/cartwatch/dashboard/")
    await cdp.wait_for("location.pathname === '/cartwatch/dashboard/'"
                       " && document.readyState === 'complete'")
    # Without the token the API refuses and the page asks for it, as an operator would see.
    await cdp.wait_for("!document.querySelector('#token-form').hidden")
    await cdp.js(f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
                 "document.querySelector('#token-form').requestSubmit(); true")
    assert ZONE in await cdp.js("document.querySelector('#tz').textContent")
    shown_views = ("['#view-carts', '#view-log'].filter(id =>"
                   " document.querySelector(id).getClientRects().length)")
    assert await cdp.js(shown_views) == ["#view-carts"]
    counted = "document.querySelector('#count').textContent"
    reminders = ("[...document.querySelectorAll('#cart-table tr.cart')].map(row =>"
                 " [row.dataset.id, row.classList.contains('reminded'),"
                 " row.querySelector('td.reminders').textContent])")

    def settled(rows: list[list[Any]]) -> bool:
        """Every consenting cart on the page reminded, the others' skip reasons shown."""
        by_id = {row[0]: row for row in rows}
        return len(rows) == 25 and all(
            (row[1] and "1 sent" in row[2]) if int(cart[5:7]) % 5 == 0
            else "skipped" in row[2] for cart, row in by_id.items())

    deadline = time.monotonic() + 90
    while await cdp.js(counted) != "40 carts" or not settled(await cdp.js(reminders)):
        assert time.monotonic() < deadline, (await cdp.js(counted), await cdp.js(reminders))
        await asyncio.sleep(0.5)
        await cdp.js("document.querySelector('#filters').requestSubmit(); true")
        await cdp.wait_for("document.body.dataset.carts === 'ready'")
    rows = {row[0]: row for row in await cdp.js(reminders)}
    assert await cdp.js("document.querySelector('#token-form').hidden")  # the token works
    assert rows["cart-35:1"][1] and "✉" in await cdp.js(
        "document.querySelector('tr.cart[data-id=\"cart-35:1\"]').textContent")
    assert not rows["cart-36:1"][1] and "(no_consent)" in rows["cart-36:1"][2]
    # Times are the browser's: 2 days ago, shown in New York time, not UTC.
    shown = await cdp.js("document.querySelector('tr.cart[data-id=\"cart-39:1\"] td:nth-child(2)')"
                         ".textContent")
    abandoned_at = base + timedelta(seconds=39 * 60 + 60)
    expected = abandoned_at.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")
    assert shown.startswith(expected), (shown, expected)

    # Expanding a reminded cart shows its attempts; "Remind now" posts and shows the answer.
    await cdp.js("document.querySelector('tr.cart[data-id=\"cart-35:1\"]').click(); true")
    details = "document.querySelector('tr.cart[data-id=\"cart-35:1\"]').nextElementSibling"
    attempts = await cdp.wait_for(
        f"(() => {{ const row = {details}; return !row.hidden"
        " && row.querySelector('.attempts li[data-status]') && row.textContent; })()")
    assert "sent" in attempts and "email" in attempts and "dash-35@example.com" in attempts
    await cdp.js(f"{details}.querySelector('button.remind').click(); true")
    answer = await cdp.wait_for(
        f"(() => {{ const a = {details}.querySelector('.remind-answer');"
        " return /ok|error/.test(a.className) ? a.textContent : ''; })()")
    assert answer.startswith("202: requested"), answer
    await cdp.js("document.querySelector('#filters').requestSubmit(); true")
    await cdp.wait_for("document.body.dataset.carts === 'ready'")
    assert await cdp.js(f"{details}.querySelector('.remind-answer').textContent") == answer

    # Next and Prev page by the API's cursor: the second page holds the 15 oldest carts, no
    # next after it, and Prev comes back to the first.
    listed_ids = ("[...document.querySelectorAll('#cart-table tr.cart')]"
                  ".map(row => row.dataset.id)")
    page_text = "document.querySelector('#page').textContent"
    await cdp.js("document.querySelector('#next').click(); true")
    await cdp.wait_for(f"{page_text} === '26–40 of 40' && document.body.dataset.carts === 'ready'")
    assert await cdp.js(listed_ids) == [f"cart-{n:02d}:1" for n in range(14, -1, -1)]
    assert await cdp.js("document.querySelector('#next').disabled")
    await cdp.js("document.querySelector('#prev').click(); true")
    await cdp.wait_for(f"{page_text} === '1–25 of 40' && document.body.dataset.carts === 'ready'")
    assert await cdp.js(listed_ids) == [f"cart-{n:02d}:1" for n in range(39, 14, -1)]
    assert not await cdp.js("document.querySelector('#next').disabled")

    await cdp.js("document.querySelector('[name=product]').value = 'lamp';"
                 "document.querySelector('#filters').requestSubmit(); true")
    await cdp.wait_for(f"{counted} === '10 carts' && document.body.dataset.carts === 'ready'")
    ids = await cdp.js("[...document.querySelectorAll('#cart-table tr.cart')]"
                       ".map(row => row.dataset.id)")
    assert ids == [f"cart-{n:02d}:1" for n in range(36, -1, -4)]
    await cdp.js("document.querySelector('tr.cart[data-id=\"cart-36:1\"]').click(); true")
    lines = await cdp.wait_for(
        "(() => { const row = document.querySelector('tr.cart[data-id=\"cart-36:1\"]')"
        ".nextElementSibling; return row.hidden ? '' : row.textContent; })()")
    assert "LAMP-9" in lines and "dash-36@example.com" in lines

    await cdp.js("document.querySelector('[name=product]').value = '';"
                 "document.querySelector('#filters').requestSubmit(); true")
    await cdp.wait_for(f"{counted} === '40 carts' && document.body.dataset.insights === 'ready'")
    bars = await cdp.js("document.querySelectorAll('#chart-carts rect[data-series]').length")
    assert bars >= 3  # abandoned, reminded, recovered for at least one period
    kpis = await cdp.js("document.querySelector('#kpis').innerText")
    assert "40\nCarts created" in kpis and "40\nAbandoned" in kpis and "3\nRecovered" in kpis

    # Operator notifications: every outcome of both stores, newest first.
    notices = ("[...document.querySelectorAll('#notice-list li')]"
               ".map(li => [li.dataset.store, Number(li.dataset.at), li.textContent])")
    listed = await cdp.wait_for(f"(() => {{ const n = {notices}; return n.length >= 40 && n; }})()",
                                timeout=60)
    assert {store for store, _, _ in listed} == {"north", "south"}
    assert [at for _, at, _ in listed] == sorted((at for _, at, _ in listed), reverse=True)
    assert any("skipped" in note and "no_consent" in note for _, _, note in listed)
    await save_screenshots(cdp, tmp_path, "dashboard")

    # The store selector scopes the carts, the insights and the notifications, and the URL.
    await cdp.js("const s = document.querySelector('#store-select'); s.value = 'south';"
                 "s.dispatchEvent(new Event('change')); true")
    await cdp.wait_for(f"{counted} === '20 carts' && document.body.dataset.notices === 'ready'"
                       " && document.body.dataset.insights === 'ready'")
    stores = await cdp.js("[...document.querySelectorAll('#cart-table td.store-id')]"
                          ".map(td => td.textContent)")
    assert set(stores) == {"south"}
    assert {store for store, _, _ in await cdp.js(notices)} == {"south"}
    kpis = await cdp.js("document.querySelector('#kpis').innerText")
    assert "20\nAbandoned" in kpis and "2\nRecovered" in kpis
    assert "store=south" in await cdp.js("location.search")

    # The execution log: the store filter carries over; filter by status; export; share.
    await cdp.js("document.querySelector('.tabs a[data-view=log]').click(); true")
    await cdp.wait_for("document.body.dataset.view === 'log'"
                       " && document.body.dataset.log === 'ready'"
                       " && document.querySelectorAll('#log-table tbody tr').length > 0")
    assert await cdp.js(shown_views) == ["#view-log"]
    entries = ("[...document.querySelectorAll('#log-table tbody tr')]"
               ".map(tr => [tr.dataset.store, tr.dataset.status, tr.querySelector('.reason')"
               ".textContent])")
    assert {store for store, _, _ in await cdp.js(entries)} == {"south"}
    await cdp.js("document.querySelector('[name=log_status]').value = 'skipped';"
                 "document.querySelector('#log-filters').requestSubmit(); true")
    await cdp.wait_for("document.body.dataset.log === 'ready' && [...document.querySelectorAll("
                       "'#log-table tbody tr')].every(tr => tr.dataset.status === 'skipped')")
    skipped = await cdp.js(entries)
    assert skipped and all(status == "skipped" and reason for _, status, reason in skipped)
    assert "no_consent" in {reason for _, _, reason in skipped}
    # The export button downloads what the filters select: catch the blob it links to.
    await cdp.js("window.blobs = []; const make = URL.createObjectURL;"
                 " URL.createObjectURL = blob => { blobs.push(blob); return make(blob); };"
                 " document.querySelector('#log-export').click(); true")
    csv_text = await cdp.wait_for("blobs.length && blobs[0].text()")
    header, *csv_rows = csv_text.splitlines()
    assert header.startswith("at,store_id,cart_id,abandonment_id,step,channel,status,reason")
    assert len(csv_rows) == await cdp.js("document.querySelector('#log-count').textContent"
                                         ".split(' ')[0] * 1")
    shared = await cdp.js("location.href")
    assert "view=log" in shared and "log_status=skipped" in shared
    await save_screenshots(cdp, tmp_path, "log")

    # Opening the shared URL restores the view and its filters.
    await cdp.send("Page.navigate", url=shared)
    await cdp.wait_for("document.readyState === 'complete' && document.body.dataset.log === 'ready'"
                       " && document.querySelectorAll('#log-table tbody tr').length > 0")
    assert await cdp.js("[document.querySelector('#store-select').value,"
                        " document.querySelector('[name=log_status]').value,"
                        " document.querySelector('#view-carts').hidden]") == [
        "south", "skipped", True]
    assert await cdp.js(entries) == skipped

    # Auto-refresh runs every 10 s (this test has been open longer) and can be paused.
    assert await cdp.wait_for("Number(document.body.dataset.refreshes || 0)", timeout=15) >= 1
    await cdp.js("document.querySelector('#auto').click(); true")
    assert await cdp.js("document.body.dataset.refresh") == "paused"


async def save_screenshots(cdp: Cdp, tmp_path: Path, name: str) -> None:
    """The page at 1400 px and at 390 px (a phone, where the page must not scroll sideways)."""
    for width, mobile in ((1400, False), (390, True)):
        await cdp.send("Emulation.setDeviceMetricsOverride", width=width, height=900,
                       deviceScaleFactor=1, mobile=mobile)
        await cdp.js("new Promise(done => requestAnimationFrame(() => setTimeout(done, 50)))")
        overflow = await cdp.js("document.documentElement.scrollWidth")
        assert overflow <= width, f"{name} at {width} px is {overflow} px wide"
        shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        (tmp_path / f"{name}-{width}.png").write_bytes(png)
        top = base64.b64decode((await cdp.send("Page.captureScreenshot", format="png"))["data"])
        (tmp_path / f"{name}-{width}-top.png").write_bytes(top)  # the first screen, full size
        if target := os.environ.get("CARTWATCH_SCREENSHOTS"):
            Path(target).mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-top"):
                shutil.copy(tmp_path / f"{name}-{width}{suffix}.png", target)
    await cdp.send("Emulation.clearDeviceMetricsOverride")
