"""Signed secure-aggregation keys (the active-adversary variant of Bonawitz et al. 2017): each
institution signs the X25519 public keys it advertises with its identity key, and checks its
neighbours' signatures before it uses their keys, so the server relaying them cannot put its own
keys in their place.

In deployment the identity is the institution's provisioned key pair: `client.key` signs,
`client.pem` (issued by the project CA) travels with the advertisement, and every party checks
it against the `ca.pem` of its own kit and that its common name is the institution the server
says it is. A simulation makes the same material in memory (`SimulatedCA`: an Ed25519 CA and one
Ed25519 certificate per institution), so the same checks run.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsilo.errors import ConfigError, ProtocolError

KEY, CERT, CA = "client.key", "client.pem", "ca.pem"  # names in a kit and in `keys`
SigningKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


CONTRIBUTION = b"fedsilo-contribution-v1\n"  # an institution signs what it sent
RECEIPT = b"fedsilo-receipt-v1\n"            # the server signs what it accepted


def contribution_message(run_id: str, round: int, institution: str, digest: str) -> bytes:
    """What an institution signs for an update it sends (and the server's receipt, with the
    RECEIPT domain, acknowledges): the run, the round, its name, the update's SHA-256."""
    return "\n".join([run_id, str(round), institution, digest]).encode()


def signed_by(cert: x509.Certificate, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is the signature of `message` by the key of `cert` (Ed25519 or
    ECDSA P-256/SHA-256)."""
    key = cert.public_key()
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else ""


class Trust:
    """The CA a party trusts, and the certificates it has already found issued by it."""

    def __init__(self, ca_pem: bytes) -> None:
        try:
            self.ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError:
            raise ConfigError(f"secure aggregation: {CA} is not a PEM certificate") from None
        self._issued: dict[str, x509.Certificate] = {}

    def verify(self, name: str, certificate: str, message: bytes, signature: bytes,
               what: str = "the keys advertised") -> None:
        """Check that `certificate` is the CA's, valid now, for institution `name`, and that
        `signature` is its key's signature of `message`.

        Raises:
            ProtocolError: any of these fails (the reason names which).
        """
        cert = self._certificate(certificate)
        if common_name(cert) != name:
            raise ProtocolError(f"the certificate sent for '{name}' is issued to "
                                f"'{common_name(cert)}'")
        now = dt.datetime.now(dt.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ProtocolError(f"the certificate of '{name}' is expired or not yet valid")
        if not signed_by(cert, message, signature):
            raise ProtocolError(f"{what} for '{name}' are not signed by its certificate's key")

    def _certificate(self, pem: str) -> x509.Certificate:
        cert = self._issued.get(pem)
        if cert is not None:
            return cert
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ProtocolError("a certificate sent with advertised keys is not one the "
                                "consortium CA issued") from None
        try:
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise ProtocolError(f"the certificate of '{common_name(cert)}' is not an "
                                f"institution's (no client-auth usage)")
        self._issued[pem] = cert
        return cert


class Signer:
    """An institution's identity key and its certificate (PEM text, sent along)."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        try:
            key = serialization.load_pem_private_key(key_pem, None)
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (ValueError, TypeError):
            raise ConfigError(f"secure aggregation: {KEY} / {CERT} do not parse") from None
        if not isinstance(key, (Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
            raise ConfigError(f"secure aggregation: {KEY} is a {type(key).__name__}, not an "
                              f"Ed25519 or ECDSA key")
        if cert.public_key() != key.public_key():
            raise ConfigError(f"secure aggregation: {KEY} is not the key of {CERT}")
        self._key: SigningKey = key
        self.name = common_name(cert)
        self.certificate = cert_pem.decode()

    def sign(self, message: bytes) -> bytes:
        if isinstance(self._key, Ed25519PrivateKey):
            return self._key.sign(message)
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class Credentials:
    """One party's key material: the CA it trusts and, for an institution, its signer."""

    trust: Trust
    signer: Signer | None = None

    @classmethod
    def from_keys(cls, keys: Mapping[str, bytes]) -> Credentials | None:
        """From `ca.pem` [+ `client.key`, `client.pem`]; None when `keys` hold none of them.

        Raises:
            ConfigError: a signing key without the CA, or material that does not parse.
        """
        if not {KEY, CERT, CA} & set(keys):
            return None
        if CA not in keys:
            raise ConfigError(f"secure aggregation: {KEY} / {CERT} given without the {CA} "
                              f"that neighbours' certificates are checked against")
        signer = Signer(keys[KEY], keys[CERT]) if KEY in keys and CERT in keys else None
        return cls(Trust(keys[CA]), signer)

    def signer_for(self, name: str) -> Signer:
        """This party's signer, which must be institution `name`'s.

        Raises:
            ConfigError: no signing key, or a certificate issued to another name.
        """
        if self.signer is None:
            raise ConfigError(f"secure aggregation: '{name}' holds no signing key ({KEY}, "
                              f"{CERT}) for its advertised keys")
        if self.signer.name != name:
            raise ConfigError(f"secure aggregation: this institution is '{name}' but its "
                              f"certificate names '{self.signer.name}'")
        return self.signer


def kit_keys(kit: Path) -> dict[str, bytes]:
    """The identity material of a startup kit (`client.key`, `client.pem`, `ca.pem`; a
    server kit has only `ca.pem` of these)."""
    return {n: (Path(kit) / n).read_bytes() for n in (KEY, CERT, CA) if (Path(kit) / n).is_file()}


def _pem_key(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class SimulatedCA:
    """A consortium CA made in memory for a simulation: Ed25519, one certificate (with
    client-auth usage, like a provisioned one) per institution."""

    def __init__(self, days: int = 365) -> None:
        self._key = Ed25519PrivateKey.generate()
        self._start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
        self._end = self._start + dt.timedelta(days=days + 1)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsilo simulated CA")])
        self._cert = (self._builder(name, self._key.public_key())
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
                      .sign(self._key, None))

    def _builder(self, subject: x509.Name, key: Ed25519PublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).public_key(key)
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                           "fedsilo simulated CA")]))
                .serial_number(x509.random_serial_number())
                .not_valid_before(self._start).not_valid_after(self._end))

    def trust_keys(self) -> dict[str, bytes]:
        """What the server holds: the CA certificate."""
        return {CA: self._cert.public_bytes(serialization.Encoding.PEM)}

    def keys(self, name: str) -> dict[str, bytes]:
        """Institution `name`'s kit: a fresh Ed25519 key, its certificate, the CA."""
        key = Ed25519PrivateKey.generate()
        cert = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                              key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .sign(self._key, None))
        return {KEY: _pem_key(key), CERT: cert.public_bytes(serialization.Encoding.PEM),
                **self.trust_keys()}


_lock = threading.Lock()
_process_ca: list[SimulatedCA] = []
_process_credentials: dict[str | None, Credentials] = {}


def simulated(name: str | None) -> Credentials:
    """Credentials from this process's own simulated CA (made on first use), for a party given
    no key material: institution `name`'s, or the server's (None). Used when one process plays
    every party (federations assembled in Python); parties in other processes do not trust
    this CA, so a deployment without kit keys fails closed."""
    with _lock:
        if name not in _process_credentials:
            if not _process_ca:
                _process_ca.append(SimulatedCA())
            ca = _process_ca[0]
            keys = ca.trust_keys() if name is None else ca.keys(name)
            made = Credentials.from_keys(keys)
            assert made is not None
            _process_credentials[name] = made
        return _process_credentials[name]
