"""The operator's read model in PostgreSQL (``operator.read_model = "postgresql://..."``).

The same tables, writes and answers as the SQLite ``ReadModel`` (``streams.operator.store``),
so the API cannot tell them apart: one test suite runs against both. What differs is where
the data lives: one database that every worker queries, instead of a copy per worker.

- **Same answers.** Text columns use the ``"C"`` collation, so ordering, equality and
  ``lower()`` are byte-wise and ASCII-only, as in SQLite, whatever the database's default
  locale. Times stay epoch seconds in ``double precision`` (SQLite's REAL), booleans stay
  0/1 integers: ``row_dict`` and the CSV code see the same Python values from both.
- **One set of queries.** The query builders (``streams.operator.query`` and friends) write
  portable SQL with ``?`` placeholders; ``pyformat`` turns them into psycopg's ``%s``. That is
  a rewrite of the *SQL text written in this code base*, never of values: every value a user
  sends is still a bound parameter.
- **Versioned migrations** in ``schema_migrations``, run at open under a PostgreSQL advisory
  lock, so workers starting together migrate one at a time and the others find it done.
- **"Contains" searches** (product, customer) are ``lower(column) LIKE '%...%'``; pg_trgm GIN
  indexes on exactly those expressions serve them without a scan of the table.

psycopg 3's synchronous API, not asyncpg: the read model already runs in a worker thread
behind ``SharedReadModel`` (SQLite has no async API), so a sync driver keeps one threading
model for both backends and the store's methods line up one to one.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import count
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import RowMaker

from streams.operator import retention
from streams.operator.backends import ReadModelUnavailable
from streams.operator.store import Offsets
from streams.operator.writes import Write, offset_writes, record_writes

log = logging.getLogger(__name__)

TEXT = 'text COLLATE "C"'
"""Every text column: byte-wise like SQLite, whatever locale the database was created in."""
TIME = "double precision"
"""Epoch seconds, as SQLite's REAL."""

_V1 = [
    f"""CREATE TABLE abandonments (
        abandonment_id {TEXT} PRIMARY KEY, cart_id {TEXT} NOT NULL, store_id {TEXT} NOT NULL,
        sequence bigint, status {TEXT} NOT NULL, status_rank integer NOT NULL,
        created_at {TIME}, last_activity_at {TIME}, abandoned_at {TIME} NOT NULL,
        reactivated_at {TIME}, recovered_at {TIME}, total {TEXT}, total_value double precision,
        currency {TEXT}, item_count integer, customer_name {TEXT}, customer_email {TEXT},
        customer_phone {TEXT}, phone_digits {TEXT}, marketing_consent integer,
        customer_json {TEXT}, cart_url {TEXT}, order_id {TEXT}, revenue {TEXT},
        revenue_currency {TEXT}, seconds_to_recover double precision, reminder_sent integer,
        campaign {TEXT}, variant {TEXT})""",
    "CREATE INDEX abandonments_by_time ON abandonments (abandoned_at)",
    "CREATE INDEX abandonments_by_store ON abandonments (store_id, abandoned_at)",
    "CREATE INDEX abandonments_by_cart ON abandonments (cart_id)",
    "CREATE INDEX abandonments_by_campaign ON abandonments (store_id, campaign, variant)",
    f"""CREATE TABLE lines (
        abandonment_id {TEXT} NOT NULL, position integer NOT NULL, sku {TEXT} NOT NULL,
        name {TEXT}, quantity integer NOT NULL, unit_price {TEXT} NOT NULL,
        line_total {TEXT} NOT NULL, url {TEXT}, image_url {TEXT},
        PRIMARY KEY (abandonment_id, sku))""",
    "CREATE INDEX lines_by_sku ON lines (sku)",
    # rowid: SQLite's implicit row number, which the execution log pages by (n.rowid).
    f"""CREATE TABLE notifications (
        abandonment_id {TEXT} NOT NULL, step integer, channel {TEXT}, status {TEXT} NOT NULL,
        attempt integer NOT NULL, at {TIME} NOT NULL, cart_id {TEXT}, store_id {TEXT},
        reason {TEXT}, error {TEXT}, deferred_until {TIME}, campaign {TEXT}, variant {TEXT},
        rowid bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        UNIQUE (abandonment_id, step, channel, status, attempt, at))""",
    "CREATE INDEX notifications_by_time ON notifications (at)",
    f"""CREATE TABLE operator_notices (
        store_id {TEXT} NOT NULL, event {TEXT} NOT NULL, abandonment_id {TEXT} NOT NULL,
        step integer NOT NULL, channel {TEXT}, detail {TEXT}, at {TIME} NOT NULL,
        PRIMARY KEY (store_id, abandonment_id, step, event, at))""",
    "CREATE INDEX notices_by_time ON operator_notices (store_id, at)",
    f"""CREATE TABLE carts (
        cart_id {TEXT} PRIMARY KEY, store_id {TEXT} NOT NULL, created_at {TIME} NOT NULL)""",
    "CREATE INDEX carts_by_time ON carts (store_id, created_at)",
    f"""CREATE TABLE clicks (
        click_id {TEXT} PRIMARY KEY, abandonment_id {TEXT} NOT NULL, cart_id {TEXT},
        store_id {TEXT}, step integer NOT NULL, channel {TEXT}, campaign {TEXT},
        variant {TEXT}, clicked_at {TIME} NOT NULL)""",
    "CREATE INDEX clicks_by_abandonment ON clicks (abandonment_id, step)",
    f"""CREATE TABLE offsets (
        topic {TEXT} NOT NULL, partition integer NOT NULL, next_offset bigint NOT NULL,
        PRIMARY KEY (topic, partition))""",
]
"""Version 1: the tables of the SQLite read model at its schema version 3."""

_V2 = [
    # Trusted since PostgreSQL 13: the database's owner may create it, no superuser needed.
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    # The expressions are exactly those of streams.operator.query.where_clause, or the
    # planner cannot use them.
    "CREATE INDEX lines_sku_trgm ON lines USING gin (lower(sku) gin_trgm_ops)",
    "CREATE INDEX lines_name_trgm ON lines USING gin (lower(coalesce(name, '')) gin_trgm_ops)",
    "CREATE INDEX abandonments_customer_name_trgm ON abandonments "
    "USING gin (lower(coalesce(customer_name, '')) gin_trgm_ops)",
    "CREATE INDEX abandonments_customer_email_trgm ON abandonments "
    "USING gin (lower(coalesce(customer_email, '')) gin_trgm_ops)",
    "CREATE INDEX abandonments_phone_digits_trgm ON abandonments "
    "USING gin (phone_digits gin_trgm_ops)",
]
"""Version 2: trigram indexes for the "contains" searches of products and customers."""

_V3 = [
    # SQL functions: no superuser or extension needed, the database's owner creates them.
    # NULLs are skipped and none gives NULL, as sum(); 0 + the first amount keeps its scale.
    "CREATE FUNCTION cartwatch_decimal_add(numeric, text) RETURNS numeric LANGUAGE sql "
    "IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE WHEN $2 IS NULL THEN $1 "
    "ELSE coalesce($1, 0) + $2::numeric END $$",
    "CREATE FUNCTION cartwatch_decimal_text(numeric) RETURNS text LANGUAGE sql "
    "IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT $1::text $$",
    "CREATE AGGREGATE cartwatch_decimal_sum(text) (SFUNC = cartwatch_decimal_add, "
    "STYPE = numeric, FINALFUNC = cartwatch_decimal_text, COMBINEFUNC = numeric_add, "
    "PARALLEL = SAFE)",
    # statistics.median: the middle value, or the mean of the two middle ones computed as
    # (a + b) / 2. Not percentile_cont(0.5), which interpolates a + (b - a) * 0.5 and may
    # differ from it in the last bit.
    """CREATE FUNCTION cartwatch_median_final(double precision[]) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT CASE WHEN n = 0 THEN NULL WHEN mod(n, 2) = 1 THEN v[n / 2 + 1]
                    ELSE (v[n / 2] + v[n / 2 + 1]) / 2 END
        FROM (SELECT array_agg(x ORDER BY x) AS v, count(*)::integer AS n
              FROM unnest($1) AS x WHERE x IS NOT NULL) sorted $$""",
    "CREATE FUNCTION cartwatch_median_merge(double precision[], double precision[]) "
    "RETURNS double precision[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT $1 || $2 $$",
    "CREATE AGGREGATE cartwatch_median(double precision) (SFUNC = array_append, "
    "STYPE = double precision[], INITCOND = '{}', FINALFUNC = cartwatch_median_final, "
    "COMBINEFUNC = cartwatch_median_merge, PARALLEL = SAFE)",
]
"""Version 3: the aggregates the insights query with (``streams.operator.insights``), which
the SQLite read model registers on its connection under the same names."""

_V4 = [
    # The planner guesses how many lines a "contains" term matches from the statistics of the
    # indexed expressions; with the default sample it took a popular SKU for ten times as
    # common as it is and scanned every line (0.8 s instead of 0.1 s at 1M abandonments).
    "ALTER INDEX lines_sku_trgm ALTER COLUMN 1 SET STATISTICS 2000",
    "ALTER INDEX lines_name_trgm ALTER COLUMN 1 SET STATISTICS 2000",
]
"""Version 4: finer statistics for the product searches' planning (taken at the next ANALYZE,
which autovacuum runs)."""

_V5 = [
    f"ALTER TABLE abandonments ADD COLUMN products {TEXT}",
    "UPDATE abandonments a SET products = coalesce((SELECT string_agg(lower(l.sku) || "
    "chr(31) || lower(coalesce(l.name, '')), chr(31)) FROM lines l "
    "WHERE l.abandonment_id = a.abandonment_id), '')",
    "CREATE INDEX abandonments_products_trgm ON abandonments USING gin (products gin_trgm_ops)",
    "ALTER TABLE abandonments ALTER COLUMN products SET STATISTICS 2000",
    "DROP INDEX lines_sku_trgm",
    "DROP INDEX lines_name_trgm",
]
"""Version 5: the product search filters the abandonment's own ``products`` column (SQLite's
schema 4), with its trigram index; the lines' trigram indexes are not used any more."""

_V6 = [
    # Trusted since PostgreSQL 13, as pg_trgm: the database's owner may create it. It lets
    # a GIN index hold the store beside the trigrams.
    "CREATE EXTENSION IF NOT EXISTS btree_gin",
    "CREATE INDEX abandonments_store_products_trgm ON abandonments "
    "USING gin (store_id, products gin_trgm_ops)",
    "DROP INDEX abandonments_products_trgm",
]
"""Version 6: the product search's index holds the store too. A search in one store was two
bitmaps ANDed, the trigrams' and the store's 125,000 rows (at 1M abandonments), and took
70-110 ms for a popular SKU; one index scan now finds the candidates of that store alone
(38 ms). A GIN index serves any subset of its columns, so searches in every store use it as
they used the index it replaces."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    tuple(_V1), tuple(_V2), tuple(_V3), tuple(_V4), tuple(_V5), tuple(_V6))
"""``MIGRATIONS[n]`` turns schema version n into n+1. A schema change appends one; an existing
one never changes (databases in the field ran it). As in SQLite, only add columns that may be
NULL: a worker of the previous release may still write during a rolling upgrade."""
SCHEMA_VERSION = len(MIGRATIONS)

MIGRATION_LOCK = 0x6361727477617463
"""The advisory lock key (``b"cartwatc"``) held while migrating; locks are per database."""
PURGE_LOCK = 0x6361727470757267
"""The advisory lock key (``b"cartpurg"``) a retention batch holds for its transaction, so the
workers sharing the database never purge at the same time."""


def migrate(db: psycopg.Connection[Any], target: int = SCHEMA_VERSION) -> int:
    """Bring the database to ``target`` (default: this release's version); returns its version.

    Holds the advisory lock for the whole run, so a second worker starting at the same time
    waits and then finds nothing left to do. Each step commits with its version row, so a
    crash mid-way resumes at the step it was in. A database of a *newer* version (a rollback
    to this release) is used as it is, as the SQLite read model does.
    """
    db.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                   " applied_at timestamptz NOT NULL DEFAULT now())")
        row = db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            log.warning("read model database has schema version %d, newer than this "
                        "release's %d: used as it is", version, SCHEMA_VERSION)
            return version
        for step in range(version, target):
            with db.transaction():
                for statement in MIGRATIONS[step]:
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (step + 1,))
            log.info("read model database migrated to schema version %d", step + 1)
        return max(version, target)
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[?%]")


@functools.lru_cache(maxsize=256)
def pyformat(statement: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s``, and literal ``%`` doubled.

    Quoted strings and identifiers are copied untouched, so a ``?`` or ``%`` inside
    ``'...'`` stays what it is. Only for SQL written in this code base: values are never
    part of the text (they are the parameters).
    """
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        return {"?": "%s", "%": "%%"}.get(token, token)

    return _PLACEHOLDER.sub(replace, statement)


class Row:
    """A result row read like ``sqlite3.Row``: by position or column name, ``keys()``,
    ``tuple(row)`` and ``dict(row)``, so the code reading rows serves both backends."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = tuple(values)

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Row) and (self.keys(), self._values) == (
            other.keys(), other._values)

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


def _rows(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    index = {column.name: position for position, column in enumerate(cursor.description or ())}
    return lambda values: Row(index, values)


CONNECT_TIMEOUT = 10
"""Seconds a connection attempt may take (unless the URL sets ``connect_timeout``): a database
behind a dropped route must fail the start, not hang it."""


RECONNECT_PAUSE = 1.0
"""Seconds between connection attempts once the database was lost: meanwhile calls fail at
once (the API answers 503 without waiting for a connect timeout per request)."""


def one_line(exc: BaseException) -> str:
    """A psycopg error's message on one line (libpq's are several), for logs and answers."""
    reason = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return reason or type(exc).__name__


def describe(url: str) -> str:
    """Where ``url`` points, for messages: user, host, port and database, never a password."""
    parts = psycopg.conninfo.conninfo_to_dict(url)
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or ''}"


class PostgresReadModel:
    """The read model's tables in a PostgreSQL database; the methods of ``ReadModel``.

    One connection, used by one thread at a time (``SharedReadModel`` serialises calls), in
    autocommit mode with explicit transactions where several statements must hold together.
    """

    def __init__(self, url: str, password: str | None = None, *,
                 target_version: int = SCHEMA_VERSION) -> None:
        """Connect to ``url`` (libpq URL; TLS options such as ``sslmode`` ride in its query)
        and migrate. ``password`` is given apart from the URL, since it is a secret."""
        self._url = url
        self._options: dict[str, Any] = {"password": password} if password is not None else {}
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(url):
            self._options["connect_timeout"] = CONNECT_TIMEOUT
        self.db = self._connect()
        self._cursors = count()
        self._closed = False
        self._lost: str | None = None
        self._retry_at = 0.0
        try:
            self.schema_version = migrate(self.db, target_version)
        except BaseException:
            self.db.close()
            raise

    def _connect(self) -> psycopg.Connection[Row]:
        db = psycopg.connect(self._url, autocommit=True, row_factory=_rows,
                             application_name="cartwatch-read-model", **self._options)
        # JIT compilation pays for queries of seconds; the read model's take milliseconds, and
        # the planner's overestimates turned it on for the insights (77 ms of 206 ms).
        db.execute("SET jit = off")
        # A search's bitmap of candidate rows must stay exact: at the default 4 MB a popular
        # SKU's bitmap in one store went lossy, and 18,000 rows were checked instead of 4,000
        # (1M abandonments). One connection per worker, so this is what a worker may use per
        # sort or hash.
        db.execute("SET work_mem = '32MB'")
        return db

    def close(self) -> None:
        self._closed = True
        self.db.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        """The connection, opened again when the last one was lost. A database that cannot
        be reached (down, restarting, a dropped route) raises ``ReadModelUnavailable`` with
        libpq's reason: the feed retries its batch, the API answers 503. The schema is not
        migrated again: it was at start, and a restart does not undo it."""
        if self.db.broken or (self.db.closed and not self._closed):
            if time.monotonic() < self._retry_at:
                raise ReadModelUnavailable(f"{describe(self._url)}: {self._lost}")
            try:
                self.db = self._connect()
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from None
            log.info("read model database %s reachable again", describe(self._url))
            self._lost = None
        try:
            yield self.db
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: psycopg.OperationalError) -> ReadModelUnavailable:
        if self._lost is None:
            log.warning("read model database %s unavailable: %s", describe(self._url),
                        one_line(exc))
        self._lost = one_line(exc)
        self._retry_at = time.monotonic() + RECONNECT_PAUSE
        return ReadModelUnavailable(f"{describe(self._url)}: {self._lost}")

    def ping(self) -> None:
        """A round trip to the database; ``ReadModelUnavailable`` when there is none."""
        with self._connection() as db:
            db.execute("SELECT 1")

    # -- writes ---------------------------------------------------------------------------

    def write_batch(
        self, records: Iterable[object], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply decoded records and remember the offsets they came from, atomically.

        In pipeline mode: the statements go out without waiting for each one's answer, which
        took a round trip per statement (four per abandonment) and made the feed 4-5 times
        slower (``cartwatch bench --only read-model``). An error still rolls the batch back."""
        with self._connection() as db, db.pipeline(), db.transaction(), db.cursor() as cursor:
            for record in records:
                for write in record_writes(record):
                    self._run(cursor, write)
            self._run(cursor, offset_writes(offsets))

    def apply(self, record: object) -> None:
        with self._connection() as db, db.transaction(), db.cursor() as cursor:
            for write in record_writes(record):
                self._run(cursor, write)

    def purge(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` abandonments older than ``before`` (epoch seconds) with
        their lines, log entries, clicks and notices, and at most ``limit`` created carts
        older than it (``streams.operator.retention``), in one transaction. Returns the rows
        deleted: 0 when nothing is left, or when another worker's batch holds ``PURGE_LOCK``
        (that worker's sweep does the work; this one stops)."""
        query = retention.expired(before, limit)
        with self._connection() as db, db.transaction(), db.cursor() as cursor:
            locked = cursor.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                    (PURGE_LOCK,)).fetchone()
            if not (locked and locked[0]):
                log.debug("read model retention: another worker is purging")
                return 0
            found = [tuple(row) for row in
                     cursor.execute(pyformat(query.statement + retention.SKIP_LOCKED),
                                    query.rows[0]).fetchall()]
            deleted = 0
            for write in retention.purge_writes(found, before, limit):
                for params in write.rows:
                    deleted += cursor.execute(pyformat(write.statement), params).rowcount
            return deleted

    @staticmethod
    def _run(cursor: psycopg.Cursor[Any], write: Write) -> None:
        if write.rows:
            cursor.executemany(pyformat(write.statement), write.rows)

    # -- reads ----------------------------------------------------------------------------

    def offsets(self) -> Offsets:
        with self._connection() as db:
            rows = db.execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return Offsets({(row[0], row[1]): row[2] for row in rows})

    def query(self, statement: str, params: Iterable[Any] = ()) -> list[Row]:
        """Rows of a query written with ``?`` placeholders (the query builders' SQL)."""
        with self._connection() as db:
            return db.execute(pyformat(statement), tuple(params)).fetchall()

    def iterate(self, statement: str, params: Iterable[Any] = (), batch: int = 500
                ) -> Iterator[list[Row]]:
        """Rows in batches from a server-side cursor: the result is never all in memory,
        on the server's side of the connection or on ours."""
        with self._connection() as db, db.transaction(), db.cursor(
                name=f"cartwatch_iterate_{next(self._cursors)}") as cursor:
            cursor.execute(pyformat(statement), tuple(params))
            while rows := cursor.fetchmany(batch):
                yield rows

    def lines_of(self, abandonment_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The lines of each abandonment, in the order the snapshot listed them."""
        found: dict[str, list[dict[str, Any]]] = {key: [] for key in abandonment_ids}
        with self._connection() as db:
            rows = db.execute(
                "SELECT abandonment_id, sku, name, quantity, unit_price, line_total, url, "
                "image_url FROM lines WHERE abandonment_id = ANY(%s) "
                "ORDER BY abandonment_id, position", (list(abandonment_ids),),
            ).fetchall()
        for row in rows:
            line = dict(row)
            found[line.pop("abandonment_id")].append(line)
        return found

    def sizes(self) -> dict[str, int]:
        """Row counts per table, for the metrics."""
        sizes: dict[str, int] = {}
        with self._connection() as db:
            for table in ("abandonments", "lines", "notifications", "operator_notices",
                          "carts", "clicks"):
                row = db.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
                sizes[table] = row[0] if row else 0
        return sizes

    def notification_counts(self) -> dict[str, int]:
        """Reminder attempts per status (sent, skipped, deferred, failed), all stores."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT status, count(*) FROM notifications GROUP BY status").fetchall()
        return {row[0]: row[1] for row in rows}
