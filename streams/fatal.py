"""Stop a running worker on an error that retrying cannot fix: Kafka refusing it, or its data
directory full.

After start-up (see ``streams.kafka_check``), a revoked ACL, a changed password or a rotated
broker certificate surface only as log records: aiokafka logs "Unable connect to node 1:
SaslAuthenticationFailed..." and retries forever, and Faust restarts a crashed agent forever.
``FatalErrors`` is a logging handler that recognises those records, remembers one line
naming the broker or the resource and the cause, and stops the worker (SIGTERM: the normal,
graceful stop). ``cartwatch worker`` then exits non-zero with that line; if the graceful stop
hangs, a watchdog ends the process after ``GRACE`` seconds.

A full data directory surfaces the same way: RocksDB (or the operator's SQLite) refuses a write
and the code that wrote logs the exception, whether Faust (an agent crashed, to be restarted
and fail again) or cartwatch (a message whose processing failed, about to be dead-lettered as
if it were at fault). That worker stops *at once*, from inside the logging call, as a kill -9
would: before the message is dead-lettered or acknowledged, and before a graceful stop could
commit offsets past input whose state was never written. The changelog records already sent
and the unacknowledged input are read again by the restarted worker once space is freed, the
same recovery a crash gets.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)

from config.settings import Settings
from streams.kafka_access import OPERATIONS, grants
from streams.kafka_check import causes, explain

GRACE = 15.0
"""Seconds the graceful stop may take before the process is ended regardless."""
EXIT_CODE = 3

AUTHORIZATION = (TopicAuthorizationFailedError, GroupAuthorizationFailedError,
                 ClusterAuthorizationFailedError)


def _exceptions(record: logging.LogRecord) -> Iterator[tuple[str, BaseException]]:
    """The exceptions a record carries, each with the broker it names if any."""
    args = record.args if isinstance(record.args, tuple) else ()
    broker = "the cluster"
    if len(args) >= 2 and not isinstance(args[0], BaseException):
        broker = (f"{args[0]}:{args[1]}" if isinstance(args[1], int | str) and
                  str(args[1]).isdigit() else f"node {args[0]}")
    if record.exc_info and record.exc_info[1] is not None:
        yield broker, record.exc_info[1]
    for arg in args:
        if isinstance(arg, BaseException):
            yield broker, arg


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
"""How RocksDB (``rocksdict`` raises a plain ``Exception`` with RocksDB's status text) and
SQLite say it; an ``OSError`` says it with its errno."""


def disk_full(exc: BaseException, data_dir: Path) -> str | None:
    """One line naming the data directory if ``exc`` (or its cause) is a write refused for
    lack of space, else None."""
    for chain in causes(exc):
        if (isinstance(chain, OSError) and chain.errno in NO_SPACE) or any(
                text in str(chain) for text in NO_SPACE_TEXTS):
            return (f"the data directory {data_dir.resolve()} is full ({chain}): free space "
                    "there and restart the worker; the changelogs and the unacknowledged "
                    "input are read again, so nothing is lost")
    return None


def full_data_directory(record: logging.LogRecord, settings: Settings) -> str | None:
    """One line if ``record`` reports a write refused because the data directory is full."""
    for _, exc in _exceptions(record):
        full = disk_full(exc, settings.data_dir)
        if full is not None:
            return full
    return None


def classify(record: logging.LogRecord, settings: Settings) -> str | None:
    """One line if ``record`` reports a Kafka failure retrying cannot fix, else None."""
    for broker, exc in _exceptions(record):
        line = explain(broker, settings.kafka, exc, at_start=False)
        if line is not None:
            return line
        for chain in causes(exc):
            if isinstance(chain, AUTHORIZATION):
                return f"Kafka refused an operation: {chain}{_needed(chain, settings)}"
    return None


def _needed(exc: BaseException, settings: Settings) -> str:
    """What cartwatch needs on the resources the broker's error names (it names the topic or
    group, not the refused operation)."""
    text = str(exc)
    needs: dict[str, list[str]] = {}
    for grant in grants(settings):
        if grant.name in text:
            operations = needs.setdefault(f"{grant.resource} {grant.name}", [])
            operations += [op for op in grant.operations if op not in operations]
            operations.sort(key=OPERATIONS.index)
    named = "; ".join(f"{', '.join(ops)} on {resource}" for resource, ops in needs.items())
    return (f" (cartwatch needs {named}: see `cartwatch acls`)" if named
            else " (see `cartwatch acls` for the ACLs cartwatch needs)")


class FatalErrors(logging.Handler):
    """Recognises fatal errors in the log and stops the process once."""

    def __init__(self, settings: Settings, stop: Callable[[str], None],
                 halt: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.settings = settings
        self.stop = stop
        """Stops gracefully (a Kafka refusal: what was processed is committed first)."""
        self.halt = halt
        """Ends the process now (a full disk: nothing more may be committed)."""
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == __name__:
            return
        full = full_data_directory(record, self.settings)
        if full is not None:  # even during a graceful stop: that would commit
            self.reason = full
            self.halt(full)
            return
        if self.reason is not None:
            return
        line = classify(record, self.settings)
        if line is not None:
            self.reason = line
            self.stop(line)


def _halt(line: str) -> None:
    """Say why on the log and as the last line of stderr, then end the process at once."""
    logging.getLogger(__name__).critical("stopping at once: %s", line)
    sys.stdout.flush()
    # to the file descriptor: Faust has replaced sys.stderr with a logger
    os.write(2, f"cartwatch: {line}\n".encode())
    os._exit(EXIT_CODE)


def _stop_gracefully(line: str) -> None:
    logging.getLogger(__name__).critical("stopping: %s", line)
    timer = threading.Timer(GRACE, _halt, (line,))
    timer.daemon = True
    timer.start()
    os.kill(os.getpid(), signal.SIGTERM)


def watcher(settings: Settings) -> FatalErrors:
    """The handler for the worker's log handlers (Faust's ``loghandlers``, which the worker
    installs on the root logger after it has set up logging, which drops earlier ones)."""
    return FatalErrors(settings, _stop_gracefully, _halt)
