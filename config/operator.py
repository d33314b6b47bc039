"""Settings of the operator surface: the HTTP API, its read model and its bearer token.

A section of ``Settings`` (``settings.operator``), filled from ``[operator]`` in the TOML file
and from ``CARTWATCH_API_TOKEN`` / ``CARTWATCH_API_URL`` / ``CARTWATCH_READ_MODEL``.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from config.secrets import read_secret

ENVIRONMENT = {
    "CARTWATCH_API_TOKEN": "api_token",
    "CARTWATCH_API_TOKEN_FILE": "api_token_file",
    "CARTWATCH_API_URL": "api_url",
    "CARTWATCH_READ_MODEL": "read_model",
    "CARTWATCH_EXPORT_PAGE_SIZE": "export_page_size",
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
        pattern=r"^(sqlite|memory|off)$",
        description="'sqlite' keeps the read model in <data_dir>/operator.sqlite3 across "
        "restarts; 'memory' rebuilds it from the output topics at every start; 'off' keeps "
        "none (a pipeline-only worker: its API answers 503, probes and metrics still work)",
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

    @model_validator(mode="after")
    def _token_from_file(self) -> Self:
        if self.api_token_file is not None:
            if self.api_token is not None:
                raise ValueError("set one of api_token and api_token_file")
            self.api_token = read_secret(
                "api_token", {"CARTWATCH_API_TOKEN_FILE": str(self.api_token_file)}
            )
        return self


def operator_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``operator`` values set by environment variables (empty when none is set)."""
    return {field: environ[name] for name, field in ENVIRONMENT.items() if name in environ}
