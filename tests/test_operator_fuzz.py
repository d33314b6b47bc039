"""The operator API under hostile input: schemathesis fuzzes a live worker with its OpenAPI
document, and every endpoint that returns personal data refuses a request without the token.

A real worker, a real broker, a read model holding abandonments with names, emails and phone
numbers, so the fuzzer's requests reach the code that serialises them (an empty read model
would only exercise the empty-list path). Bounded (examples per operation, a fixed seed) so it
runs in well under a minute and the same requests come each run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from conftest import SmtpServer
from kafka_helpers import create_topics
from pipeline_harness import PARTITIONS, Pipeline, Shop

pytestmark = [pytest.mark.integration]

TOKEN = "fuzz-test-token-0123456789"
DOCUMENT = Path(__file__).resolve().parents[1] / "streams" / "operator" / "openapi.json"
CARTS = 12
SEED = 20_240_101
MAX_EXAMPLES = 15
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "ignored_auth")
"""``ignored_auth``: schemathesis also sends each secured request without (and with a wrong)
token and fails if it is answered as if authorised."""


def customer(n: int) -> dict[str, str]:
    return {"name": f"Fuzzy Customer {n:02d}", "email": f"fuzzy{n:02d}@example.com",
            "phone": f"+49 151 {n:05d}"}


async def started_worker(pipeline: Pipeline, smtp_port: int) -> str:
    """A worker with a token, the notifier (so *Remind now* is served, as in production, not
    answered 503) and a read model holding ``CARTS`` abandonments; its base URL."""
    await create_topics(pipeline.bootstrap, [pipeline.topic("cartwatch-unsubscribes")],
                        PARTITIONS, kafka=pipeline.kafka)
    pipeline.settings.update(CARTWATCH_ABANDON_AFTER="1s", CARTWATCH_API_TOKEN=TOKEN,
                             CARTWATCH_READ_MODEL="memory", CARTWATCH_NOTIFIER_ENABLED="true",
                             CARTWATCH_LINK_SECRET="fuzz-test-link-secret-0123",
                             CARTWATCH_SMTP_HOST="127.0.0.1", CARTWATCH_SMTP_PORT=str(smtp_port),
                             CARTWATCH_REMINDER_STEPS="1h")
    shop = Shop("fuzz", base=datetime.now(UTC) - timedelta(hours=1))
    await pipeline.send([shop.add(f"cart-{n:02d}", f"SKU-{n % 3}", offset=n, customer=customer(n))
                         for n in range(CARTS)])
    worker = pipeline.worker("fuzzed").start()
    worker.wait_ready()
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        while True:
            async with http.get(f"{worker.web_url}/cartwatch/api/carts/?limit=1") as response:
                seen = (response.status, await response.text())
                if response.status == 200 and json.loads(seen[1])["total"] == CARTS:
                    return worker.web_url
            assert time.monotonic() < deadline, (
                f"the abandonments never reached the read model: {seen}\n{worker.log()[-3000:]}")
            await asyncio.sleep(0.2)


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        pipeline: Pipeline, smtp_server: SmtpServer, tmp_path: Path) -> None:
    base_url = await started_worker(pipeline, smtp_server.port)
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(DOCUMENT), "--url", base_url,
        "--header", f"Authorization: Bearer {TOKEN}", "--checks", ",".join(CHECKS),
        "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--generation-deterministic",
        "--workers", "1", "--request-timeout", "10", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout, result.stdout
    print(f"schemathesis: {elapsed:.1f} s\n{result.stdout[-1500:]}")


def personal_data(n: int) -> list[str]:
    values = customer(n)
    return [values["name"], values["email"], values["phone"], "Fuzzy", "@example.com"]


async def test_without_the_token_no_endpoint_answers_with_personal_data(
        pipeline: Pipeline, smtp_server: SmtpServer) -> None:
    """Every secured operation of the document, without a token, with a wrong one and with a
    token that is not a bearer token: 401, and not one byte of a customer's data."""
    base_url = await started_worker(pipeline, smtp_server.port)
    document = json.loads(DOCUMENT.read_text())
    secured = [(method.upper(), path.replace("{cart_id}", "cart-03"))
               for path, operations in document["paths"].items()
               for method, operation in operations.items() if operation.get("security")]
    assert len(secured) >= 10
    leaks = personal_data(3)
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + "/cartwatch/api/customers.csv?product=SKU-0",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
            assert "fuzzy03@example.com" in await response.text()  # the data is there
        for method, path in secured:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                async with http.request(method, base_url + path, headers=headers) as response:
                    body = await response.text()
                    assert response.status == 401, (method, path, headers, response.status)
                    assert not [leak for leak in leaks if leak in body], (method, path, body)
