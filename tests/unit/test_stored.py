"""The reading rule every stored value shares (``streams.stored``), on a made-up value type
whose format went through two changes, so the migration chain is exercised for real."""

import logging
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.stored import VERSION_KEY, StoredFormat, UnreadableRecord, readable


@dataclass(slots=True)
class Parcel:
    parcel_id: str
    weight_grams: int
    labels: list[str] = field(default_factory=list)
    note: str | None = None


def v0_to_v1(record: dict) -> dict:
    """Version 1 only added the version field."""
    return record


def v1_to_v2(record: dict) -> dict:
    """Version 2 renamed ``weight`` (kilograms) to ``weight_grams`` and dropped ``legacy``."""
    migrated = {key: value for key, value in record.items() if key not in ("weight", "legacy")}
    migrated["weight_grams"] = round(record["weight"] * 1000)
    return migrated


def parcel_format() -> StoredFormat:
    """A fresh format per test: each remembers which oddities it has already logged."""
    return StoredFormat.of_dataclass("parcel", Parcel, version=2,
                                     migrations=[v0_to_v1, v1_to_v2])


def read(data: object, stored: StoredFormat | None = None) -> Parcel:
    return Parcel(*(stored or parcel_format()).values(data))


def test_the_current_version_round_trips_and_writes_its_version() -> None:
    parcel = Parcel("p-1", 1200, ["fragile"], "door")
    stored = parcel_format().dump(parcel)

    assert stored == {VERSION_KEY: 2, "parcel_id": "p-1", "weight_grams": 1200,
                      "labels": ["fragile"], "note": "door"}
    assert read(stored) == parcel


def test_every_older_version_goes_through_the_chain() -> None:
    v0 = {"parcel_id": "p-1", "weight": 1.2, "legacy": True}  # un-versioned
    v1 = {VERSION_KEY: 1, "parcel_id": "p-1", "weight": 1.2, "labels": ["x"]}

    assert read(v0) == Parcel("p-1", 1200)
    assert read(v1) == Parcel("p-1", 1200, ["x"])


def test_migrations_are_not_applied_to_the_current_version() -> None:
    """A current record holding an old name keeps its own value: no migration ran on it."""
    stored = {VERSION_KEY: 2, "parcel_id": "p", "weight_grams": 5, "weight": 9.0}

    assert read(stored).weight_grams == 5


def test_unknown_fields_are_ignored_and_logged_once_per_name(
        caplog: pytest.LogCaptureFixture) -> None:
    stored = parcel_format()
    caplog.set_level(logging.INFO, logger="streams.stored")
    for number in range(3):
        record = {VERSION_KEY: 2, "parcel_id": f"p-{number}", "weight_grams": 1,
                  "labels": [], "note": None, "colour": "red", "shape": "box"}
        assert read(record, stored) == Parcel(f"p-{number}", 1)  # complete: not the fast path

    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2, logged
    assert any("'colour'" in line for line in logged) and any("'shape'" in line for line in logged)


def test_missing_optional_fields_get_their_defaults_and_fresh_lists() -> None:
    first = read({VERSION_KEY: 2, "parcel_id": "a", "weight_grams": 1})
    second = read({VERSION_KEY: 2, "parcel_id": "b", "weight_grams": 1})

    assert first == Parcel("a", 1, [], None)
    first.labels.append("x")
    assert second.labels == []  # a default factory, not one shared list


def test_a_missing_required_field_makes_the_record_unreadable() -> None:
    with pytest.raises(UnreadableRecord, match="'weight_grams'"):
        read({VERSION_KEY: 2, "parcel_id": "a", "labels": [], "note": None, "x": 1})


def test_a_newer_version_is_read_best_effort_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    stored = parcel_format()
    caplog.set_level(logging.INFO, logger="streams.stored")
    newer = {VERSION_KEY: 7, "parcel_id": "p", "weight_grams": 3, "labels": ["a"],
             "carrier": "dhl"}

    assert read(newer, stored) == Parcel("p", 3, ["a"])
    assert read(newer, stored) == Parcel("p", 3, ["a"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "version 7" in warnings[0].getMessage()


@pytest.mark.parametrize("data", [
    None, [1, 2], "text", 3,
    {VERSION_KEY: "2", "parcel_id": "p", "weight_grams": 1},
    {VERSION_KEY: -1, "parcel_id": "p", "weight_grams": 1},
    {VERSION_KEY: 1.5, "parcel_id": "p", "weight_grams": 1},
    {"parcel_id": "p"},  # v0 without weight: its migration cannot run
])
def test_records_no_release_wrote_are_unreadable(data: object) -> None:
    with pytest.raises(UnreadableRecord):
        read(data)


def test_a_current_record_of_the_right_size_with_a_wrong_field_takes_the_slow_path() -> None:
    """The fast path checks only the version and the size; the wrong name must not pass."""
    record = {VERSION_KEY: 2, "parcel_id": "p", "weight_grams": 1, "labels": [], "nope": 1}

    assert read(record) == Parcel("p", 1)


def test_read_and_write_of_plain_dict_records() -> None:
    stored = StoredFormat("pair", version=1, fields=("a", "b"), defaults={},
                          migrations=[v0_to_v1])

    assert stored.write({"b": 2, "a": 1, "c": 3}) == {VERSION_KEY: 1, "a": 1, "b": 2}
    assert stored.read({"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2}
    assert list(stored.read({VERSION_KEY: 1, "b": 2, "a": 1})) == ["a", "b"]


def test_a_version_without_its_migration_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="needs 2 migrations"):
        StoredFormat.of_dataclass("parcel", Parcel, version=2, migrations=[v0_to_v1])


def test_readable_skips_and_names_each_unreadable_record(
        caplog: pytest.LogCaptureFixture) -> None:
    stored = parcel_format()
    entries = [("good", {VERSION_KEY: 2, "parcel_id": "g", "weight_grams": 1}),
               ("bad", [1]),
               ("worse", {VERSION_KEY: "x"})]

    read_back = list(readable(entries, lambda data: read(data, stored), "parcel"))

    assert read_back == [("good", Parcel("g", 1))]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "'bad'" in errors[0] and "'worse'" in errors[1]


NAMES = (*Parcel.__slots__, VERSION_KEY)


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: k not in NAMES),
                       st.integers() | st.text() | st.none(), max_size=5),
       st.integers(min_value=0, max_value=2))
def test_any_extra_fields_on_any_known_version_never_change_what_is_read(
        extra: dict, version: int) -> None:
    base = {VERSION_KEY: 2, "parcel_id": "p", "weight_grams": 1500, "labels": ["l"]}
    if version < 2:
        base = {"parcel_id": "p", "weight": 1.5, "labels": ["l"]}
        if version == 1:
            base[VERSION_KEY] = 1
    record = {**extra, **base}

    assert read(record) == Parcel("p", 1500, ["l"])
