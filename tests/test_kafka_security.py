"""Workers on a secured broker: SASL_SSL (SCRAM-SHA-512, PLAIN) and mTLS end to end, with
exactly the ACLs ``cartwatch acls`` documents; and every way of being refused ending the worker
with one line and a non-zero exit within 30 s.

One Kafka 4 stack for the module (``cartwatch stack up --secure --authorizer``): ACLs are
enforced, ``admin`` is a super user (the test's own clients), the workers connect as
``User:cartwatch`` (SASL user, and the CN of the stack's client certificate).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from acl_helpers import add_acls
from cartwatch_dev.stack import StackState, down, up
from cartwatch_dev.stack.kafka import KafkaAccess
from cartwatch_dev.stack.security import issue_client_certificate
from cartwatch_dev.stack.settings import StackSettings
from kafka_helpers import create_topics, isolated_stack_env
from pipeline_harness import PARTITIONS, Pipeline, Shop, Worker, ids
from tls_files import make_tls_files

from config.kafka import KafkaSettings
from config.settings import load_settings
from streams.kafka_access import Grant, grants
from streams.kafka_check import check_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = "User:cartwatch"
FAIL_WITHIN = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaAccess]:
    settings = StackSettings.from_env(isolated_stack_env(tmp_path_factory.mktemp("secure")))
    state: StackState = up(replace(settings, security=True, authorizer=True, run_smtp=False))
    try:
        assert state.kafka is not None
        yield state.kafka
    finally:
        down(state.stack_dir)


def address(access: KafkaAccess, listener: str) -> str:
    return access.listener(listener).address


def sasl(access: KafkaAccess, user: str, mechanism: str = "SCRAM-SHA-512",
         password: str | None = None) -> KafkaSettings:
    """Connection settings of ``user`` on the SASL_SSL listener (its real password unless
    ``password``)."""
    secret = password or Path(access.password_files[user]).read_text().strip()
    return KafkaSettings.model_validate({
        "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism, "sasl_username": user,
        "sasl_password": secret, "ssl_cafile": access.ca_file,
    })


def mtls(access: KafkaAccess) -> KafkaSettings:
    return KafkaSettings.model_validate({
        "security_protocol": "SSL", "ssl_cafile": access.ca_file,
        "ssl_certfile": access.client_cert_file, "ssl_keyfile": access.client_key_file,
    })


def worker_grants(pipeline: Pipeline, **environ: str) -> list[Grant]:
    """What ``cartwatch acls`` documents for this test's workers."""
    settings = load_settings({
        "CARTWATCH_APP_ID": pipeline.app_id, "CARTWATCH_TOPIC_PREFIX": f"{pipeline.prefix}.",
        "CARTWATCH_PARTITIONS": str(PARTITIONS), **environ,
    })
    return grants(settings)


@pytest.fixture
def secure_pipeline(stack: KafkaAccess, unique_names, tmp_path: Path) -> Iterator[Pipeline]:
    """A deployment whose own clients are the super user ``admin`` over SASL_SSL; its
    workers get their own connection from ``start_worker``."""
    deployment = Pipeline(bootstrap=address(stack, "SASL_SSL"), prefix=unique_names.prefix,
                          app_id=unique_names.app_id, workdir=tmp_path,
                          kafka=sasl(stack, "admin"))
    try:
        yield deployment
    finally:
        deployment.stop_all()


def start_worker(pipeline: Pipeline, bootstrap: str, kafka: KafkaSettings,
                 loglevel: str = "info") -> Worker:
    """A worker of the pipeline connecting to ``bootstrap`` with ``kafka`` (not the test's
    admin connection)."""
    worker = pipeline.worker("w1")
    worker.loglevel = loglevel
    worker.env = {k: v for k, v in worker.env.items() if not k.startswith("CARTWATCH_KAFKA_")}
    worker.env.update(kafka.environment(), CARTWATCH_BROKER=f"kafka://{bootstrap}")
    return worker.start()


def refused(worker: Worker, expected: str, at_start: bool = True) -> str:
    """The worker exits non-zero within 30 s and its last line contains ``expected``; refused
    ``at_start``, it logged nothing else (no traceback, no Faust start-up)."""
    started = time.monotonic()
    assert worker.process is not None
    try:
        code = worker.process.wait(FAIL_WITHIN)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(
            f"still running after {FAIL_WITHIN} s:\n{worker.log()[-3000:]}") from None
    log = worker.log()
    last = log.strip().splitlines()[-1]
    assert code != 0, log[-3000:]
    assert time.monotonic() - started < FAIL_WITHIN
    assert last.startswith("cartwatch: ") and expected in last, log[-3000:]
    if at_start:
        assert "Traceback" not in log and "[^Worker]" not in log, log[-3000:]
    return last


async def abandonment_flows(pipeline: Pipeline, worker: Worker) -> None:
    """Events in, the abandonment out."""
    worker.wait_ready()
    shop = Shop("s1")
    await pipeline.send([shop.add("c-1", "MUG")])
    outputs = await pipeline.collect(lambda out: ids(out["cart-abandoned"]) >= {"c-1:1"},
                                     timeout=60)
    assert ids(outputs["cart-abandoned"]) == {"c-1:1"}


@pytest.mark.parametrize("how", ["SCRAM-SHA-512", "PLAIN", "mTLS"])
async def test_worker_end_to_end_with_the_documented_acls(
    stack: KafkaAccess, secure_pipeline: Pipeline, how: str
) -> None:
    pipeline = secure_pipeline
    pipeline.settings["CARTWATCH_ABANDON_AFTER"] = "1s"
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER,
                   worker_grants(pipeline, CARTWATCH_ABANDON_AFTER="1s"))
    await pipeline.create_topics()
    if how == "mTLS":
        worker = start_worker(pipeline, address(stack, "SSL"), mtls(stack))
    else:
        kafka = sasl(stack, "cartwatch", how)
        worker = start_worker(pipeline, pipeline.bootstrap, kafka, loglevel="debug")
    await abandonment_flows(pipeline, worker)
    if how != "mTLS":  # not even at debug level
        assert kafka.sasl_password is not None
        assert kafka.sasl_password.get_secret_value() not in worker.log()


async def test_wrong_password(stack: KafkaAccess, secure_pipeline: Pipeline) -> None:
    worker = start_worker(secure_pipeline, secure_pipeline.bootstrap,
                          sasl(stack, "cartwatch", password="not-the-password"))
    line = refused(worker, "authentication failed for user 'cartwatch' with SCRAM-SHA-512")
    assert address(stack, "SASL_SSL") in line and "not-the-password" not in worker.log()


async def test_untrusted_certificate(stack: KafkaAccess, secure_pipeline: Pipeline,
                                     tmp_path: Path) -> None:
    other_ca = make_tls_files(tmp_path / "other").ca
    kafka = KafkaSettings.model_validate(
        {**sasl(stack, "cartwatch").model_dump(), "ssl_cafile": other_ca})
    worker = start_worker(secure_pipeline, secure_pipeline.bootstrap, kafka)
    line = refused(worker, "certificate verify failed")
    assert address(stack, "SASL_SSL") in line


async def test_plaintext_client_on_the_tls_port(stack: KafkaAccess,
                                                secure_pipeline: Pipeline) -> None:
    worker = start_worker(secure_pipeline, address(stack, "SSL"), KafkaSettings())
    refused(worker, "the broker closed the connection during the first request: is "
                    "security_protocol PLAINTEXT the protocol of that listener?")


async def test_mtls_without_a_client_certificate(stack: KafkaAccess,
                                                 secure_pipeline: Pipeline) -> None:
    kafka = KafkaSettings.model_validate({"security_protocol": "SSL",
                                          "ssl_cafile": stack.ca_file})
    worker = start_worker(secure_pipeline, address(stack, "SSL"), kafka)
    refused(worker, "the broker requires a client certificate")


async def test_an_expired_client_certificate(stack: KafkaAccess, secure_pipeline: Pipeline,
                                             tmp_path: Path) -> None:
    """The stack's own CA, the worker's own name, but valid only until a year ago."""
    ca = Path(stack.ca_file)
    cert, key = issue_client_certificate(ca, ca.with_name("ca-key.pem"), tmp_path, "cartwatch",
                                         now=datetime.now(UTC) - timedelta(days=365))
    kafka = KafkaSettings.model_validate({
        "security_protocol": "SSL", "ssl_cafile": str(ca),
        "ssl_certfile": str(cert), "ssl_keyfile": str(key),
    })
    worker = start_worker(secure_pipeline, address(stack, "SSL"), kafka)
    line = refused(worker, "the broker does not accept the client certificate")
    assert address(stack, "SSL") in line


async def test_group_acl_missing(stack: KafkaAccess, secure_pipeline: Pipeline) -> None:
    pipeline = secure_pipeline
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER,
                   [g for g in worker_grants(pipeline) if g.resource != "group"])
    await pipeline.create_topics()
    worker = start_worker(pipeline, pipeline.bootstrap, sasl(stack, "cartwatch"))
    refused(worker, f"not authorized to Read the consumer group {pipeline.app_id}")


async def test_create_acl_missing(stack: KafkaAccess, secure_pipeline: Pipeline) -> None:
    pipeline = secure_pipeline
    abandoned = pipeline.topic("cart-abandoned")
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER,
                   [g for g in worker_grants(pipeline)
                    if not (g.name == abandoned and g.role == "pipeline")])
    await pipeline.create_topics()
    worker = start_worker(pipeline, pipeline.bootstrap, sasl(stack, "cartwatch"))
    refused(worker, f"not authorized to Create topic(s) {abandoned}")


async def test_write_acl_missing_stops_a_running_worker(
    stack: KafkaAccess, secure_pipeline: Pipeline
) -> None:
    """Topics created beforehand, no Write on the output: noticed only at the first
    abandonment, which stops the worker with the topic named."""
    pipeline = secure_pipeline
    pipeline.settings["CARTWATCH_ABANDON_AFTER"] = "1s"
    abandoned = pipeline.topic("cart-abandoned")
    everything = worker_grants(pipeline, CARTWATCH_ABANDON_AFTER="1s")
    await create_topics(pipeline.bootstrap, sorted({g.name for g in everything
                                                    if g.resource == "topic"
                                                    and "__assignor" not in g.name}),
                        PARTITIONS, kafka=pipeline.kafka)
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER,
                   [replace(g, operations=tuple(op for op in g.operations if op != "Write"))
                    if g.name == abandoned else g for g in everything])
    worker = start_worker(pipeline, pipeline.bootstrap, sasl(stack, "cartwatch"))
    worker.wait_ready()
    await pipeline.send([Shop("s1").add("c-1", "MUG")])
    line = refused(worker, "Kafka refused an operation", at_start=False)
    assert f"cartwatch needs Read, Write, Create on topic {abandoned}" in line


async def test_partition_counts_that_differ(stack: KafkaAccess,
                                            secure_pipeline: Pipeline) -> None:
    pipeline = secure_pipeline
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER, worker_grants(pipeline))
    await create_topics(pipeline.bootstrap, [pipeline.topic("cart-events")], PARTITIONS,
                        kafka=pipeline.kafka)
    await create_topics(pipeline.bootstrap, [pipeline.topic("purchase-events")], 2,
                        kafka=pipeline.kafka)
    worker = start_worker(pipeline, pipeline.bootstrap, sasl(stack, "cartwatch"))
    refused(worker, f"topics must all have partitions = {PARTITIONS} (co-partitioned by "
                    f"cart): {pipeline.topic('purchase-events')} has 2")


async def test_loadgen_publishes_over_sasl_ssl(stack: KafkaAccess,
                                               secure_pipeline: Pipeline) -> None:
    """The tools take the same settings as the worker (here the admin user's)."""
    pipeline = secure_pipeline
    await pipeline.create_topics()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTWATCH_")}
    env.update(pipeline.kafka.environment(), CARTWATCH_BROKER=f"kafka://{pipeline.bootstrap}",
               CARTWATCH_TOPIC_PREFIX=f"{pipeline.prefix}.")
    done = subprocess.run([sys.executable, "-m", "streams.cli", "loadgen", "--carts", "5"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    outputs = await pipeline.collect(lambda out: len(out["cart-events"]) >= 5, timeout=30,
                                     topics=("cart-events",))
    assert len({event["cart_id"] for event in outputs["cart-events"]}) == 5


async def test_notifier_and_read_model_with_the_documented_acls(
    stack: KafkaAccess, secure_pipeline: Pipeline, smtp_server
) -> None:
    """All three roles in one worker, exactly the ACLs `cartwatch acls` prints for them: the
    reminder goes out, its log entry is written and the read model serves the cart."""
    pipeline = secure_pipeline
    notifier = {"CARTWATCH_ABANDON_AFTER": "1s", "CARTWATCH_NOTIFIER_ENABLED": "true",
                "CARTWATCH_LINK_SECRET": "a-link-secret-of-32-characters!!",
                "CARTWATCH_SMTP_HOST": smtp_server.host,
                "CARTWATCH_SMTP_PORT": str(smtp_server.port),
                "CARTWATCH_REMINDER_STEPS": "1s:reminder"}
    pipeline.settings.update(notifier)
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER,
                   worker_grants(pipeline, **notifier))
    await pipeline.create_topics()
    worker = start_worker(pipeline, pipeline.bootstrap, sasl(stack, "cartwatch"))
    worker.wait_ready()
    email = f"{pipeline.prefix}@example.com"
    await pipeline.send([Shop("s1").add("c-1", "MUG",
                                        customer={"email": email, "marketing_consent": True})])
    log = await pipeline.collect(
        lambda out: any(e["status"] == "sent" for e in out["cartwatch-notification-log"]),
        timeout=60, topics=("cartwatch-notification-log",))
    assert [e["status"] for e in log["cartwatch-notification-log"]] == ["sent"]
    assert any(m["To"] == email for m in smtp_server.messages())
    async with aiohttp.ClientSession() as http:
        url = f"{worker.web_url}/cartwatch/api/carts/c-1/"
        deadline = time.monotonic() + 30
        while True:
            async with http.get(url) as response:
                if response.status == 200:
                    break
            assert time.monotonic() < deadline, f"read model never served c-1: {response.status}"
            await asyncio.sleep(0.5)
    assert worker.alive and "Kafka refused" not in worker.log()


async def test_read_acl_missing_stops_a_running_worker(
    stack: KafkaAccess, secure_pipeline: Pipeline
) -> None:
    """Topics created beforehand, Describe but no Read on an input: the start-up check cannot
    see it (the topic is visible); the first fetch is refused and stops the worker."""
    pipeline = secure_pipeline
    purchases = pipeline.topic("purchase-events")
    everything = worker_grants(pipeline)
    await create_topics(pipeline.bootstrap, sorted({g.name for g in everything
                                                    if g.resource == "topic"
                                                    and "__assignor" not in g.name}),
                        PARTITIONS, kafka=pipeline.kafka)
    await add_acls(pipeline.bootstrap, pipeline.kafka, WORKER,
                   [replace(g, operations=("Describe",)) if g.name == purchases else g
                    for g in everything])
    worker = start_worker(pipeline, pipeline.bootstrap, sasl(stack, "cartwatch"))
    line = refused(worker, "Kafka refused an operation", at_start=False)
    assert f"on topic {purchases}" in line


async def test_hostname_check_and_its_switch(stack: KafkaAccess,
                                             secure_pipeline: Pipeline) -> None:
    """The broker's certificate names 127.0.0.1 and localhost; this machine's own name reaches
    the same listener but is not on it: refused, unless ssl_check_hostname is off."""
    name = socket.gethostname()
    try:
        if not socket.gethostbyname(name).startswith("127."):
            pytest.skip(f"{name} is not a loopback name here")
    except OSError:
        pytest.skip(f"{name} does not resolve")
    port = address(stack, "SASL_SSL").rpartition(":")[2]
    kafka = sasl(stack, "cartwatch")
    worker = start_worker(secure_pipeline, f"{name}:{port}", kafka)
    refused(worker, f"Kafka broker {name}:{port}: certificate verify failed: Hostname mismatch")
    unchecked = KafkaSettings.model_validate({**kafka.model_dump(), "ssl_check_hostname": False})
    assert await check_cluster(f"{name}:{port}", unchecked, []) is not None
