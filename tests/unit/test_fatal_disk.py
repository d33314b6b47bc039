"""A full data directory stops the worker with one line naming the directory (``streams.fatal``)."""

import errno
import logging
import sqlite3
from pathlib import Path

import pytest

from config.settings import Settings
from streams.fatal import FatalErrors, classify, disk_full, full_data_directory

DATA_DIR = Path("/var/lib/cartwatch")
ROCKSDB_FULL = Exception("IO error: No space left on device: While appending to file: "
                         "/var/lib/cartwatch/app-data/v1/tables/carts-0.db/000004.log: "
                         "No space left on device")


def crashed(exc: BaseException) -> logging.LogRecord:
    """What Faust logs when an agent raises."""
    return logging.LogRecord("faust.agents.agent", logging.ERROR, __file__, 1,
                             "[^---Agent*: %s]: Crashed reason=%r", ("lifecycle", exc),
                             (type(exc), exc, None))


@pytest.mark.parametrize("exc", [
    ROCKSDB_FULL,
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    sqlite3.OperationalError("database or disk is full"),
])
def test_a_write_refused_for_space_names_the_data_directory(exc: BaseException):
    line = disk_full(exc, DATA_DIR)
    assert line is not None
    assert line.startswith(f"the data directory {DATA_DIR} is full ({exc}): free space")


def test_the_cause_of_a_wrapping_error_counts():
    try:
        try:
            raise ROCKSDB_FULL
        except Exception as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer, DATA_DIR) is not None


def test_a_looping_cause_chain_is_walked_once():
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert disk_full(first, DATA_DIR) is None  # returns: the loop is not followed forever


@pytest.mark.parametrize("exc", [
    OSError(errno.EACCES, "Permission denied"),
    Exception("IO error: While lock file: LOCK: Resource temporarily unavailable"),
    ValueError("no space for you"),
])
def test_other_failures_are_not_a_full_disk(exc: BaseException):
    assert disk_full(exc, DATA_DIR) is None


def test_the_watcher_ends_the_worker_at_once_on_a_full_data_directory():
    """At once (``halt``), not gracefully: a graceful stop commits offsets, and the input
    whose state could not be written must be read again. Even during a graceful stop."""
    settings = Settings(data_dir=DATA_DIR)
    stopped: list[str] = []
    halted: list[str] = []
    handler = FatalErrors(settings, stopped.append, halted.append)
    handler.reason = "Kafka broker node 1: authentication failed"  # stopping gracefully
    handler.handle(crashed(ROCKSDB_FULL))
    assert stopped == [] and len(halted) == 1 and str(DATA_DIR) in halted[0]
    assert full_data_directory(crashed(ValueError("a bug")), settings) is None
    assert classify(crashed(ROCKSDB_FULL), settings) is None  # not a Kafka failure
