"""Retention of the read model: rows older than ``operator.retention_days`` are deleted in
small batches, each its own short transaction, so the feed's writes go in between.

What goes (``purge_writes``): each abandonment whose ``abandoned_at`` is before the cut-off,
together with its lines, reminder attempts (``notifications``), clicks and operator notices,
all in the same transaction, so no abandonment is ever seen without its history; and each
created cart (``carts``) whose ``created_at`` is before it. Once no expired abandonment is left,
log entries, clicks and notices older than the cut-off whose abandonment is not in the read
model (any more) go too, so an entry read without its abandonment does not stay forever. The
``offsets`` table is never purged: the feed resumes from it.

**Rows read again come back until the next sweep.** Retention is a periodic sweep, not a
tombstone: nothing remembers what it deleted. The feed's stored offsets only move forward, so
in steady state a purged record is not read again; but a feed that reads a topic from its
beginning (``CARTWATCH_READ_MODEL=memory`` at every start, a new or deleted database, a topic
whose offsets the database never had) re-inserts whatever the topics still hold, and the next
sweep deletes it again. Keep the topics' own retention shorter than ``retention_days`` if
purged data must not reappear, even briefly.

Pure SQL in one place for both backends (``store.ReadModel``, ``pgstore.PostgresReadModel``):
``?`` placeholders (PostgreSQL's store rewrites them), every value a bound parameter, only
syntax SQLite and PostgreSQL share. ``purge_expired`` is the loop that drives a store's
``purge`` through the feed's ``SharedReadModel.run``; ``Retention`` binds it to the settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.operator.writes import Write

if TYPE_CHECKING:
    from config.operator import OperatorSettings
    from streams.operator.backends import ReadModelStore

log = logging.getLogger(__name__)

DAY = 86_400.0

PURGE_INTERVAL = 3600.0
"""Seconds between two sweeps (a sweep deletes everything expired, batch by batch)."""
PURGE_PAUSE = 0.05
"""Seconds a sweep waits between two batches, so the feed's writes (and API reads) get the
store and its lock in between."""
CHUNK = 500
"""Identifiers per ``IN (...)`` list: well below SQLite's older limit of 999 parameters."""

EXPIRED = ("SELECT abandonment_id, store_id FROM abandonments WHERE abandoned_at < ? "
           "ORDER BY abandoned_at LIMIT ?")
"""The oldest expired abandonments, at most ``limit`` (index ``abandonments_by_time``)."""
SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
"""PostgreSQL only, appended to ``EXPIRED``: lock the abandonments a batch deletes before their
children, skipping those a feed's transaction is writing, so the batch neither waits for a
feed nor locks rows in the opposite order of one (a deadlock). SQLite has one writer at a
time and no row locks."""

_CHILDREN = ("lines", "notifications", "clicks")
"""Tables keyed by (a prefix of) ``abandonment_id``; ``operator_notices`` leads with store_id."""

_ORPHANS = (("notifications", "at", "abandonment_id"), ("clicks", "clicked_at", "abandonment_id"),
            ("operator_notices", "at", "store_id, abandonment_id"))
"""Tables with rows of their own time whose abandonment may be missing: (table, time, key)."""


def expired(before: float, limit: int) -> Write:
    """The query of the abandonments one batch deletes (``EXPIRED`` with its parameters)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return Write(EXPIRED, [(before, limit)])


def purge_writes(abandonments: Sequence[Sequence[str]], before: float, limit: int
                 ) -> list[Write]:
    """The deletes of one batch, in order, given what ``expired`` found: (abandonment_id,
    store_id) pairs. Each parameter row is one statement; the stores sum their row counts.

    Children go before their abandonments. When ``expired`` found fewer than ``limit``
    abandonments (none is left after this batch), orphans older than ``before`` go too, at
    most ``limit`` abandonment ids of them per table: before that they would mostly belong to
    expired abandonments still waiting for their batch, which each batch would scan again.
    """
    ids = [row[0] for row in abandonments]
    by_store: dict[str, list[str]] = defaultdict(list)
    for abandonment_id, store_id in abandonments:
        by_store[store_id].append(abandonment_id)
    writes = [
        *(write for table in _CHILDREN
          for write in _in(f"DELETE FROM {table} WHERE abandonment_id IN", ids)),
        # by (store_id, abandonment_id): the leading columns of its primary key
        *(write for store, members in sorted(by_store.items())
          for write in _in("DELETE FROM operator_notices WHERE store_id = ? AND abandonment_id IN",
                           members, store)),
        *_in("DELETE FROM abandonments WHERE abandonment_id IN", ids),
        # No ORDER BY: none of the carts' indexes leads with created_at, and in insertion order
        # the old rows come first, so the scan stops after ``limit`` of them.
        Write("DELETE FROM carts WHERE cart_id IN "
              "(SELECT cart_id FROM carts WHERE created_at < ? LIMIT ?)", [(before, limit)]),
    ]
    if len(ids) < limit:
        writes.extend(
            Write(f"DELETE FROM {table} WHERE {when} < ? AND ({key}) IN "
                  f"(SELECT DISTINCT {key} FROM {table} x WHERE x.{when} < ? AND NOT EXISTS "
                  "(SELECT 1 FROM abandonments a WHERE a.abandonment_id = x.abandonment_id) "
                  "LIMIT ?)", [(before, before, limit)])
            for table, when, key in _ORPHANS)
    return writes


def _in(head: str, ids: Sequence[str], *leading: str) -> list[Write]:
    """``head (?, ?, ...)`` once per chunk of ``ids``, after the ``leading`` parameters."""
    return [Write(f"{head} ({', '.join('?' * len(chunk))})", [(*leading, *chunk)])
            for chunk in (ids[start:start + CHUNK] for start in range(0, len(ids), CHUNK))]


Run = Callable[[Callable[["ReadModelStore"], int]], Awaitable[int]]
"""How the loop reaches the store: ``SharedReadModel.run`` (a call in a worker thread, under
the lock the feed and the API share)."""


async def purge_expired(run: Run, clock: Callable[[], float], retention_seconds: float,
                        batch: int, pause: float = PURGE_PAUSE) -> int:
    """One sweep: delete what is older than ``retention_seconds`` before ``clock()`` (epoch
    seconds), ``batch`` abandonments at a time, pausing ``pause`` seconds between batches,
    until a batch deletes nothing. Returns the rows deleted and logs them in one line.

    The cut-off is taken once, at the start, so a sweep ends even while rows keep ageing past
    it. With PostgreSQL, a batch that another worker's sweep holds the lock of deletes
    nothing, which ends this sweep: that worker finishes the job.
    """
    before = clock() - retention_seconds
    total = batches = 0
    while deleted := await run(lambda model: model.purge(before, batch)):
        total += deleted
        batches += 1
        await asyncio.sleep(pause)
    log.info("read model retention: purged %d rows in %d batches (older than %s)",
             total, batches, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before)))
    return total


@dataclass(frozen=True)
class Retention:
    """The configured retention; ``sweep`` runs one ``purge_expired`` with it."""

    seconds: float
    batch: int
    pause: float = PURGE_PAUSE

    @classmethod
    def configured(cls, operator: OperatorSettings) -> Retention | None:
        """From ``operator.retention_days`` and ``retention_batch``; None: keep forever."""
        if operator.retention_days is None:
            return None
        return cls(operator.retention_days * DAY, operator.retention_batch)

    async def sweep(self, run: Run, clock: Callable[[], float] = time.time) -> int:
        return await purge_expired(run, clock, self.seconds, self.batch, self.pause)
