"""Secrets (SMTP password, link-signing key, API token) from the environment or a file.

``CARTWATCH_<NAME>`` holds the value itself; ``CARTWATCH_<NAME>_FILE`` names a file holding it
(a Docker or Kubernetes secret mount), so the value never has to be in the environment, where
``ps e`` and crash reports can show it. The value is returned as a ``SecretStr``, which prints as
``**********``, and no error message here ever contains it.
"""

from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

ENV_PREFIX = "CARTWATCH_"
MAX_SECRET_FILE_BYTES = 64 * 1024


class SecretError(ValueError):
    """A secret is configured in a way that cannot work; the message names the variable only."""


def read_secret(name: str, environ: Mapping[str, str]) -> SecretStr | None:
    """The secret ``name`` (e.g. ``"smtp_password"``), or None if it is not configured.

    Setting both the variable and its ``_FILE`` twin is an error (which one wins would be a
    guess). A file's content is used without its trailing newline; an empty secret is refused.
    """
    variable = ENV_PREFIX + name.upper()
    file_variable = f"{variable}_FILE"
    value, path = environ.get(variable), environ.get(file_variable)
    if value is not None and path is not None:
        raise SecretError(f"set one of {variable} and {file_variable}, not both")
    if path is not None:
        value = _read_file(Path(path), file_variable)
    if value is None:
        return None
    if not value.strip():
        raise SecretError(f"{file_variable if path is not None else variable} is empty")
    return SecretStr(value)


def _read_file(path: Path, variable: str) -> str:
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise SecretError(f"{variable}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{variable}: {path} is not UTF-8 text") from None
    return text.rstrip("\r\n")
