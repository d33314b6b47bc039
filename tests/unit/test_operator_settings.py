"""The operator settings section: token from the environment or a file, never printed."""

from pathlib import Path

import pytest

from config.settings import SettingsError, load_settings


def test_token_from_variable_is_hidden() -> None:
    settings = load_settings({"CARTWATCH_API_TOKEN": "s3cret", "CARTWATCH_READ_MODEL": "memory"})
    assert settings.operator.api_token is not None
    assert settings.operator.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings) and settings.operator.read_model == "memory"


def test_token_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    settings = load_settings({"CARTWATCH_API_TOKEN_FILE": str(secret)})
    assert settings.operator.api_token is not None
    assert settings.operator.api_token.get_secret_value() == "from-file"


@pytest.mark.parametrize("environ", [
    {"CARTWATCH_API_TOKEN": "a", "CARTWATCH_API_TOKEN_FILE": "/nonexistent"},
    {"CARTWATCH_API_TOKEN_FILE": "/nonexistent/token"},
    {"CARTWATCH_READ_MODEL": "postgres"},
    {"CARTWATCH_READ_MODEL": "postgresql://app:pw@db.example/cartwatch"},
    {"CARTWATCH_READ_MODEL_PASSWORD": "pw"},
    {"CARTWATCH_READ_MODEL": "postgresql://app@db/cw", "CARTWATCH_READ_MODEL_PASSWORD": "a",
     "CARTWATCH_READ_MODEL_PASSWORD_FILE": "/nonexistent"},
])
def test_bad_operator_settings_stop_the_worker(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="operator"):
        load_settings(environ)


def test_the_ready_line_names_where_a_person_finds_the_pages() -> None:
    from streams.operator.web import ready_announcement, service_urls

    urls = service_urls("0.0.0.0", 6066)
    assert urls["dashboard"] == "http://127.0.0.1:6066/cartwatch/dashboard/"
    assert urls["metrics"] == "http://127.0.0.1:6066/metrics"
    assert service_urls("10.1.2.3", 80)["readiness"] == "http://10.1.2.3:80/readyz"
    line = ready_announcement(urls)
    assert line.startswith("cartwatch is ready: dashboard http://127.0.0.1:6066/")


def test_a_password_in_the_read_model_url_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="not in the URL") as error:
        load_settings({"CARTWATCH_READ_MODEL": "postgresql://app:topsecret@db/cartwatch"})
    assert "topsecret" not in str(error.value)
