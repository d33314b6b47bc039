"""Format versions of the values cartwatch stores, and the one rule for reading them.

A worker rebuilds its state from what other releases wrote: after an upgrade it reads the
changelogs and RocksDB written by the release before it, and during a rolling upgrade (or a
rollback) a worker may even read a record written by a *newer* release. ``CartState(**data)``
made every worker fail on a record with a renamed or removed field, so every stored value (cart
state, reminder plan, contact, delivery record) is read through a ``StoredFormat``:

- Each stored dict carries its format version under ``"v"``. Writes always write the current
  version, so a record read in an older version is migrated the next time it is written.
- A record without ``"v"`` is version 0: the un-versioned dicts every release before format
  versions wrote, still in the changelogs of existing deployments.
- An older version goes through a chain of pure migrations, one per version step
  (``migrations[n]`` turns a version-n dict into version n+1).
- Unknown fields are ignored (logged once per field name, not per record); missing fields that
  have a default get it. A missing field without a default makes the record unreadable.
- A record from a *newer* version than the worker knows is read best effort: its known fields,
  the rest ignored (logged once per version). So a later release may add fields and stop using
  old ones, but must never give an existing field name a different meaning.
- A record that cannot be read raises ``UnreadableRecord``; ``readable`` lets a rebuild skip it
  with one log line naming its key instead of failing the whole rebuild.

Reading a cart is on the hot path (every checkpoint reads the carts its events touch), so a
record of the current version with exactly the current fields costs one dict lookup, one length
check and one ``itemgetter`` call; everything else takes the slow path.
"""

import logging
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

from pydantic_core import from_json

log = logging.getLogger(__name__)

VERSION_KEY = "v"
"""The key of a stored dict that holds its format version (absent: version 0)."""

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""A pure function from a record of version n (without its ``"v"``) to one of version n+1."""

T = TypeVar("T")


class UnreadableRecord(ValueError):
    """A stored record that no reading rule can turn into a value (corrupt or too foreign)."""


class StoredFormat:
    """The current format of one kind of stored value and how to read every other version.

    ``fields`` are the current version's field names in order (the order of the value's
    constructor arguments); ``defaults`` make a field optional: a record without it gets
    ``defaults[name]()``.
    """

    __slots__ = ("name", "version", "fields", "defaults", "migrations", "_known", "_items",
                 "_attrs", "_keys", "_stored_size", "_noted")

    def __init__(self, name: str, version: int, fields: Sequence[str],
                 defaults: Mapping[str, Callable[[], Any]],
                 migrations: Sequence[Migration]) -> None:
        if len(migrations) != version:
            raise ValueError(f"{name}: version {version} needs {version} migrations "
                             f"(0->1 ... {version - 1}->{version}), got {len(migrations)}")
        if len(fields) < 2 or VERSION_KEY in fields or not all(
            field.isidentifier() for field in fields
        ):
            raise ValueError(f"{name}: needs two fields or more, identifiers, none named "
                             f"{VERSION_KEY!r}")
        self.name = name
        self.version = version
        self.fields = tuple(fields)
        self.defaults = dict(defaults)
        self.migrations = tuple(migrations)
        self._known = frozenset(self.fields)
        self._items = operator.itemgetter(*self.fields)
        self._attrs = _dumper(version, self.fields)
        self._keys = (VERSION_KEY, *self.fields)
        self._stored_size = len(self.fields) + 1
        self._noted: set[str] = set()

    @classmethod
    def of_dataclass(cls, name: str, value_type: type, version: int,
                     migrations: Sequence[Migration]) -> "StoredFormat":
        """The format of a dataclass value: its fields, their defaults (or default factories)."""
        assert is_dataclass(value_type)
        defaults: dict[str, Callable[[], Any]] = {}
        for spec in fields(value_type):
            if spec.default_factory is not MISSING:
                defaults[spec.name] = spec.default_factory
            elif spec.default is not MISSING:
                defaults[spec.name] = _constant(spec.default)
        return cls(name, version, [spec.name for spec in fields(value_type)], defaults,
                   migrations)

    # -- writing ----------------------------------------------------------------------------

    def dump(self, value: object) -> dict[str, Any]:
        """A value's attributes as a stored dict of the current version."""
        return self._attrs(value)

    def write(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A record (a dict of the current fields) as a stored dict of the current version."""
        return dict(zip(self._keys, (self.version, *self._items(values)), strict=True))

    # -- reading ----------------------------------------------------------------------------

    def values(self, data: Any) -> tuple[Any, ...]:
        """The current fields of a stored dict of any version, in ``fields`` order.

        Raises ``UnreadableRecord`` when the record cannot be read.
        """
        try:
            if data.get(VERSION_KEY) == self.version and len(data) == self._stored_size:
                return self._items(data)
        except (AttributeError, KeyError, TypeError):
            pass  # not a dict, or the right size with a wrong field: the slow path says why
        return self._items(self.upgrade(data))

    def read(self, data: Any) -> dict[str, Any]:
        """A stored dict of any version as a dict of exactly the current fields."""
        return dict(zip(self.fields, self.values(data), strict=True))

    def upgrade(self, data: Any) -> dict[str, Any]:
        """The slow path: migrate, drop unknown fields, fill defaults (see the module doc)."""
        if not isinstance(data, Mapping):
            raise UnreadableRecord(f"{self.name}: a JSON object expected, "
                                   f"got {type(data).__name__}")
        version = data.get(VERSION_KEY, 0)
        if type(version) is not int or version < 0:
            raise UnreadableRecord(f"{self.name}: format version {version!r} is not a version")
        record = {key: value for key, value in data.items() if key != VERSION_KEY}
        if version > self.version:
            self._note(f"version {version}", "%s records of format version %d, newer than this "
                       "worker's %d: reading their known fields only", self.name, version,
                       self.version, level=logging.WARNING)
        for step in range(version, self.version):
            try:
                record = self.migrations[step](record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise UnreadableRecord(f"{self.name}: migrating version {step} to {step + 1} "
                                       f"failed: {type(exc).__name__}: {exc}") from None
        for unknown in record.keys() - self._known:
            self._note(f"field {unknown}", "%s records have a field %r this worker does not "
                       "know: ignored", self.name, unknown)
        for name in self.fields:
            if name not in record:
                if name not in self.defaults:
                    raise UnreadableRecord(f"{self.name}: required field {name!r} missing "
                                           f"(format version {version})")
                record[name] = self.defaults[name]()
        return record

    def _note(self, what: str, message: str, *args: object, level: int = logging.INFO) -> None:
        """Log ``message`` the first time ``what`` is seen: a changelog of a million records
        in an older or newer format would otherwise log a million lines."""
        if what not in self._noted:
            self._noted.add(what)
            log.log(level, message, *args)


def readable(stored: Iterable[tuple[Any, Any]], read: Callable[[Any], T], what: str
             ) -> Iterator[tuple[Any, T]]:
    """``(key, read(value))`` of every stored entry that can be read; the others are logged,
    one line naming the key each, and skipped, so that one bad record does not stop a worker
    from rebuilding the index of everything else."""
    for key, value in stored:
        try:
            yield key, read(value)
        except (UnreadableRecord, TypeError, ValueError, KeyError) as exc:
            log.error("unreadable %s record %r skipped (left in the table): %s", what, key, exc)


def json_entries(stored: Iterable[tuple[bytes, bytes]], what: str
                 ) -> Iterator[tuple[Any, Any]]:
    """The JSON-decoded ``(key, value)`` of raw table entries (``compat.table_stored_items``),
    each decoded on its own: one entry that is not JSON is logged with its raw key and skipped,
    where ``Table.items()`` stopped the whole iteration at it. Poison read from a changelog never
    gets this far (``streams.quarantine``); this covers a store it reached before that existed."""
    for key, value in stored:
        try:
            yield from_json(key), from_json(value)
        except ValueError as exc:
            log.error("undecodable %s record %r skipped (left in the table): %s", what, key, exc)


def _dumper(version: int, names: Sequence[str]) -> Callable[[object], dict[str, Any]]:
    """``lambda value: {"v": version, "a": value.a, ...}``, compiled once per format.

    Writing a cart is on the hot path, and a generated dict display takes 0.8 us where a
    comprehension over the names takes 1.4 us and ``dict(zip(...))`` 2 us (measured, 18
    fields); ``dataclasses`` generates its ``__init__`` the same way. The names are checked
    to be identifiers, so the source holds nothing but them.
    """
    items = ", ".join(f"{name!r}: value.{name}" for name in names)
    return eval(f"lambda value: {{{VERSION_KEY!r}: {version}, {items}}}")  # noqa: S307


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value
