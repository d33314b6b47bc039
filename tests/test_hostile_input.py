"""Hostile input: every bad message becomes one dead letter with a reason; nothing else changes.

Property-based checks run on the decoder alone (no broker); the integration test pushes the
hand-written catalog (``cartwatch_dev.chaos.hostile``), interleaved with good seeded traffic,
through a real worker and checks the exact dead-letter kinds and the exact abandonment set.
"""

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import get_args

import pytest
from cartwatch_dev.chaos import Deployment, hostile_input
from cartwatch_dev.chaos.hostile import ONE_MB, hostile_messages
from cartwatch_dev.loadgen.model import iso
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.settings import Settings
from schemas.events import CartEvent, PurchaseEvent
from schemas.outputs import DeadLetter
from streams.intake import ErrorKind, Rejected, dead_letter, decode_input

SETTINGS = Settings()
KINDS = set(get_args(ErrorKind))
NOW = time.time()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def good_event() -> dict:
    return {"event_id": "e-1", "type": "item_added", "cart_id": "c-1", "store_id": "s",
            "occurred_at": iso(NOW),
            "item": {"sku": "A", "quantity": 1, "unit_price": "1.00", "currency": "EUR"}}


def decode(value: bytes | None, key: bytes | None = b"c-1", kind: str = "cart"):
    return decode_input(kind, key, value, NOW, SETTINGS)  # type: ignore[arg-type]


def assert_refused_or_valid(result: object, value: bytes | None, key: bytes | None) -> None:
    """Never an exception: a contract event, or a refusal with a kind, a reason, and a dead
    letter that serialises within Kafka's default message size."""
    if isinstance(result, CartEvent | PurchaseEvent):
        return
    assert isinstance(result, Rejected)
    assert result.kind in KINDS and result.error
    letter = dead_letter(result, topic="cart-events", partition=0, offset=1, key=key,
                         value=value, now=NOW)
    assert len(letter.model_dump_json()) < 1_000_000
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


@given(value=st.binary(max_size=2000), key=st.none() | st.binary(max_size=50))
@hypothesis_settings(max_examples=300, deadline=None)
def test_any_bytes_are_decoded_or_refused(value: bytes, key: bytes | None) -> None:
    assert_refused_or_valid(decode(value, key), value, key)


@given(document=json_values)
@hypothesis_settings(max_examples=300, deadline=None)
def test_any_json_document_is_decoded_or_refused(document: object) -> None:
    value = json.dumps(document).encode()
    assert_refused_or_valid(decode(value), value, b"c-1")


@given(field=st.sampled_from(["event_id", "type", "cart_id", "store_id", "occurred_at", "item",
                              "customer", "cart_url"]),
       replacement=json_values)
@hypothesis_settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
def test_a_good_event_with_any_field_replaced_is_decoded_or_refused(
    field: str, replacement: object
) -> None:
    event = good_event()
    event[field] = replacement
    value = json.dumps(event).encode()
    result = decode(value)
    assert_refused_or_valid(result, value, b"c-1")
    if field in ("event_id", "cart_id", "store_id", "occurred_at") and not isinstance(
        replacement, str
    ):
        assert isinstance(result, Rejected)


@given(quantity=st.integers() | st.floats(allow_nan=True, allow_infinity=True))
@hypothesis_settings(max_examples=200, deadline=None)
def test_only_whole_quantities_within_the_limit_are_accepted(quantity: float) -> None:
    event = good_event()
    event["item"]["quantity"] = quantity
    result = decode(json.dumps(event).encode())
    valid = isinstance(quantity, int) and 1 <= quantity <= 10_000
    assert isinstance(result, CartEvent) == valid, result
    if not valid:
        assert isinstance(result, Rejected) and result.kind == "invalid"


@given(offset=st.floats(min_value=-1e10, max_value=1e10))
@hypothesis_settings(max_examples=200, deadline=None)
def test_timestamps_outside_the_allowed_window_are_out_of_range(offset: float) -> None:
    moment = NOW + offset
    if not 0 < moment < 253402300799:  # outside what RFC 3339 / datetime can write
        return
    event = good_event()
    event["occurred_at"] = iso(moment)
    result = decode(json.dumps(event).encode())
    if SETTINGS.max_clock_skew >= offset >= -SETTINGS.max_event_age + 1:
        assert isinstance(result, CartEvent)
    elif offset > SETTINGS.max_clock_skew + 1 or offset < -SETTINGS.max_event_age - 1:
        assert isinstance(result, Rejected) and result.kind == "out_of_range_time"


def test_every_catalog_message_gets_its_stated_refusal() -> None:
    """The chaos catalog's expectations hold for the decoder itself (so a failure of the
    integration test points at the pipeline, not at the catalog)."""
    catalog = hostile_messages(NOW)
    assert len({h.label for h in catalog}) == len(catalog)
    for hostile in catalog:
        kind = "cart" if hostile.topic == "cart_events" else "purchase"
        result = decode(hostile.value, hostile.key, kind)
        assert isinstance(result, Rejected) and result.kind == hostile.kind, hostile.label
    big = next(h for h in catalog if h.label == "one-mb-string")
    assert big.value is not None and len(big.value) > ONE_MB > 1_000_012  # above Kafka's default


@pytest.fixture
async def deployment(kafka_bootstrap: str, unique_names, tmp_path: Path
                     ) -> AsyncIterator[Deployment]:
    deployment = Deployment(kafka_bootstrap, tmp_path, prefix=unique_names.prefix)
    await deployment.create_topics()
    try:
        yield deployment
    finally:
        deployment.stop_all()


@pytest.mark.integration
async def test_hostile_messages_between_good_ones_are_dead_lettered_and_the_rest_counts(
    deployment: Deployment,
) -> None:
    result = await hostile_input(deployment, carts=200)
    catalog = hostile_messages(time.time())
    assert result.dead_letters == Counter(h.kind for h in catalog)
    assert result.dead_letters == Counter(
        not_json=3, invalid=16, unknown_type=3, out_of_range_time=2)
    assert result.expected.abandonment_ids
    assert result.abandoned == result.expected.abandonment_ids
    assert result.recovered == result.expected.recovered_ids
    assert result.reactivated == result.expected.reactivated_ids
    assert result.verdict.ok, result.verdict.problems()  # each cart's lines and totals too
    assert result.problems() == []  # includes: the worker is still running
    assert deployment.workers[0].alive
