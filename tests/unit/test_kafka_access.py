"""What cartwatch asks of the cluster (ACLs per role), and how refusals become one line:
the start-up check's explanations, the partition-count check, the running worker's watcher.
No broker."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

import pytest
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from kafka_helpers import free_ports

from config.kafka import KafkaSettings
from config.settings import Settings, load_settings
from streams.acls_cli import commands, table
from streams.fatal import FatalErrors, classify
from streams.kafka_access import copartitioned_topics, created_topics, grants
from streams.kafka_check import ClusterView, check_cluster, explain, partition_problems

SCRAM = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="cartwatch", sasl_password="pw-Zx81")  # type: ignore[arg-type]


def settings(**environ: str) -> Settings:
    return load_settings({"CARTWATCH_APP_ID": "shop", "CARTWATCH_TOPIC_PREFIX": "p.", **environ})


def table_of(config: Settings, **options: bool) -> set[tuple[str, str, str, str]]:
    return {(g.role, g.resource, g.name, ",".join(g.operations))
            for g in grants(config, **options)}


def test_pipeline_only_worker_needs_its_topics_its_changelog_and_its_group():
    assert table_of(settings(CARTWATCH_READ_MODEL="off")) == {
        ("pipeline", "topic", "p.cart-events", "Read,Create"),
        ("pipeline", "topic", "p.purchase-events", "Read,Create"),
        ("pipeline", "topic", "p.cartwatch-timer-ticks", "Read,Write,Create"),
        ("pipeline", "topic", "p.cartwatch-reminders-sent", "Read,Create"),
        ("pipeline", "topic", "p.cartwatch-clicks", "Read,Write,Create"),
        ("pipeline", "topic", "p.cart-abandoned", "Write,Create"),
        ("pipeline", "topic", "p.cart-reactivated", "Write,Create"),
        ("pipeline", "topic", "p.cart-recovered", "Write,Create"),
        ("pipeline", "topic", "p.cartwatch-dead-letter", "Write,Create"),
        ("pipeline", "topic", "shop-carts-changelog", "Read,Write,Create"),
        ("pipeline", "topic", "shop-__assignor-__leader", "Read,Create"),
        ("pipeline", "group", "shop", "Read"),
    }


def test_topics_created_beforehand_need_no_create():
    rows = grants(settings(), create_topics=False)
    assert rows and all("Create" not in g.operations for g in rows)


def test_read_model_reads_without_a_group_and_creates_nothing():
    rows = [g for g in grants(settings()) if g.role == "read model"]
    assert {g.name for g in rows} == {"p.cart-abandoned", "p.cart-reactivated",
                                      "p.cart-recovered", "p.cartwatch-notification-log",
                                      "p.cartwatch-operator-notifications", "p.cartwatch-clicks",
                                      "p.cart-events"}
    assert all(g.resource == "topic" and g.operations == ("Read",) for g in rows)
    assert "p.cartwatch-notification-log" not in created_topics(settings())


def test_notifier_adds_its_topics_and_tables_in_the_same_group():
    config = settings(CARTWATCH_NOTIFIER_ENABLED="true", CARTWATCH_LINK_SECRET="x" * 32)
    notifier = {(g.resource, g.name): g.operations for g in grants(config)
                if g.role == "notifier"}
    assert notifier[("group", "shop")] == ("Read",)
    assert notifier[("topic", "p.cartwatch-unsubscribes")] == ("Read", "Write", "Create")
    assert notifier[("topic", "shop-notifier_deliveries-changelog")] == (
        "Read", "Write", "Create")
    assert "shop-reminder_plans-changelog" in copartitioned_topics(config)
    assert "shop-reminder_plans-changelog" not in copartitioned_topics(settings())


def test_acl_commands_merge_the_roles_operations_per_resource():
    lines = commands(grants(settings()), "User:cw", "b1:9093")
    assert ("kafka-acls.sh --bootstrap-server b1:9093 --command-config admin.properties --add "
            "--allow-principal User:cw --operation Read --operation Write --operation Create "
            "--topic p.cart-abandoned") in lines
    assert ("kafka-acls.sh --bootstrap-server b1:9093 --command-config admin.properties --add "
            "--allow-principal User:cw --operation Read --group shop") in lines
    assert len(lines) == len({line.rsplit(" ", 1)[1] for line in lines})
    assert "| read model | topic | `p.cart-events` | Read |" in table(grants(settings()))


# --- the start-up check ----------------------------------------------------------------------

def _wrapped(cause: BaseException) -> KafkaConnectionError:
    try:
        raise KafkaConnectionError("Connection at b:1 closed") from cause
    except KafkaConnectionError as exc:
        return exc


@pytest.mark.parametrize(("error", "expected"), [
    (SaslAuthenticationFailed("Authentication failed during authentication due to invalid "
                              "credentials with SASL mechanism SCRAM-SHA-512"),
     "Kafka broker b:1: authentication failed for user 'cartwatch' with SCRAM-SHA-512: "),
    (_wrapped(ssl.SSLCertVerificationError(1, "certificate verify failed")),
     "Kafka broker b:1: certificate verify failed: "),
    (IllegalSaslStateError(), "Kafka broker b:1: the listener does not do SASL"),
    (ConnectionResetError(), "Kafka broker b:1: TLS handshake failed (connection reset)"),
])
def test_refusals_retrying_cannot_fix_are_explained(error: BaseException, expected: str):
    line = explain("b:1", SCRAM, error)
    assert line is not None and line.startswith(expected) and "pw-Zx81" not in line


@pytest.mark.parametrize("error", [ConnectionRefusedError(111, "refused"), TimeoutError(),
                                   KafkaConnectionError("Unable to bootstrap")])
def test_an_unreachable_broker_is_not_fatal(error: BaseException):
    assert explain("b:1", SCRAM, error) is None


def test_no_broker_at_all_lets_the_worker_start_and_wait():
    [port] = free_ports(1)
    assert asyncio.run(check_cluster(f"127.0.0.1:{port}", KafkaSettings(), ["t"], 2.0)) is None


def test_partition_counts_that_differ_are_named():
    view = ClusterView("b:1", {"p.cart-events": 8, "p.purchase-events": 6, "p.cart-abandoned": 12,
                               "shop-carts-changelog": None})
    assert partition_problems(settings(), view) == (
        "topics must all have partitions = 8 (co-partitioned by cart): p.cart-abandoned has 12, "
        "p.purchase-events has 6; set CARTWATCH_PARTITIONS to their count or recreate them")
    assert partition_problems(settings(CARTWATCH_PARTITIONS="6"), ClusterView(
        "b:1", {"p.cart-events": 6, "p.purchase-events": None})) is None


# --- the running worker ----------------------------------------------------------------------

def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, message, args,
                             (type(exc), exc, None) if exc else None)


def test_watcher_stops_once_on_a_refused_authentication():
    stopped: list[str] = []
    halted: list[str] = []
    handler = FatalErrors(settings(), stopped.append, halted.append)
    failure = SaslAuthenticationFailed("invalid credentials")
    handler.handle(record("Unable connect to node with id %s: %s", 1, failure))
    handler.handle(record("Unable connect to node with id %s: %s", 1, failure))
    assert len(stopped) == 1 and halted == []
    assert stopped[0].startswith("Kafka broker node 1: authentication failed")


def test_watcher_names_what_cartwatch_needs_on_a_refused_topic():
    line = classify(record("Crashed reason=%r", exc=TopicAuthorizationFailedError(
        "p.cart-abandoned")), settings())
    assert line == ("Kafka refused an operation: [Error 29] TopicAuthorizationFailedError: "
                    "p.cart-abandoned (cartwatch needs Read, Write, Create on topic "
                    "p.cart-abandoned: see `cartwatch acls`)")


@pytest.mark.parametrize("error", [
    KafkaConnectionError("Connection at b:1 closed"),
    _wrapped(ConnectionResetError()),
    _wrapped(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
])
@pytest.mark.parametrize("message", ["Unable connect to %s: %s", "Heartbeat failed: %s"])
def test_watcher_ignores_failures_a_retry_fixes(message: str, error: BaseException):
    """A broker restarting cuts connections and handshakes short: not a reason to stop, even
    over TLS."""
    args = ("b:1", error) if message.count("%s") == 2 else (error,)
    tls = settings(CARTWATCH_KAFKA_SECURITY_PROTOCOL="SSL")
    assert classify(record(message, *args), tls) is None


def test_acls_command(monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    from streams.acls_cli import acls

    for name in [k for k in os.environ if k.startswith("CARTWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CARTWATCH_BROKER", "kafka://k1:9094;kafka://k2:9094")
    monkeypatch.setenv("CARTWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CARTWATCH_KAFKA_SASL_USERNAME", "shop-worker")
    monkeypatch.setenv("CARTWATCH_KAFKA_SASL_PASSWORD", "pw-Zx81")
    monkeypatch.setenv("CARTWATCH_READ_MODEL", "off")
    result = CliRunner().invoke(acls, ["--no-create-topics"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("# ACLs for User:shop-worker: app_id 'cartwatch', roles pipeline; "
                        "topics created beforehand with 8 partitions each")
    assert ("kafka-acls.sh --bootstrap-server k1:9094,k2:9094 --command-config admin.properties"
            " --add --allow-principal User:shop-worker --operation Read --topic cart-events"
            ) in lines
    assert "Create" not in result.output and "pw-Zx81" not in result.output


def test_the_read_model_may_read_every_topic_its_feed_reads() -> None:
    from config.settings import load_settings
    from streams.kafka_access import grants
    from streams.operator.feed import feed_topics

    base = load_settings({})
    for track in (True, False):
        settings = base.model_copy(update={"operator": base.operator.model_copy(
            update={"track_created_carts": track})})
        readable = {g.name for g in grants(settings)
                    if g.role == "read model" and "Read" in g.operations}
        assert set(feed_topics(settings)) <= readable
