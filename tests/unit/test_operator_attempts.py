"""The execution log, the reminders summary and the operator notifications on an in-memory
read model: the reasons are kept, filters select, old databases gain the new columns."""

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from schemas.common import utc_from_epoch
from schemas.notifications import LinkClick, NotificationLogEntry, OperatorNotification
from streams.operator import attempts as log
from streams.operator import query as q
from streams.operator.feed import DECODERS, feed_topics
from streams.operator.store import ReadModel
from tests.unit.factories import HOUR, T0, make_settings
from tests.unit.test_operator_readmodel import abandoned


def entry(cart: str, status: str = "sent", at: float = T0, store: str = "s1",
          **fields: Any) -> NotificationLogEntry:
    defaults: dict[str, Any] = {"channel": "email", "attempt": 1, "step": 1}
    return NotificationLogEntry(abandonment_id=f"{cart}:1", cart_id=cart, store_id=store,
                                status=status, at=utc_from_epoch(at), **{**defaults, **fields})


@pytest.fixture
def model() -> ReadModel:
    model = ReadModel()
    model.write_batch([
        abandoned("c1"), abandoned("c2", store="s2"),
        entry("c1", "skipped", T0 + 1, channel=None, attempt=0, reason="quiet_hours"),
        entry("c1", "sent", T0 + 2),
        entry("c2", "failed", T0 + 3, store="s2", channel="webhook", error="HTTP 500"),
        entry("c2", "skipped", T0 + 4, store="s2", channel=None, attempt=0,
              reason="no_consent"),
        OperatorNotification(store_id="s2", event="failed", abandonment_id="c2:1", step=1,
                             channel="webhook", detail="HTTP 500", at=utc_from_epoch(T0 + 3)),
        OperatorNotification(store_id="s1", event="failed", abandonment_id="c1:1", step=1,
                             channel="email", detail="timeout", at=utc_from_epoch(T0 + HOUR)),
    ], {})
    return model


def listed(model: ReadModel, **params: str) -> list[tuple[str, str, str | None]]:
    query = log.parse_log_query(params, 100)
    rows = model.query(*log.log_sql(query))
    assert model.query(*log.log_count_sql(query))[0][0] == len(rows)
    return [(row["cart_id"], row["status"], row["reason"] or row["error"]) for row in rows]


def test_the_log_keeps_reasons_and_errors_newest_first(model: ReadModel) -> None:
    assert listed(model) == [("c2", "skipped", "no_consent"), ("c2", "failed", "HTTP 500"),
                             ("c1", "sent", None), ("c1", "skipped", "quiet_hours")]


@pytest.mark.parametrize(("params", "expected"), [
    ({"store": "s1"}, ["c1", "c1"]),
    ({"status": "skipped"}, ["c2", "c1"]),
    ({"channel": "webhook"}, ["c2"]),
    ({"reason": "quiet_hours,no_consent"}, ["c2", "c1"]),
    ({"cart": "c1:1"}, ["c1", "c1"]),
    ({"since": "2024-01-01T00:00:02Z", "until": "2024-01-01T00:00:04Z"}, ["c2", "c1"]),
    ({"limit": "1", "offset": "1"}, ["c2"]),
])
def test_log_filters(model: ReadModel, params: dict[str, str], expected: list[str]) -> None:
    query = log.parse_log_query(params, 100)
    assert [row["cart_id"] for row in model.query(*log.log_sql(query))] == expected


@pytest.mark.parametrize(("params", "message"), [
    ({"status": "lost"}, "status: unknown ['lost']"),
    ({"channel": "fax"}, "channel: unknown ['fax']"),
    ({"since": "yesterday"}, "since: expected a date"),
])
def test_bad_log_parameters_are_named(params: dict[str, str], message: str) -> None:
    with pytest.raises(q.QueryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        log.parse_log_query(params, 100)


def test_keyset_pages_cover_the_log_once(model: ReadModel) -> None:
    query, after, seen = log.LogQuery(), None, []
    while rows := model.query(*log.log_keyset_sql(query, after, 3)):
        seen += [log.log_csv_row(row) for row in rows]
        after = (rows[-1]["at"], rows[-1]["rowid"])
    assert len(seen) == 4
    assert seen[-1][:8] == ["2024-01-01T00:00:01Z", "s1", "c1", "c1:1", "1", "", "skipped",
                            "quiet_hours"]


def test_reminder_summary_counts_and_tells_the_latest_reason(model: ReadModel) -> None:
    summary = log.reminder_summary(model.query(*log.summary_sql(["c1:1", "c2:1"])))
    assert summary["c1:1"]["counts"] == {"skipped": 1, "sent": 1}
    assert summary["c1:1"]["last_status"] == "sent"
    assert (summary["c2:1"]["last_status"], summary["c2:1"]["last_reason"]) == (
        "skipped", "no_consent")


def test_notices_newest_first_per_store(model: ReadModel) -> None:
    def notices(*stores: str) -> list[str]:
        return [row["abandonment_id"] for row in model.query(*log.notices_sql(stores))]

    assert notices() == ["c1:1", "c2:1"]
    assert notices("s2") == ["c2:1"]
    model.write_batch([OperatorNotification(store_id="s2", event="failed", abandonment_id="c2:1",
                                            step=1, channel="webhook", detail="HTTP 500",
                                            at=utc_from_epoch(T0 + 3))], {})
    assert notices("s2") == ["c2:1"]  # a replay adds nothing
    assert [row[0] for row in model.query(log.stores_sql())] == ["s1", "s2"]


def test_a_database_of_the_previous_version_gains_the_log_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE notifications (abandonment_id TEXT NOT NULL, step INTEGER, "
                "channel TEXT, status TEXT NOT NULL, attempt INTEGER NOT NULL, at REAL NOT NULL,"
                " PRIMARY KEY (abandonment_id, step, channel, status, attempt, at))")
    old.execute("INSERT INTO notifications VALUES ('c1:1', 1, 'email', 'sent', 1, ?)", (T0,))
    old.commit()
    old.close()
    model = ReadModel(path)
    model.write_batch([abandoned("c1"), entry("c1", "skipped", T0 + 1, reason="stale")], {})
    assert listed(model) == [("c1", "skipped", "stale"), ("c1", "sent", None)]
    model.close()


@pytest.mark.parametrize(("name", "record"), [
    ("operator_notifications", OperatorNotification(
        store_id="s1", event="failed", abandonment_id="c1:1", step=1, channel="email",
        detail="timeout", at=utc_from_epoch(T0))),
    ("clicks", LinkClick(
        click_id="k", abandonment_id="c1:1", cart_id="c1", store_id="s1", step=1,
        channel="email", campaign="big", variant="a", clicked_at=utc_from_epoch(T0),
        user_agent_class="desktop")),
])
def test_the_feed_reads_the_topic_of(name: str,
                                     record: OperatorNotification | LinkClick) -> None:
    settings = make_settings()
    assert feed_topics(settings)[settings.topic(name)] == name
    assert DECODERS[name](record.model_dump_json().encode()) == record
    assert DECODERS[name](b'{"type": "link_click"}') is None  # dead-lettered input: skipped
