"""Signed link tokens for the cart link and the unsubscribe link.

A token is ``<payload>.<signature>``, both base64url without padding: the payload is compact
JSON with the purpose (``cart``, ``click`` or ``unsubscribe``), the subject (the cart id or
the email address), the store and the expiry; the signature is HMAC-SHA256 over the payload text
with the link secret. The purpose is signed too, so a cart-link token cannot be replayed as an
unsubscribe token. Pure functions: the unsubscribe and click endpoints call ``verify_token``.

A ``click`` token is the path of a reminder's cart link through the worker
(``/cartwatch/r/<token>``): it also signs where the link leads (``target``) and which reminder
it came from (step, channel, campaign, variant), so the worker can record the click and
redirect without reading any state, and cannot be made to redirect anywhere else (no open
redirect).
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

Purpose = Literal["cart", "click", "unsubscribe"]
MAX_TOKEN_LENGTH = 8192
"""A click token carries its target URL (up to 2048 characters, itself with a ``cw_token``):
about 3.5 KB at most, base64 included."""


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
    target: str | None = None
    """Click tokens: the URL the link redirects to."""
    step: int | None = None
    channel: str | None = None
    campaign: str | None = None
    variant: str | None = None


_OPTIONAL = (("abandonment_id", "a"), ("target", "u"), ("step", "n"), ("channel", "ch"),
             ("campaign", "cp"), ("variant", "va"))
"""Optional claims and their short names in the payload (absent when None, so the tokens of
cart and unsubscribe links are what they were before click tokens existed)."""


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
    for name, short in _OPTIONAL:
        value = getattr(claims, name)
        if value is not None:
            document[short] = value
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
            **{name: document.get(short) for name, short in _OPTIONAL},
        )
        if claims.step is not None and type(claims.step) is not int:
            raise TypeError("step")
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
