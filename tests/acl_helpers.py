"""Apply Kafka ACLs from tests: the grants ``cartwatch acls`` prints, sent as CreateAcls
requests by an administrator's client (the stack ships no ``kafka-acls.sh``)."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from config.kafka import KafkaSettings, client_options
from streams.kafka_access import Grant

RESOURCE_TYPES = {"topic": 2, "group": 3}
OPERATIONS = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8}
LITERAL = 3
ALLOW = 3


async def add_acls(bootstrap: str, admin: KafkaSettings, principal: str,
                   grants: Iterable[Grant]) -> int:
    """Allow ``principal`` every operation of ``grants``; returns the number of ACLs added."""
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options(admin))
    await client.start()
    added = 0
    try:
        for grant in grants:
            for operation in grant.operations:
                request = CreateAclsRequest(RESOURCE_TYPES[grant.resource], grant.name, LITERAL,
                                            principal, "*", OPERATIONS[operation], ALLOW)
                response = await client._send_request(request)  # noqa: SLF001 (no public API)
                for result in response.to_object()["creation_responses"]:
                    if result["error_code"]:
                        raise RuntimeError(f"CreateAcls {grant.name} {operation}: {result}")
                added += 1
    finally:
        await client.close()
    return added
