"""How every cartwatch Kafka client connects: security protocol, SASL and TLS (``[kafka]``).

One settings block, named after the Kafka client properties (``security.protocol``,
``sasl.mechanism``, ``ssl.truststore``...), read from the ``[kafka]`` TOML section and from
``CARTWATCH_KAFKA_*`` variables. Two functions turn it into what the libraries take:
``broker_credentials`` (Faust's ``broker_credentials`` setting) and ``client_options`` (the
keyword arguments of an aiokafka consumer, producer or admin client, derived from the same
credentials by Faust's own translation). No client in the project builds its own.

Everything that can be checked without a broker is checked when the settings load: a typo in a
protocol, SASL without a user, a certificate file that is missing, unreadable or does not match
its key. The TLS context is built then (so a worker never starts with one it cannot use) and
kept, so every client of a process shares one context.

The SASL password and the key password are secrets: ``CARTWATCH_KAFKA_SASL_PASSWORD`` or
``CARTWATCH_KAFKA_SASL_PASSWORD_FILE`` (see ``config.secrets``), held as ``SecretStr``, never
shown by a repr or an error message.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import faust
from aiokafka.helpers import create_ssl_context
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr, model_validator

from config.secrets import read_secret

ENV_PREFIX = "CARTWATCH_KAFKA_"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_TLS = {"SSL", "SASL_SSL"}
_SASL = {"SASL_PLAINTEXT", "SASL_SSL"}
_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


class KafkaSettings(BaseModel):
    """The ``kafka`` section of the settings: one connection for every client of cartwatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    """A file holding the SASL password (a mounted secret), instead of ``sasl_password``."""
    ssl_cafile: Path | None = None
    """CA certificates (PEM) the broker's certificate must chain to; unset: the system's CAs."""
    ssl_certfile: Path | None = None
    """The client certificate (PEM) for mutual TLS; may hold the key too."""
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to. Turn off only for a
    broker reached by an address its certificate does not list (an IP, an SSH tunnel)."""

    _context: ssl.SSLContext | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``sasl_password_file`` / ``ssl_key_password_file``: read like every other secret."""
        if isinstance(data, Mapping):
            data = dict(data)
            for name in ("sasl_password", "ssl_key_password"):
                path = data.get(f"{name}_file")
                if path is None:
                    continue
                if data.get(name) is not None:
                    raise ValueError(f"set one of kafka.{name} and kafka.{name}_file")
                data[name] = read_secret(
                    f"kafka_{name}", {f"{ENV_PREFIX}{name.upper()}_FILE": str(path)})
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Refuse combinations that cannot work, naming the settings involved."""
        sasl = self.security_protocol in _SASL
        tls = self.security_protocol in _TLS
        password = self.sasl_password
        if sasl and (not self.sasl_username or password is None):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs kafka.sasl_username and "
                "kafka.sasl_password (CARTWATCH_KAFKA_SASL_USERNAME, "
                "CARTWATCH_KAFKA_SASL_PASSWORD or CARTWATCH_KAFKA_SASL_PASSWORD_FILE)"
            )
        if not sasl and (self.sasl_username is not None or password is not None):
            raise ValueError(
                f"kafka.sasl_username/sasl_password are set but security_protocol is "
                f"{self.security_protocol}: use SASL_SSL or SASL_PLAINTEXT"
            )
        tls_set = [name for name in (*_FILES, "ssl_key_password") if getattr(self, name)]
        if not tls and tls_set:
            raise ValueError(
                f"kafka.{', kafka.'.join(tls_set)} set but security_protocol is "
                f"{self.security_protocol}: use SSL or SASL_SSL"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile needs kafka.ssl_certfile (the certificate)")
        if tls:  # a frozen model's private attributes stay writable: the context is derived
            self._context = self._build_context()
        return self

    def _build_context(self) -> ssl.SSLContext:
        """The TLS context of every client, or a ValueError saying which file is wrong."""
        for name in _FILES:
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"kafka.{name}: cannot read {path}: {exc.strerror}") from None
        key_password = self.ssl_key_password
        asked: list[bool] = []

        def password() -> str:
            # A callable, never None: with None OpenSSL prompts on the terminal for the
            # password of an encrypted key, and a worker without a terminal hangs.
            asked.append(True)
            return key_password.get_secret_value() if key_password else ""

        try:
            context = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=password,
            )
        except ssl.SSLError as exc:
            raise ValueError(_explain_ssl_error(self, exc, bool(asked))) from None
        except OSError as exc:  # the file vanished between the check and the load
            raise ValueError(f"kafka TLS files: {exc.strerror}: {exc.filename}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (built and checked when the settings loaded); None without TLS."""
        return self._context

    def environment(self) -> dict[str, str]:
        """These settings as ``CARTWATCH_KAFKA_*`` variables, for a worker this process starts
        (tests, chaos, bench). A password read from a file is passed on as that file, so it
        stays out of the child's environment; one given as a value goes in as a value."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None or f"{name}_file" in _set_fields(self):
                continue  # unset, or read from the file passed on instead
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = str(value).lower()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env


def _set_fields(kafka: KafkaSettings) -> set[str]:
    """The names of the fields that are set."""
    return {name for name, value in kafka if value is not None}


def _explain_ssl_error(kafka: KafkaSettings, exc: ssl.SSLError, encrypted: bool) -> str:
    """One line for OpenSSL's complaint about our files (its codes are not for humans);
    ``encrypted``: OpenSSL asked for the key's password."""
    reason = (getattr(exc, "reason", None) or "").upper()
    key = kafka.ssl_keyfile or kafka.ssl_certfile
    if encrypted and reason != "KEY_VALUES_MISMATCH":
        if kafka.ssl_key_password is None:
            return f"kafka.ssl_keyfile {key} is encrypted: set kafka.ssl_key_password"
        return f"kafka.ssl_keyfile {key} is encrypted and kafka.ssl_key_password does not open it"
    if reason == "KEY_VALUES_MISMATCH":
        return (f"kafka.ssl_keyfile {key} is not the key of the certificate "
                f"kafka.ssl_certfile {kafka.ssl_certfile}")
    if reason == "NO_CERTIFICATE_OR_CRL_FOUND":
        return f"kafka.ssl_cafile {kafka.ssl_cafile}: no PEM certificate in it ({reason})"
    files = ", ".join(f"{name}={getattr(kafka, name)}" for name in _FILES if getattr(kafka, name))
    return (f"kafka TLS files ({files}) cannot be loaded as PEM certificate and key "
            f"(OpenSSL: {reason or exc.strerror or exc})")


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for these settings (None: plaintext, no authentication)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kafka.ssl_context)
    assert kafka.sasl_password is not None  # checked when the settings loaded
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        ssl_context=kafka.ssl_context,  # None: SASL_PLAINTEXT
        mechanism=kafka.sasl_mechanism,
    )


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client for these settings: ``security_protocol``,
    ``sasl_mechanism``, ``sasl_plain_username/password``, ``ssl_context``.

    Derived from ``broker_credentials`` by Faust's own translation, so the worker's Faust
    clients and the plain aiokafka ones (read model, tools, tests) cannot differ."""
    return dict(credentials_to_aiokafka_auth(broker_credentials(kafka)))


class _RedactSaslAuthentication(logging.Filter):
    """aiokafka logs every request it sends at DEBUG, and SASL PLAIN's SaslAuthenticate request
    carries the password in clear (``b'user\\x00user\\x00password'``): a worker run with
    ``-l debug`` wrote it to its log. The request is replaced by its name in the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_sasl_authentication, record.args)):
            record.args = tuple(
                f"<{type(arg).__name__}: redacted>" if _is_sasl_authentication(arg) else arg
                for arg in record.args
            )
        return True


def _is_sasl_authentication(value: object) -> bool:
    return type(value).__name__.startswith("SaslAuthenticateRequest")


logging.getLogger("aiokafka.conn").addFilter(_RedactSaslAuthentication())


_ENV_FIELDS = (
    "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password",
    "ssl_key_password_file", "ssl_check_hostname",
)


def kafka_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``kafka`` values from ``CARTWATCH_KAFKA_<FIELD>`` (empty when none is set).

    ``..._SASL_PASSWORD_FILE`` and ``..._SSL_KEY_PASSWORD_FILE`` are read by the model like
    every other cartwatch secret file (one of value and file; not empty; errors name the
    variable, never the value)."""
    return {
        name: environ[ENV_PREFIX + name.upper()]
        for name in _ENV_FIELDS
        if ENV_PREFIX + name.upper() in environ
    }
