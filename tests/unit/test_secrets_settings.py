"""Secrets never show in settings errors or in the settings' repr, whatever else is wrong."""

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from config.settings import SettingsError, load_settings

SMTP_PASSWORD = "smtp-pw-Zq8wX1"
LINK_SECRET = "link-secret-Kj3mN9pQ2rT5vW8y"
API_TOKEN = "api-token-Hf6gD4sA2"
SECRETS = (SMTP_PASSWORD, LINK_SECRET, API_TOKEN)

WITH_SECRETS = {
    "CARTWATCH_SMTP_USERNAME": "mailer",
    "CARTWATCH_SMTP_PASSWORD": SMTP_PASSWORD,
    "CARTWATCH_LINK_SECRET": LINK_SECRET,
    "CARTWATCH_API_TOKEN": API_TOKEN,
    "CARTWATCH_NOTIFIER_ENABLED": "true",
}

BAD_SETTINGS = [
    {"CARTWATCH_ABANDON_AFTER": "45x"},
    {"CARTWATCH_PARTITIONS": "0"},
    {"CARTWATCH_SMTP_PORT": "99999"},
    {"CARTWATCH_SMTP_USERNAME": SMTP_PASSWORD, "CARTWATCH_SMTP_PORT": "x"},
    {"CARTWATCH_SMTP_TLS": "true", "CARTWATCH_SMTP_STARTTLS": "true"},
    {"CARTWATCH_LINK_SECRET": "short"},
    {"CARTWATCH_REMINDER_STEPS": "2h,1h"},
]


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_loaded_settings_do_not_show_secrets():
    settings = load_settings(WITH_SECRETS)
    assert leaked(repr(settings)) == [] and leaked(str(settings)) == []
    assert leaked(settings.model_dump_json()) == []


@pytest.mark.parametrize("bad", BAD_SETTINGS, ids=lambda bad: ",".join(bad))
def test_settings_errors_name_the_setting_never_a_secret(bad):
    with pytest.raises(SettingsError) as error:
        load_settings({**WITH_SECRETS, **bad})
    message = str(error.value)
    assert message.startswith("invalid cartwatch settings: ")
    assert leaked(message) == []


def test_a_short_secret_is_refused_without_echoing_it():
    short = "tiny-Secret9"
    with pytest.raises(SettingsError) as error:
        load_settings({**WITH_SECRETS, "CARTWATCH_LINK_SECRET": short})
    assert short not in str(error.value)


@given(secret=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                      min_size=16, max_size=40),
       bad=st.sampled_from(BAD_SETTINGS))
@hypothesis_settings(max_examples=100, deadline=None)
def test_no_secret_value_reaches_a_settings_error(secret, bad):
    env = {**WITH_SECRETS, "CARTWATCH_SMTP_PASSWORD": secret, "CARTWATCH_API_TOKEN": secret,
           **bad}
    with pytest.raises(SettingsError) as error:
        load_settings(env)
    assert secret not in str(error.value)


def test_smtp_password_from_a_file(tmp_path):
    path = tmp_path / "smtp-password"
    path.write_text(SMTP_PASSWORD + "\n")
    env = {**WITH_SECRETS, "CARTWATCH_SMTP_PASSWORD_FILE": str(path)}
    del env["CARTWATCH_SMTP_PASSWORD"]
    password = load_settings(env).notifier.smtp.password
    assert password is not None and password.get_secret_value() == SMTP_PASSWORD


def test_smtp_password_and_its_file_together_are_refused(tmp_path):
    path = tmp_path / "smtp-password"
    path.write_text(SMTP_PASSWORD)
    with pytest.raises(SettingsError) as error:
        load_settings({**WITH_SECRETS, "CARTWATCH_SMTP_PASSWORD_FILE": str(path)})
    assert "set one of smtp.password and smtp.password_file" in str(error.value)
    assert leaked(str(error.value)) == []
