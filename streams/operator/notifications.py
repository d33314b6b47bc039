"""The seam between the operator's HTTP API and the reminder notifier.

* Unsubscribe links: the token is verified here with the notifier's link secret
  (``streams.notifier.verify_token``) and an ``Unsubscribe`` is published to the notifier's
  unsubscribe topic, which its sender applies before any further reminder.
* Manual reminders need the notifier's scheduler (consent, caps, sequence state), so they go
  through a ``remind`` hook the notifier installs with ``install_remind``; until then the
  endpoint answers 503 and says so.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from schemas.common import utc_from_epoch
from schemas.notifications import Unsubscribe, unsubscribe_key
from streams.notifier import InvalidToken, verify_token


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """What the notifier did with a request: an HTTP status and a JSON body for the caller."""

    status: int
    body: dict[str, Any]


Publish = Callable[[bytes, bytes], Awaitable[None]]
"""Send ``(key, value)`` to the unsubscribe topic and wait until the broker has it."""
Remind = Callable[[str, str, str], Awaitable[GatewayResult]]
"""``(abandonment_id, cart_id, store_id)``: send the next reminder now, or say why not."""

UNAVAILABLE = GatewayResult(
    503, {"error": "manual reminders are not available: the notifier has not enabled them"}
)


async def _unavailable(abandonment_id: str, cart_id: str, store_id: str) -> GatewayResult:
    return UNAVAILABLE


_remind: Remind = _unavailable


def install_remind(remind: Remind) -> None:
    """Route manual reminders to the notifier (called by the notifier when it starts)."""
    global _remind
    _remind = remind


async def remind(abandonment_id: str, cart_id: str, store_id: str) -> GatewayResult:
    return await _remind(abandonment_id, cart_id, store_id)


async def unsubscribe(
    token: str, secret: bytes | None, publish: Publish, now: Callable[[], float] = time.time
) -> GatewayResult:
    """Verify an unsubscribe link's token and publish the opt-out it stands for."""
    if secret is None:
        return GatewayResult(503, {"error": "unsubscribe links are not configured "
                                            "(no notifier link secret)"})
    moment = now()
    try:
        claims = verify_token(token, secret=secret, purpose="unsubscribe", now=moment)
    except InvalidToken as exc:
        return GatewayResult(400, {"error": f"this unsubscribe link is not valid: {exc}"})
    opt_out = Unsubscribe(email=claims.subject, store_id=claims.store_id,
                          unsubscribed_at=utc_from_epoch(moment), source="link")
    await publish(unsubscribe_key(opt_out.email), opt_out.model_dump_json().encode())
    return GatewayResult(200, {"unsubscribed": True, "store_id": claims.store_id})
