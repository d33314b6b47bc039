"""The published JSON Schema files: in sync with the pydantic models, declared as draft 2020-12,
and accepting what cartwatch really writes, checked by an independent validator (jsonschema)."""

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from config.notifier import ReminderPolicy, ReminderStep
from schemas.generate import DIALECT, SCHEMA_DIR, schema_files
from streams.intake import Rejected, dead_letter
from streams.lifecycle import apply_event, on_deadline
from streams.notifier.planning import cancel_reminders, decide_due_step, plan_reminders
from streams.notifier.sending import webhook_body
from tests.unit.factories import HOUR, MINUTE, T0, added, at, cart_event, make_settings, purchase

SETTINGS = make_settings(abandon_after="30m")
POLICY = ReminderPolicy(steps=[ReminderStep(after=HOUR)], webhook_url="https://hooks.test/x")
CONSENTING = {"email": "ann@example.com", "marketing_consent": True, "name": "Ann"}


def load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def test_schema_files_match_models() -> None:
    expected = schema_files()
    on_disk = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.schema.json")}
    assert on_disk.keys() == expected.keys(), "run: python -m schemas.generate"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale; run: python -m schemas.generate"


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.schema.json")), ids=lambda p: p.name)
def test_every_schema_declares_its_dialect_and_requires_type(path: Any) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == DIALECT
    Draft202012Validator.check_schema(schema)
    assert "type" in schema["properties"] and "type" in schema["required"]


def written_messages() -> list[tuple[str, dict[str, Any]]]:
    """(model name, JSON as published) of each kind of message, made by the code that makes
    them: the cart state machine, the intake's dead letter, the notifier's planner and sender."""
    made: list[Any] = []
    first = apply_event(None, added(sku="MUG", occurred_at=at(T0), customer=CONSENTING),
                        SETTINGS, 0)
    assert first.state is not None
    abandoned = on_deadline(first.state, T0 + HOUR, SETTINGS)
    assert abandoned.state is not None
    made += abandoned.outputs
    back = apply_event(abandoned.state, cart_event(occurred_at=at(T0 + HOUR)), SETTINGS, 0)
    assert back.state is not None
    made += back.outputs
    again = on_deadline(back.state, T0 + 2 * HOUR, SETTINGS)
    assert again.state is not None
    made += again.outputs
    made += apply_event(again.state, purchase(occurred_at=at(T0 + 2 * HOUR + MINUTE)),
                        SETTINGS, 0).outputs
    made.append(dead_letter(Rejected("not_json", "not JSON"), topic="cart-events",
                            partition=1, offset=7, key=b"c-1", value=b"{", now=T0))
    planned = plan_reminders(None, abandoned.outputs[0], POLICY, 0, T0 + HOUR).plan
    assert planned is not None
    made += cancel_reminders(planned, back.outputs[0], POLICY, T0 + HOUR).messages
    plan = plan_reminders(None, abandoned.outputs[0], POLICY, 0, T0 + HOUR).plan
    assert plan is not None
    due = decide_due_step(plan, POLICY, T0 + 2 * HOUR).messages
    made += due
    published = [(type(m).__name__, json.loads(m.model_dump_json())) for m in made]
    published.append(("WebhookReminder",
                      json.loads(webhook_body(due[0], POLICY, b"s" * 32, T0 + 2 * HOUR))))
    return published


def test_what_cartwatch_writes_is_valid_against_its_published_schema() -> None:
    messages = written_messages()
    assert {name for name, _ in messages} >= {
        "CartAbandoned", "CartReactivated", "CartRecovered", "DeadLetter", "ReminderDue",
        "NotificationLogEntry", "WebhookReminder"}
    for name, message in messages:
        Draft202012Validator(load(name)).validate(message)


def test_a_message_without_its_type_is_refused() -> None:
    """Consumers dispatch on ``type``: the contract must not let a producer leave it out."""
    for name, message in written_messages():
        del message["type"]
        with pytest.raises(ValidationError, match="'type' is a required property"):
            Draft202012Validator(load(name)).validate(message)
