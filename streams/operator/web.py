"""The operator's HTTP surface, served by every worker on Faust's web server.

Importing this module registers the views and the read-model feed on the app. All reads are
answered from the read model, which holds every partition (this worker's own copy, or the
PostgreSQL database all workers share), so a load balancer may send any request to any worker.

Endpoints under ``/cartwatch/api/`` expose shop and customer data and need
``Authorization: Bearer <CARTWATCH_API_TOKEN>`` when a token is configured; the probes,
``/metrics`` and the dashboard's static files do not (the dashboard asks for the token).
"""

import asyncio
import hmac
import html
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

from aiohttp import web as aioweb
from aiokafka.errors import KafkaError
from faust.tables.manager import TableManager
from faust.web import Request, Response, View, Web

from streams.app import app, clicks_topic, settings, unsubscribes_topic
from streams.compat import page
from streams.counters import worker_counters
from streams.notifier import clicks
from streams.notifier.tokens import InvalidToken, verify_token
from streams.operator import attempts, insights, notifications, results
from streams.operator import query as q
from streams.operator.backends import ReadModelStore, ReadModelUnavailable, open_read_model
from streams.operator.export import (
    CART_COLUMNS,
    CUSTOMER_COLUMNS,
    cart_row,
    csv_chunks,
    paged_csv,
)
from streams.operator.export import customer_row as customer_csv_row
from streams.operator.feed import ReadModelFeed, SharedReadModel
from streams.operator.health import readiness
from streams.operator.metrics import WorkerMetrics
from streams.operator.prometheus import CONTENT_TYPE, render
from streams.operator.store import row_dict

log = logging.getLogger(__name__)

STATIC = resources.files("streams.operator") / "static"
OPENAPI = resources.files("streams.operator") / "openapi.json"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


class Runtime:
    """The worker's read model and its feed, once the feed has started, and what ``/metrics``
    reads of the processors, once the assembly gave it (``serve_metrics``)."""

    feed: ReadModelFeed | None = None
    shared: SharedReadModel | None = None
    metrics: WorkerMetrics | None = None


runtime = Runtime()


def serve_metrics(metrics: WorkerMetrics) -> None:
    """Answer ``/metrics`` from ``metrics`` (the processors' counters, positions and tables)."""
    runtime.metrics = metrics


@app.service
class OperatorFeed(ReadModelFeed):
    """The read-model feed of this worker, started with the app after table recovery."""

    def __init__(self, **kwargs: Any) -> None:
        store = open_read_model(settings.operator, settings.data_dir)
        shared = SharedReadModel(store) if store is not None else None
        super().__init__(settings, shared, **kwargs)
        runtime.feed, runtime.shared = self, shared

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.shared is not None:
            await self.shared.run(lambda model: model.close())


# -- helpers ------------------------------------------------------------------------------


class HTTPProblem(Exception):
    """An error answered as ``{"error": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def authorized(header: str | None, token: str | None) -> bool:
    """Does the Authorization header carry the configured bearer token (always, if none)?"""
    if token is None:
        return True
    scheme, _, presented = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


def require_token(request: Request) -> None:
    secret = settings.operator.api_token
    token = secret.get_secret_value() if secret is not None else None
    if not authorized(request.headers.get("Authorization"), token):
        raise HTTPProblem(401, "missing or wrong bearer token")


def shared_model() -> SharedReadModel:
    if runtime.shared is None:
        if settings.operator.read_model == "off":
            raise HTTPProblem(503, "this worker keeps no read model (CARTWATCH_READ_MODEL=off);"
                              " ask a worker that does")
        raise HTTPProblem(503, "the read model is not started yet")
    return runtime.shared


def parse(request: Request) -> q.CartQuery:
    try:
        return q.parse_query(dict(request.query), settings.operator.max_page_size)
    except q.QueryError as exc:
        raise HTTPProblem(400, str(exc)) from None


def problem_response(status: int, message: str) -> aioweb.Response:
    return aioweb.json_response({"error": message}, status=status)


Handler = Callable[..., Awaitable[Any]]


def api(handler: Handler) -> Handler:
    """Token check and HTTP problems for an API view method."""

    async def wrapped(self: View, request: Request, **match: str) -> Any:
        try:
            require_token(request)
            return await handler(self, request, **match)
        except HTTPProblem as problem:
            return problem_response(problem.status, str(problem))
        except ReadModelUnavailable as lost:
            return problem_response(503, f"the read model's database is unavailable: {lost}")

    wrapped.__doc__ = handler.__doc__
    return wrapped


# -- read queries -------------------------------------------------------------------------


def list_carts(model: ReadModelStore, query: q.CartQuery) -> dict[str, Any]:
    """A page of the list: the matches' keys first (the count), then the page's rows by id
    when every match was found, or by the list's own query when there are more."""
    keys = [(row[0], row[1]) for row in model.query(*q.match_keys_sql(query))]
    counted = len(keys)
    if counted <= q.COUNT_LIMIT:  # every match is known: the page is sorted from their keys
        wanted = q.page_keys(keys, query)
        listed, more = wanted[:query.limit], len(wanted) > query.limit
        rows = model.query(*q.rows_sql([key[1] for key in listed])) if listed else []
    else:
        found = model.query(*q.list_sql(query))
        rows, more = found[:query.limit], len(found) > query.limit
        listed = [(row["abandoned_at"], row["abandonment_id"]) for row in rows]
    ids = [row["abandonment_id"] for row in rows]
    lines = model.lines_of(ids)
    summary = attempts.reminder_summary(model.query(*attempts.summary_sql(ids))) if ids else {}
    carts = [{**row_dict(row), "lines": lines[row["abandonment_id"]],
              "reminders": summary.get(row["abandonment_id"], attempts.NO_REMINDERS)}
             for row in rows]
    return {"total": min(counted, q.COUNT_LIMIT), "total_exact": counted <= q.COUNT_LIMIT,
            "limit": query.limit, "offset": query.offset, "carts": carts,
            "next": q.encode_cursor(listed[-1]) if listed and more else None}


def cart_detail(model: ReadModelStore, cart_id: str) -> dict[str, Any] | None:
    rows = model.query(
        "SELECT a.* FROM abandonments a WHERE a.cart_id = ? ORDER BY a.abandoned_at DESC, "
        "a.sequence DESC", [cart_id]
    )
    if not rows:
        return None
    ids = [row["abandonment_id"] for row in rows]
    lines = model.lines_of(ids)
    attempts = model.query(
        "SELECT abandonment_id, step, channel, status, attempt, at, cart_id, store_id, reason, "
        "error, deferred_until, campaign, variant FROM notifications "
        f"WHERE abandonment_id IN ({', '.join('?' * len(ids))}) ORDER BY at", ids
    )
    reminders: dict[str, list[dict[str, Any]]] = {key: [] for key in ids}
    for attempt in attempts:
        entry = dict(attempt)
        reminders[entry.pop("abandonment_id")].append(entry)
    abandonments = [
        {**row_dict(row), "lines": lines[row["abandonment_id"]],
         "reminders": reminders[row["abandonment_id"]]}
        for row in rows
    ]
    return {"cart_id": cart_id, "store_id": rows[0]["store_id"], "abandonments": abandonments}


def export_page(
    model: ReadModelStore, query: q.CartQuery, after: tuple[float, str] | None
) -> tuple[list[list[str]], tuple[float, str] | None]:
    """CSV rows of the next export page and the key to continue after (None at the end)."""
    rows = model.query(*q.keyset_sql(query, after, settings.operator.export_page_size))
    if not rows:
        return [], None
    lines = model.lines_of([row["abandonment_id"] for row in rows])
    out = [cart_row(row, line) for row in rows for line in lines[row["abandonment_id"]]]
    return out, (rows[-1]["abandoned_at"], rows[-1]["abandonment_id"])


def parse_log(request: Request) -> attempts.LogQuery:
    try:
        return attempts.parse_log_query(dict(request.query), settings.operator.max_page_size)
    except q.QueryError as exc:
        raise HTTPProblem(400, str(exc)) from None


def log_page(model: ReadModelStore, query: attempts.LogQuery) -> dict[str, Any]:
    rows = model.query(*attempts.log_sql(query))
    total = model.query(*attempts.log_count_sql(query))[0][0]
    return {"total": total, "limit": query.limit, "offset": query.offset,
            "attempts": [attempts.log_entry(row) for row in rows]}


def log_export_page(
    model: ReadModelStore, query: attempts.LogQuery, after: tuple[float, int] | None
) -> tuple[list[list[str]], tuple[float, int] | None]:
    """CSV rows of the next page of the log and the key to continue after (None at the end)."""
    rows = model.query(*attempts.log_keyset_sql(query, after, settings.operator.export_page_size))
    if not rows:
        return [], None
    return [attempts.log_csv_row(row) for row in rows], (rows[-1]["at"], rows[-1]["rowid"])


def operator_notices(model: ReadModelStore, stores: tuple[str, ...]) -> list[dict[str, Any]]:
    return [dict(row) for row in model.query(*attempts.notices_sql(stores))]


def store_ids(model: ReadModelStore) -> list[str]:
    return [row[0] for row in model.query(attempts.stores_sql())]


def customers(model: ReadModelStore, query: q.CartQuery) -> list[list[str]]:
    return [customer_csv_row(row) for row in model.query(*q.customers_sql(query))]


def insight_buckets(
    model: ReadModelStore, query: q.CartQuery, period: insights.Period
) -> list[dict[str, object]]:
    """Insights per store and period within the query's scope, aggregated by the database."""
    return insights.buckets(period, model.query(*insights.abandonments_sql(query, period)),
                            model.query(*insights.revenue_sql(query, period)),
                            model.query(*insights.created_sql(query, period)))


def campaign_results(model: ReadModelStore, query: q.CartQuery) -> dict[str, Any]:
    """Results per campaign, variant and step of the abandonments in the query's scope."""
    where, params = q.where_clause(query)
    entries = results.entries(model.query(*results.facts_sql(where, params)))
    attempts = results.attempts(model.query(*results.steps_sql(where, params)))
    clicks = results.clicks(model.query(*results.clicks_sql(where, params)))
    pending = model.query(*results.pending_sql(where, params))[0][0]
    return results.results(results.aggregate(entries, attempts, clicks), pending)


# -- views --------------------------------------------------------------------------------


@app.page("/cartwatch/api/carts/")
class CartsView(View):
    """Abandoned carts, newest first: filters, search and paging as query parameters."""

    @api
    async def get(self, request: Request) -> Response:
        result = await shared_model().run(list_carts, parse(request))
        return self.json(result)


@app.page("/cartwatch/api/carts/{cart_id}/")
class CartView(View):
    """One cart: each of its abandonments with lines and reminder attempts."""

    @api
    async def get(self, request: Request, cart_id: str) -> Response:
        detail = await shared_model().run(cart_detail, cart_id)
        if detail is None:
            raise HTTPProblem(404, f"no abandonment of cart {cart_id!r}")
        return self.json(detail)


@app.page("/cartwatch/api/carts/{cart_id}/remind/")
class RemindView(View):
    """Ask the notifier to remind the cart's latest abandonment now (same consent and caps)."""

    @api
    async def post(self, request: Request, cart_id: str) -> Response:
        detail = await shared_model().run(cart_detail, cart_id)
        if detail is None:
            raise HTTPProblem(404, f"no abandonment of cart {cart_id!r}")
        latest = detail["abandonments"][0]
        if latest["status"] != "abandoned":
            raise HTTPProblem(409, f"cart {cart_id!r} is {latest['status']}, not abandoned")
        result = await notifications.remind(latest["abandonment_id"], cart_id,
                                            latest["store_id"])
        return self.json(result.body, status=result.status)


@app.page("/cartwatch/api/carts.csv")
class CartsCsvView(View):
    """The matching abandoned carts as CSV, one line per SKU, streamed page by page."""

    @api
    async def get(self, request: Request) -> aioweb.StreamResponse:
        query, model = parse(request), shared_model()
        return await csv_download(
            request, "abandoned-carts.csv", [name for name, _ in CART_COLUMNS],
            lambda after: model.run(export_page, query, after))


@app.page("/cartwatch/api/customers.csv")
class CustomersCsvView(View):
    """Emails of the customers whose abandoned carts hold ``product`` (SKU or name)."""

    @api
    async def get(self, request: Request) -> aioweb.StreamResponse:
        query = parse(request)
        if not query.product:
            raise HTTPProblem(400, "product: give the SKU or product name to export for")
        rows = await shared_model().run(customers, query)
        response = csv_response("customers.csv")
        await response.prepare(request)  # type: ignore[arg-type]
        for chunk in csv_chunks(CUSTOMER_COLUMNS, rows):
            await response.write(chunk.encode())
        await response.write_eof()
        return response


@app.page("/cartwatch/api/insights/")
class InsightsView(View):
    """Per store and day or week: created, abandoned, reminded, recovered, rates, revenue."""

    @api
    async def get(self, request: Request) -> Response:
        period = request.query.get("period", "day")
        if period not in insights.PERIODS:
            raise HTTPProblem(400, f"period: use one of {list(insights.PERIODS)}")
        buckets = await shared_model().run(insight_buckets, parse(request), period)
        return self.json({"period": period, "buckets": buckets})


@app.page("/cartwatch/api/insights/campaigns/")
class CampaignResultsView(View):
    """Per store, campaign and variant (and each step): entered, sent, skipped by reason,
    clicked, recovered, recovery rate, revenue, revenue per reminder, and each variant's
    uplift in recovery rate over the holdout with a 95 % interval."""

    @api
    async def get(self, request: Request) -> Response:
        return self.json(await shared_model().run(campaign_results, parse(request)))


@app.page("/cartwatch/api/insights/campaigns.csv")
class CampaignResultsCsvView(View):
    """The campaign results as CSV: one line per variant (its totals and uplift), then one
    per step of it."""

    @api
    async def get(self, request: Request) -> aioweb.StreamResponse:
        answer = await shared_model().run(campaign_results, parse(request))
        response = csv_response("campaign-results.csv")
        await response.prepare(request)  # type: ignore[arg-type]
        for chunk in csv_chunks([name for name, _ in results.CSV_COLUMNS],
                                results.csv_rows(answer)):
            await response.write(chunk.encode())
        await response.write_eof()
        return response


@app.page("/cartwatch/api/log/")
class LogView(View):
    """The execution log: every reminder attempt, newest first, with status, reason, channel,
    step and time; filters and paging as query parameters."""

    @api
    async def get(self, request: Request) -> Response:
        return self.json(await shared_model().run(log_page, parse_log(request)))


@app.page("/cartwatch/api/log.csv")
class LogCsvView(View):
    """The matching reminder attempts as CSV (the log page's filters), streamed page by page."""

    @api
    async def get(self, request: Request) -> aioweb.StreamResponse:
        query, model = parse_log(request), shared_model()
        return await csv_download(
            request, "execution-log.csv", [name for name, _ in attempts.LOG_COLUMNS],
            lambda after: model.run(log_export_page, query, after))


@app.page("/cartwatch/api/operator-notifications/")
class OperatorNotificationsView(View):
    """The stores' operator notifications (``cartwatch-operator-notifications``), newest first."""

    @api
    async def get(self, request: Request) -> Response:
        stores = q.comma_list(request.query, "store")
        notices = await shared_model().run(operator_notices, stores)
        return self.json({"notifications": notices})


@app.page("/cartwatch/api/stores/")
class StoresView(View):
    """Every store the read model has seen (the dashboard's store selector)."""

    @api
    async def get(self, request: Request) -> Response:
        return self.json({"stores": await shared_model().run(store_ids)})


@app.page("/cartwatch/api/openapi.json")
class OpenApiView(View):
    """The OpenAPI 3.1 document of this API (checked in; no token, it holds no data)."""

    async def get(self, request: Request) -> Response:
        return aioweb.Response(  # type: ignore[return-value]
            body=OPENAPI.read_bytes(),
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"},
        )


@app.page("/cartwatch/unsubscribe/")
class UnsubscribeView(View):
    """The target of the signed unsubscribe links in reminders; the signature is the credential.

    GET only shows a confirmation form, so mail scanners that follow links unsubscribe nobody;
    POST (the form, or a one-click ``List-Unsubscribe-Post``) publishes the opt-out.
    """

    async def get(self, request: Request) -> Response:
        token = request.query.get("token", "")
        if not token:
            return page_response(400, "This unsubscribe link is incomplete.")
        return page_response(200, "Stop reminders about your shopping cart?", token)

    async def post(self, request: Request) -> Response:
        form = await request.post()
        token = str(form.get("token") or request.query.get("token", ""))
        if not token:
            return page_response(400, "This unsubscribe link is incomplete.")
        result = await notifications.unsubscribe(token, link_secret(), publish_unsubscribe)
        if "text/html" in request.headers.get("Accept", ""):
            message = ("You will get no more reminders from this shop." if result.status == 200
                       else "This unsubscribe link is not valid any more.")
            return page_response(result.status, message)
        return self.json(result.body, status=result.status)


CLICK_PUBLISH_TIMEOUT = 2.0
"""Seconds the click endpoint waits for the broker to take a click before it redirects anyway:
the shopper must reach the cart even while Kafka is away (that click is then not counted)."""


@app.page("/cartwatch/r/{token}")
class ClickView(View):
    """The target of every reminder's cart link: records a click, answers 302 to the cart.

    The signed click token says where to go and which reminder the link was in
    (``streams.notifier.tokens``). A forged, expired or malformed token gets a plain error page
    and records nothing. A request that the click rule refuses (``HEAD``, a prefetch, a robot
    or mail scanner: ``streams.notifier.clicks``) is redirected too, but not recorded.
    """

    async def get(self, request: Request, token: str) -> Response:
        return await follow_link(request, token)


async def follow_link(request: Request, token: str) -> Response:
    secret = link_secret()
    if secret is None:
        return page_response(503, "Reminder links are not set up on this server.",
                             title="Link")
    now = time.time()
    try:
        claims = verify_token(token, secret=secret, purpose="click", now=now)
    except InvalidToken as exc:
        worker_counters["link:refused"] += 1
        log.info("click link refused: %s", exc)
        expired = str(exc) == "token expired"
        return page_response(410 if expired else 400,
                             "This link has expired." if expired else "This link is not valid.",
                             title="Link")
    target = claims.target
    if claims.abandonment_id is None or not target or not target.startswith(("https://",
                                                                             "http://")):
        return page_response(400, "This link is not valid.", title="Link")
    headers = {key: value for key, value in request.headers.items()}
    verdict = clicks.verdict(clicks.ClickRequest(request.method, headers))
    if verdict == "click":
        record = clicks.click_record(claims, headers.get("User-Agent", ""), now,
                                     secrets.token_hex(16))
        await publish_click(claims.subject.encode(), record.model_dump_json().encode())
    else:
        worker_counters[f"link:{verdict}"] += 1
    return aioweb.Response(  # type: ignore[return-value]
        status=302, headers={"Location": target, "Cache-Control": "no-store",
                             "Referrer-Policy": "no-referrer"})


async def publish_click(key: bytes, value: bytes) -> None:
    """Send a click keyed by cart (on the cart's partition, for the lifecycle), waiting for the
    broker's acknowledgement at most ``CLICK_PUBLISH_TIMEOUT``."""
    try:
        acked = await clicks_topic.send(key=key, value=value)
        await asyncio.wait_for(asyncio.shield(acked), CLICK_PUBLISH_TIMEOUT)
    except (TimeoutError, KafkaError) as exc:
        worker_counters["link:unrecorded"] += 1
        log.warning("a click was not recorded (%s); redirecting anyway", type(exc).__name__)
        return
    worker_counters["link:click"] += 1


def link_secret() -> bytes | None:
    try:
        return settings.notifier.secret
    except RuntimeError:
        return None


async def publish_unsubscribe(key: bytes, value: bytes) -> None:
    await (await unsubscribes_topic.send(key=key, value=value))


def page_response(status: int, message: str, token: str | None = None,
                  title: str = "Unsubscribe") -> Response:
    """A minimal HTML page for people following a link from an email."""
    form = ""
    if token is not None:
        form = ('<form method="post"><input type="hidden" name="token" value="'
                f'{html.escape(token)}"><button type="submit">Unsubscribe</button></form>')
    body = (f'<!doctype html><html lang="en"><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title>"
            f"<p>{html.escape(message)}</p>{form}</html>")
    return aioweb.Response(  # type: ignore[return-value]
        status=status, body=body.encode(), content_type="text/html", charset="utf-8"
    )


Position = TypeVar("Position")


async def csv_download(
    request: Request, filename: str, header: list[str],
    page_after: Callable[[Position | None], Awaitable[tuple[list[list[str]], Position | None]]],
) -> aioweb.StreamResponse:
    """A CSV document streamed page by page (keyset pages: ``page_after(None)`` is the first,
    each returns its rows and where the next starts, None after the last). The first page is
    read before the response starts, so a read model that cannot answer still gets its 503."""
    rows, after = await page_after(None)

    async def pages() -> AsyncIterator[list[list[str]]]:
        nonlocal rows, after
        yield rows
        while after is not None:
            rows, after = await page_after(after)
            yield rows

    response = csv_response(filename)
    await response.prepare(request)  # type: ignore[arg-type]
    async for chunk in paged_csv(header, pages()):
        await response.write(chunk.encode())
    await response.write_eof()
    return response


def csv_response(filename: str) -> aioweb.StreamResponse:
    return aioweb.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    })


@page(app, "/metrics")
async def metrics(web: Web, request: Request) -> Response:
    """Prometheus metrics of this worker (text exposition format)."""
    if runtime.metrics is None:
        response = problem_response(503, "no metrics are connected to this web server")
    else:
        families = await runtime.metrics.collect(runtime.feed, runtime.shared)
        response = aioweb.Response(body=render(families).encode(),
                                   headers={"Content-Type": CONTENT_TYPE})
    return response  # type: ignore[return-value]


@page(app, "/livez")
async def livez(web: Web, request: Request) -> Response:
    """The process answers; checks no dependency, so a broker outage never restarts workers."""
    return web.json({"status": "alive"})


@page(app, "/readyz")
async def readyz(web: Web, request: Request) -> Response:
    """Ready to serve: partitions assigned and recovered, broker reachable, read model loaded."""
    status, body = readiness(await readiness_checks())
    return web.json(body, status=status)


async def readiness_checks() -> dict[str, bool]:
    feed = runtime.feed
    recovery = cast(TableManager, app.tables).recovery
    return {
        "partitions_assigned": bool(app.assignor.assigned_actives()),
        "tables_recovered": recovery.completed.is_set() and not app.rebalancing,
        "broker_reachable": feed is not None and await feed.broker_reachable(),
        "read_model_loaded": feed is not None and feed.loaded.is_set(),
        "read_model_reachable": await read_model_reachable(),
    }


async def read_model_reachable(timeout: float = 3.0) -> bool:
    """A round trip to the read model's database (always true for SQLite, or with none)."""
    if runtime.shared is None:
        return True
    try:
        await asyncio.wait_for(runtime.shared.run(lambda model: model.ping()), timeout)
    except (ReadModelUnavailable, TimeoutError):
        return False
    return True


READY_POLL_SECONDS = 0.5


def service_urls(bind: str, port: int) -> dict[str, str]:
    """Where a person finds this worker's pages (a wildcard bind is reached on localhost)."""
    host = "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind
    base = f"http://{host}:{port}"
    return {"dashboard": f"{base}/cartwatch/dashboard/", "api": f"{base}/cartwatch/api/carts/",
            "metrics": f"{base}/metrics", "readiness": f"{base}/readyz"}


def ready_announcement(urls: dict[str, str]) -> str:
    return "cartwatch is ready: " + " · ".join(f"{name} {url}" for name, url in urls.items())


@app.task
async def announce_when_ready() -> None:
    """Say once, in the log, where the dashboard and metrics are, when /readyz first says 200:
    the line a person running ``make run`` waits for."""
    while not all((await readiness_checks()).values()):
        await asyncio.sleep(READY_POLL_SECONDS)
    log.info(ready_announcement(service_urls(settings.web_bind, settings.web_port)))


@page(app, "/cartwatch/dashboard/")
async def dashboard(web: Web, request: Request) -> Response:
    """The operator dashboard (static HTML; data comes from the API with the token)."""
    return static_file("index.html")


@page(app, "/cartwatch/dashboard/{name}")
async def dashboard_asset(web: Web, request: Request, name: str) -> Response:
    return static_file(name)


def static_file(name: str) -> Response:
    suffix = Path(name).suffix
    resource = STATIC / name
    if suffix not in STATIC_TYPES or "/" in name or not resource.is_file():
        return problem_response(404, "not found")  # type: ignore[return-value]
    return aioweb.Response(  # type: ignore[return-value]
        body=resource.read_bytes(),
        headers={"Content-Type": f"{STATIC_TYPES[suffix]}; charset=utf-8",
                 "Cache-Control": "no-cache"},
    )

