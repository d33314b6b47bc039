"""Certificates for the stack's secured Kafka listeners (`--secure`).

Everything is made locally, at start, with the `cryptography` package: a private CA that lives
only in the stack directory, the broker's certificate (SAN 127.0.0.1 and localhost, usable as
server and as client, because the broker reaches its own controller over mTLS), and a client
certificate for the worker. Kafka 4 reads PEM key stores directly, so no keytool or PKCS#12
is involved. Private keys are created 0600.

Certificates are made afresh on every start (clients reread the CA file after `stack up`), so
an expired, stale or tampered one is never trusted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    """The files a broker and its clients need; paths in the stack's `security/` directory."""

    ca_file: Path
    """The CA certificate (PEM): the trust store of the broker and of every client."""
    ca_key_file: Path
    """The CA's private key, kept so a developer can sign more client certificates."""
    broker_keystore: Path
    """The broker's private key followed by its certificate chain, Kafka's PEM key store."""
    client_cert_file: Path
    client_key_file: Path


def make_pki(directory: Path, broker_name: str, client_name: str) -> Pki:
    """Create a fresh CA, the broker's certificate and a client certificate in `directory`.

    The names become the certificates' CNs, which Kafka maps to the principals `User:<name>`.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cartwatch stack CA")
    ca = (
        _builder(ca_name, ca_name, ca_key, ca_key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    broker_key, broker_cert = _leaf(
        broker_name,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        ca_name,
        ca_key,
        now,
    )
    client_key, client_cert = _leaf(
        client_name, [ExtendedKeyUsageOID.CLIENT_AUTH], [], ca_name, ca_key, now
    )

    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_file=directory / "ca.pem",
        ca_key_file=directory / "ca-key.pem",
        broker_keystore=directory / "broker-keystore.pem",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client-key.pem",
    )
    write_file(pki.ca_file, _pem_cert(ca))
    write_file(pki.ca_key_file, _pem_key(ca_key), private=True)
    write_file(
        pki.broker_keystore,
        _pem_key(broker_key) + _pem_cert(broker_cert) + _pem_cert(ca),
        private=True,
    )
    write_file(pki.client_cert_file, _pem_cert(client_cert) + _pem_cert(ca))
    write_file(pki.client_key_file, _pem_key(client_key), private=True)
    return pki


def issue_client_certificate(
    ca_file: Path, ca_key_file: Path, directory: Path, common_name: str,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """A client certificate and key for ``common_name``, signed by the stack's CA: another
    principal for the broker, or, issued at a ``now`` more than ``VALID_FOR`` ago, an expired
    one. Returns the certificate's and the key's paths in ``directory``."""
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key, cert = _leaf(common_name, [ExtendedKeyUsageOID.CLIENT_AUTH], [], ca.subject, ca_key,
                      now or dt.datetime.now(dt.UTC))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{common_name}.pem", directory / f"{common_name}-key.pem"
    write_file(cert_path, _pem_cert(cert))
    write_file(key_path, _pem_key(key), private=True)
    return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _leaf(
    common_name: str,
    usages: list[x509.ObjectIdentifier],
    san: list[x509.GeneralName],
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name), ca_name, key, ca_key, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> x509.CertificateBuilder:
    """A certificate builder with what every certificate here has: validity and key ids
    (Python 3.13's strict verification refuses certificates without the authority key id)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: what Kafka's PEM key store reads without `ssl.key.password`.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Replace `path` with `data`; a `private` file is 0600 from its creation on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
