"""Credentials from a startup kit, and who is calling: the certificate's common name, checked
against the project's institutions and the CA-signed revocation list."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509

from fedsilo.errors import AuthenticationError, ConfigError

log = logging.getLogger(__name__)
INSECURE_ID_HEADER = "fedsilo-institution"


def _read(kit: Path, name: str) -> bytes:
    path = kit / name
    if not path.is_file():
        raise ConfigError(f"startup kit {kit} lacks {name}")
    return path.read_bytes()


def kit_info(kit: str | Path) -> dict:
    """project.json of a kit: project, server, name, institutions."""
    return json.loads(_read(Path(kit), "project.json"))


def server_credentials(kit: str | Path) -> grpc.ServerCredentials:
    """Mutual TLS: the server presents its certificate and requires a client certificate
    signed by the project CA (no certificate, another CA or an expired one fail the
    handshake)."""
    k = Path(kit)
    return grpc.ssl_server_credentials([(_read(k, "server.key"), _read(k, "server.pem"))],
                                       root_certificates=_read(k, "ca.pem"),
                                       require_client_auth=True)


def client_credentials(kit: str | Path) -> grpc.ChannelCredentials:
    k = Path(kit)
    return grpc.ssl_channel_credentials(root_certificates=_read(k, "ca.pem"),
                                        private_key=_read(k, "client.key"),
                                        certificate_chain=_read(k, "client.pem"))


@dataclass
class Gatekeeper:
    """Decides who a caller is, or refuses them (and logs the refusal)."""

    institutions: frozenset[str]
    revoked: frozenset[int] = field(default_factory=frozenset)
    insecure: bool = False

    @classmethod
    def from_kit(cls, kit: str | Path, insecure: bool = False) -> Gatekeeper:
        k = Path(kit)
        revoked: frozenset[int] = frozenset()
        if (k / "crl.pem").is_file():
            ca = x509.load_pem_x509_certificate(_read(k, "ca.pem"))
            crl = x509.load_pem_x509_crl(_read(k, "crl.pem"))
            if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                raise ConfigError(f"{k / 'crl.pem'} is not signed by the project CA")
            revoked = frozenset(c.serial_number for c in crl)
        return cls(frozenset(kit_info(k)["institutions"]), revoked, insecure)

    def identify(self, context: grpc.ServicerContext) -> str:
        """The calling institution's name.

        Raises:
            AuthenticationError: no verified certificate, a revoked one, or a name not in
                the project.
        """
        peer = context.peer()
        if self.insecure:
            name = dict(context.invocation_metadata()).get(INSECURE_ID_HEADER, "")
        else:
            auth = context.auth_context()
            names = auth.get("x509_common_name", [])
            if not names:
                self._refuse(peer, "no verified client certificate")
            name = names[0].decode()
            pem = auth.get("x509_pem_cert", [b""])[0]
            if pem and x509.load_pem_x509_certificate(pem).serial_number in self.revoked:
                self._refuse(peer, f"certificate of '{name}' is revoked")
        if name not in self.institutions:
            self._refuse(peer, f"'{name}' is not an institution of this project")
        return str(name)

    def _refuse(self, peer: str, reason: str) -> None:
        log.warning("refused %s: %s", peer, reason)
        raise AuthenticationError(reason)
