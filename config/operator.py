"""Settings of the operator surface: the HTTP API, its read model and its bearer token.

A section of ``Settings`` (``settings.operator``), filled from ``[operator]`` in the TOML file
and from ``CARTWATCH_API_TOKEN`` / ``CARTWATCH_API_URL`` / ``CARTWATCH_READ_MODEL``.
"""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ENVIRONMENT = {
    "CARTWATCH_API_TOKEN": "api_token",
    "CARTWATCH_API_URL": "api_url",
    "CARTWATCH_READ_MODEL": "read_model",
}


class OperatorSettings(BaseModel):
    """How workers serve what cartwatch knows to operators and merchants."""

    model_config = ConfigDict(extra="forbid")

    api_token: SecretStr | None = Field(
        None, description="Bearer token required by endpoints that expose personal data"
    )
    api_url: str | None = Field(
        None, description="Worker API the CLI talks to; default http://127.0.0.1:<web_port>"
    )
    read_model: str = Field(
        "sqlite",
        pattern=r"^(sqlite|memory)$",
        description="'sqlite' keeps the read model in <data_dir>/operator.sqlite3 across "
        "restarts; 'memory' rebuilds it from the output topics at every start",
    )
    track_created_carts: bool = Field(
        True, description="Also read cart-events/purchase-events to count carts created"
    )
    max_page_size: int = Field(500, ge=1, le=10_000)


def operator_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``operator`` values set by environment variables (empty when none is set)."""
    return {field: environ[name] for name, field in ENVIRONMENT.items() if name in environ}
