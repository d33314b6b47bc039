"""Read model, filters and CSV rows of the operator surface, on both backends: an in-memory
SQLite and a database of the harness's PostgreSQL server, with the same expected results."""

import csv
import io
import json
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.common import utc_from_epoch
from schemas.events import CartEvent
from schemas.notifications import NotificationLogEntry
from schemas.outputs import (
    CartAbandoned,
    CartLine,
    CartReactivated,
    CartRecovered,
    CartSnapshot,
)
from streams.operator import insights, web
from streams.operator import query as q
from streams.operator.export import CART_COLUMNS, cart_row, cell, csv_chunks, paged_csv
from streams.operator.store import ReadModel, row_dict, sql_functions
from tests.unit.factories import DAY, HOUR, T0


def abandoned(cart_id: str, store: str = "s1", at: float = T0, seq: int = 1,
              lines: tuple[tuple[str, str, int, str], ...] = (("MUG", "Blue mug", 1, "10.00"),),
              **customer: object) -> CartAbandoned:
    cart_lines = [
        CartLine(sku=sku, name=name, quantity=qty, unit_price=Decimal(price),
                 line_total=Decimal(price) * qty)
        for sku, name, qty, price in lines
    ]
    return CartAbandoned(
        abandonment_id=f"{cart_id}:{seq}", sequence=seq, cart_id=cart_id, store_id=store,
        cart=CartSnapshot(
            lines=cart_lines, item_count=sum(line.quantity for line in cart_lines),
            total=sum((line.line_total for line in cart_lines), Decimal(0)), currency="EUR",
            customer=customer or None, cart_url=f"https://shop.example/{cart_id}",
        ),
        created_at=utc_from_epoch(at - 100), last_activity_at=utc_from_epoch(at - 60),
        abandoned_at=utc_from_epoch(at),
    )


def recovered(cart_id: str, at: float = T0, after: float = 600.0, revenue: str = "10.00",
              reminded: bool = False, seq: int = 1, store: str = "s1",
              currency: str = "EUR") -> CartRecovered:
    return CartRecovered(
        abandonment_id=f"{cart_id}:{seq}", cart_id=cart_id, store_id=store,
        order_id=f"o-{cart_id}", revenue=Decimal(revenue), currency=currency,
        abandoned_at=utc_from_epoch(at), recovered_at=utc_from_epoch(at + after),
        seconds_to_recover=after, reminder_sent=reminded,
    )


def reactivated(cart_id: str, at: float = T0) -> CartReactivated:
    return CartReactivated(
        abandonment_id=f"{cart_id}:1", cart_id=cart_id, store_id="s1", event_id="e",
        abandoned_at=utc_from_epoch(at), reactivated_at=utc_from_epoch(at + 5),
    )


def statuses(model: ReadModel) -> dict[str, str]:
    return {row["abandonment_id"]: row["status"]
            for row in model.query("SELECT * FROM abandonments")}


def test_status_only_moves_forward_whatever_the_arrival_order(model: ReadModel) -> None:
    model.write_batch([recovered("a"), abandoned("a")], {("t", 0): 2})
    model.write_batch([reactivated("b"), abandoned("b"), reactivated("b")], {})
    model.write_batch([abandoned("c"), reactivated("c"), recovered("c"), reactivated("c")], {})
    assert statuses(model) == {"a:1": "recovered", "b:1": "reactivated", "c:1": "recovered"}
    [row] = model.query("SELECT * FROM abandonments WHERE abandonment_id = 'a:1'")
    assert (row["order_id"], row["revenue"], row["total"], row["item_count"]) == (
        "o-a", "10.00", "10.00", 1)
    assert model.offsets().positions == {("t", 0): 2}


def test_replayed_abandonment_keeps_one_row_and_its_lines(model: ReadModel) -> None:
    record = abandoned("a", lines=(("MUG", "Mug", 2, "5.00"), ("TEA", "Tea", 1, "3.50")))
    model.write_batch([record, record], {})
    assert model.sizes() == {"abandonments": 1, "lines": 2, "notifications": 0,
                             "operator_notices": 0, "carts": 0, "clicks": 0}
    assert [line["sku"] for line in model.lines_of(["a:1"])["a:1"]] == ["MUG", "TEA"]


def test_a_late_batch_of_a_lost_partition_changes_nothing(model: ReadModel) -> None:
    """A feeder that lost a partition in a rebalance commits its batch after the new owner
    wrote further: rows and offsets stay as the new owner left them."""
    model.write_batch([abandoned("a"), recovered("a")], {("t", 0): 7, ("t", 1): 3})
    model.write_batch([abandoned("a")], {("t", 0): 5})
    assert statuses(model) == {"a:1": "recovered"}
    assert model.offsets().positions == {("t", 0): 7, ("t", 1): 3}


def test_failed_batch_writes_nothing(model: ReadModel) -> None:
    with pytest.raises(TypeError):
        model.write_batch([abandoned("a"), object()], {("t", 0): 5})
    assert model.sizes()["abandonments"] == 0 and model.offsets().positions == {}


def test_a_batch_the_database_refuses_writes_nothing_and_the_next_one_is_written(
        model: ReadModel) -> None:
    # two lines of one SKU break the lines' primary key on the server, mid-batch (PostgreSQL
    # sends the batch in pipeline mode: the error arrives after later statements were sent)
    twice = abandoned("b", lines=(("MUG", "Mug", 1, "5.00"), ("MUG", "Mug", 1, "5.00")))
    with pytest.raises(Exception, match="(?i)unique|primary key"):
        model.write_batch([abandoned("a"), twice, abandoned("c")], {("t", 0): 5})
    assert model.sizes()["abandonments"] == 0 and model.offsets().positions == {}
    model.write_batch([abandoned("a")], {("t", 0): 1})
    assert model.sizes()["abandonments"] == 1 and model.offsets().positions == {("t", 0): 1}


def test_created_carts_keep_their_earliest_event(model: ReadModel) -> None:
    def event(when: float) -> CartEvent:
        return CartEvent(event_id=f"e{when}", type="cart_viewed", cart_id="c", store_id="s1",
                         occurred_at=utc_from_epoch(when))
    model.write_batch([event(T0 + 5), event(T0), event(T0 + 9)], {})
    assert [tuple(row) for row in model.query("SELECT * FROM carts")] == [("c", "s1", T0)]


def test_notification_log_entries_are_counted_once(model: ReadModel) -> None:
    entry = NotificationLogEntry(abandonment_id="a:1", cart_id="a", store_id="s1", step=1,
                                 channel="email", status="sent", attempt=1,
                                 at=utc_from_epoch(T0))
    skipped = entry.model_copy(update={"status": "skipped", "channel": None, "attempt": 0})
    model.write_batch([entry, entry, skipped], {})
    assert model.notification_counts() == {"sent": 1, "skipped": 1}


@pytest.fixture
def shop(model: ReadModel) -> ReadModel:
    model.write_batch([
        abandoned("c1", at=T0, name="Ann Lee", email="ann@example.com", phone="+49 151 2345"),
        abandoned("c2", at=T0 + HOUR, lines=(("TEA", "Green tea", 3, "4.99"),),
                  name="Bob", email="bob@example.org"),
        abandoned("c3", store="s2", at=T0 + DAY,
                  lines=(("MUG", "Blue mug", 1, "10.00"), ("50%_OFF", "Promo", 1, "0.00"))),
        recovered("c1"),
    ], {})
    return model


def found(model: ReadModel, **params: str) -> list[str]:
    query = q.parse_query(params, max_page_size=100)
    return [row["abandonment_id"] for row in model.query(*q.list_sql(query))][:query.limit]


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["c3:1", "c2:1", "c1:1"]),
    ({"store": "s1"}, ["c2:1", "c1:1"]),
    ({"store": "s1,s2", "status": "recovered"}, ["c1:1"]),
    ({"status": "abandoned"}, ["c3:1", "c2:1"]),
    ({"since": "2024-01-01T00:30:00Z"}, ["c3:1", "c2:1"]),
    ({"until": "2024-01-02"}, ["c2:1", "c1:1"]),
    ({"product": "mug"}, ["c3:1", "c1:1"]),
    ({"product": "GREEN"}, ["c2:1"]),
    ({"product": "50%"}, ["c3:1"]),
    ({"product": "%"}, ["c3:1"]),
    ({"product": "m%g"}, []),
    ({"product": "_ug"}, []),
    ({"customer": "ann"}, ["c1:1"]),
    ({"customer": "EXAMPLE.ORG"}, ["c2:1"]),
    ({"customer": "151-2345"}, ["c1:1"]),
    ({"customer": "bob2345"}, []),
    ({"min_total": "10.00"}, ["c3:1", "c2:1", "c1:1"]),
    ({"min_total": "10.01"}, ["c2:1"]),
    ({"max_total": "10"}, ["c3:1", "c1:1"]),
    ({"limit": "2"}, ["c3:1", "c2:1"]),
    ({"limit": "2", "offset": "2"}, ["c1:1"]),
])
def test_filters(shop: ReadModel, params: dict[str, str], expected: list[str]) -> None:
    assert found(shop, **params) == expected
    sql, args = q.match_keys_sql(q.parse_query({**params, "limit": "100", "offset": "0"}, 100))
    assert sorted(row[1] for row in shop.query(sql, args)) == sorted(
        found(shop, **{**params, "limit": "100", "offset": "0"}))


def test_the_count_stops_one_past_its_limit(shop: ReadModel) -> None:
    """Three carts match: counted exactly under a limit of 3, as "more than 2" under 2."""
    everything = q.parse_query({}, 100)
    assert len(shop.query(*q.match_keys_sql(everything, limit=3))) == 3
    assert len(shop.query(*q.match_keys_sql(everything, limit=2))) == 3
    assert len(shop.query(*q.match_keys_sql(everything, limit=1))) == 2


KEYS = [(5.0, "b"), (7.0, "z"), (5.0, "a"), (7.0, "y"), (1.0, "c"), (5.0, "ä")]
"""Ties of times, broken by the id's code points (as the databases' byte order does)."""


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ["y", "z", "a", "b", "ä", "c"]),
    ({"limit": "2"}, ["y", "z", "a"]),
    ({"limit": "2", "offset": "4"}, ["ä", "c"]),
    ({"limit": "2", "offset": "6"}, []),
    ({"limit": "2", "after": q.encode_cursor((7.0, "z"))}, ["a", "b", "ä"]),
    ({"limit": "2", "after": q.encode_cursor((5.0, "aa"))}, ["b", "ä", "c"]),
    ({"limit": "9", "after": q.encode_cursor((1.0, "c"))}, []),
])
def test_a_page_from_every_matching_key(params: dict[str, str], expected: list[str]) -> None:
    """The page and the one row after it (which tells that a next page exists)."""
    page = q.page_keys(KEYS, q.parse_query(params, 100))
    assert [key[1] for key in page] == expected


@pytest.fixture(params=[q.COUNT_LIMIT, 2], ids=["all-matches-counted", "more-than-counted"])
def count_limit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Both ways to a page: sorted from the keys of every match, or the list's own query when
    there are more matches than a count takes."""
    monkeypatch.setattr(q, "COUNT_LIMIT", request.param)
    return int(request.param)


@pytest.mark.parametrize("params", [{}, {"store": "s1"}, {"product": "mug"}, {"product": "x"}])
def test_every_page_of_the_list_gives_the_counted_total(
        shop: ReadModel, params: dict[str, str], count_limit: int) -> None:
    everything = found(shop, **params, limit="100")
    expected = (min(len(everything), count_limit), len(everything) <= count_limit)
    for limit in range(1, 5):
        for offset in range(5):
            page = web.list_carts(shop, q.parse_query(
                {**params, "limit": str(limit), "offset": str(offset)}, 100))
            assert (page["total"], page["total_exact"]) == expected, (limit, offset)
            assert [cart["abandonment_id"] for cart in page["carts"]] == everything[
                offset:offset + limit]


@pytest.mark.parametrize("params", [{}, {"store": "s1"}, {"product": "mug"}])
def test_paging_by_next_lists_every_match_once_in_order(
        shop: ReadModel, params: dict[str, str], count_limit: int) -> None:
    """Ties of ``abandoned_at`` too: the id breaks them, as in the list order."""
    shop.write_batch([abandoned(f"t{n}", at=T0 + HOUR, lines=(("MUG", "Mug", 1, "1.00"),))
                      for n in range(5)], {})
    everything = found(shop, **params, limit="100")
    for limit in (1, 2, 3):
        listed: list[str] = []
        after = None
        while True:
            page = web.list_carts(shop, q.parse_query(
                {**params, "limit": str(limit), **({"after": after} if after else {})}, 100))
            listed += [cart["abandonment_id"] for cart in page["carts"]]
            assert page["total"] == min(len(everything), count_limit)
            after = page["next"]
            if after is None:
                break
            assert len(page["carts"]) == limit
        assert listed == everything, limit


@pytest.mark.parametrize("key", [(0.0, ""), (1.7e9 + 0.123456789, "c:1"), (5.0, "ä/+=?&")])
def test_cursors_give_back_their_key(key: tuple[float, str]) -> None:
    cursor = q.encode_cursor(key)
    assert q.decode_cursor(cursor) == key
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


@pytest.mark.parametrize("cursor", ["", "!!", "bm90IGpzb24", q.encode_cursor((1.0, "a"))[:-2],
                                    "WzEsMiwzXQ", "WyJ4IiwgImEiXQ", "W3RydWUsICJhIl0",
                                    "W05hTiwgImEiXQ", "WzEuMCwgMl0"])
def test_a_cursor_no_page_gave_is_refused(cursor: str) -> None:
    with pytest.raises(q.QueryError, match="after"):
        q.decode_cursor(cursor) if cursor else q.parse_query({"after": "x"}, 100)


def test_after_and_offset_together_are_refused() -> None:
    with pytest.raises(q.QueryError, match="not both"):
        q.parse_query({"after": q.encode_cursor((1.0, "a")), "offset": "50"}, 100)


@pytest.mark.parametrize(("params", "message"), [
    ({"status": "lost"}, "status"),
    ({"since": "yesterday"}, "since"),
    ({"min_total": "ten"}, "min_total"),
    ({"max_total": "NaN"}, "max_total"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"offset": "-1"}, "offset"),
])
def test_bad_parameters_are_named(params: dict[str, str], message: str) -> None:
    with pytest.raises(q.QueryError, match=message):
        q.parse_query(params, max_page_size=100)


def test_export_has_one_line_per_sku(shop: ReadModel) -> None:
    query = q.parse_query({}, 100)
    rows: list[list[str]] = []
    after = None
    while page := shop.query(*q.keyset_sql(query, after, 2)):
        lines = shop.lines_of([row["abandonment_id"] for row in page])
        rows += [cart_row(row, line) for row in page for line in lines[row["abandonment_id"]]]
        after = (page[-1]["abandoned_at"], page[-1]["abandonment_id"])
    text = "".join(csv_chunks([name for name, _ in CART_COLUMNS], rows, every=1))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [(r["abandonment_id"], r["sku"], r["quantity"], r["line_total"]) for r in parsed] == [
        ("c3:1", "MUG", "1", "10.00"), ("c3:1", "50%_OFF", "1", "0.00"),
        ("c2:1", "TEA", "3", "14.97"), ("c1:1", "MUG", "1", "10.00"),
    ]
    first = parsed[-1]
    assert first["status"] == "recovered" and first["revenue"] == "10.00"
    assert first["abandoned_at"] == "2024-01-01T00:00:00Z"
    assert first["customer_email"] == "ann@example.com" and first["cart_total"] == "10.00"


async def test_paged_export_writes_the_header_once_and_no_empty_line() -> None:
    """Pages, the last one empty as the database's, join into one CSV with no blank line."""
    async def pages():  # type: ignore[no-untyped-def]
        for page in ([["a", "1"], ["b", "2"]], [["c", "3"]], []):
            yield page

    text = "".join([chunk async for chunk in paged_csv(["name", "n"], pages(), every=1)])
    assert text == "name,n\r\na,1\r\nb,2\r\nc,3\r\n"


async def test_an_empty_export_is_its_header() -> None:
    async def pages():  # type: ignore[no-untyped-def]
        yield []

    assert "".join([chunk async for chunk in paged_csv(["name"], pages())]) == "name\r\n"


def test_cells_defuse_spreadsheet_formulas() -> None:
    assert cell("product_name", "=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert cell("customer_name", "@SUM") == "'@SUM"
    assert cell("cart_total", "10.00") == "10.00"
    assert cell("reminder_sent", 0) == "false"
    assert cell("recovered_at", None) == ""


def test_customers_are_distinct_with_their_newest_values(shop: ReadModel) -> None:
    shop.write_batch([abandoned("c1", seq=2, at=T0 + 2 * DAY, name="Ann L.",
                                email="ann@example.com")], {})
    sql, args = q.customers_sql(q.parse_query({"product": "MUG"}, 100))
    rows = [dict(row) for row in shop.query(sql, args)]
    assert [(r["email"], r["name"], r["carts"]) for r in rows] == [("ann@example.com", "Ann L.", 2)]


def test_row_dict_hides_internal_columns(shop: ReadModel) -> None:
    [row] = shop.query("SELECT * FROM abandonments WHERE cart_id = 'c1'")
    data = row_dict(row)
    assert data["customer"] == {"email": "ann@example.com", "name": "Ann Lee",
                                "phone": "+49 151 2345"}
    assert "phone_digits" not in data and "status_rank" not in data
    assert data["reminder_sent"] is False


def test_created_carts_in_scope(model: ReadModel) -> None:
    def cart(cart_id: str, store: str, when: float) -> CartEvent:
        return CartEvent(event_id=cart_id, type="cart_viewed", cart_id=cart_id, store_id=store,
                         occurred_at=utc_from_epoch(when))
    model.write_batch([cart("a", "s1", T0), cart("b", "s1", T0 + DAY), cart("c", "s2", T0),
                       cart("d", "s1", T0 + 10)], {})
    query = q.parse_query({"store": "s1", "since": "2024-01-01", "until": "2024-01-02"}, 100)
    assert [tuple(row) for row in model.query(*insights.created_sql(query, "day"))] == [
        ("s1", T0 // DAY, 2)]
    everything = model.query(*insights.created_sql(q.parse_query({}, 100), "week"))
    assert sorted(tuple(row) for row in everything) == [
        ("s1", (T0 // DAY + 3) // 7, 3), ("s2", (T0 // DAY + 3) // 7, 1)]


def log_entry(abandonment_id: str, step: int = 1, status: str = "sent", at: float = T0 + HOUR,
              reason: str | None = None, campaign: str | None = "big",
              variant: str | None = "a") -> NotificationLogEntry:
    cart_id = abandonment_id.split(":")[0]
    return NotificationLogEntry(abandonment_id=abandonment_id, cart_id=cart_id, store_id="s1",
                                step=step, channel="email" if status == "sent" else None,
                                status=status, reason=reason, at=utc_from_epoch(at),
                                campaign=campaign, variant=variant)


def campaigns(model: ReadModel) -> dict[str, tuple[str | None, str | None]]:
    return {row[0]: (row[1], row[2]) for row in model.query(
        "SELECT abandonment_id, campaign, variant FROM abandonments")}


@pytest.mark.parametrize("log_first", [False, True], ids=["abandonment-first", "log-first"])
def test_an_abandonment_gets_the_campaign_its_log_entries_name(model: ReadModel,
                                                               log_first: bool) -> None:
    """The log and the abandonment come from different topics, read in any order."""
    records: list[object] = [abandoned("c1"), abandoned("c2"), recovered("c3")]
    logs: list[object] = [log_entry("c1:1"), log_entry("c3:1", reason="cart_recovered",
                                                       status="skipped", variant="holdout"),
                          log_entry("c2:1", reason="no_campaign", status="skipped",
                                    campaign=None, variant=None)]
    model.write_batch(logs + records if log_first else records + logs, {})
    assert campaigns(model) == {"c1:1": ("big", "a"), "c2:1": (None, None),
                                "c3:1": ("big", "holdout")}
    [entry] = model.query("SELECT campaign, variant FROM notifications WHERE step = 1 AND "
                          "abandonment_id = 'c1:1'")
    assert tuple(entry) == ("big", "a")


# -- insights: aggregated by the database (#18) -------------------------------------------


def insights_before_18(model: ReadModel, query: q.CartQuery, period: str) -> list[dict]:
    """The oracle: the insights as the API computed them before #18, in Python from one row
    per abandonment and per created cart, periods by the calendar."""
    def start(seconds: float) -> str:
        day = datetime.fromtimestamp(seconds, UTC).date()
        return (day - timedelta(days=day.weekday() if period == "week" else 0)).isoformat()

    found: dict[tuple[str, str], dict] = {}

    def bucket(store: str, seconds: float) -> dict:
        return found.setdefault((store, start(seconds)), {
            "created": 0, "abandoned": 0, "reminded": 0, "recovered": 0, "after_reminder": 0,
            "revenue": {}, "times": []})

    conditions, params = q.scope_conditions(query, "store_id", "created_at")
    for store, created_at in model.query(
            f"SELECT store_id, created_at FROM carts WHERE {' AND '.join(conditions) or 'TRUE'}",
            params):
        bucket(store, created_at)["created"] += 1
    where, params = q.where_clause(query)
    for store, at, status, revenue, currency, seconds, reminded in model.query(
            "SELECT a.store_id, a.abandoned_at, a.status, a.revenue, a.revenue_currency, "
            "a.seconds_to_recover, coalesce(a.reminder_sent, 0) <> 0 OR EXISTS (SELECT 1 FROM "
            "notifications n WHERE n.abandonment_id = a.abandonment_id AND n.status = 'sent') "
            f"FROM abandonments a WHERE {where}", params):
        figures = bucket(store, at)
        figures["abandoned"] += 1
        figures["reminded"] += bool(reminded)
        if status == "recovered":
            figures["recovered"] += 1
            figures["after_reminder"] += bool(reminded)
            if revenue is not None and currency:
                figures["revenue"][currency] = (
                    figures["revenue"].get(currency, Decimal(0)) + Decimal(revenue))
            if seconds is not None:
                figures["times"].append(seconds)

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    return [{
        "store_id": store, "period_start": day, "carts_created": f["created"],
        "abandoned": f["abandoned"], "abandonment_rate": share(f["abandoned"], f["created"]),
        "reminded": f["reminded"], "recovered": f["recovered"],
        "recovered_after_reminder": f["after_reminder"],
        "recovered_by_themselves": f["recovered"] - f["after_reminder"],
        "recovery_rate": share(f["recovered"], f["abandoned"]),
        "recovered_revenue": {c: format(a, "f") for c, a in sorted(f["revenue"].items())},
        "median_seconds_to_recover": statistics.median(f["times"]) if f["times"] else None,
    } for (store, day), f in sorted(found.items())]


def write_insight_shop(model: ReadModel) -> None:
    """Three stores over two weeks and a day (T0 is Monday 2024-01-01, midnight UTC) with every
    kind of figure, periods' edges to the millisecond, and an odd and an even median."""
    def cart(cart_id: str, store: str, when: float) -> CartEvent:
        return CartEvent(event_id=f"e-{cart_id}", type="cart_viewed", cart_id=cart_id,
                         store_id=store, occurred_at=utc_from_epoch(when))

    sunday, next_monday = T0 - 0.001, T0 + 7 * DAY
    records: list[object] = [
        cart(f"k{n}", "s1", T0 + n * 600) for n in range(12)] + [
        cart("k-sun", "s1", sunday), cart("k-mon", "s1", next_monday),
        cart("k-s2", "s2", T0 + 5), cart("k-s3", "s3", T0 + DAY - 0.001),
        cart("k-s3b", "s3", T0 + DAY),
    ]
    records += [
        abandoned("a1", at=sunday),
        abandoned("a2", at=T0), recovered("a2", at=T0, after=100.1, revenue="10.00",
                                          reminded=True),
        abandoned("a3", at=T0 + HOUR), recovered("a3", at=T0 + HOUR, after=200.7, revenue="5.5"),
        abandoned("a4", at=T0 + 2 * HOUR),
        recovered("a4", at=T0 + 2 * HOUR, after=50, revenue="3", currency="USD"),
        log_entry("a4:1"),  # reminded by the log, not by its recovery
        abandoned("a5", at=T0 + 3 * HOUR), reactivated("a5", at=T0 + 3 * HOUR),
        log_entry("a5:1"),
        abandoned("a6", at=T0 + 4 * HOUR), log_entry("a6:1", status="skipped", reason="quiet"),
        abandoned("a7", at=T0 + DAY - 0.001),
        recovered("a7", at=T0 + DAY - 0.001, after=70),  # its revenue is removed below
        abandoned("a8", at=T0 + 6 * DAY + 23 * HOUR),
        recovered("a8", at=T0 + 6 * DAY + 23 * HOUR, after=30, revenue="0.10", currency="GBP"),
        abandoned("a9", at=next_monday), recovered("a9", at=next_monday, after=60.5),
        abandoned("a10", at=next_monday + 1),
        recovered("a10", at=next_monday + 1, after=0.3, revenue="1234.567", currency="USD"),
    ]
    for n, (after, revenue, currency, reminded) in enumerate([
            (10.0, "19.99", "EUR", True), (20.0, "0.01", "EUR", False),
            (30.25, "100", "USD", False), (40.0, "0.00", "EUR", True)]):
        at = T0 + 5 + n
        records += [abandoned(f"b{n}", store="s2", at=at),
                    recovered(f"b{n}", store="s2", at=at, after=after, revenue=revenue,
                              currency=currency, reminded=reminded)]
    records += [abandoned("b9", store="s2", at=T0 + 2 * DAY),
                abandoned("d1", store="s4", at=T0 + 3 * DAY)]  # no created carts in s4
    model.write_batch(records, {})
    # recovered without revenue (a7), without seconds (a7) and without a currency (a9)
    model.db.execute("UPDATE abandonments SET revenue = NULL, seconds_to_recover = NULL "
                     "WHERE abandonment_id = 'a7:1'")
    model.db.execute("UPDATE abandonments SET revenue_currency = '' "
                     "WHERE abandonment_id = 'a9:1'")


INSIGHT_SCOPES = [{}, {"store": "s2"}, {"store": "s1,s3", "since": "2024-01-01",
                                        "until": "2024-01-08T00:00:00.5Z"},
                  {"status": "recovered"}, {"status": "abandoned,reactivated"},
                  {"product": "mug"}, {"store": "nowhere"}]


@pytest.mark.parametrize("period", ["day", "week"])
def test_insights_aggregated_by_the_database_equal_the_python_ones(
        model: ReadModel, period: insights.Period) -> None:
    from streams.operator.web import insight_buckets

    write_insight_shop(model)
    for params in INSIGHT_SCOPES:
        query = q.parse_query(params, 100)
        answer = insight_buckets(model, query, period)
        assert json.dumps(answer) == json.dumps(insights_before_18(model, query, period)), params


def test_insights_figures(model: ReadModel) -> None:
    from streams.operator.web import insight_buckets

    write_insight_shop(model)
    days = {(b["store_id"], b["period_start"]): b
            for b in insight_buckets(model, q.CartQuery(), "day")}
    assert days[("s1", "2024-01-01")] == {
        "store_id": "s1", "period_start": "2024-01-01", "carts_created": 12, "abandoned": 6,
        "abandonment_rate": 0.5, "reminded": 3, "recovered": 4, "recovered_after_reminder": 2,
        "recovered_by_themselves": 2, "recovery_rate": 0.6667,
        "recovered_revenue": {"EUR": "15.50", "USD": "3"}, "median_seconds_to_recover": 100.1}
    assert days[("s1", "2023-12-31")]["abandoned"] == 1
    assert days[("s2", "2024-01-01")]["recovered_revenue"] == {"EUR": "20.00", "USD": "100"}
    assert days[("s2", "2024-01-01")]["median_seconds_to_recover"] == (20.0 + 30.25) / 2
    assert days[("s2", "2024-01-03")]["recovered_revenue"] == {}
    assert days[("s3", "2024-01-02")]["abandoned"] == 0
    assert days[("s4", "2024-01-04")]["abandonment_rate"] is None
    weeks = {(b["store_id"], b["period_start"]): b
             for b in insight_buckets(model, q.CartQuery(), "week")}
    assert weeks[("s1", "2023-12-25")]["carts_created"] == 1
    assert weeks[("s1", "2024-01-01")]["recovered_revenue"] == {
        "EUR": "15.50", "GBP": "0.10", "USD": "3"}
    assert weeks[("s1", "2024-01-08")]["recovered_revenue"] == {"USD": "1234.567"}
    assert weeks[("s1", "2024-01-08")]["median_seconds_to_recover"] == (0.3 + 60.5) / 2


def test_sqlite_without_its_math_functions_answers_the_same() -> None:
    from streams.operator.web import insight_buckets

    model = ReadModel()
    write_insight_shop(model)
    built_in = [insight_buckets(model, q.CartQuery(), period) for period in ("day", "week")]
    sql_functions(model.db, floor=True)
    assert model.query("SELECT floor(-0.5), floor(2), floor(NULL)")[0][:] == (-1.0, 2, None)
    assert [insight_buckets(model, q.CartQuery(), period)
            for period in ("day", "week")] == built_in


def test_the_insights_aggregates_sum_decimals_exactly_and_take_the_median(
        model: ReadModel) -> None:
    """``cartwatch_decimal_sum`` and ``cartwatch_median``, which each backend defines."""
    values = ("SELECT cartwatch_decimal_sum(column1), cartwatch_median(column2) FROM (VALUES "
              "('10.00', 3.5), ('5.5', 1.0), (NULL, NULL), ('0.001', 2.0), ('-1', 10.0)) v")
    assert tuple(model.query(values)[0]) == ("14.501", 2.75)
    assert tuple(model.query(values + " WHERE column2 < 5")[0]) == ("15.501", 2.0)
    assert tuple(model.query(values + " WHERE column2 > 99")[0]) == (None, None)
    assert tuple(model.query(values + " WHERE column1 IS NULL")[0]) == (None, None)
