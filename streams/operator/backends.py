"""The read model's one interface, and which backend ``operator.read_model`` selects.

Two backends answer the operator API identically: SQLite (the default, a copy in each worker,
fed from every partition) and PostgreSQL (one database all workers query). The API, the feed
and the metrics only see ``ReadModelStore``, so neither needs to know which one runs.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from config.operator import OperatorSettings
from streams.operator.store import Offsets, ReadModel


class ReadModelStore(Protocol):
    """The methods ``ReadModel`` and ``PostgresReadModel`` share. Rows read like
    ``sqlite3.Row``: by position or column name, ``keys()``, ``tuple(row)``, ``dict(row)``.
    SQL passed to ``query`` and ``iterate`` uses ``?`` placeholders and portable SQL."""

    schema_version: int

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise ``ReadModelUnavailable`` when the database cannot be reached now."""

    def write_batch(
        self, records: Iterable[object], offsets: Mapping[tuple[str, int], int]
    ) -> None: ...

    def offsets(self) -> Offsets: ...

    def query(self, sql: str, params: Iterable[Any] = ()) -> Sequence[Any]: ...

    def iterate(
        self, sql: str, params: Iterable[Any] = (), batch: int = 500
    ) -> Iterator[Sequence[Any]]: ...

    def lines_of(self, abandonment_ids: list[str]) -> dict[str, list[dict[str, Any]]]: ...

    def sizes(self) -> dict[str, int]: ...

    def notification_counts(self) -> dict[str, int]: ...

    def purge(self, before: float, limit: int) -> int: ...


def open_read_model(operator: OperatorSettings, data_dir: Path) -> ReadModelStore | None:
    """The configured store, migrated and ready; None for ``read_model = "off"``."""
    if operator.read_model == "off":
        return None
    if operator.postgresql:
        from streams.operator.pgstore import PostgresReadModel  # only PostgreSQL's workers

        secret = operator.read_model_password
        return PostgresReadModel(operator.read_model,
                                 secret.get_secret_value() if secret is not None else None)
    if operator.read_model == "memory":
        return ReadModel(":memory:")
    data_dir.mkdir(parents=True, exist_ok=True)
    return ReadModel(data_dir / "operator.sqlite3")


class ReadModelUnavailable(RuntimeError):
    """The configured read-model database cannot be reached or used (one line, no secret)."""


def check_read_model(operator: OperatorSettings) -> None:
    """Before a worker starts: connect to a PostgreSQL read model once (and migrate it), so a
    wrong host, password or database stops the start with one line instead of a traceback
    from the feed. SQLite needs no check: its file is created in the data directory."""
    if not operator.postgresql:
        return
    import psycopg

    from streams.operator.pgstore import describe, one_line

    try:
        store = open_read_model(operator, Path("."))
    except psycopg.Error as exc:
        raise ReadModelUnavailable(
            f"the read model's PostgreSQL database {describe(operator.read_model)} cannot be "
            f"used: {one_line(exc)}") from None
    if store is not None:
        store.close()
