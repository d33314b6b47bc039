"""Golden fixtures: the stored values of the current release, as the next releases must read them.

Run it once per release that changes a stored format (``streams.stored``), into a new
directory named after the format version, and commit the result next to the older ones::

    python -m cartwatch_dev.golden tests/fixtures/golden/v1

It writes, from the current code and fixed times (so regenerating gives the same records):

- ``<table>.jsonl``: the changelog records of the cart table and the notifier's three tables,
  one JSON object per line: ``partition`` (of a deployment with ``PARTITIONS`` partitions, the
  one Faust's table would write it to), ``key`` and ``value`` (the record's bytes, which are
  UTF-8 JSON, as text; ``value`` null for a deletion);
- ``operator.sqlite3``: a read-model database with a few rows in every table.

The scenario (carts of ``STORE`` at ``BASE``, 2025-01-01 UTC): ``golden-past`` is active with
its deadline long gone, ``golden-future`` is active in store ``STORE_LATER`` (whose deadline a
test chooses with a per-store ``abandon_after``), ``golden-abandoned`` is abandoned with its
first reminder pending, ``golden-reminded`` is abandoned with a pending step whose delivery is
already recorded as sent (the plan's write was lost), ``golden-unsubscribed`` is abandoned for
an address that unsubscribed, ``golden-purchased`` was bought, and (from format version 3 on)
``golden-clicked`` is abandoned with its first reminder sent and its link clicked.
"""

import argparse
import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiokafka.partitioner import murmur2
from faust import Table

from config.notifier import ReminderPolicy
from config.settings import Settings
from schemas.common import utc_from_epoch
from schemas.events import CartEvent, PurchaseEvent
from schemas.notifications import (
    LinkClick,
    NotificationLogEntry,
    OperatorNotification,
    ReminderSent,
    unsubscribe_key,
)
from schemas.outputs import CartAbandoned
from streams.app import app, carts_table
from streams.cartstore import encode_state
from streams.lifecycle import (
    CartState,
    abandoned_message,
    apply_event,
    next_deadline,
    on_click,
    on_deadline,
    on_reminder_sent,
)
from streams.notifier.planning import ReminderPlan, idempotency_key, plan_reminders
from streams.notifier.sending import Contact, delivery_record
from streams.operator.store import ReadModel

PARTITIONS = 4
"""The partition count the records are placed for (``tests/pipeline_harness.PARTITIONS``)."""
BASE = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
STORE = "golden"
STORE_LATER = "golden-later"
TABLES = ("carts", "reminder_plans", "notifier_contacts", "notifier_deliveries")
"""Faust table names: the changelog topic of each is ``<app id>-<table>-changelog``."""
DATABASE = "operator.sqlite3"

CARTS = cast(Table, carts_table)  # app.Table is annotated TableT
SETTINGS = Settings()
POLICY = ReminderPolicy()


def partition_of(key: bytes) -> int:
    """The partition the default producer partitioner (murmur2) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def table_key(key: str) -> str:
    """A table key as Faust's table codec writes it (a JSON string). Every table of the app is
    declared the same way (``app.Table(name, default=None, ...)``), so the cart table's codec is
    every table's codec."""
    encoded = app.serializers.dumps_key(None, key, serializer=CARTS.key_serializer)
    assert isinstance(encoded, bytes)
    return encoded.decode()


def table_value(value: dict[str, Any]) -> str:
    """A notifier table's value as Faust's table codec writes it (JSON)."""
    encoded = app.serializers.dumps_value(None, value, serializer=CARTS.value_serializer)
    assert isinstance(encoded, bytes)
    return encoded.decode()


def cart_event(cart_id: str, store_id: str, number: int, at: float, email: str,
               **fields: Any) -> CartEvent:
    item = {"sku": f"SKU-{number}", "name": f"Product {number}", "quantity": number,
            "unit_price": f"{number}.50", "currency": "EUR"}
    return CartEvent.model_validate({
        "event_id": f"{cart_id}-e{number}", "type": "item_added", "cart_id": cart_id,
        "store_id": store_id, "occurred_at": utc_from_epoch(at).isoformat(), "item": item,
        "customer": {"email": email, "name": "Golden Customer", "marketing_consent": True},
        "cart_url": f"https://golden.example/cart/{cart_id}", **fields,
    })


def active_cart(cart_id: str, store_id: str, email: str) -> CartState:
    """A cart with two lines, last active at ``BASE``, its deadline held by the index."""
    partition = partition_of(cart_id.encode())
    state = None
    for number, at in ((1, BASE - 60), (2, BASE)):
        state = apply_event(state, cart_event(cart_id, store_id, number, at, email),
                            SETTINGS, partition).state
    assert state is not None
    state.scheduled_at = next_deadline(state, SETTINGS)
    return state


def abandoned_cart(cart_id: str, email: str) -> tuple[CartState, CartAbandoned]:
    state = active_cart(cart_id, STORE, email)
    transition = on_deadline(state, state.scheduled_at or 0.0, SETTINGS)
    assert transition.state is not None and transition.state.status == "abandoned"
    state = transition.state
    state.scheduled_at = next_deadline(state, SETTINGS)
    return state, abandoned_message(state)


def purchased_cart(cart_id: str) -> CartState:
    state = active_cart(cart_id, STORE, "buyer@example.com")
    purchase = PurchaseEvent.model_validate({
        "event_id": f"{cart_id}-p", "type": "order_completed", "cart_id": cart_id,
        "store_id": STORE, "occurred_at": utc_from_epoch(BASE + 600).isoformat(),
        "order_id": f"order-{cart_id}", "total": "4.00", "currency": "EUR",
    })
    purchased = apply_event(state, purchase, SETTINGS, state.partition).state
    assert purchased is not None
    purchased.scheduled_at = next_deadline(purchased, SETTINGS)
    return purchased


def clicked_cart(cart_id: str, email: str) -> CartState:
    """An abandoned cart whose first reminder was sent and its link clicked (format 3's
    attribution fields set)."""
    state, abandoned = abandoned_cart(cart_id, email)
    sent_at = utc_from_epoch(abandoned.abandoned_at.timestamp() + 86_400)
    feedback = ReminderSent(abandonment_id=abandoned.abandonment_id, cart_id=cart_id, step=1,
                            channel="email", sent_at=sent_at, campaign="default",
                            variant="control")
    click = LinkClick(click_id="golden-click", abandonment_id=abandoned.abandonment_id,
                      cart_id=cart_id, store_id=STORE, step=1, channel="email",
                      campaign="default", variant="control",
                      clicked_at=utc_from_epoch(sent_at.timestamp() + 600),
                      user_agent_class="mobile")
    for transition in (on_reminder_sent(state, feedback), on_click(state, click)):
        assert transition.state is state and transition.changed
    return state


def plan_of(abandoned: CartAbandoned) -> ReminderPlan:
    decision = plan_reminders(None, abandoned, POLICY, partition_of(abandoned.cart_id.encode()),
                              abandoned.abandoned_at.timestamp())
    assert decision.plan is not None
    return decision.plan


Record = tuple[int, str, str | None]


def records() -> dict[str, list[Record]]:
    """Every table's changelog records, in the order a worker would have written them."""
    past = active_cart("golden-past", STORE, "past@example.com")
    future = active_cart("golden-future", STORE_LATER, "future@example.com")
    pending, pending_message = abandoned_cart("golden-abandoned", "abandoned@example.com")
    reminded, reminded_message = abandoned_cart("golden-reminded", "reminded@example.com")
    unsubscribed, unsubscribed_message = abandoned_cart("golden-unsubscribed",
                                                        "unsub@example.com")
    purchased = purchased_cart("golden-purchased")
    clicked = clicked_cart("golden-clicked", "clicked@example.com")  # from format 3 on
    carts = [past, future, pending, reminded, unsubscribed, purchased, clicked]
    plans = [plan_of(message) for message in
             (pending_message, reminded_message, unsubscribed_message)]
    reminded_key = unsubscribe_key("reminded@example.com")
    unsubscribed_key = unsubscribe_key("unsub@example.com")
    sent_at = reminded_message.abandoned_at.timestamp() + 86_400
    contacts = [
        (reminded_key, Contact(last_sent_at=sent_at,
                               last_abandonment_id=reminded_message.abandonment_id)),
        (unsubscribed_key, Contact(unsubscribed_all=True, unsubscribed_stores=[STORE])),
    ]
    delivered = idempotency_key(reminded_message.abandonment_id, 1, "email")

    def cart_record(state: CartState) -> Record:
        return state.partition, table_key(state.cart_id), encode_state(state).decode()

    return {
        "carts": [cart_record(state) for state in carts],
        "reminder_plans": [(plan.partition, table_key(plan.cart_id), table_value(plan.to_dict()))
                           for plan in plans],
        "notifier_contacts": [(partition_of(key), table_key(key.decode()),
                               table_value(contact.to_dict())) for key, contact in contacts],
        "notifier_deliveries": [(partition_of(reminded_key), table_key(delivered),
                                 table_value(delivery_record("sent", sent_at)))],
    }


def read_model_records() -> list[object]:
    """What a read model of the scenario holds: abandonments, a log entry, a notice, a cart,
    and (from schema version 3 on) a click on the reminder's link."""
    _, abandoned = abandoned_cart("golden-reminded", "reminded@example.com")
    at = abandoned.abandoned_at
    return [
        abandoned,
        NotificationLogEntry(abandonment_id=abandoned.abandonment_id,
                             cart_id=abandoned.cart_id, store_id=STORE, step=1,
                             channel="email", status="sent", attempt=1,
                             campaign="default", variant="control",
                             idempotency_key=idempotency_key(abandoned.abandonment_id, 1,
                                                             "email"), at=at),
        OperatorNotification(store_id=STORE, event="sent",
                             abandonment_id=abandoned.abandonment_id, step=1, channel="email",
                             detail=None, at=at),
        cart_event("golden-past", STORE, 1, BASE - 60, "past@example.com"),
        LinkClick(click_id="golden-reminded-click", abandonment_id=abandoned.abandonment_id,
                  cart_id=abandoned.cart_id, store_id=STORE, step=1, channel="email",
                  campaign="default", variant="control",
                  clicked_at=utc_from_epoch(at.timestamp() + 600),
                  user_agent_class="desktop"),
    ]


def write_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    model = ReadModel(path)
    try:
        model.write_batch(read_model_records(), {("golden.cart-abandoned", 0): 1})
        model.db.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
    finally:
        model.close()


def database_contents(path: Path) -> list[str]:
    """A database's schema and rows as SQL, to compare two databases whatever SQLite wrote
    them (the file's header holds the library's version)."""
    db = sqlite3.connect(str(path))
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        return [f"PRAGMA user_version = {version}", *db.iterdump()]
    finally:
        db.close()


def write_jsonl(path: Path, lines: Iterable[Record]) -> None:
    path.write_text("".join(
        json.dumps({"partition": partition, "key": key, "value": value},
                   ensure_ascii=False) + "\n"
        for partition, key, value in lines), encoding="utf-8")


def generate(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for table, lines in records().items():
        write_jsonl(directory / f"{table}.jsonl", lines)
    write_database(directory / DATABASE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path,
                        help="e.g. tests/fixtures/golden/v1 (the current format version)")
    generate(parser.parse_args(argv).directory)


if __name__ == "__main__":
    main()
