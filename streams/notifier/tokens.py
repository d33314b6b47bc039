"""Signed link tokens for the cart link and the unsubscribe link.

A token is ``<payload>.<signature>``, both base64url without padding: the payload is compact
JSON with the purpose (``cart`` or ``unsubscribe``), the subject (the cart id or the email
address), the store and the expiry; the signature is HMAC-SHA256 over the payload text with the
link secret. The purpose is signed too, so a cart-link token cannot be replayed as an
unsubscribe token. Pure functions: the unsubscribe endpoint calls ``verify_token``.
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["cart", "unsubscribe"]
MAX_TOKEN_LENGTH = 4096


class InvalidToken(ValueError):
    """A token that is malformed, forged, for another purpose, or expired."""


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a valid token vouches for."""

    purpose: Purpose
    subject: str
    store_id: str
    expires_at: int
    abandonment_id: str | None = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def sign_token(secret: bytes, claims: LinkClaims) -> str:
    """A URL-safe token for ``claims``."""
    document = {"p": claims.purpose, "s": claims.subject, "st": claims.store_id,
                "exp": claims.expires_at}
    if claims.abandonment_id is not None:
        document["a"] = claims.abandonment_id
    payload = _b64(json.dumps(document, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_signature(secret, payload)}"


def verify_token(token: str, *, secret: bytes, purpose: Purpose, now: float) -> LinkClaims:
    """The claims of ``token`` if it is genuine, for ``purpose`` and not expired at ``now``.

    Raises ``InvalidToken`` otherwise; the message never echoes the token or the secret.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidToken("malformed token")
    payload, signature = token.split(".")
    try:
        expected = _signature(secret, payload)
    except UnicodeEncodeError:
        raise InvalidToken("malformed token") from None
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("bad signature")
    try:
        document = json.loads(_unb64(payload))
        claims = LinkClaims(
            purpose=document["p"],
            subject=str(document["s"]),
            store_id=str(document["st"]),
            expires_at=int(document["exp"]),
            abandonment_id=document.get("a"),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidToken("malformed token") from None
    if claims.purpose != purpose:
        raise InvalidToken(f"token is not for {purpose}")
    if now >= claims.expires_at:
        raise InvalidToken("token expired")
    return claims


def link_with_token(url: str, token: str, parameter: str = "token") -> str:
    """``url`` with ``token`` appended as a query parameter (keeps an existing query)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{parameter}={token}"
