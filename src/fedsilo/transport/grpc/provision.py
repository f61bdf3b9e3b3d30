"""Provisioning: a certificate authority, a server certificate, and one client certificate and
key per institution, written as startup kits (after NVFlare's provisioning).

```
OUT/ca/            ca.pem, ca.key            the CA key stays with the project admin
OUT/server/        ca.pem, server.pem, server.key, crl.pem, project.json
OUT/<institution>/ ca.pem, client.pem, client.key, project.json, policy.toml
```
No CKKS key is provisioned: each round's is made by an institution (aggregation/secure/ckks.py).
An institution's identity is the common name of its certificate. Revoking adds the
certificate's serial number to the CA-signed revocation list the server checks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsilo.client.policy import write_policy
from fedsilo.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Project:
    name: str
    server: str
    institutions: tuple[str, ...]
    valid_days: int = 365
    port: int = 8443
    policy: Mapping[str, Any] = field(default_factory=dict)  # overrides of the safe defaults

    @classmethod
    def load(cls, path: str | Path) -> Project:
        """Read PROJECT.toml: [project] name, server, institutions, valid_days; [policy] the
        site policy every institution's kit starts from (each institution edits its own)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"project file not found: {p}")
        document = tomllib.loads(p.read_text())
        raw = document.get("project")
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: missing [project] table")
        unknown = set(raw) - {"name", "server", "port", "institutions", "valid_days", "ckks"}
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {sorted(unknown)} in [project]")
        if raw.get("ckks"):
            raise ConfigError(f"{p}: 'ckks = true' is no longer supported: CKKS keys are now "
                              f"made per round by the institutions, nothing to provision "
                              f"(remove the line; aggregation.secure = 'ckks' needs no key)")
        insts = tuple(raw.get("institutions", ()))
        bad = [n for n in insts if not isinstance(n, str) or not NAME.match(n)]
        if not insts or bad or len(set(insts)) != len(insts):
            raise ConfigError(f"{p}: institutions must be unique names of letters, digits, "
                              f"'.', '_', '-' (got {list(insts)})")
        return cls(str(raw.get("name", "fedsilo")), str(raw.get("server", "localhost")),
                   insts, int(raw.get("valid_days", 365)), int(raw.get("port", 8443)),
                   dict(document.get("policy", {})))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)


def make_ca(project: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{project} CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, project)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, common_name: str,
          server_names: tuple[str, ...] = (), days: float = 365,
          not_before: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey,
                                                          x509.Certificate]:
    """A leaf certificate: a server one if `server_names` is given (SANs), else a client one."""
    key = _key()
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server_names:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = (builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_crl(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
              serials: list[int]) -> bytes:
    """A CA-signed certificate revocation list of `serials`, PEM."""
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(now).next_update(now + dt.timedelta(days=30)))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def provision(project: Project, out: str | Path) -> Path:
    """Write the CA, the server kit and one kit per institution under `out`."""
    root = Path(out)
    if (root / "ca" / "ca.key").exists():
        raise ConfigError(f"{root} already holds a provisioned project; use another folder")
    ca_key, ca = make_ca(project.name, project.valid_days)
    names = tuple(dict.fromkeys((project.server, "localhost", "127.0.0.1")))
    kits = {"server": issue(ca_key, ca, "server", names, project.valid_days)}
    kits.update({n: issue(ca_key, ca, n, days=project.valid_days) for n in project.institutions})
    (root / "ca").mkdir(parents=True)
    _write(root / "ca" / "ca.pem", _pem(ca))
    _write(root / "ca" / "ca.key", _pem_key(ca_key), secret=True)
    for who, (key, cert) in kits.items():
        kit = root / who
        kit.mkdir(parents=True, exist_ok=True)
        role = "server" if who == "server" else "client"
        _write(kit / "ca.pem", _pem(ca))
        _write(kit / f"{role}.pem", _pem(cert))
        _write(kit / f"{role}.key", _pem_key(key), secret=True)
        meta = {"project": project.name, "server": project.server, "port": project.port,
                "name": who,
                "institutions": list(project.institutions)}
        (kit / "project.json").write_text(json.dumps(meta, indent=2))
        if who != "server":
            write_policy(kit, project.policy)
    _write(root / "server" / "crl.pem", write_crl(ca_key, ca, []))
    return root


def revoke(root: str | Path, institution: str) -> int:
    """Revoke an institution's certificate: add its serial to the server kit's CRL."""
    r = Path(root)
    cert_path = r / institution / "client.pem"
    if not cert_path.is_file():
        raise ConfigError(f"no kit for institution '{institution}' under {r}")
    ca = x509.load_pem_x509_certificate((r / "ca" / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((r / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    crl = x509.load_pem_x509_crl((r / "server" / "crl.pem").read_bytes())
    serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    serials = sorted({c.serial_number for c in crl} | {serial})
    _write(r / "server" / "crl.pem", write_crl(ca_key, ca, serials))
    return serial
