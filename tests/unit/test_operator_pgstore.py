"""What only the PostgreSQL read model has: its migrations, their lock, its trigram indexes.

The answers it shares with SQLite are tested on both backends in test_operator_readmodel.py.
"""

import threading
import time

import psycopg
import pytest

from streams.operator import pgstore
from streams.operator import query as q
from streams.operator.backends import ReadModelUnavailable
from streams.operator.pgstore import (
    MIGRATION_LOCK,
    SCHEMA_VERSION,
    PostgresReadModel,
    pyformat,
)
from tests.unit.test_operator_readmodel import abandoned


def connect(database) -> psycopg.Connection:
    return psycopg.connect(database.url, password=database.password, autocommit=True)


def versions(database) -> list[int]:
    with connect(database) as db:
        return [row[0] for row in db.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]


def test_migrations_run_from_the_first_version_up_keeping_the_rows(postgres_database) -> None:
    first = PostgresReadModel(postgres_database.url, postgres_database.password,
                              target_version=1)
    assert first.schema_version == 1
    # rows as version 1 wrote them (today's writes name columns it does not have)
    first.db.execute("INSERT INTO abandonments (abandonment_id, cart_id, store_id, status, "
                     "status_rank, abandoned_at) VALUES ('c1:1', 'c1', 's1', 'abandoned', 0, 1)")
    first.db.execute("INSERT INTO lines VALUES ('c1:1', 0, 'MUG', 'Blue Mug', 1, '10.00', "
                     "'10.00', NULL, NULL)")
    first.db.execute("INSERT INTO offsets VALUES ('t', 0, 1)")
    first.close()
    assert versions(postgres_database) == [1]

    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    try:
        assert model.schema_version == SCHEMA_VERSION
        assert versions(postgres_database) == list(range(1, SCHEMA_VERSION + 1))
        for term in ("blue", "mug", "MUG"):  # the lines' SKU and name, filled in by version 5
            sql, params = q.list_sql(q.parse_query({"product": term}, 100))
            assert [row["abandonment_id"] for row in model.query(sql, params)] == ["c1:1"]
        assert model.offsets().positions == {("t", 0): 1}
    finally:
        model.close()
    again = PostgresReadModel(postgres_database.url, postgres_database.password)
    again.close()
    assert versions(postgres_database) == list(range(1, SCHEMA_VERSION + 1))


def test_a_worker_waits_for_the_migration_lock(postgres_database) -> None:
    """While another worker holds the lock, a starting one neither migrates nor fails."""
    opened: list[PostgresReadModel] = []
    with connect(postgres_database) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        starting = threading.Thread(target=lambda: opened.append(PostgresReadModel(
            postgres_database.url, postgres_database.password)))
        starting.start()
        deadline = time.monotonic() + 10
        while not holder.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'cartwatch-read-model' AND wait_event = 'advisory'").fetchone()[0]:
            assert time.monotonic() < deadline, "the store never waited for the lock"
            time.sleep(0.02)
        assert holder.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        starting.join(10)
    assert not starting.is_alive() and opened[0].schema_version == SCHEMA_VERSION
    opened[0].close()


def test_workers_starting_together_migrate_once(postgres_database) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def start() -> None:
        try:
            barrier.wait()
            model = PostgresReadModel(postgres_database.url, postgres_database.password)
            results.append(model.schema_version)
            model.close()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and results == [SCHEMA_VERSION] * 3
    assert versions(postgres_database) == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_schema_is_used_as_it_is(postgres_database) -> None:
    PostgresReadModel(postgres_database.url, postgres_database.password).close()
    with connect(postgres_database) as db:
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    assert model.schema_version == SCHEMA_VERSION + 1
    model.close()


def test_contains_searches_can_use_the_trigram_indexes(postgres_database) -> None:
    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    try:
        model.write_batch([abandoned(f"c{n}", name=f"Customer {n}", email=f"c{n}@example.com")
                           for n in range(50)], {})
        model.db.execute("ANALYZE")
        # Tiny tables: rule out full scans (of the table or of an index) to see what *can* run.
        model.db.execute("SET enable_seqscan = off")
        model.db.execute("SET enable_indexscan = off")
        for params, index in (({"product": "blue"}, "abandonments_store_products_trgm"),
                              ({"customer": "example"}, "abandonments_customer_email_trgm")):
            sql, args = q.list_sql(q.parse_query(params, 100))
            plan = "\n".join(row[0] for row in model.query("EXPLAIN " + sql, args))
            assert index in plan, plan
    finally:
        model.close()


def test_placeholders_become_pyformat_outside_quotes_only() -> None:
    assert pyformat("SELECT '?%', \"a?\" FROM t WHERE x LIKE ? AND y = ?") == (
        "SELECT '?%', \"a?\" FROM t WHERE x LIKE %s AND y = %s")
    assert pyformat("SELECT 'it''s ?' WHERE 5 % 2 = ?") == "SELECT 'it''s ?' WHERE 5 %% 2 = %s"


def test_the_url_and_the_password_file_select_postgresql(postgres_database, tmp_path) -> None:
    from config.settings import load_settings
    from streams.operator.backends import open_read_model
    from streams.operator.store import ReadModel

    secret = tmp_path / "pg-password"
    secret.write_text(postgres_database.password + "\n")
    settings = load_settings({"CARTWATCH_READ_MODEL": postgres_database.url,
                              "CARTWATCH_READ_MODEL_PASSWORD_FILE": str(secret)})
    assert postgres_database.password not in repr(settings)
    store = open_read_model(settings.operator, tmp_path)
    assert isinstance(store, PostgresReadModel) and store.schema_version == SCHEMA_VERSION
    store.close()
    default = open_read_model(load_settings({}).operator, tmp_path)
    assert isinstance(default, ReadModel) and (tmp_path / "operator.sqlite3").exists()
    default.close()


def test_a_database_that_cannot_be_used_stops_the_start_with_one_line(postgres_database) -> None:
    import pytest

    from config.settings import load_settings
    from streams.operator.backends import ReadModelUnavailable, check_read_model

    def check(url: str, password: str) -> str:
        settings = load_settings({"CARTWATCH_READ_MODEL": url,
                                  "CARTWATCH_READ_MODEL_PASSWORD": password})
        with pytest.raises(ReadModelUnavailable) as refused:
            check_read_model(settings.operator)
        line = str(refused.value)
        assert "\n" not in line and password not in line
        return line

    host = psycopg.conninfo.conninfo_to_dict(postgres_database.url)["host"]
    wrong = check(postgres_database.url, "not-the-password")
    assert wrong.startswith(f"the read model's PostgreSQL database cartwatch@{host}:")
    assert "password authentication failed" in wrong
    started = time.monotonic()
    nobody = check("postgresql://cartwatch@127.0.0.1:1/cartwatch", "secret")
    assert "127.0.0.1:1/cartwatch cannot be used" in nobody and "refused" in nobody
    assert time.monotonic() - started < 10
    # the right password passes, and leaves the database migrated
    check_read_model(load_settings({"CARTWATCH_READ_MODEL": postgres_database.url,
                                    "CARTWATCH_READ_MODEL_PASSWORD": postgres_database.password}
                                   ).operator)
    assert versions(postgres_database) == list(range(1, SCHEMA_VERSION + 1))


def end_sessions(database) -> int:
    """End the read model's sessions from the server's side, as a restart or a dropped
    route would: how many were ended."""
    with connect(database) as db:
        return len(db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'cartwatch-read-model'").fetchall())


def test_a_lost_connection_is_unavailable_then_opened_again(postgres_database,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(pgstore, "RECONNECT_PAUSE", 0.0)
    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    try:
        model.write_batch([abandoned("c1")], {("t", 0): 1})
        assert end_sessions(postgres_database) == 1
        with pytest.raises(ReadModelUnavailable, match="terminat"):
            model.query("SELECT count(*) FROM abandonments")
        assert model.query("SELECT count(*) FROM abandonments")[0][0] == 1
        model.write_batch([abandoned("c2")], {("t", 0): 2})
        assert model.offsets().positions == {("t", 0): 2}
    finally:
        model.close()


def test_while_the_database_is_lost_calls_fail_without_connecting(postgres_database,
                                                                  monkeypatch) -> None:
    """Between reconnection attempts a call answers at once: an API request gets its 503
    without waiting for a connect timeout."""
    monkeypatch.setattr(pgstore, "RECONNECT_PAUSE", 3600.0)
    model = PostgresReadModel(postgres_database.url, postgres_database.password)
    try:
        end_sessions(postgres_database)
        with pytest.raises(ReadModelUnavailable):
            model.ping()
        with pytest.raises(ReadModelUnavailable, match="terminat"):
            model.write_batch([abandoned("c1")], {("t", 0): 1})
        assert end_sessions(postgres_database) == 0  # no session was opened meanwhile
    finally:
        model.close()
