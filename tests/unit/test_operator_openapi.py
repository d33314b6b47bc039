"""The checked-in OpenAPI document matches the routes, is valid OpenAPI 3.1, and the models it
was generated from accept what the handlers really answer."""

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

from schemas.common import utc_from_epoch
from schemas.notifications import NotificationLogEntry, OperatorNotification
from streams.assembly import app
from streams.operator import attempts, openapi, web
from streams.operator import query as q
from streams.operator.store import ReadModel
from tests.unit.factories import T0
from tests.unit.test_operator_readmodel import abandoned, recovered


def checked_in() -> dict[str, Any]:
    return json.loads(openapi.DOCUMENT.read_text())


def test_the_checked_in_document_is_what_the_routes_give() -> None:
    assert openapi.build(app.web.views) == checked_in(), (
        "stale: run python -m streams.operator.openapi")


def test_the_document_is_valid_openapi_3_1() -> None:
    document = checked_in()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_api_route_and_method_is_documented() -> None:
    documented = {(path, method) for path, item in checked_in()["paths"].items()
                  for method in item}
    assert documented == set(openapi.routes(app.web.views))
    assert ("/cartwatch/api/carts/{cart_id}/remind/", "post") in documented


def test_a_new_route_without_an_entry_is_refused() -> None:
    class Extra(web.View):
        async def get(self, request: Any) -> Any:
            """Not documented."""

    views = {**app.web.views, "/cartwatch/api/extra/": Extra.__new__(Extra)}
    with pytest.raises(KeyError, match="/cartwatch/api/extra/"):
        openapi.build(views)


def test_a_removed_route_changes_the_document() -> None:
    views = {path: view for path, view in app.web.views.items()
             if path != "/cartwatch/api/log/"}
    assert "/cartwatch/api/log/" not in openapi.build(views)["paths"]
    assert openapi.build(views) != checked_in()


def test_the_models_accept_real_answers() -> None:
    model = ReadModel()
    entry = NotificationLogEntry(abandonment_id="c1:1", cart_id="c1", store_id="s1", step=1,
                                 channel=None, status="skipped", reason="no_consent",
                                 at=utc_from_epoch(T0 + 1))
    model.write_batch([
        abandoned("c1", email="a@example.com"), recovered("c1"), entry,
        OperatorNotification(store_id="s1", event="skipped", abandonment_id="c1:1", step=1,
                             channel=None, detail="no_consent", at=utc_from_epoch(T0 + 1)),
    ], {})
    page = openapi.CartPage.model_validate(web.list_carts(model, q.CartQuery()))
    assert page.carts[0].reminders.last_reason == "no_consent"
    detail = openapi.CartDetail.model_validate(web.cart_detail(model, "c1"))
    assert detail.abandonments[0].reminders[0].status == "skipped"
    log = openapi.LogPage.model_validate(web.log_page(model, attempts.LogQuery()))
    assert log.attempts[0].reason == "no_consent"
    notices = web.operator_notices(model, ())
    assert openapi.Notices.model_validate({"notifications": notices}).notifications[0].step == 1
    assert openapi.Stores.model_validate({"stores": web.store_ids(model)}).stores == ["s1"]
