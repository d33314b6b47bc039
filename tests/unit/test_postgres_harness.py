"""The test harness's PostgreSQL server: reachable as the app role, and not as anyone else."""

import psycopg
import pytest


def test_the_app_role_connects_with_its_password_and_is_no_superuser(postgres_database) -> None:
    with psycopg.connect(postgres_database.url, password=postgres_database.password) as db:
        user, superuser = db.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert (user, superuser) == ("cartwatch", False)


def test_a_wrong_password_is_refused(postgres_database) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_database.url, password="wrong")


def test_each_test_gets_an_empty_database_of_its_own(postgres_database) -> None:
    with psycopg.connect(postgres_database.url, password=postgres_database.password) as db:
        tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
        db.execute("CREATE TABLE mine (x int)")
