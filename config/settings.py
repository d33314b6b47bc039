"""cartwatch settings: defaults, then an optional TOML file, then ``CARTWATCH_*`` variables.

Every setting is validated when the worker starts, so a typo in a duration or a topic name stops
the process with a clear message instead of surfacing hours later as a missed abandonment.
"""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.durations import Duration
from config.kafka import KafkaSettings, kafka_from_environment
from config.notifier import NotifierSettings, notifier_from_environment
from config.operator import OperatorSettings, operator_from_environment

ENV_PREFIX = "CARTWATCH_"


class SettingsError(Exception):
    """Configuration that cannot run; the message says which setting and why."""


class TopicNames(BaseModel):
    """Kafka topic names before the optional prefix is applied."""

    model_config = ConfigDict(extra="forbid")

    cart_events: str = "cart-events"
    purchase_events: str = "purchase-events"
    abandoned: str = "cart-abandoned"
    recovered: str = "cart-recovered"
    reactivated: str = "cart-reactivated"
    dead_letter: str = "cartwatch-dead-letter"
    timer_ticks: str = "cartwatch-timer-ticks"
    reminder_ticks: str = "cartwatch-reminder-ticks"
    reminders_due: str = "cartwatch-reminders-due"
    reminders_sent: str = "cartwatch-reminders-sent"
    unsubscribes: str = "cartwatch-unsubscribes"
    clicks: str = "cartwatch-clicks"
    notification_log: str = "cartwatch-notification-log"
    operator_notifications: str = "cartwatch-operator-notifications"


class StoreSettings(BaseModel):
    """Per-store overrides; anything left unset falls back to the global value."""

    model_config = ConfigDict(extra="forbid")

    abandon_after: Duration | None = None


class Settings(BaseModel):
    """The whole configuration of a cartwatch worker."""

    model_config = ConfigDict(extra="forbid")

    app_id: str = Field("cartwatch", min_length=1)
    broker: str = "kafka://127.0.0.1:9092"
    kafka: KafkaSettings = KafkaSettings()
    """How every client connects to ``broker``: TLS, SASL (``config.kafka``)."""
    topic_prefix: str = ""
    topics: TopicNames = TopicNames()
    partitions: int = Field(8, ge=1, le=1024)
    store_url: str = Field("rocksdb://", pattern=r"^rocksdb://")
    """Faust's table store: RocksDB only, since the cart store and the notifier write their
    tables' RocksDB partitions directly (``streams.tablewrites``)."""
    data_dir: Path = Path(".cartwatch/data")
    web_port: int = Field(6066, ge=1, le=65535)
    web_bind: str = "127.0.0.1"
    session_timeout: Duration = 10.0
    """How soon a silent worker's partitions (and timers) move to the others."""
    timer_resolution: Duration = 0.25
    offset_commit_interval: Duration = 2.8
    """How often processed input offsets are committed (Faust's default); a rebalance or a
    clean stop commits at once, so this bounds only what a crash makes the next owner redo."""
    batch_input: bool = True
    """Read cart and purchase events in per-partition batches below Faust's stream
    (``streams.batch``) instead of one Faust event at a time (``false``: Faust's per-event
    path, which the benchmark measures as d0 against d)."""
    abandon_after: Duration = 30 * 60
    abandoned_retention: Duration = 30 * 86_400
    purchased_retention: Duration = 7 * 86_400
    empty_cart_retention: Duration = 30 * 86_400
    max_clock_skew: Duration = 5 * 60
    max_event_age: Duration = 400 * 86_400
    stores: dict[str, StoreSettings] = {}
    operator: OperatorSettings = OperatorSettings()
    notifier: NotifierSettings = NotifierSettings()

    def topic(self, name: str) -> str:
        """Return the full Kafka name of the logical topic ``name`` (a ``TopicNames`` field)."""
        return self.topic_prefix + getattr(self.topics, name)

    def abandon_after_for(self, store_id: str) -> float:
        """Seconds of silence after which a cart of ``store_id`` is abandoned."""
        store = self.stores.get(store_id)
        if store is not None and store.abandon_after is not None:
            return store.abandon_after
        return self.abandon_after


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    sections = ("topics", "stores", "operator", "notifier", "kafka")
    for field in Settings.model_fields:
        if field not in sections and ENV_PREFIX + field.upper() in environ:
            values[field] = environ[ENV_PREFIX + field.upper()]
    if "broker" not in values and environ.get(f"{ENV_PREFIX}KAFKA_PORT"):
        # the local stack on another port (`cartwatch stack up` honours the same variable)
        values["broker"] = f"kafka://127.0.0.1:{environ[f'{ENV_PREFIX}KAFKA_PORT']}"
    topics = {
        name: environ[f"{ENV_PREFIX}TOPIC_{name.upper()}"]
        for name in TopicNames.model_fields
        if f"{ENV_PREFIX}TOPIC_{name.upper()}" in environ
    }
    if topics:
        values["topics"] = topics
    per_store = environ.get(f"{ENV_PREFIX}STORE_ABANDON_AFTER", "").strip()
    if per_store:
        stores: dict[str, dict[str, str]] = {}
        for pair in per_store.split(","):
            store_id, sep, duration = pair.partition("=")
            if not sep or not store_id.strip():
                raise SettingsError(
                    f"{ENV_PREFIX}STORE_ABANDON_AFTER: expected 'store=duration,...', got {pair!r}"
                )
            stores[store_id.strip()] = {"abandon_after": duration.strip()}
        values["stores"] = stores
    if kafka := kafka_from_environment(environ):
        values["kafka"] = kafka
    if operator := operator_from_environment(environ):
        values["operator"] = operator
    if notifier := notifier_from_environment(environ):
        values["notifier"] = notifier
    return values


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``CARTWATCH_CONFIG`` (a TOML file) and ``CARTWATCH_*`` variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = environ.get(f"{ENV_PREFIX}CONFIG")
    if config_path:
        try:
            values = tomllib.loads(Path(config_path).read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read {ENV_PREFIX}CONFIG={config_path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_path} is not valid TOML: {exc}") from exc
    values = _merge(values, _from_environment(environ))
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise SettingsError(f"invalid cartwatch settings: {problems}") from None
