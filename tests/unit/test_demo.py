"""The demo's plan: the worker settings it writes, its environment, and what it prints."""

from email.message import EmailMessage
from pathlib import Path

import click
import pytest
from cartwatch_dev.demo import (
    STORES,
    DemoPlan,
    Mailbox,
    demo_config,
    parse_steps,
    status_line,
    worker_environment,
)
from cartwatch_dev.stack import StackState

from config.settings import load_settings
from streams.notifier.rendering import check_templates

STATE = StackState(stack_dir=Path("/s"), bootstrap="127.0.0.1:9092", external_broker=False,
                   smtp_address="127.0.0.1:1025", maildir=Path("/s/mail"))


def settings_of(plan: DemoPlan, tmp_path: Path):  # type: ignore[no-untyped-def]
    plan = DemoPlan(**{**plan.__dict__, "workdir": tmp_path})
    (tmp_path / "cartwatch.toml").write_text(demo_config(plan))
    (tmp_path / "link-secret").write_text("s" * 32)
    return load_settings(worker_environment(plan, STATE, {"PATH": "/bin"}))


def test_the_worker_settings_are_valid_and_remind_consenting_shoppers_quickly(tmp_path):
    settings = settings_of(DemoPlan(), tmp_path)

    assert settings.abandon_after == 20.0 and settings.notifier.enabled
    assert (settings.notifier.smtp.host, settings.notifier.smtp.port) == ("127.0.0.1", 1025)
    assert settings.topic("cart_events") == "demo.cart-events"
    for store_id, name in STORES.items():
        policy = settings.notifier.policy(store_id)
        assert [(s.after, s.template) for s in policy.steps] == [(10.0, "reminder"),
                                                                 (40.0, "last-chance")]
        assert policy.require_marketing_consent and policy.store_name == name
        assert policy.shop_url == f"https://{store_id}.shop.example/"
        assert policy.unsubscribe_url == "http://127.0.0.1:6066/cartwatch/unsubscribe/"
    check_templates(settings.notifier.policies().items())


def test_one_step_uses_the_reminder_template(tmp_path):
    settings = settings_of(DemoPlan(reminders=(2.0,), abandon_after=4.0), tmp_path)
    assert [(s.after, s.template) for s in settings.notifier.reminders.steps] == [
        (2.0, "reminder")]
    assert settings.abandon_after == 4.0


def test_the_callers_own_settings_do_not_leak_into_the_demo():
    env = worker_environment(DemoPlan(), STATE, {"PATH": "/bin", "CARTWATCH_CONFIG": "/prod",
                                                 "CARTWATCH_APP_ID": "production"})
    assert env["CARTWATCH_APP_ID"] == "cartwatch-demo" and env["PATH"] == "/bin"
    assert env["CARTWATCH_CONFIG"].endswith(".cartwatch/demo/cartwatch.toml")


@pytest.mark.parametrize("text, steps", [("10s,40s", (10.0, 40.0)), ("1m", (60.0,))])
def test_reminder_steps(text, steps):
    assert parse_steps(text) == steps


@pytest.mark.parametrize("text", ["40s,10s", "", "soon", "0s"])
def test_bad_reminder_steps_are_refused(text):
    with pytest.raises(click.BadParameter):
        parse_steps(text)


def test_status_line():
    line = status_line(75.2, {"abandoned": 12, "reactivated": 1, "recovered": None}, 4)
    assert line == "[01:15] abandoned 12 · came back 1 · recovered ? · emails 4"


def test_the_mailbox_shows_only_mail_that_arrived_since_it_started(tmp_path):
    new = tmp_path / "new"
    new.mkdir()

    def deliver(name: str, subject: str) -> None:
        message = EmailMessage()
        message["Subject"], message["X-RcptTo"] = subject, "ann@example.com"
        (new / name).write_bytes(bytes(message))

    deliver("1.old", "before")
    box = Mailbox(tmp_path)
    assert box.new() == []
    deliver("2.new", "after")
    assert [m["Subject"] for m in box.new()] == ["after"]
    assert box.new() == []
    assert Mailbox(None).new() == []
