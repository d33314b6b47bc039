"""Manual reminders through the operator API, with the real notifier and a real SMTP server;
their outcome read back from the notification log by the operator's read model."""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from conftest import SmtpServer
from pipeline_harness import Pipeline, Shop, Worker

from streams.operator import openapi

pytestmark = pytest.mark.integration

TOKEN = "reminder-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """The first truthy value of ``check()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        await asyncio.sleep(0.3)
    return value


async def test_manual_reminder_is_sent_logged_and_counted(
    pipeline: Pipeline, smtp_server: SmtpServer, unique_names: Any
) -> None:
    pipeline.settings.update(
        CARTWATCH_ABANDON_AFTER="2s", CARTWATCH_API_TOKEN=TOKEN, CARTWATCH_READ_MODEL="memory",
        CARTWATCH_NOTIFIER_ENABLED="true", CARTWATCH_LINK_SECRET="reminder-test-secret",
        CARTWATCH_SMTP_HOST=smtp_server.host, CARTWATCH_SMTP_PORT=str(smtp_server.port),
    )
    worker = pipeline.worker("w1").start()
    worker.wait_ready()
    shop = Shop("s1")
    consenting = f"{unique_names.prefix}-yes@example.com"
    await pipeline.send([
        shop.add("r-1", "MUG", customer={"email": consenting, "marketing_consent": True}),
        shop.add("r-2", "MUG", customer={"email": "no@example.com", "marketing_consent": False}),
    ])
    async with aiohttp.ClientSession() as http:
        async def api(path: str, **params: str) -> Any:
            async with http.get(worker.web_url + path, headers=AUTH, params=params) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        async def abandoned() -> bool:
            page = await api("/cartwatch/api/carts/", status="abandoned")
            return page["total"] == 2

        await until(abandoned, 60, "both carts abandoned")
        for cart in ("r-1", "r-2"):  # the default policy's only step is a day away
            async with http.post(f"{worker.web_url}/cartwatch/api/carts/{cart}/remind/",
                                 headers=AUTH) as response:
                assert response.status == 202, await response.text()

        async def outcome(cart: str) -> set[str]:
            detail = await api(f"/cartwatch/api/carts/{cart}/")
            return {entry["status"] for entry in detail["abandonments"][0]["reminders"]}

        assert await until(lambda: outcome("r-1"), 60, "r-1 reminded") == {"sent"}
        assert await until(lambda: outcome("r-2"), 60, "r-2 screened") == {"skipped"}
        mails = [m for m in smtp_server.wait_for_messages(1) if consenting in m["X-RcptTo"]]
        assert len(mails) == 1

        # The execution log keeps why r-2 was skipped; its filters are checked like the carts'.
        log = await api("/cartwatch/api/log/", cart="r-2")
        assert [(e["store_id"], e["status"], e["reason"]) for e in log["attempts"]] == [
            ("s1", "skipped", "no_consent")]
        async with http.get(worker.web_url + "/cartwatch/api/log/", headers=AUTH,
                            params={"status": "lost"}) as response:
            assert response.status == 400 and "status" in (await response.json())["error"]
        async with http.get(worker.web_url + "/cartwatch/api/log.csv") as response:
            assert response.status == 401  # shop data needs the token
        async with http.get(worker.web_url + "/cartwatch/api/log.csv", headers=AUTH,
                            params={"status": "sent"}) as response:
            csv_lines = (await response.text()).splitlines()
        assert len(csv_lines) == 2 and ",r-1,r-1:1,1,email,sent," in csv_lines[1]
        async with http.get(worker.web_url + "/cartwatch/api/openapi.json") as response:
            assert response.status == 200  # no token: the document holds no data
            document = await response.json()
        assert document == json.loads(openapi.DOCUMENT.read_text())
        await every_get_answers_as_documented(http, worker, document)

        await pipeline.send([shop.purchase("r-1", total="10.00")])

        async def recovered() -> Any:
            days = (await api("/cartwatch/api/insights/"))["buckets"]
            return days if days and days[0]["recovered"] == 1 else None

        [day] = await until(recovered, 60, "r-1 recovered")
        assert (day["abandoned"], day["reminded"], day["recovered_after_reminder"],
                day["recovered_by_themselves"]) == (2, 1, 1, 0)
        metrics = await metric_values(http, worker)
        assert metrics['cartwatch_reminders_total{status="sent"}'] == 1
        assert metrics['cartwatch_reminders_total{status="skipped"}'] >= 1


async def metric_values(http: aiohttp.ClientSession, worker: Worker) -> dict[str, float]:
    async with http.get(f"{worker.web_url}/metrics") as response:
        text = await response.text()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines() if line and not line.startswith("#")}


ODD_VALUES = ("-1", "", "x'; DROP TABLE notifications; --", "\u00e9\u0000", "9" * 30, "a,b,,c")


async def every_get_answers_as_documented(http: aiohttp.ClientSession, worker: Worker,
                                          document: dict[str, Any]) -> None:
    """Each documented GET, with each of its query parameters set to odd values, answers with
    a status its operation documents (never a 500): a small fuzz driven by the document."""
    for path, item in document["paths"].items():
        if "get" not in item:
            continue
        operation = item["get"]
        url = worker.web_url + path.replace("{cart_id}", "r-1")
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        for params in [{}] + [{name: value} for name in names for value in ODD_VALUES]:
            async with http.get(url, headers=AUTH, params=params) as response:
                await response.read()
                assert str(response.status) in operation["responses"], (
                    path, params, response.status)
