"""Fixtures of the unit tests that need more than one module."""

from collections.abc import Iterator

import pytest

from streams.operator.pgstore import PostgresReadModel
from streams.operator.store import ReadModel


@pytest.fixture(params=["sqlite", "postgresql"])
def model(request: pytest.FixtureRequest) -> Iterator[ReadModel | PostgresReadModel]:
    """A read model, each test once per backend: the API's answers must not depend on which
    one runs (the PostgreSQL one in a fresh database of the test server)."""
    if request.param == "sqlite":
        store: ReadModel | PostgresReadModel = ReadModel()
    else:
        database = request.getfixturevalue("postgres_database")
        store = PostgresReadModel(database.url, database.password)
    try:
        yield store
    finally:
        store.close()
