"""The reminder notifier: plans reminder sequences for abandoned carts and delivers them.

Modules: ``planning`` (pure scheduler core), ``sending`` (pure sender core), ``rendering``
(templates), ``tokens`` (signed links), ``channels`` (SMTP, webhook, retries), ``worker``
(the Faust agents). Importing this package is cheap: the operator surface uses
``verify_token`` without starting any agent.
"""

from streams.notifier.tokens import InvalidToken, LinkClaims, sign_token, verify_token

__all__ = ["InvalidToken", "LinkClaims", "sign_token", "verify_token"]
