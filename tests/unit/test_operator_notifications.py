"""Unsubscribe links handled by the operator API: verified, then published for the notifier."""

import json

from streams.notifier import LinkClaims, sign_token
from streams.operator.notifications import remind, unsubscribe
from tests.unit.factories import T0

SECRET = b"link-secret"


class Published(list[tuple[bytes, bytes]]):
    async def __call__(self, key: bytes, value: bytes) -> None:
        self.append((key, value))


def token(purpose: str = "unsubscribe", expires: float = T0 + 60, secret: bytes = SECRET) -> str:
    claims = LinkClaims(purpose, "Ann@Example.com", "s1", int(expires), "c1:1")  # type: ignore[arg-type]
    return sign_token(secret, claims)


async def test_valid_link_publishes_the_opt_out() -> None:
    published = Published()
    result = await unsubscribe(token(), SECRET, published, now=lambda: T0)
    assert (result.status, result.body) == (200, {"unsubscribed": True, "store_id": "s1"})
    [(key, value)] = published
    assert key == b"ann@example.com"
    message = json.loads(value)
    assert (message["type"], message["email"], message["store_id"], message["source"]) == (
        "unsubscribe", "Ann@Example.com", "s1", "link")
    assert message["unsubscribed_at"] == "2024-01-01T00:00:00Z"


async def test_invalid_links_publish_nothing() -> None:
    published = Published()
    for bad in (token(expires=T0), token(purpose="cart"), token(secret=b"other"), "x.y", ""):
        result = await unsubscribe(bad, SECRET, published, now=lambda: T0)
        assert result.status == 400, bad
        assert bad not in json.dumps(result.body) or not bad
    no_secret = await unsubscribe(token(), None, published, now=lambda: T0)
    assert no_secret.status == 503 and published == []


async def test_manual_reminder_says_it_is_unavailable_until_installed() -> None:
    result = await remind("c1:1", "c1", "s1")
    assert result.status == 503 and "not available" in result.body["error"]
