"""The notifier's settings: environment, per-store policies, secrets."""

import pytest

from config.settings import SettingsError, load_settings

SECRET = "s" * 20


def test_disabled_by_default_and_needs_no_secret():
    settings = load_settings({})

    assert settings.notifier.enabled is False
    assert settings.notifier.policy("any").steps[0].after == 86_400


def test_environment_variables():
    settings = load_settings({
        "CARTWATCH_NOTIFIER_ENABLED": "true", "CARTWATCH_LINK_SECRET": SECRET,
        "CARTWATCH_SMTP_HOST": "mail.example", "CARTWATCH_SMTP_PORT": "587",
        "CARTWATCH_SMTP_USERNAME": "u", "CARTWATCH_SMTP_PASSWORD": "hunter2-password",
        "CARTWATCH_SMTP_STARTTLS": "true", "CARTWATCH_SMTP_TIMEOUT": "2.5s",
        "CARTWATCH_REMINDER_STEPS": "1h:reminder, 24h:last-chance,72h",
    })
    notifier = settings.notifier

    assert (notifier.smtp.host, notifier.smtp.port, notifier.smtp.starttls,
            notifier.smtp.timeout) == ("mail.example", 587, True, 2.5)
    assert [(s.after, s.template) for s in notifier.reminders.steps] == [
        (3600, "reminder"), (86_400, "last-chance"), (259_200, "reminder")]
    assert notifier.secret == SECRET.encode()
    assert "hunter2" not in repr(settings) and SECRET not in repr(settings)


def test_secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-a-file-0123456789\n")
    settings = load_settings({"CARTWATCH_NOTIFIER_ENABLED": "1",
                              "CARTWATCH_LINK_SECRET_FILE": str(path)})

    assert settings.notifier.secret == b"from-a-file-0123456789"


@pytest.mark.parametrize(("env", "message"), [
    ({}, "needs a link secret"),
    ({"CARTWATCH_LINK_SECRET": "short"}, "at least 16 bytes"),
    ({"CARTWATCH_LINK_SECRET_FILE": "/nonexistent/secret"}, "cannot read link_secret_file"),
    ({"CARTWATCH_LINK_SECRET": SECRET, "CARTWATCH_SMTP_TLS": "1",
      "CARTWATCH_SMTP_STARTTLS": "1"}, "choose one of smtp.tls"),
    ({"CARTWATCH_LINK_SECRET": SECRET, "CARTWATCH_REMINDER_STEPS": "2h,1h"},
     "strictly increasing"),
    ({"CARTWATCH_LINK_SECRET": SECRET, "CARTWATCH_REMINDER_STEPS": "soon"}, "invalid duration"),
])
def test_invalid_settings_stop_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=message) as info:
        load_settings({"CARTWATCH_NOTIFIER_ENABLED": "true", **env})

    assert SECRET not in str(info.value)


def test_a_short_secret_is_not_echoed():
    with pytest.raises(SettingsError) as info:
        load_settings({"CARTWATCH_NOTIFIER_ENABLED": "true",
                       "CARTWATCH_LINK_SECRET": "tiny-secret"})

    assert "tiny-secret" not in str(info.value)


def test_store_policies_override_the_defaults(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("""
[notifier.reminders]
store_name = "Default"
frequency_cap = "8h"
[notifier.stores.tea]
store_name = "Tea & Co"
steps = [{after = "1h"}, {after = "1d", template = "last-chance"}]
quiet_hours = {start = "21:00", end = "08:00"}
""")
    notifier = load_settings({"CARTWATCH_CONFIG": str(config)}).notifier
    tea, other = notifier.policy("tea"), notifier.policy("other")

    assert (tea.store_name, tea.frequency_cap, len(tea.steps)) == ("Tea & Co", 28_800, 2)
    assert str(tea.quiet_hours.start) == "21:00:00"
    assert (other.store_name, len(other.steps)) == ("Default", 1)


def test_a_bad_store_section_names_the_store(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[notifier.stores.tea]\nstore_nam = "typo"\n')

    with pytest.raises(SettingsError, match="store 'tea': store_nam: Extra inputs"):
        load_settings({"CARTWATCH_CONFIG": str(config)})
