"""The seam between the operator's HTTP API and the reminder notifier.

The manual reminder and the unsubscribe link are the notifier's business (consent, caps,
signed tokens); the API only forwards them. Until a gateway is installed every such request
answers 503, so the API works in deployments that run no notifier.
"""

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """What the notifier did with a request: an HTTP status and a JSON body for the caller."""

    status: int
    body: dict[str, Any]


class ReminderGateway(Protocol):
    """The notifier's side of the manual reminder and of the unsubscribe link."""

    async def remind(self, abandonment_id: str, cart_id: str, store_id: str) -> GatewayResult:
        """Send a reminder now, with the same consent checks and caps as scheduled ones."""
        ...

    async def unsubscribe(self, token: str) -> GatewayResult:
        """Verify a signed unsubscribe token and record the opt-out."""
        ...


class NotifierUnavailable:
    """The gateway until the notifier is wired in: every request answers 503."""

    BODY = {"error": "the reminder notifier is not available in this deployment"}

    async def remind(self, abandonment_id: str, cart_id: str, store_id: str) -> GatewayResult:
        return GatewayResult(503, self.BODY)

    async def unsubscribe(self, token: str) -> GatewayResult:
        return GatewayResult(503, self.BODY)


_gateway: ReminderGateway = NotifierUnavailable()


def install_gateway(gateway: ReminderGateway) -> None:
    """Route manual reminders and unsubscribes to ``gateway`` (called by the notifier)."""
    global _gateway
    _gateway = gateway


def gateway() -> ReminderGateway:
    return _gateway
