"""Sealed party-to-party messages of a deployed vertical run, relayed by the server.

The server relays everything between parties (the star of `fedsilo server` / `client`), and
in Hetero-LR it is also the arbiter holding the CKKS secret key: a ciphertext it relayed in
the clear, it could decrypt. So every party-to-party message is sealed end to end: each party
advertises a fresh X25519 key signed by its kit's identity key (the certificate the consortium
CA issued to its name), checks every peer's signature and certificate against its own kit's
CA, and seals with AES-256-GCM under the pairwise key (HKDF of the X25519 secret). The
associated data binds run, sender, receiver, kind and step: the server can drop, delay or
refuse to relay a message, but it cannot read it, alter it, replay it at another step, or put
its own key in a party's place (threat model: docs/vertical.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from fedsilo.aggregation.secure.crypto import agree, keypair, open_sealed, seal
from fedsilo.aggregation.secure.identity import Credentials
from fedsilo.errors import ConfigError, ProtocolError

DOMAIN = b"fedsilo-vertical-key-v1\n"


def key_message(run_id: str, name: str, public: bytes) -> bytes:
    """What a party signs when it advertises its channel key."""
    return DOMAIN + f"{run_id}\n{name}\n".encode() + public


class Channel:
    """This party's ends of the sealed pairwise channels of one run."""

    def __init__(self, run_id: str, name: str, credentials: Credentials | None) -> None:
        if credentials is None or credentials.signer is None:
            raise ConfigError(f"vertical run: '{name}' holds no identity key (client.key, "
                              f"client.pem, ca.pem of its kit) to sign its channel key with")
        self.run_id, self.name = run_id, name
        self._credentials = credentials
        self._sk, self.public = keypair()
        self._keys: dict[str, bytes] = {}

    def advertisement(self) -> dict[str, str]:
        signer = self._credentials.signer_for(self.name)
        signature = signer.sign(key_message(self.run_id, self.name, self.public))
        return {"public": self.public.hex(), "signature": signature.hex(),
                "certificate": signer.certificate}

    def accept(self, peers: Mapping[str, Mapping[str, str]]) -> None:
        """Check every peer's advertised key (signed by the certificate the CA issued to that
        name) and derive the pairwise keys.

        Raises:
            ProtocolError: a signature, certificate or key does not check out.
        """
        for peer, ad in peers.items():
            if peer == self.name:
                continue
            try:
                public = bytes.fromhex(str(ad["public"]))
                signature = bytes.fromhex(str(ad["signature"]))
                certificate = str(ad["certificate"])
            except (KeyError, ValueError, TypeError):
                raise ProtocolError(f"vertical run: the key advertised for '{peer}' is "
                                    f"malformed") from None
            self._credentials.trust.verify(peer, certificate,
                                           key_message(self.run_id, peer, public), signature,
                                           what="the vertical channel key")
            self._keys[peer] = agree(self._sk, public, b"fedsilo-vertical\n" +
                                     self.run_id.encode())

    def seal(self, to: str, kind: str, step: int, data: bytes) -> bytes:
        return seal(self._key(to), data, self._context(self.name, to, kind, step))

    def open(self, sender: str, kind: str, step: int, data: bytes) -> bytes:
        """The plaintext `sender` sealed for this party.

        Raises:
            ProtocolError: altered, replayed from another step or kind, or not from `sender`.
        """
        return open_sealed(self._key(sender), data, self._context(sender, self.name, kind, step))

    def _key(self, peer: str) -> bytes:
        key = self._keys.get(peer)
        if key is None:
            raise ProtocolError(f"vertical run: no channel with '{peer}'")
        return key

    def _context(self, sender: str, receiver: str, kind: str, step: int) -> bytes:
        return f"{self.run_id}\n{sender}\n{receiver}\n{kind}\n{step}".encode()
