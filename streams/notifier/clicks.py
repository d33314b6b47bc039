"""Clicks on reminder links: which requests count, and what a click records (pure functions).

Every cart link of a reminder leads through the worker (``/cartwatch/r/<click token>``, see
``streams.notifier.tokens``), which answers 302 to the cart and records a ``LinkClick`` on
``cartwatch-clicks`` when the request *counts*. Mail scanners and link previewers open links
before the customer does, and must not count as clicks, the way they must not unsubscribe
anybody (the unsubscribe link acts only on POST). A redirect cannot wait for a POST, so the
rule looks at the request instead:

1. only ``GET`` counts: ``HEAD`` (link checkers) and every other method never do;
2. a request that declares itself a prefetch or preview does not count (``Purpose``,
   ``Sec-Purpose``, ``X-Purpose`` or ``X-Moz`` saying ``prefetch``/``preview``);
3. the ``User-Agent`` must be a browser's: it begins with ``Mozilla/`` (every browser's does)
   and contains none of the markers of robots, scanners and HTTP libraries in
   ``ROBOT_MARKERS`` (case-insensitive). No ``User-Agent``, ``curl/8.0`` or
   ``Mozilla/5.0 (compatible; Proofpoint URL Defense)`` never count.

A request that does not count is still redirected (a scanner checking the link sees where it
goes, and a person with an unusual browser still gets to the cart); it just records nothing.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.common import utc_from_epoch
from schemas.notifications import LinkClick, UserAgentClass
from streams.notifier.tokens import LinkClaims

ROBOT_MARKERS = (
    "bot", "crawl", "spider", "slurp", "preview", "scan", "checker", "monitor", "headless",
    "phantomjs", "python", "curl", "wget", "httpclient", "okhttp", "java/", "go-http",
    "libwww", "proofpoint", "mimecast", "barracuda", "safelinks", "urldefense", "forcepoint",
    "symantec", "trendmicro", "sophos", "fireeye", "cisco", "zscaler", "google-safety",
    "facebookexternalhit", "skypeuripreview", "whatsapp", "slackbot", "discordbot",
)
"""Lower-case substrings of ``User-Agent`` values that robots, scanners and link previewers
send (``Googlebot``, ``bingpreview``, ``Barracuda Sentinel``...); any one makes a request a
robot's."""
PREFETCH_HEADERS = ("purpose", "sec-purpose", "x-purpose", "x-moz")
_PREFETCH = re.compile(r"prefetch|preview|prerender", re.IGNORECASE)
_MOBILE = re.compile(r"mobile|android|iphone|ipod|ipad|tablet|windows phone", re.IGNORECASE)

Verdict = Literal["click", "not_get", "prefetch", "robot"]


@dataclass(frozen=True, slots=True)
class ClickRequest:
    """What the rule looks at: the method and the request headers (any case)."""

    method: str
    headers: Mapping[str, str]

    def header(self, name: str) -> str:
        for key, value in self.headers.items():
            if key.lower() == name:
                return value
        return ""


def user_agent_class(user_agent: str) -> UserAgentClass:
    """``robot`` (rule 3), ``mobile`` (phones and tablets) or ``desktop``."""
    lowered = user_agent.strip().lower()
    if not lowered.startswith("mozilla/") or any(m in lowered for m in ROBOT_MARKERS):
        return "robot"
    return "mobile" if _MOBILE.search(lowered) else "desktop"


def verdict(request: ClickRequest) -> Verdict:
    """Does this request count as a click (``click``), and if not, which rule said no."""
    if request.method.upper() != "GET":
        return "not_get"
    if any(_PREFETCH.search(request.header(name)) for name in PREFETCH_HEADERS):
        return "prefetch"
    if user_agent_class(request.header("user-agent")) == "robot":
        return "robot"
    return "click"


def click_record(claims: LinkClaims, user_agent: str, now: float, click_id: str) -> LinkClick:
    """The ``LinkClick`` of a counted request with a valid click token (``click_id``: a fresh
    random id, so that consumers can tell a producer's retry from a second click)."""
    assert claims.purpose == "click" and claims.abandonment_id is not None
    ua_class = user_agent_class(user_agent)
    assert ua_class != "robot"
    return LinkClick(
        click_id=click_id, abandonment_id=claims.abandonment_id, cart_id=claims.subject,
        store_id=claims.store_id,
        step=claims.step or 1, channel="webhook" if claims.channel == "webhook" else "email",
        campaign=claims.campaign, variant=claims.variant, clicked_at=utc_from_epoch(now),
        user_agent_class=ua_class,
    )
