"""Who signs the audit trail: the server's key. In deployment, the server kit's `server.key`
(its `server.pem` is issued by the project CA, so `fedsilo audit verify --kit KIT` checks that
the entries were signed by the consortium's server). In a simulation, a key made for the run:
its self-signed certificate is stored with the run and written to the results folder
(`audit.pem`, with the key, `audit.key`, so that a resumed run signs on with it) — such a
signature only proves that the entries are consistent with that stored key.

Signing uses `fedsilo.aggregation.secure.identity.Signer` (the kit-key signer of SecAgg+).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from fedsilo.aggregation.secure.identity import Signer, signed_by
from fedsilo.errors import ConfigError
from fedsilo.store.disk import writing

SERVER_KEY, SERVER_CERT, CA = "server.key", "server.pem", "ca.pem"  # in a server kit
RUN_KEY, RUN_CERT = "audit.key", "audit.pem"                        # in a results folder
SEAL_COPY = "audit-seal.json"  # a copy of the signed final entry, in the results folder
DOMAIN = b"fedsilo-audit-v1\n"


def message(run_id: str, chain_hash: str) -> bytes:
    """What is signed for one entry: the run and the entry's chain hash (which covers the
    entry and, through the previous hash, every entry before it)."""
    return DOMAIN + run_id.encode() + b"\n" + chain_hash.encode()


class AuditSigner:
    """A signing key and its certificate (PEM text); `origin` is "kit" or "simulation"."""

    def __init__(self, key_pem: bytes, cert_pem: bytes, origin: str) -> None:
        self._signer = Signer(key_pem, cert_pem)
        self.key_pem = key_pem
        self.certificate = cert_pem.decode()
        self.origin = origin

    def sign(self, run_id: str, chain_hash: str) -> str:
        return self.sign_bytes(message(run_id, chain_hash))

    def sign_bytes(self, signed: bytes) -> str:
        """The signature (hex) of `signed`."""
        return self._signer.sign(signed).hex()


def kit_signer(kit: Path) -> AuditSigner | None:
    """The server kit's signer (server.key, server.pem), or None if the kit holds neither.

    Raises:
        ConfigError: only one of them is there, or they do not parse or do not match.
    """
    key, cert = Path(kit) / SERVER_KEY, Path(kit) / SERVER_CERT
    if not key.is_file() and not cert.is_file():
        return None
    if not (key.is_file() and cert.is_file()):
        raise ConfigError(f"server kit {kit}: the audit trail is signed with {SERVER_KEY} and "
                          f"{SERVER_CERT}; one of them is missing")
    return AuditSigner(key.read_bytes(), cert.read_bytes(), "kit")


def run_signer(folder: Path, run_id: str) -> AuditSigner:
    """A run's own signer: the one in its results folder (a resumed run), else a new Ed25519
    key and self-signed certificate, written there (key readable by its owner only).

    Raises:
        ConfigError: the folder cannot be written.
    """
    key_path, cert_path = folder / RUN_KEY, folder / RUN_CERT
    if key_path.is_file() and cert_path.is_file():
        return AuditSigner(key_path.read_bytes(), cert_path.read_bytes(), "simulation")
    signer = new_signer(run_id, "simulation")
    key_pem, cert_pem = signer.key_pem, signer.certificate.encode()
    with writing(folder, "the run's audit key"):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        cert_path.write_bytes(cert_pem)
    return signer


def new_signer(run_id: str, origin: str) -> AuditSigner:
    """A new Ed25519 key and its self-signed certificate, held in memory."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedsilo run {run_id}"[:64])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=36500)).sign(key, None))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return AuditSigner(key_pem, cert.public_bytes(serialization.Encoding.PEM), origin)


def check_signature(certificate: str, run_id: str, chain_hash: str, signature: str) -> bool:
    """Whether `signature` (hex) is the certificate's key's signature of the entry."""
    return verifies(certificate, message(run_id, chain_hash), signature)


def verifies(certificate: str, signed: bytes, signature: str) -> bool:
    """Whether `signature` (hex) is the signature of `signed` by the certificate's key."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.encode())
        return signed_by(cert, signed, bytes.fromhex(signature))
    except (ValueError, TypeError):
        return False


def issued_by(certificate: str, ca_pem: bytes) -> str:
    """"" if `certificate` is signed by the CA `ca_pem`, else why not."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        return "the CA or the stored certificate is not a PEM certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return ("the key that signed the audit trail is not the server's: its certificate "
                "is not issued by the project CA")
    return ""
