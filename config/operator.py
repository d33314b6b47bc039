"""Settings of the operator surface: the HTTP API, its read model and its bearer token.

A section of ``Settings`` (``settings.operator``), filled from ``[operator]`` in the TOML file
and from the environment variables of ``ENVIRONMENT`` (``CARTWATCH_API_TOKEN``,
``CARTWATCH_READ_MODEL``, ``CARTWATCH_READ_MODEL_RETENTION_DAYS``, ...).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from config.secrets import read_secret

ENVIRONMENT = {
    "CARTWATCH_API_TOKEN": "api_token",
    "CARTWATCH_API_TOKEN_FILE": "api_token_file",
    "CARTWATCH_API_URL": "api_url",
    "CARTWATCH_READ_MODEL": "read_model",
    "CARTWATCH_READ_MODEL_PASSWORD": "read_model_password",
    "CARTWATCH_READ_MODEL_PASSWORD_FILE": "read_model_password_file",
    "CARTWATCH_READ_MODEL_FEEDER": "read_model_feeder",
    "CARTWATCH_EXPORT_PAGE_SIZE": "export_page_size",
    "CARTWATCH_READ_MODEL_RETENTION_DAYS": "retention_days",
    "CARTWATCH_READ_MODEL_RETENTION_BATCH": "retention_batch",
}


class OperatorSettings(BaseModel):
    """How workers serve what cartwatch knows to operators and merchants."""

    model_config = ConfigDict(extra="forbid")

    api_token: SecretStr | None = Field(
        None, description="Bearer token required by endpoints that expose personal data"
    )
    api_token_file: Path | None = Field(
        None, description="A file holding the token (a mounted secret), instead of api_token"
    )
    api_url: str | None = Field(
        None, description="Worker API the CLI talks to; default http://127.0.0.1:<web_port>"
    )
    read_model: str = Field(
        "sqlite",
        pattern=r"^(sqlite|memory|off|postgres(ql)?://.+)$",
        description="'sqlite' keeps the read model in <data_dir>/operator.sqlite3 across "
        "restarts; 'memory' rebuilds it from the output topics at every start; 'off' keeps "
        "none (a pipeline-only worker: its API answers 503, probes and metrics still work); "
        "a 'postgresql://user@host:port/db' URL keeps it in that PostgreSQL database, which "
        "every worker queries (TLS: libpq's options in the URL's query, e.g. "
        "?sslmode=verify-full&sslrootcert=/path/ca.pem; the password apart, as a secret)",
    )
    read_model_password: SecretStr | None = Field(
        None, description="The PostgreSQL read model's password (never in the URL)"
    )
    read_model_password_file: Path | None = Field(
        None, description="A file holding that password (a mounted secret), instead"
    )
    read_model_feeder: bool = Field(
        True, description="With a PostgreSQL read model: this worker takes part in feeding it. "
        "The feeders form one consumer group, so each message is read once across them; set "
        "false on workers that should only answer queries. A SQLite or memory read model is "
        "always fed by its own worker, from every partition",
    )
    track_created_carts: bool = Field(
        True, description="Also read cart-events/purchase-events to count carts created"
    )
    max_page_size: int = Field(500, ge=1, le=10_000)
    export_page_size: int = Field(
        500, ge=1, le=10_000,
        description="Abandonments a CSV export reads from the database per step: larger is "
        "faster, smaller holds less in memory (and lets tests cross page boundaries cheaply)",
    )
    retention_days: float | None = Field(
        None, gt=0,
        description="Days the read model keeps an abandonment (by its abandoned_at) with its "
        "lines, reminder attempts, clicks and operator notices, and a created cart (by its "
        "created_at); older rows are deleted in batches by a periodic sweep "
        "(streams.operator.retention). Unset: kept forever. Applies to the read model only, "
        "never to the Kafka topics",
    )
    retention_batch: int = Field(
        1000, ge=1, le=100_000,
        description="Abandonments (and created carts) one retention step deletes, each step "
        "its own short transaction so the feed's writes go in between: smaller holds the "
        "database for less time, larger purges faster",
    )

    @model_validator(mode="after")
    def _token_from_file(self) -> Self:
        if self.api_token_file is not None:
            if self.api_token is not None:
                raise ValueError("set one of api_token and api_token_file")
            self.api_token = read_secret(
                "api_token", {"CARTWATCH_API_TOKEN_FILE": str(self.api_token_file)}
            )
        return self

    @model_validator(mode="after")
    def _read_model_password(self) -> Self:
        """The password is a secret of its own: refused inside the URL, which is logged and
        shown as configuration; read from its file like the other secrets."""
        if self.read_model_password_file is not None:
            if self.read_model_password is not None:
                raise ValueError("set one of read_model_password and read_model_password_file")
            self.read_model_password = read_secret("read_model_password", {
                "CARTWATCH_READ_MODEL_PASSWORD_FILE": str(self.read_model_password_file)})
        if self.postgresql:
            try:
                in_url = urlsplit(self.read_model).password is not None
            except ValueError:
                raise ValueError("read_model: not a valid postgresql:// URL") from None
            if in_url:
                raise ValueError("read_model: put the password in read_model_password "
                                 "(CARTWATCH_READ_MODEL_PASSWORD or its _FILE), not in the URL")
        elif self.read_model_password is not None:
            raise ValueError("read_model_password is only used with a postgresql:// read_model")
        return self

    @property
    def postgresql(self) -> bool:
        """Is the read model in PostgreSQL (shared by all workers) rather than in each?"""
        return self.read_model.startswith(("postgresql://", "postgres://"))


def operator_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``operator`` values set by environment variables (empty when none is set)."""
    return {field: environ[name] for name, field in ENVIRONMENT.items() if name in environ}
