"""Retention of the read model (``streams.operator.retention``) on both backends: what a purge
deletes and keeps, its batches, the sweep that drives it, the PostgreSQL lock, the settings."""

import logging
from collections.abc import Callable

import psycopg
import pytest

from config.settings import SettingsError, load_settings
from schemas.common import utc_from_epoch
from schemas.events import CartEvent
from schemas.notifications import LinkClick, NotificationLogEntry, OperatorNotification
from streams.operator import retention
from streams.operator.backends import ReadModelStore
from streams.operator.pgstore import PURGE_LOCK, PostgresReadModel
from streams.operator.retention import Retention, purge_expired, purge_writes
from streams.operator.store import ReadModel
from tests.unit.factories import DAY, HOUR, T0
from tests.unit.test_operator_readmodel import abandoned, recovered

TABLES = ("abandonments", "lines", "notifications", "clicks", "operator_notices", "carts")
LINES = (("MUG", "Blue mug", 1, "10.00"), ("CUP", "Cup", 2, "4.00"))


def log_entry(abandonment_id: str, at: float, store: str = "s1") -> NotificationLogEntry:
    return NotificationLogEntry(abandonment_id=abandonment_id, cart_id=abandonment_id[:-2],
                                store_id=store, step=1, channel="email", status="sent",
                                attempt=1, at=utc_from_epoch(at))


def click(abandonment_id: str, at: float, store: str = "s1") -> LinkClick:
    return LinkClick(click_id=f"k-{abandonment_id}", abandonment_id=abandonment_id,
                     cart_id=abandonment_id[:-2], store_id=store, step=1, channel="email",
                     clicked_at=utc_from_epoch(at), user_agent_class="mobile")


def notice(abandonment_id: str, at: float, store: str = "s1") -> OperatorNotification:
    return OperatorNotification(store_id=store, event="failed", abandonment_id=abandonment_id,
                                step=1, channel="email", detail="timeout", at=utc_from_epoch(at))


def created(cart_id: str, at: float, store: str = "s1") -> CartEvent:
    return CartEvent(event_id=f"e-{cart_id}", type="cart_viewed", cart_id=cart_id,
                     store_id=store, occurred_at=utc_from_epoch(at))


def history(cart_id: str, at: float, store: str = "s1") -> list[object]:
    """An abandonment at ``at`` with two lines, its cart created before, a reminder an hour
    after, a click on it and an operator notice: one row in every purged table (two lines)."""
    aid = f"{cart_id}:1"
    return [created(cart_id, at - 100, store), abandoned(cart_id, store, at, lines=LINES),
            log_entry(aid, at + HOUR, store), click(aid, at + 2 * HOUR, store),
            notice(aid, at + HOUR, store), recovered(cart_id, at, after=3 * HOUR)]


def sizes(model: ReadModelStore) -> dict[str, int]:
    return {table: count for table, count in model.sizes().items() if table in TABLES}


def ids(model: ReadModelStore, table: str) -> set[str]:
    column = "cart_id" if table == "carts" else "abandonment_id"
    return {row[0] for row in model.query(f"SELECT {column} FROM {table}")}


def test_expired_abandonments_go_with_their_history_young_ones_stay(model: ReadModel) -> None:
    model.write_batch([*history("old", T0), *history("young", T0 + 10 * DAY)], {("t", 0): 12})
    before = sizes(model)
    assert before == {"abandonments": 2, "lines": 4, "notifications": 2, "clicks": 2,
                      "operator_notices": 2, "carts": 2}

    deleted = model.purge(T0 + 5 * DAY, 100)

    after = sizes(model)
    assert after == {table: count // 2 for table, count in before.items()}
    assert deleted == sum(before.values()) - sum(after.values())
    for table in TABLES:
        assert ids(model, table) == ({"young"} if table == "carts" else {"young:1"}), table
    assert model.offsets().positions == {("t", 0): 12}  # the feed resumes where it was
    assert model.purge(T0 + 5 * DAY, 100) == 0


def test_the_cut_off_is_strict(model: ReadModel) -> None:
    model.write_batch(history("edge", T0), {})
    assert model.purge(T0, 100) == 1  # only the cart, created 100 s before the abandonment
    assert ids(model, "abandonments") == {"edge:1"} and ids(model, "carts") == set()


def test_a_batch_deletes_at_most_limit_abandonments_and_carts_oldest_first(
        model: ReadModel) -> None:
    model.write_batch([record for n in range(5) for record in history(f"c{n}", T0 + n * HOUR)],
                      {})

    model.purge(T0 + DAY, 2)

    assert ids(model, "abandonments") == {"c2:1", "c3:1", "c4:1"}
    assert sizes(model)["carts"] == 3
    for table in ("lines", "notifications", "clicks", "operator_notices"):
        assert ids(model, table) == {"c2:1", "c3:1", "c4:1"}, table  # children with parents
    assert sizes(model)["lines"] == 6


def test_ids_are_deleted_in_chunks_of_bound_parameters(
        model: ReadModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "CHUNK", 2)
    model.write_batch([record for n in range(5)
                       for record in history(f"c{n}", T0 + n, store=f"s{n % 2}")], {})
    assert model.purge(T0 + DAY, 5) == 5 * 7
    assert all(count == 0 for count in sizes(model).values())


def test_orphans_older_than_the_cut_off_go_once_no_abandonment_is_left(
        model: ReadModel) -> None:
    """Log entries, clicks and notices whose abandonment the read model does not hold: old
    ones go (e.g. clicks read from the beginning of their topic after their abandonment was
    purged); a young one stays (a log entry may be read before its abandonment)."""
    model.write_batch([
        *history("kept", T0 + 10 * DAY),
        log_entry("gone:1", T0), click("gone:1", T0), notice("gone:1", T0, store="s9"),
        log_entry("early:1", T0 + 10 * DAY), click("early:1", T0 + 10 * DAY),
        notice("early:1", T0 + 10 * DAY),
    ], {})

    assert model.purge(T0 + DAY, 100) == 3

    for table in ("notifications", "clicks", "operator_notices"):
        assert ids(model, table) == {"kept:1", "early:1"}, table


def test_orphans_wait_until_the_expired_abandonments_are_gone(model: ReadModel) -> None:
    model.write_batch([*history("a", T0), *history("b", T0 + 1), log_entry("gone:1", T0)], {})
    for _ in range(2):  # each finds as many expired abandonments as it may delete
        model.purge(T0 + DAY, 1)
        assert "gone:1" in ids(model, "notifications")
    assert model.purge(T0 + DAY, 1) == 1  # the first to find fewer
    assert ids(model, "notifications") == set()


def test_a_limit_below_one_is_refused(model: ReadModel) -> None:
    with pytest.raises(ValueError, match="limit"):
        model.purge(T0, 0)


def test_the_statements_hold_no_values() -> None:
    writes = purge_writes([("x'; DROP TABLE carts; --:1", "s'1")], T0, 10)
    assert all("DROP" not in write.statement and "s'1" not in write.statement
               for write in writes)
    assert any(tuple(write.rows[0]) == ("x'; DROP TABLE carts; --:1",) for write in writes)


def runner(model: ReadModelStore, calls: list[int]) -> retention.Run:
    async def run(function: Callable[[ReadModelStore], int]) -> int:
        calls.append(result := function(model))
        return result

    return run


async def test_a_sweep_purges_batch_by_batch_until_nothing_is_left(
        model: ReadModel, caplog: pytest.LogCaptureFixture) -> None:
    model.write_batch([record for n in range(5) for record in history(f"c{n}", T0 + n)]
                      + history("young", T0 + 3 * DAY), {})
    calls: list[int] = []

    with caplog.at_level(logging.INFO, logger="streams.operator.retention"):
        total = await purge_expired(runner(model, calls), lambda: T0 + 2 * DAY, DAY, 2,
                                    pause=0)

    assert len(calls) == 4 and calls[-1] == 0 and all(calls[:3])  # 2 + 2 + 1, then nothing
    assert total == sum(calls) == 5 * 7
    assert ids(model, "abandonments") == {"young:1"} and ids(model, "carts") == {"young"}
    [line] = [r.getMessage() for r in caplog.records if r.name == "streams.operator.retention"]
    assert "purged 35 rows in 3 batches" in line and "2024-01-02T00:00:00Z" in line


async def test_a_sweep_with_nothing_expired_makes_one_call(model: ReadModel) -> None:
    model.write_batch(history("young", T0), {})
    calls: list[int] = []
    sweep = Retention(seconds=DAY, batch=100, pause=0)
    assert await sweep.sweep(runner(model, calls), clock=lambda: T0 + HOUR) == 0
    assert calls == [0] and sizes(model)["abandonments"] == 1


def test_a_worker_skips_the_batch_another_worker_holds_the_lock_of(postgres_database) -> None:
    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    try:
        model.write_batch(history("old", T0), {})
        with psycopg.connect(postgres_database.url, password=postgres_database.password,
                             autocommit=True) as other, other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(%s)", (PURGE_LOCK,))
            assert model.purge(T0 + DAY, 100) == 0
            assert sizes(model)["abandonments"] == 1
        assert model.purge(T0 + DAY, 100) == 7  # released with the other's transaction
    finally:
        model.close()


def test_a_batch_skips_the_abandonments_a_feed_is_writing(postgres_database) -> None:
    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    try:
        model.write_batch([*history("busy", T0), *history("idle", T0 + 1)], {})
        model.db.execute("SET lock_timeout = '5s'")  # waiting for the row fails, not hangs
        with psycopg.connect(postgres_database.url, password=postgres_database.password,
                             autocommit=True) as feed, feed.transaction():
            feed.execute("UPDATE abandonments SET total = total WHERE abandonment_id = 'busy:1'")
            assert model.purge(T0 + DAY, 100) == 7 + 1  # idle's history, busy's cart
        assert ids(model, "abandonments") == {"busy:1"}
        assert model.purge(T0 + DAY, 100) == 6
    finally:
        model.close()


def test_retention_is_off_unless_configured() -> None:
    settings = load_settings({})
    assert settings.operator.retention_days is None
    assert Retention.configured(settings.operator) is None


def test_retention_from_the_environment() -> None:
    operator = load_settings({"CARTWATCH_READ_MODEL_RETENTION_DAYS": "1.5",
                              "CARTWATCH_READ_MODEL_RETENTION_BATCH": "200"}).operator
    assert (operator.retention_days, operator.retention_batch) == (1.5, 200)
    assert Retention.configured(operator) == Retention(seconds=1.5 * DAY, batch=200)


@pytest.mark.parametrize("environ", [
    {"CARTWATCH_READ_MODEL_RETENTION_DAYS": "0"},
    {"CARTWATCH_READ_MODEL_RETENTION_DAYS": "-3"},
    {"CARTWATCH_READ_MODEL_RETENTION_DAYS": "a month"},
    {"CARTWATCH_READ_MODEL_RETENTION_BATCH": "0"},
])
def test_bad_retention_settings_stop_the_worker(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="retention"):
        load_settings(environ)
