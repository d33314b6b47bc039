"""Decoding raw input bytes into contract events, or into a precise Rejected reason."""

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas.events import CartEvent, PurchaseEvent
from schemas.outputs import DeadLetter
from streams.intake import KEPT_RAW_BYTES, Rejected, dead_letter, decode_input

from .factories import DAY, T0, at, cart_doc, encode, item_doc, make_settings, purchase_doc

NOW = T0 + 60.0
SETTINGS = make_settings(max_clock_skew="5m", max_event_age="400d")
KEY = b"cart-1"


def decode(value, *, kind="cart", key=KEY, now=NOW, settings=SETTINGS):
    return decode_input(kind, key, value, now, settings)


def rejection(value, **kwargs) -> Rejected:
    result = decode(value, **kwargs)
    assert isinstance(result, Rejected), f"accepted: {result!r}"
    return result


# --- accepted messages -----------------------------------------------------------------------


def test_valid_cart_event_decodes_to_the_contract_model():
    doc = cart_doc(
        "item_added",
        when=T0,
        event_id="e-1",
        item=item_doc("sku-9", 3, "19.99", "EUR", name="Mug"),
        customer={"email": "a@b.io", "timezone": "Europe/Paris"},
        producer_extra_field="ignored",
    )

    event = decode(encode(doc))

    assert isinstance(event, CartEvent)
    assert event.event_id == "e-1"
    assert event.type == "item_added"
    assert event.cart_id == "cart-1"
    assert event.store_id == "store-1"
    assert event.occurred_at == at(T0)
    assert event.item.quantity == 3
    assert event.item.unit_price == Decimal("19.99")
    assert event.item.name == "Mug"
    assert event.customer.timezone == "Europe/Paris"


def test_valid_purchase_decodes_to_the_contract_model():
    event = decode(encode(purchase_doc(order_id="o-7", total="59.97")), kind="purchase")

    assert isinstance(event, PurchaseEvent)
    assert event.order_id == "o-7"
    assert event.total == Decimal("59.97")
    assert event.currency == "EUR"


@pytest.mark.parametrize(
    "doc",
    [
        cart_doc("item_added", item=item_doc()),
        cart_doc("item_removed", item={"sku": "sku-1"}),
        cart_doc("quantity_changed", item={"sku": "sku-1", "quantity": 0}),
        cart_doc("cart_viewed"),
        cart_doc("checkout_started"),
        cart_doc("cart_cleared"),
        cart_doc("customer_identified", customer={"id": "u-1"}),
    ],
    ids=lambda doc: doc["type"],
)
def test_every_cart_event_type_is_accepted(doc):
    assert isinstance(decode(encode(doc)), CartEvent)


def test_timestamps_with_any_offset_are_accepted():
    doc = cart_doc()
    doc["occurred_at"] = "2024-01-01T02:00:00+02:00"

    assert decode(encode(doc)).occurred_at.timestamp() == T0


@pytest.mark.parametrize(
    "offset", [SETTINGS.max_clock_skew, -SETTINGS.max_event_age], ids=["skew", "age"]
)
def test_times_at_the_edges_of_the_window_are_accepted(offset):
    assert isinstance(decode(encode(cart_doc(when=NOW + offset))), CartEvent)


# --- rejected messages -----------------------------------------------------------------------


def test_missing_value_is_invalid():
    assert decode(None) == Rejected("invalid", "empty message value")


@pytest.mark.parametrize(
    "value",
    [b"", b"not json", b'{"type": "cart_viewed"', b'{"type": "caf\xe9"}', b"\xc3\x28"],
    ids=["empty", "text", "truncated", "latin1", "invalid-utf8"],
)
def test_bytes_that_are_not_utf8_json_are_not_json(value):
    rejected = rejection(value)

    assert rejected.kind == "not_json"
    assert rejected.error.startswith("not UTF-8 JSON: ")
    assert len(rejected.error) <= 300


@pytest.mark.parametrize(
    ("value", "name"), [(b"[1]", "list"), (b"null", "NoneType"), (b'"x"', "str"), (b"7", "int")]
)
def test_json_that_is_not_an_object_is_invalid(value, name):
    assert decode(value) == Rejected("invalid", f"expected a JSON object, got {name}")


@pytest.mark.parametrize(
    ("kind", "doc", "shown"),
    [
        ("cart", cart_doc("item_stolen"), "'item_stolen'"),
        ("cart", purchase_doc(), "'order_completed'"),
        ("purchase", cart_doc("item_added", item=item_doc()), "'item_added'"),
        ("cart", {"event_id": "e", "cart_id": "cart-1"}, "'None'"),
        ("cart", cart_doc(7), "'7'"),
    ],
    ids=["unknown", "purchase-on-cart-topic", "cart-on-purchase-topic", "missing", "number"],
)
def test_unknown_event_types(kind, doc, shown):
    rejected = rejection(encode(doc), kind=kind)

    assert rejected.kind == "unknown_type"
    assert rejected.error.startswith(f"unknown {kind} event type {shown}; expected one of ")
    expected = "order_completed" if kind == "purchase" else "cart_cleared, cart_viewed"
    assert expected in rejected.error


def test_huge_unknown_type_is_cut_in_the_error():
    rejected = rejection(encode(cart_doc("x" * 1_000_000)))

    assert rejected.kind == "unknown_type"
    assert len(rejected.error) < 300


def _without(doc, *names):
    return {key: value for key, value in doc.items() if key not in names}


@pytest.mark.parametrize(
    ("kind", "doc", "error"),
    [
        (
            "cart",
            _without(cart_doc(), "event_id", "occurred_at"),
            "event_id: Field required; occurred_at: Field required",
        ),
        (
            "purchase",
            _without(purchase_doc(), "total"),
            "total: Field required",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(quantity="2")),
            "item.quantity: Input should be a valid integer",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(quantity=2.0)),
            "item.quantity: Input should be a valid integer",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(quantity=True)),
            "item.quantity: Input should be a valid integer",
        ),
        (
            "cart",
            cart_doc("quantity_changed", item=item_doc(quantity=-1)),
            "item.quantity: Input should be greater than or equal to 0",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(quantity=10**12)),
            "item.quantity: Input should be less than or equal to 10000",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(unit_price=9.5)),
            'item.unit_price: Value error, money amounts are decimal strings, for example "19.90"',
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(unit_price="-1")),
            "item.unit_price: Input should be greater than or equal to 0",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(unit_price="1.00001")),
            "item.unit_price: Decimal input should have no more than 4 decimal places",
        ),
        (
            "purchase",
            purchase_doc(total=59.97),
            'total: Value error, money amounts are decimal strings, for example "19.90"',
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(name="x" * 1_000_000)),
            "item.name: String should have at most 500 characters",
        ),
        (
            "cart",
            cart_doc(event_id="x" * 1_000_000),
            "event_id: String should have at most 200 characters",
        ),
        (
            "cart",
            cart_doc(cart_id="bad\nid"),
            "cart_id: String should match pattern '^[^\\x00-\\x1f\\x7f]+$'",
        ),
        (
            "cart",
            {**cart_doc(), "occurred_at": "2024-01-01T00:00:00"},
            "occurred_at: Input should have timezone info",
        ),
        (
            "cart",
            cart_doc("item_added"),
            "message: Value error, item_added needs an item",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(quantity=0)),
            "message: Value error, item_added needs item.quantity >= 1",
        ),
        (
            "cart",
            cart_doc("item_added", item=item_doc(currency=None)),
            "message: Value error, item_added needs item.unit_price and item.currency",
        ),
        (
            "cart",
            cart_doc(customer={"timezone": "Mars/Olympus"}),
            "customer.timezone: Value error, unknown IANA time zone 'Mars/Olympus'",
        ),
    ],
    ids=[
        "missing-fields",
        "missing-total",
        "quantity-string",
        "quantity-float",
        "quantity-bool",
        "quantity-negative",
        "quantity-huge",
        "price-number",
        "price-negative",
        "price-precision",
        "total-number",
        "1mb-name",
        "1mb-event-id",
        "control-char-id",
        "no-offset",
        "no-item",
        "zero-quantity",
        "no-currency",
        "unknown-zone",
    ],
)
def test_contract_violations_are_invalid_with_a_readable_error(kind, doc, error):
    key = doc.get("cart_id", "cart-1").encode()

    assert decode(encode(doc), kind=kind, key=key) == Rejected("invalid", error)


def test_validation_error_lists_at_most_five_problems_and_stays_short():
    doc = {"type": "order_completed", "currency": "euro", "total": 1.5}

    rejected = rejection(encode(doc), kind="purchase")

    assert rejected.kind == "invalid"
    assert rejected.error.count(";") == 4
    assert len(rejected.error) <= 1000


@pytest.mark.parametrize("key", [None, b"cart-2", b"", b"\xffcart-1"])
def test_message_key_must_be_the_cart_id(key):
    assert decode(encode(cart_doc()), key=key) == Rejected(
        "invalid", "message key must be the cart_id (it decides the partition)"
    )


def test_far_future_event_is_out_of_range():
    rejected = rejection(encode(cart_doc(when=NOW + 5 * 60 + 1)))

    assert rejected == Rejected(
        "out_of_range_time", "occurred_at 2024-01-01 00:06:01+00:00 is in the future"
    )


def test_too_old_event_is_out_of_range():
    rejected = rejection(encode(cart_doc(when=NOW - 400 * DAY - 1)))

    assert rejected.kind == "out_of_range_time"
    assert rejected.error.endswith("is too old")


def test_time_window_follows_the_settings():
    strict = make_settings(max_clock_skew="10s", max_event_age="1h")
    doc = encode(cart_doc(when=NOW + 11))

    assert decode(doc, settings=strict).kind == "out_of_range_time"
    assert isinstance(decode(doc), CartEvent)
    assert decode(encode(cart_doc(when=NOW - 3601)), settings=strict).kind == "out_of_range_time"


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_at_the_ends_of_the_calendar_are_out_of_range(occurred_at):
    assert rejection(encode({**cart_doc(), "occurred_at": occurred_at})).kind == (
        "out_of_range_time"
    )


# --- decoder bugs: it must answer Rejected, never raise or accept ----------------------------


@pytest.mark.parametrize("kind", ["cart", "purchase"])
@pytest.mark.parametrize("event_type", [["item_added"], {"a": 1}])
def test_unhashable_type_is_rejected(kind, event_type):
    assert rejection(encode({"type": event_type}), kind=kind).kind == "unknown_type"


def test_deeply_nested_json_is_rejected():
    assert rejection(b"[" * 100_000 + b"]" * 100_000).kind in ("not_json", "invalid")


def test_time_zone_naming_a_directory_is_invalid():
    rejected = rejection(encode(cart_doc(customer={"timezone": "America"})))

    assert rejected == Rejected(
        "invalid", "customer.timezone: Value error, unknown IANA time zone 'America'"
    )


def test_utf16_json_is_not_accepted():
    assert rejection(json.dumps(cart_doc()).encode("utf-16")).kind == "not_json"


@pytest.mark.parametrize("occurred_at", [T0, "1704067200"])
def test_epoch_number_timestamp_is_invalid(occurred_at):
    assert rejection(encode({**cart_doc(), "occurred_at": occurred_at})).kind == "invalid"


# --- dead letters ----------------------------------------------------------------------------


def test_dead_letter_keeps_the_raw_bytes_and_the_reason():
    value = b'{"type": "nope", "x": "\xff"}'

    letter = dead_letter(
        Rejected("unknown_type", "unknown cart event type 'nope'"),
        topic="cart-events",
        partition=4,
        offset=1234,
        key=b"cart-1",
        value=value,
        now=NOW,
    )

    assert letter == DeadLetter(
        source_topic="cart-events",
        partition=4,
        offset=1234,
        key_base64=base64.b64encode(b"cart-1").decode(),
        value_base64=base64.b64encode(value).decode(),
        value_truncated=False,
        error="unknown cart event type 'nope'",
        error_kind="unknown_type",
        failed_at=at(NOW),
    )
    assert base64.b64decode(letter.value_base64) == value
    assert json.loads(letter.model_dump_json())["failed_at"] == "2024-01-01T00:01:00Z"


def test_dead_letter_without_key_or_value():
    letter = dead_letter(
        Rejected("invalid", "empty message value"),
        topic="purchase-events",
        partition=0,
        offset=0,
        key=None,
        value=None,
        now=NOW,
    )

    assert letter.key_base64 is None
    assert letter.value_base64 is None
    assert letter.value_truncated is False


@pytest.mark.parametrize(
    ("size", "truncated"),
    [(KEPT_RAW_BYTES, False), (KEPT_RAW_BYTES + 1, True), (1024 * 1024, True)],
)
def test_dead_letter_truncates_large_values(size, truncated):
    value = bytes(range(256)) * (size // 256) + b"z" * (size % 256)

    letter = dead_letter(
        Rejected("not_json", "x"), topic="t", partition=0, offset=1, key=b"k", value=value, now=NOW
    )

    assert letter.value_truncated is truncated
    assert base64.b64decode(letter.value_base64) == value[:KEPT_RAW_BYTES]
    assert len(letter.model_dump_json()) < 1_000_000


def test_rejection_of_a_1mb_message_makes_a_dead_letter_that_fits_kafka():
    value = encode(cart_doc("item_added", item=item_doc(name="x" * 1_000_000)))
    rejected = rejection(value)

    letter = dead_letter(
        rejected, topic="cart-events", partition=1, offset=9, key=KEY, value=value, now=NOW
    )

    assert letter.error_kind == "invalid"
    assert letter.value_truncated is True
    assert len(letter.model_dump_json().encode()) < 1_000_000


# --- properties ------------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = [
    "event_id",
    "cart_id",
    "store_id",
    "occurred_at",
    "item",
    "customer",
    "cart_url",
    "order_id",
    "total",
    "currency",
]


def _assert_answered(result, value):
    assert isinstance(result, CartEvent | PurchaseEvent | Rejected)
    if isinstance(result, Rejected):
        assert result.kind in ("not_json", "invalid", "unknown_type", "out_of_range_time")
        assert isinstance(result.error, str) and result.error
        letter = dead_letter(
            result, topic="t", partition=0, offset=0, key=KEY, value=value, now=NOW
        )
        assert letter.error_kind == result.kind


@hypothesis_settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["cart", "purchase"]), value=st.binary(max_size=300))
def test_decoder_never_raises_on_arbitrary_bytes(kind, value):
    _assert_answered(decode(value, kind=kind), value)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["cart", "purchase"]),
    # a string or null type; other JSON values as type: test_unhashable_type_is_rejected
    event_type=st.none()
    | st.sampled_from(["item_added", "order_completed", "cart_cleared"])
    | st.text(max_size=15),
    fields=st.dictionaries(st.sampled_from(_FIELDS), _json_values, max_size=6),
)
def test_decoder_never_raises_on_arbitrary_json_documents(kind, event_type, fields):
    base = purchase_doc() if kind == "purchase" else cart_doc("item_added", item=item_doc())
    value = encode({**base, **fields, "type": event_type})

    _assert_answered(decode(value, kind=kind), value)


def test_refuse_logs_one_line_counts_and_keeps_the_raw_bytes(caplog) -> None:
    from collections import Counter
    from types import SimpleNamespace

    from streams.intake import Rejected, refuse

    message = SimpleNamespace(topic="cart-events", partition=2, offset=41, key=b"c-1",
                              value=b"{not json")
    counters: Counter[str] = Counter()
    with caplog.at_level("ERROR", logger="streams.intake"):
        letter = refuse(message, Rejected("not_json", "Expecting property name"), 0.0, counters)
    assert [r.getMessage() for r in caplog.records] == [
        "dead-lettered cart-events[2]@41 (not_json): Expecting property name"]
    assert counters == {"dead_lettered": 1}
    assert (letter.source_topic, letter.partition, letter.offset, letter.error_kind) == (
        "cart-events", 2, 41, "not_json")
    assert base64.b64decode(letter.value_base64 or "") == b"{not json"
