"""``cartwatch carts list|export|customers`` and ``cartwatch insights``: the API from a shell.

A plain HTTP client of one worker's operator API (any worker answers for all partitions).
The URL comes from ``--url``, else ``CARTWATCH_API_URL``, else the local worker's web port;
the bearer token from ``CARTWATCH_API_TOKEN`` (never from a flag, so it stays out of shell
history and process lists).
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import click

from config.settings import SettingsError, load_settings

TIMEOUT = 60.0
CHUNK = 64 * 1024


class ApiError(click.ClickException):
    """The worker could not be reached or refused the request (exit status 1)."""


def api_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise ApiError(str(exc)) from None
    return (settings.operator.api_url or f"http://127.0.0.1:{settings.web_port}").rstrip("/")


def api_token() -> str | None:
    try:
        token = load_settings().operator.api_token
    except SettingsError:
        return None
    return token.get_secret_value() if token is not None else None


def query_string(options: Mapping[str, Any]) -> str:
    """The set options as a query string (``min_total`` style names, repeated values joined)."""
    params = {}
    for name, value in options.items():
        if value is None or value == () or value == "":
            continue
        params[name] = ",".join(value) if isinstance(value, tuple | list) else str(value)
    return urllib.parse.urlencode(params)


def request(base: str, path: str, options: Mapping[str, Any]) -> Any:
    """Open ``base + path?options``; the response object, or ``ApiError`` with the reason."""
    query = query_string(options)
    url = f"{base}{path}" + (f"?{query}" if query else "")
    headers = {"Accept": "application/json, text/csv"}
    token = api_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise ApiError(f"{url}: HTTP {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"cannot reach the cartwatch API at {base}: {exc}") from None


def get_json(base: str, path: str, options: Mapping[str, Any]) -> Any:
    with request(base, path, options) as response:
        return json.load(response)


def stream_to(base: str, path: str, options: Mapping[str, Any], out: IO[bytes]) -> None:
    with request(base, path, options) as response:
        shutil.copyfileobj(response, out, CHUNK)
    out.flush()


def format_table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> str:
    """Left-aligned columns, as wide as their widest cell."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def cart_rows(carts: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    from streams.operator.export import rfc3339

    return [
        [rfc3339(cart["abandoned_at"]), cart["abandonment_id"], cart["store_id"],
         cart["status"], f"{cart['total']} {cart.get('currency') or ''}".strip(),
         str(cart["item_count"]), (cart.get("customer") or {}).get("email") or ""]
        for cart in carts
    ]


INSIGHT_COLUMNS = ("store_id", "period_start", "carts_created", "abandoned", "abandonment_rate",
                   "reminded", "recovered", "recovered_after_reminder", "recovery_rate",
                   "recovered_revenue", "median_seconds_to_recover")


def insight_rows(buckets: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    def text(value: Any) -> str:
        if isinstance(value, dict):
            return " ".join(f"{amount} {currency}" for currency, amount in value.items())
        return "" if value is None else str(value)

    return [[text(bucket[name]) for name in INSIGHT_COLUMNS] for bucket in buckets]


CAMPAIGN_HEADER = ("store", "campaign", "variant", "step", "entered", "sent", "skipped",
                   "clicked", "recovered", "rate", "revenue", "per reminder",
                   "uplift [95 % CI]")


def percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f} %"


def uplift_text(lift: Mapping[str, float] | None) -> str:
    """``+12.5 pp [+3.1, +21.0]``: percentage points, the interval's bounds."""
    if not lift:
        return ""

    def points(value: float) -> str:
        return f"{value * 100:+.1f}"

    return f"{points(lift['difference'])} pp [{points(lift['low'])}, {points(lift['high'])}]"


def campaign_rows(answer: Mapping[str, Any], steps: bool) -> list[list[str]]:
    """One row per variant (``step`` empty; the holdout marked), then its steps if asked."""
    def money(amounts: Mapping[str, str]) -> str:
        return " ".join(f"{amount} {currency}" for currency, amount in amounts.items())

    rows = []
    for campaign in answer["campaigns"]:
        for variant in campaign["variants"]:
            name = variant["variant"] + (" (holdout)" if variant["holdout"] else "")
            for figures in [variant, *(variant["steps"] if steps else [])]:
                total = figures is variant
                skipped = " ".join(f"{reason}:{n}" for reason, n in figures["skipped"].items())
                rows.append([
                    campaign["store_id"], campaign["campaign"], name,
                    "all" if total else str(figures["step"]), str(figures["entered"]),
                    str(figures["sent"]), skipped or "0", str(figures["clicked"]),
                    str(figures["recovered"]), percent(figures["recovery_rate"]),
                    money(figures["revenue"]), money(figures["revenue_per_reminder"]),
                    uplift_text(variant["uplift"]) if total else "",
                ])
    return rows


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of the carts list, shared by the list and export commands."""
    options = [
        click.option("--url", help="Worker API base URL (default: CARTWATCH_API_URL or the "
                                   "local worker)"),
        click.option("--store", multiple=True, help="Store id; repeat for several"),
        click.option("--status", multiple=True,
                     type=click.Choice(["abandoned", "reactivated", "recovered"])),
        click.option("--since", help="Abandoned at or after (date or RFC 3339 time)"),
        click.option("--until", help="Abandoned before (date or RFC 3339 time)"),
        click.option("--product", help="Product name or SKU contains"),
        click.option("--customer", help="Customer name, email or phone contains"),
        click.option("--min-total", "min_total", help="Cart total at least"),
        click.option("--max-total", "max_total", help="Cart total at most"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def echo_result(result: Any, as_json: bool, table: Callable[[], str]) -> None:
    """The API's JSON as it came, or the human table."""
    click.echo(json.dumps(result, indent=2) if as_json else table())


@click.group()
def carts() -> None:
    """Query and export abandoned carts through a worker's API."""


@carts.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--after", default=None, metavar="CURSOR",
              help="The page after this cursor (printed below each page): deep pages fast")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON")
def list_command(url: str | None, as_json: bool, **filters: Any) -> None:
    """List abandoned carts, newest first."""
    page = get_json(api_url(url), "/cartwatch/api/carts/", filters)
    header = ("abandoned_at", "abandonment_id", "store", "status", "total", "items", "email")
    echo_result(page, as_json, lambda: format_table(cart_rows(page["carts"]), header))
    if not as_json:
        shown = len(page["carts"])
        total = f"{page['total']:,}" + ("" if page.get("total_exact", True) else "+")
        more = f"; next page: --after {page['next']}" if page.get("next") else ""
        click.echo(f"\n{shown} of {total} (offset {page['offset']}){more}", err=True)


@carts.command("export")
@filter_options
def export_command(url: str | None, **filters: Any) -> None:
    """Write the matching carts as CSV to stdout, one line per SKU."""
    stream_to(api_url(url), "/cartwatch/api/carts.csv", filters, sys.stdout.buffer)


@carts.command("customers")
@filter_options
def customers_command(url: str | None, **filters: Any) -> None:
    """Write the emails of customers whose abandoned carts hold --product, as CSV."""
    if not filters.get("product"):
        raise click.UsageError("--product is required")
    stream_to(api_url(url), "/cartwatch/api/customers.csv", filters, sys.stdout.buffer)


@click.command()
@click.option("--url", help="Worker API base URL")
@click.option("--by", type=click.Choice(["period", "campaign"]), default="period",
              show_default=True,
              help="period: per store and day or week; campaign: per campaign and variant, "
                   "with uplift over the holdout")
@click.option("--period", type=click.Choice(["day", "week"]), default="day", show_default=True)
@click.option("--store", multiple=True, help="Store id; repeat for several")
@click.option("--since", help="Abandoned/created at or after (date or RFC 3339 time)")
@click.option("--until", help="Abandoned/created before (date or RFC 3339 time)")
@click.option("--steps", is_flag=True, help="--by campaign: a line per step too")
@click.option("--csv", "as_csv", is_flag=True, help="--by campaign: the API's CSV")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON")
def insights(url: str | None, by: str, period: str, steps: bool, as_csv: bool, as_json: bool,
             **options: Any) -> None:
    """Abandonment and recovery figures per store and day or week, or per campaign."""
    base = api_url(url)
    if by == "period":
        result = get_json(base, "/cartwatch/api/insights/", {"period": period, **options})
        echo_result(result, as_json,
                    lambda: format_table(insight_rows(result["buckets"]), INSIGHT_COLUMNS))
        return
    if as_csv:
        stream_to(base, "/cartwatch/api/insights/campaigns.csv", options, sys.stdout.buffer)
        return
    answer = get_json(base, "/cartwatch/api/insights/campaigns/", options)
    echo_result(answer, as_json,
                lambda: format_table(campaign_rows(answer, steps), CAMPAIGN_HEADER))
    if not as_json and answer["pending"]:
        click.echo(f"\n{answer['pending']} abandonment(s) in this range have no reminder logged "
                   "yet, so their campaign is not known: the variants that send miss them, the "
                   "holdout does not. Compare with --until before the first step's delay.",
                   err=True)
