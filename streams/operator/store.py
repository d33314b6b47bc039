"""The operator's read model: every abandonment cartwatch published, in one SQLite database.

Each worker keeps its own copy, fed from the output topics of *all* partitions (see
``streams.operator.feed``), so any worker answers any query completely; there is no
scatter-gather and no dependency on which worker owns which partition.

Messages of one abandonment arrive on several topics in no guaranteed order (a recovery may be
read before the abandonment it recovers), so every write is an idempotent upsert and a status
only moves forward: abandoned < reactivated < recovered. Replaying a topic changes nothing.
"""

import json
import logging
import math
import sqlite3
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from streams.operator import retention
from streams.operator.writes import Write, offset_writes, record_writes

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS abandonments (
    abandonment_id TEXT PRIMARY KEY,
    cart_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    sequence INTEGER,
    status TEXT NOT NULL,
    status_rank INTEGER NOT NULL,
    created_at REAL,
    last_activity_at REAL,
    abandoned_at REAL NOT NULL,
    reactivated_at REAL,
    recovered_at REAL,
    total TEXT,
    total_value REAL,
    currency TEXT,
    item_count INTEGER,
    customer_name TEXT,
    customer_email TEXT,
    customer_phone TEXT,
    phone_digits TEXT,
    marketing_consent INTEGER,
    customer_json TEXT,
    cart_url TEXT,
    order_id TEXT,
    revenue TEXT,
    revenue_currency TEXT,
    seconds_to_recover REAL,
    reminder_sent INTEGER
);
CREATE INDEX IF NOT EXISTS abandonments_by_time ON abandonments (abandoned_at);
CREATE INDEX IF NOT EXISTS abandonments_by_store ON abandonments (store_id, abandoned_at);
CREATE INDEX IF NOT EXISTS abandonments_by_cart ON abandonments (cart_id);
CREATE TABLE IF NOT EXISTS lines (
    abandonment_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    sku TEXT NOT NULL,
    name TEXT,
    quantity INTEGER NOT NULL,
    unit_price TEXT NOT NULL,
    line_total TEXT NOT NULL,
    url TEXT,
    image_url TEXT,
    PRIMARY KEY (abandonment_id, sku)
);
CREATE INDEX IF NOT EXISTS lines_by_sku ON lines (sku);
CREATE TABLE IF NOT EXISTS notifications (
    abandonment_id TEXT NOT NULL,
    step INTEGER,
    channel TEXT,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    cart_id TEXT,
    store_id TEXT,
    reason TEXT,
    error TEXT,
    deferred_until REAL,
    PRIMARY KEY (abandonment_id, step, channel, status, attempt, at)
);
CREATE TABLE IF NOT EXISTS operator_notices (
    store_id TEXT NOT NULL,
    event TEXT NOT NULL,
    abandonment_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    channel TEXT,
    detail TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (store_id, abandonment_id, step, event, at)
);
CREATE INDEX IF NOT EXISTS notices_by_time ON operator_notices (store_id, at);
CREATE TABLE IF NOT EXISTS carts (
    cart_id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS carts_by_time ON carts (store_id, created_at);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

LOG_COLUMNS = {"cart_id": "TEXT", "store_id": "TEXT", "reason": "TEXT", "error": "TEXT",
               "deferred_until": "REAL"}
"""Columns the notification log gained for the execution log page; databases written before
get them added empty (their offsets are stored, so old entries are not read again)."""


def _schema_1(db: sqlite3.Connection) -> None:
    """Version 1: the tables, and the log columns a database of the releases before schema
    versions may lack (they all have user_version 0: empty, or the tables with or without
    those columns). Every statement is idempotent on each of those shapes."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    present = {row[1] for row in db.execute("PRAGMA table_info(notifications)")}
    for name, kind in LOG_COLUMNS.items():
        if name not in present:
            db.execute(f"ALTER TABLE notifications ADD COLUMN {name} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (at)")


def _schema_2(db: sqlite3.Connection) -> None:
    """Version 2: the campaign and variant of each log entry and of each abandonment, for the
    results per campaign and variant (``streams.operator.results``). Both are decided once,
    when the abandonment is planned, and carried by every log entry; the abandonment's copy
    is what the results group by. Rows written before stay NULL: the entries they came from
    are behind the stored offsets (``CARTWATCH_READ_MODEL=memory`` or deleting the file
    rebuilds them)."""
    for table in ("notifications", "abandonments"):
        for name in ("campaign", "variant"):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS abandonments_by_campaign "
               "ON abandonments (store_id, campaign, variant)")


def _schema_3(db: sqlite3.Connection) -> None:
    """Version 3: the counted clicks on reminder links (``cartwatch-clicks``), one row per
    ``click_id``, for the ``clicked`` figure of the results per campaign. The click_id is the
    key because a producer's retry repeats it while a second click gets a new one: a retried
    or replayed click is one row, a person clicking twice is two. A database migrated here
    has no offsets of the click topic, so the feed reads it from its beginning: the clicks
    made before the upgrade are counted too."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS clicks (click_id TEXT PRIMARY KEY, "
        "abandonment_id TEXT NOT NULL, cart_id TEXT, store_id TEXT, step INTEGER NOT NULL, "
        "channel TEXT, campaign TEXT, variant TEXT, clicked_at REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS clicks_by_abandonment "
               "ON clicks (abandonment_id, step)")


BACKFILL_PRODUCTS = (
    "UPDATE abandonments SET products = coalesce((SELECT group_concat(lower(l.sku) || "
    "char(31) || lower(coalesce(l.name, '')), char(31)) FROM lines l "
    "WHERE l.abandonment_id = abandonments.abandonment_id), '') WHERE products IS NULL")
"""Also run at every open: after a rollback, the previous release wrote abandonments without
the column, and a product search would never find them."""


def _schema_4(db: sqlite3.Connection) -> None:
    """Version 4: each abandonment's SKUs and product names in one lower-cased column
    (``writes.searchable_products``), so a product search filters one table: with a probe of
    the lines per abandonment, a search walked tens of thousands of them at 1M abandonments.
    Filled from the lines already there (``group_concat``'s order does not matter to a
    "contains" search)."""
    db.execute("ALTER TABLE abandonments ADD COLUMN products TEXT")
    db.execute(BACKFILL_PRODUCTS)


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _schema_1, _schema_2, _schema_3, _schema_4)
"""``MIGRATIONS[n]`` turns a database of schema version n (``PRAGMA user_version``) into
version n+1. A schema change appends one; an existing one never changes, since databases in
the field already ran it. Only add columns that may be NULL (or have a default): a worker of
the previous release still writes rows without them during a rolling upgrade or a rollback."""
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the database to ``SCHEMA_VERSION`` at open, each step in its own transaction
    with its version number, so a crash mid-way resumes at the step it was in. Returns the
    database's version.

    A database of a *newer* version (a rollback to this release) is used as it is: every
    statement here names its columns, so the newer release's added columns stay NULL in the
    rows this one writes.
    """
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        log.warning("read model database has schema version %d, newer than this release's %d:"
                    " used as it is", version, SCHEMA_VERSION)
        return version
    for step in range(version, SCHEMA_VERSION):
        with _Transaction(db):
            MIGRATIONS[step](db)
            db.execute(f"PRAGMA user_version = {step + 1}")
        if version:
            log.info("read model database migrated to schema version %d", step + 1)
    return max(version, SCHEMA_VERSION)

class DecimalSum:
    """``cartwatch_decimal_sum(text)``: the exact sum of decimal amounts as text (``"10.00"`` +
    ``"5.5"`` = ``"15.50"``); NULLs are skipped and none gives NULL, as SQL's ``sum``."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, amount: str | None) -> None:
        if amount is not None:
            self.total = (self.total or Decimal(0)) + Decimal(str(amount))

    def finalize(self) -> str | None:
        return None if self.total is None else format(self.total, "f")


class Median:
    """``cartwatch_median(real)``: ``statistics.median`` of the non-NULL values, NULL for none."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    def finalize(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def sql_functions(db: sqlite3.Connection, *, floor: bool = False) -> None:
    """The SQL functions the read model's queries need beyond SQLite's own: the aggregates of
    ``streams.operator.insights``, and ``floor`` where SQLite was built without its math
    functions (or when ``floor`` is true, for the tests)."""
    # typeshed's aggregate protocol takes and returns int only
    db.create_aggregate("cartwatch_decimal_sum", 1, DecimalSum)  # type: ignore[arg-type]
    db.create_aggregate("cartwatch_median", 1, Median)  # type: ignore[arg-type]
    try:
        db.execute("SELECT floor(0.5)")
    except sqlite3.OperationalError:
        floor = True
    if floor:
        db.create_function("floor", 1, _floor, deterministic=True)


def _floor(value: float | None) -> float | None:
    """SQLite's ``floor``: a whole number as a REAL (an INTEGER stays one)."""
    if value is None or isinstance(value, int) or not math.isfinite(value):
        return value
    return float(math.floor(value))


@dataclass(frozen=True, slots=True)
class Offsets:
    """Where the feed resumes: the next offset to read per (topic, partition)."""

    positions: dict[tuple[str, int], int]


class ReadModel:
    """SQLite tables of abandonments, their lines, reminder attempts (with the reasons of
    skips and failures), clicks on reminder links, operator notifications and created carts.

    Not thread-safe by itself: ``streams.operator.feed.SharedReadModel`` serialises access.
    Writes of one consumed batch go in one transaction together with the batch's offsets, so
    a restarted worker resumes exactly where its database left off.
    """

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        sql_functions(self.db)
        if str(path) != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.schema_version = migrate(self.db)
        if self.schema_version >= 4:
            self.db.execute(BACKFILL_PRODUCTS)

    def close(self) -> None:
        self.db.close()

    def ping(self) -> None:
        """A file in this worker's data directory is always there."""

    # -- writes ---------------------------------------------------------------------------

    def write_batch(
        self, records: Iterable[object], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Apply decoded records and remember the offsets they came from, atomically."""
        with self._transaction():
            for record in records:
                self.apply(record)
            self._run(offset_writes(offsets))

    def apply(self, record: object) -> None:
        for write in record_writes(record):
            self._run(write)

    def _run(self, write: Write) -> None:
        self.db.executemany(write.statement, write.rows)

    def purge(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` abandonments older than ``before`` (epoch seconds) with
        their lines, log entries, clicks and notices, and at most ``limit`` created carts
        older than it (``streams.operator.retention``), in one transaction. Returns the rows
        deleted: 0 when nothing is left."""
        query = retention.expired(before, limit)
        with self._transaction():
            found = [tuple(row) for row in self.db.execute(query.statement, query.rows[0])]
            return sum(self.db.execute(write.statement, params).rowcount
                       for write in retention.purge_writes(found, before, limit)
                       for params in write.rows)

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.db)

    # -- reads ----------------------------------------------------------------------------

    def offsets(self) -> Offsets:
        rows = self.db.execute("SELECT topic, partition, next_offset FROM offsets")
        return Offsets({(row[0], row[1]): row[2] for row in rows})

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, tuple(params)).fetchall()

    def iterate(self, sql: str, params: Iterable[Any] = (), batch: int = 500) -> Iterator[
        list[sqlite3.Row]
    ]:
        """Rows in batches, for exports too large to hold in memory at once."""
        cursor = self.db.execute(sql, tuple(params))
        while rows := cursor.fetchmany(batch):
            yield rows

    def lines_of(self, abandonment_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The lines of each abandonment, in the order the snapshot listed them."""
        found: dict[str, list[dict[str, Any]]] = {key: [] for key in abandonment_ids}
        for start in range(0, len(abandonment_ids), 500):
            chunk = abandonment_ids[start:start + 500]
            rows = self.db.execute(
                "SELECT abandonment_id, sku, name, quantity, unit_price, line_total, url, "
                f"image_url FROM lines WHERE abandonment_id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY abandonment_id, position",
                chunk,
            )
            for row in rows:
                line = dict(row)
                found[line.pop("abandonment_id")].append(line)
        return found

    def sizes(self) -> dict[str, int]:
        """Row counts per table, for the metrics."""
        return {
            table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("abandonments", "lines", "notifications", "operator_notices", "carts",
                          "clicks")
        }

    def notification_counts(self) -> dict[str, int]:
        """Reminder attempts per status (sent, skipped, deferred, failed), all stores."""
        rows = self.db.execute("SELECT status, count(*) FROM notifications GROUP BY status")
        return {row[0]: row[1] for row in rows}


class _Transaction:
    """``BEGIN``/``COMMIT`` around a block (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    """An abandonment row as the API shows it: customer as an object, internal columns gone."""
    data = dict(row)
    for internal in ("status_rank", "total_value", "phone_digits", "customer_json", "products"):
        data.pop(internal, None)
    customer = row["customer_json"] if "customer_json" in row.keys() else None  # noqa: SIM118
    data["customer"] = json.loads(customer) if customer else None
    for flag in ("marketing_consent", "reminder_sent"):
        if data.get(flag) is not None:
            data[flag] = bool(data[flag])
    return data
