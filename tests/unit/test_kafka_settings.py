"""The Kafka connection settings: what loads, what is refused at start-up and how it says so,
and what Faust and aiokafka are given. No broker: everything here is checked before one."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from tls_files import KEY_PASSWORD, TlsFiles, make_tls_files

from config.kafka import KafkaSettings, broker_credentials, client_options
from config.settings import SettingsError, load_settings

PASSWORD = "sasl-pw-Qm4vT8xZ"
SASL = {
    "CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "CARTWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "CARTWATCH_KAFKA_SASL_USERNAME": "cartwatch",
    "CARTWATCH_KAFKA_SASL_PASSWORD": PASSWORD,
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def refused(environ: dict[str, str]) -> str:
    """The one-line message ``load_settings`` stops with."""
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert "\n" not in message
    assert PASSWORD not in message and KEY_PASSWORD not in message
    return message


def test_default_is_plaintext_and_changes_nothing():
    kafka = load_settings({}).kafka
    assert kafka.security_protocol == "PLAINTEXT"
    assert broker_credentials(kafka) is None
    assert client_options(kafka) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_from_the_environment(tls: TlsFiles):
    kafka = load_settings({**SASL, "CARTWATCH_KAFKA_SSL_CAFILE": str(tls.ca)}).kafka
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    options = client_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "cartwatch"
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context is kafka.ssl_context  # one context for every client of the process


def test_sasl_plaintext_has_no_tls_context():
    options = client_options(load_settings({
        **SASL, "CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CARTWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
    }).kafka)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["ssl_context"] is None


def test_mutual_tls_from_toml(tmp_path: Path, tls: TlsFiles):
    config = tmp_path / "cartwatch.toml"
    config.write_text(
        f'[kafka]\nsecurity_protocol = "SSL"\nssl_cafile = "{tls.ca}"\n'
        f'ssl_certfile = "{tls.cert}"\nssl_keyfile = "{tls.encrypted_key}"\n'
        f'ssl_key_password = "{KEY_PASSWORD}"\nssl_check_hostname = false\n'
    )
    kafka = load_settings({"CARTWATCH_CONFIG": str(config)}).kafka
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SSLCredentials)
    options = client_options(kafka)
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].check_hostname is False


def test_passwords_from_files(tmp_path: Path, tls: TlsFiles):
    (tmp_path / "sasl").write_text(PASSWORD + "\n")
    (tmp_path / "key").write_text(KEY_PASSWORD + "\n")
    kafka = load_settings({
        **{k: v for k, v in SASL.items() if not k.endswith("PASSWORD")},
        "CARTWATCH_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "sasl"),
        "CARTWATCH_KAFKA_SSL_CERTFILE": str(tls.cert),
        "CARTWATCH_KAFKA_SSL_KEYFILE": str(tls.encrypted_key),
        "CARTWATCH_KAFKA_SSL_KEY_PASSWORD_FILE": str(tmp_path / "key"),
    }).kafka
    assert client_options(kafka)["sasl_plain_password"] == PASSWORD


def test_secrets_never_show(tls: TlsFiles):
    kafka = load_settings({
        **SASL, "CARTWATCH_KAFKA_SSL_CERTFILE": str(tls.cert),
        "CARTWATCH_KAFKA_SSL_KEYFILE": str(tls.encrypted_key),
        "CARTWATCH_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
    }).kafka
    for text in (repr(kafka), str(kafka), repr(broker_credentials(kafka)),
                 repr(load_settings(SASL))):
        assert PASSWORD not in text and KEY_PASSWORD not in text


def test_environment_passes_a_password_file_on_as_the_file(tmp_path: Path):
    (tmp_path / "sasl").write_text(PASSWORD)
    kafka = load_settings({**{k: v for k, v in SASL.items() if not k.endswith("PASSWORD")},
                           "CARTWATCH_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "sasl")}).kafka
    env = kafka.environment()
    assert env["CARTWATCH_KAFKA_SASL_PASSWORD_FILE"] == str(tmp_path / "sasl")
    assert PASSWORD not in "".join(env.values())
    again = load_settings(env).kafka.sasl_password
    assert again is not None and again.get_secret_value() == PASSWORD


def test_environment_round_trip(tls: TlsFiles):
    """What a test or chaos run hands a worker it starts gives the worker the same settings."""
    kafka = load_settings({**SASL, "CARTWATCH_KAFKA_SSL_CAFILE": str(tls.ca),
                           "CARTWATCH_KAFKA_SSL_CHECK_HOSTNAME": "false"}).kafka
    again = load_settings(kafka.environment()).kafka
    assert again.model_dump() == kafka.model_dump()
    assert again.sasl_password is not None
    assert again.sasl_password.get_secret_value() == PASSWORD


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "TLS"},
         "kafka.security_protocol: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or "
         "'SASL_SSL'"),
        ({**SASL, "CARTWATCH_KAFKA_SASL_MECHANISM": "GSSAPI"},
         "kafka.sasl_mechanism: Input should be 'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
        ({**SASL, "CARTWATCH_KAFKA_SASL_USERNAME": ""},
         "security_protocol SASL_SSL needs kafka.sasl_username and kafka.sasl_password"),
        ({k: v for k, v in SASL.items() if not k.endswith("PASSWORD")},
         "security_protocol SASL_SSL needs kafka.sasl_username and kafka.sasl_password"),
        ({**SASL, "CARTWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
         "kafka.sasl_username/sasl_password are set but security_protocol is PLAINTEXT"),
        ({"CARTWATCH_KAFKA_SSL_CAFILE": "/etc/hostname"},
         "kafka.ssl_cafile set but security_protocol is PLAINTEXT: use SSL or SASL_SSL"),
        ({**SASL, "CARTWATCH_KAFKA_SASL_PASSWORD_FILE": "/x"},
         "set one of kafka.sasl_password and kafka.sasl_password_file"),
    ],
)
def test_inconsistent_settings_are_refused(environ: dict[str, str], expected: str):
    assert expected in refused(environ)


def test_missing_ca_file(tmp_path: Path):
    message = refused({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "CARTWATCH_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem")})
    assert f"kafka.ssl_cafile: cannot read {tmp_path / 'ca.pem'}: No such file" in message


def test_unreadable_key_file(tmp_path: Path, tls: TlsFiles):
    key = tmp_path / "client.key"
    key.write_bytes(tls.key.read_bytes())
    key.chmod(0)
    try:
        key.open("rb").close()
        pytest.skip("running as root: every file is readable")
    except PermissionError:
        pass
    message = refused({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "CARTWATCH_KAFKA_SSL_CERTFILE": str(tls.cert),
                       "CARTWATCH_KAFKA_SSL_KEYFILE": str(key)})
    assert f"kafka.ssl_keyfile: cannot read {key}: Permission denied" in message


def test_certificate_path_that_is_a_directory(tmp_path: Path):
    message = refused({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "CARTWATCH_KAFKA_SSL_CERTFILE": str(tmp_path)})
    assert f"kafka.ssl_certfile: cannot read {tmp_path}: Is a directory" in message


def test_certificate_file_that_is_not_a_certificate(tmp_path: Path, tls: TlsFiles):
    message = refused({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "CARTWATCH_KAFKA_SSL_CERTFILE": str(tls.key)})
    assert "cannot be loaded" in message and str(tls.key) in message


def test_ca_file_without_a_certificate(tmp_path: Path):
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    message = refused({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "CARTWATCH_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem")})
    assert f"kafka.ssl_cafile {tmp_path / 'ca.pem'}: no PEM certificate in it" in message


def test_key_that_does_not_match_its_certificate(tls: TlsFiles):
    message = refused({"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "CARTWATCH_KAFKA_SSL_CERTFILE": str(tls.cert),
                       "CARTWATCH_KAFKA_SSL_KEYFILE": str(tls.other_key)})
    assert (f"kafka.ssl_keyfile {tls.other_key} is not the key of the certificate "
            f"kafka.ssl_certfile {tls.cert}") in message


@pytest.mark.parametrize("password", [None, "wrong password"])
def test_encrypted_key_without_its_password_fails_instead_of_prompting(
    tls: TlsFiles, password: str | None
):
    """Without a password OpenSSL would ask on the terminal: a worker would hang."""
    environ = {"CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
               "CARTWATCH_KAFKA_SSL_CERTFILE": str(tls.cert),
               "CARTWATCH_KAFKA_SSL_KEYFILE": str(tls.encrypted_key)}
    if password:
        environ["CARTWATCH_KAFKA_SSL_KEY_PASSWORD"] = password
    message = refused(environ)
    assert message.endswith(
        f"kafka.ssl_keyfile {tls.encrypted_key} is encrypted and kafka.ssl_key_password does "
        "not open it" if password else
        f"kafka.ssl_keyfile {tls.encrypted_key} is encrypted: set kafka.ssl_key_password")


def test_keyfile_needs_a_certificate(tls: TlsFiles):
    assert "kafka.ssl_keyfile needs kafka.ssl_certfile" in refused({
        "CARTWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CARTWATCH_KAFKA_SSL_KEYFILE": str(tls.key)})


def test_model_is_frozen():
    with pytest.raises(ValueError):
        KafkaSettings().security_protocol = "SSL"  # type: ignore[misc]


class SaslAuthenticateRequest_v1:  # noqa: N801 (named like aiokafka's request)
    def __repr__(self) -> str:
        return f"SaslAuthenticateRequest_v1(sasl_auth_bytes=b'cw\\x00cw\\x00{PASSWORD}')"


def test_aiokafka_debug_log_of_the_sasl_request_hides_the_password(caplog):
    """aiokafka logs each request at DEBUG; PLAIN's authentication carries the password."""
    import config.kafka  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        logging.getLogger("aiokafka.conn").debug(
            "Request to %s:%d %d: %s", "b", 1, 3, SaslAuthenticateRequest_v1())
        logging.getLogger("aiokafka.conn").debug("Request to %s:%d %d: %s", "b", 1, 4, "other")
    assert PASSWORD not in caplog.text
    assert "Request to b:1 3: <SaslAuthenticateRequest_v1: redacted>" in caplog.text
    assert "Request to b:1 4: other" in caplog.text


def test_worker_with_a_bad_kafka_setting_stops_with_one_line(tls: TlsFiles, tmp_path: Path):
    """The whole path: ``cartwatch worker`` prints the line, no traceback, exit code 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTWATCH_")}
    env.update(CARTWATCH_KAFKA_SECURITY_PROTOCOL="SSL", CARTWATCH_DATA_DIR=str(tmp_path),
               CARTWATCH_KAFKA_SSL_CERTFILE=str(tls.cert),
               CARTWATCH_KAFKA_SSL_KEYFILE=str(tls.other_key))
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"cartwatch: invalid cartwatch settings: kafka: Value error, kafka.ssl_keyfile "
        f"{tls.other_key} is not the key of the certificate kafka.ssl_certfile {tls.cert}"]
