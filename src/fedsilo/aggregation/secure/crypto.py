"""The cryptographic primitives of secure aggregation, all from `cryptography`:

- X25519 key agreement, the shared secret stretched with HKDF-SHA256 and a purpose label;
- AES-256-GCM authenticated encryption of the Shamir shares sent to a neighbour (the sender,
  recipient and round are bound as associated data, so a share replayed into another round or
  redirected to another client fails to decrypt);
- masks expanded from a 32-byte seed with AES-256-CTR (a cryptographic PRG; numpy's generators
  are never used for masks), into a preallocated ring buffer (`expand_mask`) or added straight
  into ring vectors piece by piece while the keystream is in cache (`add_masks`: the same
  streams, without a model-sized mask buffer or its extra passes over memory).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsilo.errors import ProtocolError

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
_ZERO_NONCE = bytes(16)


def keypair() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 private key and its raw 32-byte public key."""
    sk = X25519PrivateKey.generate()
    return sk, sk.public_key().public_bytes(*_RAW)


def private_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())


def private_from(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def check_public(raw: bytes) -> None:
    """Raises ProtocolError unless `raw` is an X25519 public key that agreement accepts: 32
    bytes and not a small-order point (whose shared secret would be all zeros)."""
    agree(_probe(), raw, b"check")


@functools.cache
def _probe() -> X25519PrivateKey:
    """A throwaway key (one per process) to test peers' public keys with."""
    return X25519PrivateKey.generate()


def agree(sk: X25519PrivateKey, peer_public: bytes, purpose: bytes) -> bytes:
    """A 32-byte key both parties derive: HKDF-SHA256(X25519(sk, peer), info=purpose)."""
    try:
        shared = sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as e:
        raise ProtocolError(f"secure aggregation: bad public key: {e}") from None
    return HKDF(hashes.SHA256(), 32, salt=None, info=purpose).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Decrypt and authenticate. Raises ProtocolError on any tampering or wrong context."""
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], associated)
    except (InvalidTag, ValueError):
        raise ProtocolError("secure aggregation: a share failed authentication (corrupted, "
                            "or meant for another round or client)") from None


def random_seed() -> bytes:
    return os.urandom(32)


def _keystream(seed: bytes) -> CipherContext:
    """The AES-256-CTR keystream keyed by `seed` (counter from zero), read by update_into."""
    return Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()


def expand_mask(seed: bytes, out: np.ndarray) -> np.ndarray:
    """Fill the uint64 array `out` with AES-256-CTR keystream keyed by `seed`."""
    buf = out.reshape(-1).view(np.uint8)
    buf[:] = 0
    _keystream(seed).update_into(buf.data, buf.data)  # keystream XOR 0, in place
    return out


MASK_CHUNK = 1 << 18  # bytes of keystream per piece: it and the target's piece stay in L2


def add_masks(targets: Sequence[np.ndarray], masks: Sequence[tuple[bytes, int]]) -> None:
    """targets += Σ sign · PRG(seed) over (seed, sign) in `masks`, mod 2^R (R the targets'
    unsigned dtype), the targets read as one vector in order: PRG(seed) is `expand_mask`'s
    stream over their concatenation. Piece by piece, so each piece of keystream is added while
    it is in cache: no model-sized mask buffer, no zeroing or extra pass over memory."""
    if not targets or not masks:
        return
    dtype = targets[0].dtype
    if dtype.kind != "u" or any(t.dtype != dtype for t in targets):
        raise ValueError("add_masks: targets must be arrays of one unsigned integer dtype")
    step = MASK_CHUNK // dtype.itemsize
    zero = np.zeros(step * dtype.itemsize, np.uint8)  # keystream = AES-CTR(key) XOR 0
    scratch = np.empty(step, dtype)
    streams = [(_keystream(seed), np.add if sign > 0 else np.subtract) for seed, sign in masks]
    for target in targets:
        flat = target.reshape(-1)  # a view when contiguous (always, for the layer's sums)
        for start in range(0, flat.size, step):
            part = flat[start:start + step]
            piece = scratch[:part.size]
            raw = piece.view(np.uint8).data
            src = zero[:raw.nbytes].data
            for stream, op in streams:
                stream.update_into(src, raw)
                op(part, piece, out=part)  # wraps mod 2^R
        if not np.may_share_memory(flat, target):
            target[...] = flat.reshape(target.shape)
