"""Test certificates made with the ``openssl`` command: a CA, a certificate it signed, keys.

Shared by the unit tests of the Kafka settings (files that load or do not) and usable by
integration tests that need a client certificate.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """PEM files in one directory: ``ca``, ``cert`` (signed by ``ca``) and its ``key``,
    ``other_key`` (matches nothing), ``encrypted_key`` (``key`` under ``KEY_PASSWORD``)."""

    ca: Path
    cert: Path
    key: Path
    other_key: Path
    encrypted_key: Path


KEY_PASSWORD = "correct horse"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate the files in ``directory`` (about 0.2 s: EC keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca.key", "client.key", "other.key"):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", name, cwd=directory)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=cartwatch test CA",
             "-days", "2", "-out", "ca.pem", cwd=directory)
    _openssl("req", "-new", "-key", "client.key", "-subj", "/CN=cartwatch", "-out",
             "client.csr", cwd=directory)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "client.pem", cwd=directory)
    _openssl("pkey", "-in", "client.key", "-aes256", "-passout", f"pass:{KEY_PASSWORD}",
             "-out", "client.enc.key", cwd=directory)
    return TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "client.pem",
        key=directory / "client.key",
        other_key=directory / "other.key",
        encrypted_key=directory / "client.enc.key",
    )
