"""Durations ("45s" .. "1mo") and settings: defaults, TOML file, CARTWATCH_* variables, errors."""

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from config.durations import UNIT_SECONDS, parse_duration
from config.settings import Settings, SettingsError, StoreSettings, load_settings

EXAMPLES = "'45s', '30m', '2h', '3d', '1w', '1mo'"

# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("30m", 1_800),
        ("2h", 7_200),
        ("3d", 259_200),
        ("1w", 604_800),
        ("1mo", 2_592_000),  # a month is 30 days
        ("2mo", 5_184_000),
        ("1.5h", 5_400),
        ("0.25s", 0.25),
        (" 30 m ", 1_800),
        ("90", 90),  # a bare number is seconds
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "soon", "-1s", "1M", "1H", "1e3s", "2 hours", "1h30m", "h", "1.s", ".5h", "1y"]
)
def test_parse_duration_rejects_malformed_text_with_a_hint(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)

    assert str(caught.value).startswith(f"invalid duration {text!r}: use a positive number")
    assert EXAMPLES in str(caught.value)


@pytest.mark.parametrize("value", [None, 30, 1.5, b"30m"])
def test_parse_duration_rejects_non_strings(value):
    with pytest.raises(ValueError, match=r"^invalid duration "):
        parse_duration(value)


@pytest.mark.parametrize("text", ["0s", "0.0m", "0", "0mo"])
def test_parse_duration_rejects_zero(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)

    assert str(caught.value) == f"invalid duration {text!r}: must be greater than zero and finite"


@given(st.integers(min_value=1, max_value=10_000), st.sampled_from(sorted(UNIT_SECONDS)))
def test_parse_is_number_times_unit(number, unit):
    assert parse_duration(f"{number}{unit}") == number * UNIT_SECONDS[unit]


# --- the Settings model ----------------------------------------------------------------------


def test_defaults():
    settings = Settings()

    assert settings.abandon_after == 1_800
    assert settings.abandoned_retention == 30 * 86_400
    assert settings.purchased_retention == 7 * 86_400
    assert settings.empty_cart_retention == 30 * 86_400
    assert settings.max_clock_skew == 300
    assert settings.max_event_age == 400 * 86_400
    assert settings.partitions == 8
    assert settings.stores == {}
    assert settings.topic("cart_events") == "cart-events"
    assert settings.topic("dead_letter") == "cartwatch-dead-letter"


def test_durations_accept_text_and_seconds():
    settings = Settings(abandon_after="2h", abandoned_retention=60, timer_resolution="0.5s")

    assert settings.abandon_after == 7_200
    assert settings.abandoned_retention == 60
    assert settings.timer_resolution == 0.5


def test_time_to_abandon_per_store_falls_back_to_global():
    settings = Settings(
        abandon_after="1h",
        stores={"fast": {"abandon_after": "45s"}, "b2b": {"abandon_after": "1mo"}, "same": {}},
    )

    assert settings.abandon_after_for("fast") == 45
    assert settings.abandon_after_for("b2b") == 2_592_000
    assert settings.abandon_after_for("same") == 3_600
    assert settings.abandon_after_for("unknown") == 3_600


def test_topic_prefix_applies_to_every_topic():
    settings = Settings(topic_prefix="staging.", topics={"abandoned": "abandoned-carts"})

    assert settings.topic("abandoned") == "staging.abandoned-carts"
    assert settings.topic("recovered") == "staging.cart-recovered"


@pytest.mark.parametrize(
    "values",
    [
        {"abandon_after": 0},
        {"abandon_after": -5},
        {"abandon_after": math.nan},
        {"abandon_after": "soon"},
        {"partitions": 0},
        {"web_port": 70_000},
        {"app_id": ""},
        {"colour": "blue"},
        {"topics": {"nope": "x"}},
        {"stores": {"a": {"abandon_after": "x"}}},
        {"stores": {"a": {"abandon_afterr": "1h"}}},
        {"store_url": "memory://"},
    ],
)
def test_invalid_settings_are_refused(values):
    with pytest.raises(ValidationError):
        Settings.model_validate(values)


@pytest.mark.parametrize("value", [math.inf, True, "9" * 400 + "s"], ids=["inf", "true", "huge"])
def test_non_finite_or_boolean_duration_is_refused(value):
    with pytest.raises(ValidationError):
        Settings(abandon_after=value)


# --- load_settings: environment --------------------------------------------------------------


def test_no_configuration_gives_the_defaults():
    assert load_settings({}) == Settings()


def test_environment_variables_set_fields():
    settings = load_settings(
        {
            "CARTWATCH_ABANDON_AFTER": "2h",
            "CARTWATCH_ABANDONED_RETENTION": "1w",
            "CARTWATCH_PARTITIONS": "16",
            "CARTWATCH_APP_ID": "cw-test",
            "CARTWATCH_DATA_DIR": "/var/lib/cartwatch",
            "CARTWATCH_TOPIC_PREFIX": "dev.",
            "CARTWATCH_TOPIC_ABANDONED": "carts-gone",
            "UNRELATED": "x",
        }
    )

    assert settings.abandon_after == 7_200
    assert settings.abandoned_retention == 604_800
    assert settings.partitions == 16
    assert settings.app_id == "cw-test"
    assert settings.data_dir == Path("/var/lib/cartwatch")
    assert settings.topic("abandoned") == "dev.carts-gone"
    assert settings.topic("cart_events") == "dev.cart-events"


def test_load_settings_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("CARTWATCH_ABANDON_AFTER", "3d")
    monkeypatch.delenv("CARTWATCH_CONFIG", raising=False)
    monkeypatch.delenv("CARTWATCH_STORE_ABANDON_AFTER", raising=False)

    assert load_settings().abandon_after == 259_200


@pytest.mark.parametrize("spec", ["a=2h,b=1mo", " a = 2h , b=1mo ", "b=1mo,a=2h"])
def test_store_abandon_after_from_environment(spec):
    settings = load_settings({"CARTWATCH_STORE_ABANDON_AFTER": spec})

    assert settings.stores == {
        "a": StoreSettings(abandon_after=7_200),
        "b": StoreSettings(abandon_after=2_592_000),
    }
    assert settings.abandon_after_for("a") == 7_200
    assert settings.abandon_after_for("b") == 2_592_000
    assert settings.abandon_after_for("c") == 1_800


def test_blank_store_abandon_after_is_ignored():
    assert load_settings({"CARTWATCH_STORE_ABANDON_AFTER": "  "}).stores == {}


@pytest.mark.parametrize(("spec", "pair"), [("a=2h,b", "b"), ("a=2h,", ""), ("=2h", "=2h")])
def test_malformed_store_abandon_after_names_the_bad_pair(spec, pair):
    with pytest.raises(SettingsError) as caught:
        load_settings({"CARTWATCH_STORE_ABANDON_AFTER": spec})

    assert str(caught.value) == (
        f"CARTWATCH_STORE_ABANDON_AFTER: expected 'store=duration,...', got {pair!r}"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CARTWATCH_ABANDON_AFTER": "soon"},
            "invalid cartwatch settings: abandon_after: Value error, "
            "invalid duration 'soon': use a positive number",
        ),
        (
            {"CARTWATCH_ABANDON_AFTER": "0s"},
            "invalid cartwatch settings: abandon_after: Value error, "
            "invalid duration '0s': must be greater than zero and finite",
        ),
        (
            {"CARTWATCH_STORE_ABANDON_AFTER": "a=2h,b=xx"},
            "invalid cartwatch settings: stores.b.abandon_after: Value error, "
            "invalid duration 'xx': use a positive number",
        ),
        (
            {"CARTWATCH_PARTITIONS": "many"},
            "invalid cartwatch settings: partitions: Input should be a valid integer",
        ),
    ],
)
def test_invalid_environment_fails_with_a_clear_message(environ, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    assert str(caught.value).startswith(message)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        load_settings({"CARTWATCH_PARTITIONS": "0", "CARTWATCH_MAX_CLOCK_SKEW": "-1s"})

    assert str(caught.value).startswith(
        "invalid cartwatch settings: partitions: Input should be greater than or equal to 1; "
        "max_clock_skew: Value error, invalid duration '-1s'"
    )


# --- load_settings: TOML file ----------------------------------------------------------------

TOML = """
abandon_after = "45m"
partitions = 4
empty_cart_retention = 3600

[topics]
abandoned = "abandoned-v2"

[stores.shop-a]
abandon_after = "3d"

[stores.shop-b]
abandon_after = "10m"
"""


def write_config(tmp_path, text):
    path = tmp_path / "cartwatch.toml"
    path.write_text(text)
    return {"CARTWATCH_CONFIG": str(path)}


def test_toml_file(tmp_path):
    settings = load_settings(write_config(tmp_path, TOML))

    assert settings.abandon_after == 2_700
    assert settings.partitions == 4
    assert settings.empty_cart_retention == 3_600
    assert settings.topic("abandoned") == "abandoned-v2"
    assert settings.topic("recovered") == "cart-recovered"
    assert settings.abandon_after_for("shop-a") == 259_200
    assert settings.abandon_after_for("shop-b") == 600
    assert settings.abandon_after_for("other") == 2_700


def test_environment_overrides_and_merges_with_the_toml_file(tmp_path):
    environ = write_config(tmp_path, TOML) | {
        "CARTWATCH_ABANDON_AFTER": "1h",
        "CARTWATCH_TOPIC_RECOVERED": "won-back",
        "CARTWATCH_STORE_ABANDON_AFTER": "shop-b=1w,shop-c=1mo",
    }

    settings = load_settings(environ)

    assert settings.abandon_after == 3_600
    assert settings.partitions == 4
    assert settings.topic("abandoned") == "abandoned-v2"
    assert settings.topic("recovered") == "won-back"
    assert settings.abandon_after_for("shop-a") == 259_200  # from the file
    assert settings.abandon_after_for("shop-b") == 604_800  # the environment wins
    assert settings.abandon_after_for("shop-c") == 2_592_000


def test_empty_config_variable_means_no_file():
    assert load_settings({"CARTWATCH_CONFIG": ""}) == Settings()


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(SettingsError) as caught:
        load_settings({"CARTWATCH_CONFIG": str(path)})

    assert str(caught.value).startswith(f"cannot read CARTWATCH_CONFIG={path}: ")
    assert "No such file or directory" in str(caught.value)


def test_config_file_that_is_not_toml(tmp_path):
    environ = write_config(tmp_path, "abandon_after = 30m\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(environ)

    assert str(caught.value).startswith(f"{environ['CARTWATCH_CONFIG']} is not valid TOML: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'colour = "blue"\n',
            "invalid cartwatch settings: colour: Extra inputs are not permitted",
        ),
        (
            '[stores.shop-a]\nabandon_after = "3 days"\n',
            "invalid cartwatch settings: stores.shop-a.abandon_after: Value error, "
            "invalid duration '3 days': use a positive number",
        ),
        (
            '[stores.shop-a]\nabandon = "3d"\n',
            "invalid cartwatch settings: stores.shop-a.abandon: Extra inputs are not permitted",
        ),
        (
            '[topics]\nabandonned = "x"\n',
            "invalid cartwatch settings: topics.abandonned: Extra inputs are not permitted",
        ),
        (
            "abandon_after = -60\n",
            "invalid cartwatch settings: abandon_after: Input should be greater than 0",
        ),
    ],
)
def test_invalid_config_file_fails_with_a_clear_message(tmp_path, text, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(write_config(tmp_path, text))

    assert str(caught.value).startswith(message)
