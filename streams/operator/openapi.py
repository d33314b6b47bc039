"""The OpenAPI 3.1 document of the operator API, generated from its routes and pydantic models.

``python -m streams.operator.openapi`` rewrites ``streams/operator/openapi.json`` (checked in and
served at ``/cartwatch/api/openapi.json``); ``--check`` exits 1 when the file is stale. The
paths and methods come from the views registered on the Faust app, the summaries from their
docstrings, the bodies from the models below, so ``tests/unit/test_operator_openapi.py`` fails
when a route is added or removed without regenerating the document.

The response models describe what ``streams.operator.web`` returns; they are documentation
(the handlers build plain dicts), so a test also checks a real answer against them.
"""

import argparse
import inspect
import json
import sys
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.notifications import LogStatus
from streams.operator.attempts import CHANNELS, LOG_COLUMNS, LOG_STATUSES
from streams.operator.query import COUNT_LIMIT

API_PREFIX = "/cartwatch/api/"
DOCUMENT = resources.files("streams.operator") / "openapi.json"
METHODS = ("get", "post", "put", "patch", "delete")


class Open(BaseModel):
    """Answers may gain fields; generated clients should keep unknown ones."""

    model_config = ConfigDict(extra="allow")


class Problem(BaseModel):
    error: str = Field(description="What went wrong, naming the parameter when one is bad")


class Line(Open):
    sku: str
    name: str | None
    quantity: int
    unit_price: str = Field(description="Decimal text, as published")
    line_total: str
    url: str | None
    image_url: str | None


class ReminderSummary(BaseModel):
    counts: dict[str, int] = Field(description="Attempts per status: sent, skipped, ...")
    last_status: LogStatus | None
    last_reason: str | None = Field(description="Why the latest attempt was skipped/deferred")
    last_at: float | None = Field(description="Epoch seconds of the latest attempt")


class Abandonment(Open):
    abandonment_id: str
    cart_id: str
    store_id: str
    sequence: int | None
    status: Literal["abandoned", "reactivated", "recovered"]
    created_at: float | None = Field(description="Epoch seconds, like every time here")
    last_activity_at: float | None
    abandoned_at: float
    reactivated_at: float | None
    recovered_at: float | None
    total: str | None
    currency: str | None
    item_count: int | None
    customer_name: str | None
    customer_email: str | None
    customer_phone: str | None
    marketing_consent: bool | None
    customer: dict[str, Any] | None
    cart_url: str | None
    order_id: str | None
    revenue: str | None
    revenue_currency: str | None
    seconds_to_recover: float | None
    reminder_sent: bool | None
    campaign: str | None = Field(None, description="The campaign it entered (once logged)")
    variant: str | None = None
    lines: list[Line]


class ListedCart(Abandonment):
    reminders: ReminderSummary


class CartPage(BaseModel):
    total: int = Field(description=f"Matching abandonments: exact up to {COUNT_LIMIT:,}; "
                       f"beyond, {COUNT_LIMIT:,} with total_exact false")
    total_exact: bool = Field(description=f"false when more than {COUNT_LIMIT:,} match "
                              "(total then means 'at least')")
    limit: int
    offset: int
    next: str | None = Field(description="pass as after= to get the page after this one "
                             "(null on the last page); deep pages cost no more than the first")
    carts: list[ListedCart]


class Attempt(Open):
    """One reminder attempt as the raw log stores it."""

    step: int | None
    channel: str
    status: LogStatus
    attempt: int
    at: float


class DetailedAbandonment(Abandonment):
    reminders: list[Attempt]


class CartDetail(BaseModel):
    cart_id: str
    store_id: str
    abandonments: list[DetailedAbandonment]


class RemindAccepted(Open):
    requested: bool
    abandonment_id: str
    note: str


class LogEntry(BaseModel):
    at: float
    store_id: str | None
    cart_id: str | None
    abandonment_id: str
    step: int | None
    channel: Literal["email", "webhook"] | None
    status: LogStatus
    reason: str | None
    error: str | None
    attempt: int
    deferred_until: float | None


class LogPage(BaseModel):
    total: int
    limit: int
    offset: int
    attempts: list[LogEntry]


class Notice(BaseModel):
    store_id: str
    event: LogStatus
    abandonment_id: str
    step: int
    channel: str | None
    detail: str | None
    at: float


class Notices(BaseModel):
    notifications: list[Notice]


class Stores(BaseModel):
    stores: list[str]


class InsightBucket(Open):
    store_id: str
    period_start: str = Field(description="UTC date the day or week (Monday) starts on")
    carts_created: int
    abandoned: int
    abandonment_rate: float | None
    reminded: int
    recovered: int
    recovered_after_reminder: int
    recovered_by_themselves: int
    recovery_rate: float | None
    recovered_revenue: dict[str, str]
    median_seconds_to_recover: float | None


class Insights(BaseModel):
    period: Literal["day", "week"]
    buckets: list[InsightBucket]


class StepResult(BaseModel):
    """Counts of one step of a variant (see the README, "Results per campaign")."""

    entered: int = Field(description="Abandonments of the variant that reached the step")
    sent: int
    failed: int = Field(description="Steps that failed for good")
    skipped: dict[str, int] = Field(description="Skipped steps per reason")
    clicked: int = Field(description="Abandonments with at least one counted click on a "
                                     "reminder link (of a step: on that step's link)")
    recovered: int = Field(description="Recoveries whose last reminder before the order was "
                                       "this step (of a variant: all its recoveries)")
    recovery_rate: float | None = Field(description="recovered / entered")
    revenue: dict[str, str] = Field(description="Revenue of those recoveries per currency")
    revenue_per_reminder: dict[str, str] = Field(description="revenue / sent per currency")


class Step(StepResult):
    step: int


class Uplift(BaseModel):
    difference: float = Field(description="Recovery rate minus the holdout's")
    low: float = Field(description="Lower bound of the 95 % interval (Newcombe)")
    high: float


class VariantResult(StepResult):
    variant: str
    holdout: bool
    reminded: int = Field(description="Abandonments sent at least one reminder")
    uplift: Uplift | None = Field(description="Over the campaign's holdout variants (none: "
                                              "a holdout, or a campaign without one)")
    steps: list[Step]


class CampaignResult(BaseModel):
    store_id: str
    campaign: str
    holdout_variants: list[str]
    variants: list[VariantResult]


class CampaignResults(BaseModel):
    uplift_method: Literal["newcombe-wilson"]
    confidence: float
    pending: int = Field(description="Abandonments in scope without a log entry yet, so "
                                     "without a known campaign")
    campaigns: list[CampaignResult]


def _param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


LIST = "comma-separated list"
SCOPE = [
    _param("store", f"store ids ({LIST})"),
    _param("since", "from this date or RFC 3339 time (inclusive)"),
    _param("until", "to this date or RFC 3339 time (exclusive)"),
]
PAGING = [
    _param("limit", "page size", {"type": "integer", "minimum": 1}),
    _param("offset", "rows to skip", {"type": "integer", "minimum": 0}),
]
CART_FILTERS = [
    *SCOPE,
    _param("status", f"abandoned, reactivated, recovered ({LIST})"),
    _param("product", "SKU or product name, substring, case-insensitive"),
    _param("customer", "name, email or phone, substring"),
    _param("min_total", "minimum cart total", {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}),
    _param("max_total", "maximum cart total", {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}),
]
CUSTOMER_FILTERS = [  # the customer export is for one product: the API refuses it without
    {**p, "required": True, "schema": {"type": "string", "minLength": 1}}
    if p["name"] == "product" else p
    for p in CART_FILTERS
]
LOG_FILTERS = [
    *SCOPE,
    _param("status", f"{', '.join(LOG_STATUSES)} ({LIST})"),
    _param("channel", f"{', '.join(CHANNELS)} ({LIST})"),
    _param("reason", f"skip or deferral reasons ({LIST})"),
    _param("cart", "a cart id or abandonment id"),
]
CSV = {"text/csv": {"schema": {"type": "string"}}}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/cartwatch/api/carts/", "get"): {"parameters": [
        *CART_FILTERS, *PAGING, _param("after", "the next of the previous page (instead of "
                                       "offset)")],
                                       "json": CartPage},
    ("/cartwatch/api/carts/{cart_id}/", "get"): {"json": CartDetail, "missing": True},
    ("/cartwatch/api/carts/{cart_id}/remind/", "post"): {
        "json": RemindAccepted, "status": "202", "missing": True,
        "also": {"409": "the latest abandonment is not abandoned any more",
                 "503": "the notifier does not take manual reminders on this worker"}},
    ("/cartwatch/api/carts.csv", "get"): {"parameters": CART_FILTERS, "csv": True},
    ("/cartwatch/api/customers.csv", "get"): {"parameters": CUSTOMER_FILTERS, "csv": True},
    ("/cartwatch/api/insights/", "get"): {
        "parameters": [_param("period", "bucket size", {"enum": ["day", "week"]}), *SCOPE],
        "json": Insights},
    ("/cartwatch/api/insights/campaigns/", "get"): {"parameters": SCOPE,
                                                    "json": CampaignResults},
    ("/cartwatch/api/insights/campaigns.csv", "get"): {"parameters": SCOPE, "csv": True},
    ("/cartwatch/api/log/", "get"): {"parameters": [*LOG_FILTERS, *PAGING], "json": LogPage},
    ("/cartwatch/api/log.csv", "get"): {"parameters": LOG_FILTERS, "csv": True},
    ("/cartwatch/api/operator-notifications/", "get"): {
        "parameters": [_param("store", f"store ids ({LIST})")], "json": Notices},
    ("/cartwatch/api/stores/", "get"): {"json": Stores},
    ("/cartwatch/api/openapi.json", "get"): {"public": True, "document": True},
}
"""What the routes take and answer, by (path, method); the routes themselves come from the app."""


def routes(views: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """``(path, method) -> docstring`` of the API views registered on the web server."""
    found = {}
    for path, view in views.items():
        if not path.startswith(API_PREFIX):
            continue
        cls = type(view)
        for method in METHODS:
            if method in vars(cls):
                found[(path, method)] = inspect.getdoc(cls) or ""
    return found


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}


def build(views: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAPI document of the registered API routes; every route must be in OPERATIONS."""
    found = routes(views)
    undocumented = sorted(set(found) - set(OPERATIONS))
    if undocumented:
        raise KeyError(f"routes without an OPERATIONS entry: {undocumented}")
    models: list[type[BaseModel]] = [Problem]
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), doc in sorted(found.items()):
        spec = OPERATIONS[(path, method)]
        summary, _, description = doc.partition("\n\n")
        operation: dict[str, Any] = {
            "operationId": path.removeprefix(API_PREFIX).strip("/").replace("/", "_")
            .replace(".", "_").replace("{", "").replace("}", "").replace("-", "_") + f"_{method}",
            "summary": " ".join(summary.split()),
        }
        if description:
            operation["description"] = " ".join(description.split())
        parameters = list(spec.get("parameters", []))
        if "{" in path:
            name = path.split("{")[1].split("}")[0]
            parameters.insert(0, {"name": name, "in": "path", "required": True,
                                  "schema": {"type": "string"}})
        if parameters:
            operation["parameters"] = parameters
        responses: dict[str, Any] = {}
        if spec.get("document"):
            responses["200"] = {"description": "this document",
                                "content": {"application/json": {"schema": {"type": "object"}}}}
        elif spec.get("csv"):
            responses["200"] = {"description": "CSV with a header line", "content": CSV}
        else:
            model = spec["json"]
            models.append(model)
            responses[spec.get("status", "200")] = {"description": "OK", "content": _json(model)}
        if not spec.get("public"):
            operation["security"] = [{"bearer": []}]
            responses["400"] = {"description": "a parameter is wrong", "content": _json(Problem)}
            responses["401"] = {"description": "missing or wrong bearer token",
                                "content": _json(Problem)}
            responses["503"] = {"description": "this worker has no read model (yet)",
                                "content": _json(Problem)}
        if spec.get("missing"):
            responses["404"] = {"description": "no such cart", "content": _json(Problem)}
        for status, text in spec.get("also", {}).items():
            responses[status] = {"description": text, "content": _json(Problem)}
        operation["responses"] = dict(sorted(responses.items()))
        paths.setdefault(path, {})[method] = operation
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}",
                                         mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cartwatch operator API",
            "version": "1",
            "description": (
                "Abandoned carts, reminder attempts, operator notifications and insights, "
                "answered by any worker from its read model of all partitions. Times are epoch "
                "seconds (UTC). Columns of the CSV exports are listed in the README; the log "
                f"export's are: {', '.join(name for name, _ in LOG_COLUMNS)}."),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "CARTWATCH_API_TOKEN; not needed when none is configured"}},
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the checked-in document is not what the routes give")
    args = parser.parse_args(argv)
    from streams.assembly import app  # the views register on import

    text = render(build(app.web.views))
    path = DOCUMENT
    if args.check:
        if path.read_text() != text:
            print(f"{path} is stale: run python -m streams.operator.openapi", file=sys.stderr)
            return 1
        return 0
    with resources.as_file(path) as target:
        target.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
