"""Before the worker starts: can it talk to the cluster with its credentials, and do the
topics that exist have the partition counts it needs?

Faust and aiokafka treat every connection failure as transient: a wrong password, an
untrusted certificate or a plaintext client on a TLS port make a worker log the same error
forever and never become ready. ``check_cluster`` connects to each bootstrap server the way
every client will (``config.kafka.client_options``), and turns the failures that retrying
cannot fix into a ``KafkaAccessError`` with one line naming the broker and the cause. A broker
that does not answer at all is not one of them: the worker starts and waits for it, as before.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.metadata import MetadataRequest

from config.bootstrap import parse_bootstrap
from config.kafka import KafkaSettings, client_options
from config.settings import Settings
from streams.kafka_access import copartitioned_topics, created_topics

log = logging.getLogger(__name__)

TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
READ = 3
"""Kafka's AclOperation code of READ: bit 1 << 3 of a group's ``authorized_operations``."""


class KafkaAccessError(Exception):
    """The cluster refuses this configuration; the message is one line for the operator."""


@dataclass(frozen=True)
class ClusterView:
    """What the check saw: ``None`` partitions for a topic that does not exist yet."""

    broker: str
    partitions: dict[str, int | None]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first, each once (a chain set by hand may loop)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def explain(broker: str, kafka: KafkaSettings, exc: BaseException,
            at_start: bool = True) -> str | None:
    """One line for a failure retrying cannot fix, or None for one it may (network, restart).

    aiokafka wraps TLS errors in ``KafkaConnectionError``; the cause is looked for in the
    whole chain. A handshake cut short (reset, EOF) means a listener of another protocol only
    ``at_start``, on the first connection: later it is what a restarting broker does."""
    protocol = kafka.security_protocol
    for error in causes(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = getattr(error, "verify_message", None) or error.strerror or error
            return (f"Kafka broker {broker}: certificate verify failed: {detail} "
                    "(kafka.ssl_cafile, kafka.ssl_check_hostname)")
        if isinstance(error, ssl.SSLError):
            detail = getattr(error, "reason", None) or str(error)
            reason = detail.upper()
            if "CERTIFICATE_REQUIRED" in reason or (
                kafka.ssl_certfile is None and "BAD_CERTIFICATE" in reason
            ):
                return (f"Kafka broker {broker}: TLS refused: the broker requires a client "
                        "certificate (kafka.ssl_certfile, kafka.ssl_keyfile)")
            if any(word in reason for word in ("UNKNOWN_CA", "BAD_CERTIFICATE",
                                                "CERTIFICATE_UNKNOWN", "DECRYPT_ERROR")):
                return (f"Kafka broker {broker}: TLS refused: the broker does not accept the "
                        f"client certificate ({detail})")
            if at_start:
                return (f"Kafka broker {broker}: TLS handshake failed ({detail}): is it "
                        f"a TLS listener? (security_protocol {protocol})")
            continue
        if isinstance(error, (SaslAuthenticationFailed, AuthenticationFailedError)):
            detail = str(error).strip(": ") or type(error).__name__
            return (f"Kafka broker {broker}: authentication failed for user "
                    f"{kafka.sasl_username!r} with {kafka.sasl_mechanism}: {detail}")
        if isinstance(error, UnsupportedSaslMechanismError):
            return f"Kafka broker {broker}: {error}"
        if isinstance(error, IllegalSaslStateError):
            return (f"Kafka broker {broker}: the listener does not do SASL: is security_protocol "
                    f"{protocol} the protocol of that listener?")
        if at_start and isinstance(error, ConnectionResetError) and kafka.ssl_context:
            # A plaintext listener hangs up on a TLS ClientHello.
            return (f"Kafka broker {broker}: TLS handshake failed (connection reset): is it a "
                    f"TLS listener? (security_protocol {protocol})")
    return None


async def _connect(host: str, port: int, kafka: KafkaSettings,
                   timeout: float) -> AIOKafkaConnection:
    return await asyncio.wait_for(
        create_conn(host, port, client_id="cartwatch-check",
                    request_timeout_ms=int(timeout * 1000), **client_options(kafka)),
        timeout,
    )


async def check_cluster(
    bootstrap: str, kafka: KafkaSettings, names: list[str], timeout: float = 10.0
) -> ClusterView | None:
    """Connect to each of the ``bootstrap`` servers ("h:p,h2:p") until one answers; read the
    partition counts of the topics ``names`` (without creating any).

    Raises ``KafkaAccessError`` when the cluster refuses the credentials, the TLS handshake,
    or the description of a topic. Returns None when no broker could be reached (the worker
    will wait for one)."""
    for server in bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            conn = await _connect(host, int(port), kafka, timeout)
        except (OSError, KafkaError, TimeoutError) as exc:
            fatal = explain(server, kafka, exc)
            if fatal is not None:
                raise KafkaAccessError(fatal) from None
            if isinstance(exc, KafkaConnectionError) and "closed" in str(exc).lower():
                # The TCP connection opened and the broker hung up on the first request:
                # it speaks TLS or SASL on that port and we do not (or the other way round).
                raise KafkaAccessError(
                    f"Kafka broker {server}: the broker closed the connection during the "
                    f"first request: is security_protocol {kafka.security_protocol} the "
                    "protocol of that listener?") from None
            log.warning("Kafka broker %s: cannot connect: %s", server, exc or type(exc).__name__)
            continue
        try:
            response = await asyncio.wait_for(
                conn.send(MetadataRequest(names, allow_auto_topic_creation=False)), timeout)
        except (KafkaError, TimeoutError) as exc:
            fatal = explain(server, kafka, exc)
            if fatal is not None:
                raise KafkaAccessError(fatal) from None
            log.warning("Kafka broker %s: no metadata: %s", server, exc)
            continue
        finally:
            conn.close()
        return ClusterView(server, _partitions(server, response.to_object()["topics"]))
    return None


def _partitions(broker: str, topics: list[dict]) -> dict[str, int | None]:
    counts: dict[str, int | None] = {}
    denied = []
    for topic in topics:
        if topic["error_code"] == TOPIC_AUTHORIZATION_FAILED:
            denied.append(topic["topic"])
        elif topic["error_code"] == 0:
            counts[topic["topic"]] = len(topic["partitions"])
        else:  # unknown topic: the worker creates it
            counts[topic["topic"]] = None
    if denied:
        raise KafkaAccessError(
            f"Kafka broker {broker}: not authorized to Describe topic(s) {', '.join(denied)} "
            "(see `cartwatch acls` for the ACLs cartwatch needs)")
    return counts


async def access_problem(bootstrap: str, kafka: KafkaSettings, group: str,
                         missing: list[str], partitions: int,
                         timeout: float = 10.0) -> str | None:
    """One line if the principal may not read the consumer group ``group`` or create the
    ``missing`` topics (which the worker would create), else None.

    Both failures are silent or endless in Faust: without READ on its group a worker waits
    forever for partitions; without CREATE an agent that declares its topics crashes and is
    restarted in a loop. The group's coordinator tells the operations allowed on it
    (DescribeGroups v3+); a topic creation is asked with ``validate_only``, which checks
    without creating. A coordinator not available yet (a new cluster) is not a problem.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=int(timeout * 1000), **client_options(kafka))
    hint = "(see `cartwatch acls` for the ACLs cartwatch needs)"
    try:
        await admin.start()
        if missing:
            response = await admin.create_topics(
                [NewTopic(name, partitions, 1) for name in missing], validate_only=True)
            denied = [name for name, code, *_ in response.topic_errors
                      if code == TOPIC_AUTHORIZATION_FAILED]
            if denied:
                return f"not authorized to Create topic(s) {', '.join(sorted(denied))} {hint}"
        [described] = (await admin.describe_consumer_groups(
            [group], include_authorized_operations=True))[0].to_object()["groups"]
    except GroupAuthorizationFailedError:
        described = {"error_code": GROUP_AUTHORIZATION_FAILED}
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("Kafka: cannot check the ACLs of group %s: %r", group, exc)
        return None
    finally:
        await admin.close()
    operations = described.get("authorized_operations", -(2**31))
    if described["error_code"] == GROUP_AUTHORIZATION_FAILED or (
        operations >= 0 and not operations & (1 << READ)
    ):
        return f"not authorized to Read the consumer group {group} {hint}"
    return None


def partition_problems(settings: Settings, view: ClusterView) -> str | None:
    """One line naming the existing topics whose partition count is not ``partitions``."""
    wrong = {name: count for name, count in view.partitions.items()
             if count is not None and count != settings.partitions}
    if not wrong:
        return None
    listed = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
    return (f"topics must all have partitions = {settings.partitions} (co-partitioned by cart): "
            f"{listed}; set CARTWATCH_PARTITIONS to their count or recreate them")


def check_before_start(settings: Settings, timeout: float = 10.0) -> None:
    """``check_cluster``, ``partition_problems`` and ``access_problem``, each in an event loop
    of its own (Faust makes its own later); raises ``KafkaAccessError`` with the one line to
    print. A broker that does not answer in time is not an error: the worker starts and
    waits for it, as it always did."""
    loop = asyncio.new_event_loop()
    try:
        view = loop.run_until_complete(
            asyncio.wait_for(check_cluster(parse_bootstrap(settings.broker), settings.kafka,
                                           copartitioned_topics(settings), timeout),
                             timeout * 2))
    except TimeoutError:
        log.warning("Kafka: no broker of %s answered in %.0f s", settings.broker, timeout * 2)
        return
    finally:
        loop.close()
    if view is None:
        return
    problem = partition_problems(settings, view)
    if problem is not None:
        raise KafkaAccessError(problem)
    loop = asyncio.new_event_loop()
    try:
        created = created_topics(settings)
        missing = [name for name, count in view.partitions.items()
                   if count is None and name in created]
        problem = loop.run_until_complete(asyncio.wait_for(
            access_problem(view.broker, settings.kafka, settings.app_id, missing,
                           settings.partitions, timeout), timeout * 2))
    except TimeoutError:
        problem = None
    finally:
        loop.close()
    if problem is not None:
        raise KafkaAccessError(f"Kafka broker {view.broker}: {problem}")
