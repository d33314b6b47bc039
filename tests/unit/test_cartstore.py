"""The cart table's bytes: what ``CartStore`` writes must be what Faust's table codec writes."""

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from streams.app import app, carts_table
from streams.cartstore import CartStore, decode_state, encode_state
from streams.lifecycle import CartState

store = CartStore(app, carts_table)


def faust_key(cart_id: str) -> bytes | None:
    return app.serializers.dumps_key(None, cart_id, serializer=carts_table.key_serializer)


@given(st.text(max_size=40))
def test_keys_are_the_bytes_faust_writes(cart_id: str) -> None:
    assert store.key(cart_id) == faust_key(cart_id)


def test_common_ids_and_the_ones_json_escapes() -> None:
    for cart_id in ("cart-000123", 'a"b', "a\\b", "tab\there", "caf\u00e9", "\u2028", ""):
        assert store.key(cart_id) == faust_key(cart_id), cart_id


def test_a_stored_cart_reads_back_and_is_the_json_faust_reads() -> None:
    state = CartState(cart_id="c-1", store_id="s", partition=1, status="active",
                      created_at=1.5, last_activity_at=2.25, currency="EUR",
                      lines={"MUG": {"quantity": 2, "unit_price": "12.50", "name": "Tasse Ł"}},
                      customer={"name": "Zoë", "email": "z@example.com"},
                      recent_event_ids=["e-1", "e-2"], scheduled_at=math.inf)
    stored = encode_state(state)
    assert decode_state(stored) == state
    assert json.loads(stored) == state.to_dict()  # Faust's own codec, e.g. in recovery
