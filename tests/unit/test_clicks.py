"""Clicks on reminder links: the click rule (robots and prefetches never count), the click
token in every cart link, and the redirect endpoint's answers (302, error pages) without a
broker."""

import asyncio
import json
from typing import Any

import pytest

from config.notifier import ReminderPolicy
from schemas.notifications import LinkClick, ReminderDue
from streams.notifier import clicks
from streams.notifier.sending import links, reminder_context, webhook_body
from streams.notifier.tokens import InvalidToken, LinkClaims, sign_token, verify_token

from .factories import T0, iso

SECRET = b"0123456789abcdef-secret"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
ROBOTS = [
    "",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Python/3.11 aiohttp/3.10.11",
    "Wget/1.21.4",
    "Go-http-client/1.1",
    "Java/17.0.2",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "BingPreview/1.0b",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
    "Mozilla/5.0 (compatible; Barracuda Sentinel)",
    "Mozilla/5.0 Mimecast-LinkScanner",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
]


def request(method: str = "GET", user_agent: str | None = CHROME,
            **headers: str) -> clicks.ClickRequest:
    found = {name.replace("_", "-"): value for name, value in headers.items()}
    if user_agent is not None:
        found["User-Agent"] = user_agent
    return clicks.ClickRequest(method, found)


# -- the click rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("user_agent, kind", [
    (CHROME, "desktop"), (FIREFOX, "desktop"), (IPHONE, "mobile"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36", "mobile"),
])
def test_a_browser_get_is_a_click_of_its_kind(user_agent, kind):
    assert clicks.verdict(request("GET", user_agent)) == "click"
    assert clicks.user_agent_class(user_agent) == kind


@pytest.mark.parametrize("user_agent", ROBOTS)
def test_robots_scanners_and_http_libraries_never_click(user_agent):
    assert clicks.verdict(request("GET", user_agent)) == "robot"
    assert clicks.user_agent_class(user_agent) == "robot"


def test_a_get_without_user_agent_is_no_click():
    assert clicks.verdict(request("GET", None)) == "robot"


@pytest.mark.parametrize("method", ["HEAD", "POST", "OPTIONS", "PUT"])
def test_only_get_clicks(method):
    """Link checkers ask with HEAD; forms and preflights are no clicks either."""
    assert clicks.verdict(request(method)) == "not_get"


@pytest.mark.parametrize("name, value", [
    ("Purpose", "prefetch"), ("Sec-Purpose", "prefetch;prerender"), ("X-Purpose", "preview"),
    ("X-Moz", "prefetch"), ("sec-purpose", "prefetch"),
])
def test_a_declared_prefetch_or_preview_is_no_click(name, value):
    assert clicks.verdict(clicks.ClickRequest("GET", {"User-Agent": CHROME, name: value})) == (
        "prefetch")


def test_a_click_records_the_reminder_of_the_token_and_the_browser_kind_only():
    claims = LinkClaims("click", "c-1", "tea", int(T0) + 60, "c-1:2",
                        target="https://tea.example/cart/c-1", step=2, channel="email",
                        campaign="big-carts", variant="discount")

    record = clicks.click_record(claims, IPHONE, T0, "k-1")

    assert record == LinkClick(click_id="k-1", abandonment_id="c-1:2", cart_id="c-1",
                               store_id="tea", step=2,
                               channel="email", campaign="big-carts", variant="discount",
                               clicked_at=iso(T0), user_agent_class="mobile")
    assert "iPhone" not in record.model_dump_json()  # never the User-Agent itself


# -- click tokens in the links of every reminder ------------------------------------------------


def due(step: int = 2, channel: str = "email", cart_url: str | None = "https://tea.example/c/1",
        recipient: str | None = "ann@example.com") -> ReminderDue:
    return ReminderDue.model_validate({
        "idempotency_key": "k", "abandonment_id": "c-1:1", "cart_id": "c-1", "store_id": "tea",
        "step": step, "steps": 3, "template": "reminder", "channel": channel,
        "recipient": recipient,
        "cart": {"lines": [], "item_count": 0, "total": "0", "currency": "EUR",
                 "cart_url": cart_url},
        "abandoned_at": iso(T0), "due_at": iso(T0), "decided_at": iso(T0),
        "campaign": "big-carts", "variant": "discount",
    })


def click_claims(link: str, base: str) -> LinkClaims:
    assert link.startswith(base)
    return verify_token(link.removeprefix(base), secret=SECRET, purpose="click", now=T0)


def test_the_default_policy_links_through_the_workers_click_endpoint():
    policy = ReminderPolicy()
    cart_link, _ = links(due(), policy, SECRET, T0)
    assert cart_link is not None

    claims = click_claims(cart_link, "http://127.0.0.1:6066/cartwatch/r/")
    assert (claims.subject, claims.store_id, claims.abandonment_id, claims.step, claims.channel,
            claims.campaign, claims.variant) == (
        "c-1", "tea", "c-1:1", 2, "email", "big-carts", "discount")
    assert claims.expires_at == int(T0 + policy.link_ttl)
    # the target is the cart link as before: the cart URL with the shop's cw_token
    assert claims.target is not None
    cart_url, _, cart_token = claims.target.partition("?cw_token=")
    assert cart_url == "https://tea.example/c/1"
    assert verify_token(cart_token, secret=SECRET, purpose="cart", now=T0).subject == "c-1"


def test_the_click_base_follows_a_public_unsubscribe_url_of_the_worker():
    policy = ReminderPolicy(unsubscribe_url="https://links.tea.example/cartwatch/unsubscribe/")
    cart_link, _ = links(due(), policy, SECRET, T0)

    assert cart_link is not None
    click_claims(cart_link, "https://links.tea.example/cartwatch/r/")


def test_an_explicit_click_url_wins_and_gets_its_slash():
    policy = ReminderPolicy(click_url="https://go.tea.example/cartwatch/r",
                            unsubscribe_url="https://tea.example/stop")
    assert policy.click_base() == "https://go.tea.example/cartwatch/r/"
    cart_link, _ = links(due(), policy, SECRET, T0)
    assert cart_link is not None
    click_claims(cart_link, "https://go.tea.example/cartwatch/r/")


def test_without_a_worker_address_links_go_straight_to_the_cart():
    """An unsubscribe page of the shop's own says nothing of where the worker is: uncounted
    links that work beat counted links that lead nowhere."""
    policy = ReminderPolicy(unsubscribe_url="https://tea.example/stop")

    assert policy.click_base() is None
    cart_link, _ = links(due(), policy, SECRET, T0)
    assert cart_link is not None and cart_link.startswith("https://tea.example/c/1?cw_token=")


def test_the_shop_url_link_goes_through_the_click_endpoint_too():
    policy = ReminderPolicy(shop_url="https://tea.example/")
    context = reminder_context(due(cart_url=None), policy, SECRET, T0)

    claims = click_claims(context["cart_link"], "http://127.0.0.1:6066/cartwatch/r/")
    assert claims.target == "https://tea.example/" and not context["links_to_cart"]


def test_the_webhooks_cart_link_is_a_click_link_of_the_webhook_channel():
    body = webhook_body(due(channel="webhook", recipient=None), ReminderPolicy(), SECRET, T0)
    cart_link = json.loads(body)["cart_link"]

    assert click_claims(cart_link, "http://127.0.0.1:6066/cartwatch/r/").channel == "webhook"


def test_a_click_token_is_no_cart_or_unsubscribe_token_and_expires():
    cart_link, _ = links(due(), ReminderPolicy(link_ttl=60), SECRET, T0)
    assert cart_link is not None
    token = cart_link.rpartition("/")[2]

    for purpose in ("cart", "unsubscribe"):
        with pytest.raises(InvalidToken, match="not for"):
            verify_token(token, secret=SECRET, purpose=purpose, now=T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, secret=SECRET, purpose="click", now=T0 + 60)


def test_the_longest_cart_url_still_makes_a_valid_token():
    long_url = "https://tea.example/cart?" + "x" * (2048 - 25)
    cart_link, _ = links(due(cart_url=long_url), ReminderPolicy(), SECRET, T0)
    assert cart_link is not None

    claims = click_claims(cart_link, "http://127.0.0.1:6066/cartwatch/r/")
    assert claims.target is not None and claims.target.startswith(long_url)


def test_tokens_without_the_new_claims_are_as_before():
    """Cart and unsubscribe tokens of earlier releases verify, and new ones carry no more."""
    claims = LinkClaims("unsubscribe", "ann@example.com", "tea", 2_000, "c-1:1")
    token = sign_token(SECRET, claims)

    assert verify_token(token, secret=SECRET, purpose="unsubscribe", now=0) == claims
    payload = token.split(".")[0]
    assert len(payload) < 120


# -- the redirect endpoint (no broker: the publisher is replaced) -----------------------------


class FakeRequest:
    def __init__(self, method: str, headers: dict[str, str]) -> None:
        self.method = method
        self.headers = headers


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[bytes, bytes]]]:
    from streams.operator import web

    published: list[tuple[bytes, bytes]] = []

    async def publish(key: bytes, value: bytes) -> None:
        published.append((key, value))

    monkeypatch.setattr(web, "link_secret", lambda: SECRET)
    monkeypatch.setattr(web, "publish_click", publish)
    monkeypatch.setattr(web.time, "time", lambda: T0 + 10)
    return web, published


def follow(web: Any, link: str, method: str = "GET", user_agent: str = CHROME,
           **headers: str) -> Any:
    token = link.rpartition("/")[2]
    request = FakeRequest(method, {"User-Agent": user_agent, **headers})
    return asyncio.run(web.follow_link(request, token))


def test_a_click_is_recorded_keyed_by_cart_and_redirected_to_the_cart(endpoint):
    web, published = endpoint
    cart_link, _ = links(due(), ReminderPolicy(), SECRET, T0)

    response = follow(web, cart_link)

    assert response.status == 302
    assert response.headers["Location"].startswith("https://tea.example/c/1?cw_token=")
    assert response.headers["Cache-Control"] == "no-store"
    [(key, value)] = published
    click = LinkClick.model_validate_json(value)
    assert key == b"c-1" and len(click.click_id) == 32
    assert (click.abandonment_id, click.step, click.channel, click.campaign, click.variant,
            click.user_agent_class, click.clicked_at.timestamp()) == (
        "c-1:1", 2, "email", "big-carts", "discount", "desktop", T0 + 10)


@pytest.mark.parametrize("method, user_agent, headers", [
    ("HEAD", CHROME, {}),
    ("GET", "Mozilla/5.0 (compatible; Proofpoint URL Defense)", {}),
    ("GET", CHROME, {"Sec-Purpose": "prefetch"}),
])
def test_a_robot_or_prefetch_is_redirected_but_not_recorded(endpoint, method, user_agent,
                                                            headers):
    web, published = endpoint
    cart_link, _ = links(due(), ReminderPolicy(), SECRET, T0)

    response = follow(web, cart_link, method, user_agent, **headers)

    assert response.status == 302 and published == []


def test_a_forged_token_gets_an_error_page_and_records_nothing(endpoint):
    web, published = endpoint
    forged = sign_token(b"not-the-link-secret-0", LinkClaims(
        "click", "c-1", "tea", int(T0) + 3600, "c-1:1", target="https://evil.example/",
        step=1, channel="email"))

    for token in (forged, "garbage", forged.replace(".", "x.", 1)):
        response = follow(web, "/cartwatch/r/" + token)
        assert response.status == 400
        assert response.content_type == "text/html"
        assert b"not valid" in response.body and b"evil" not in response.body
        assert "Location" not in response.headers
    assert published == []


def test_an_expired_token_gets_an_error_page_and_records_nothing(endpoint):
    web, published = endpoint
    cart_link, _ = links(due(), ReminderPolicy(link_ttl=5), SECRET, T0)  # T0+10 is past it

    response = follow(web, cart_link)

    assert response.status == 410 and b"expired" in response.body
    assert published == []


def test_a_cart_or_unsubscribe_token_is_no_click_token(endpoint):
    web, published = endpoint
    for purpose in ("cart", "unsubscribe"):
        token = sign_token(SECRET, LinkClaims(purpose, "c-1", "tea", int(T0) + 60, "c-1:1"))
        assert follow(web, "/cartwatch/r/" + token).status == 400
    assert published == []


def test_link_outcomes_are_a_metric_family():
    from streams.operator.metrics import counter_families
    from streams.operator.prometheus import render

    text = render(counter_families({"link:click": 2, "link:robot": 1, "in:t": 5}))

    assert 'cartwatch_link_requests_total{outcome="click"} 2' in text
    assert 'cartwatch_link_requests_total{outcome="robot"} 1' in text
