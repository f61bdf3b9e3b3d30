"""Vertical (hetero) logistic and linear regression with homomorphic encryption, FATE Hetero-LR
style: parties hold different columns of the same, already aligned rows (see
`fedsilo.vertical.psi`); one of them, the label holder (FATE's "guest"), also holds the labels;
a coordinator, the arbiter, holds the secret key and only ever decrypts masked values.

Scheme: CKKS (TenSEAL), not Paillier: one ciphertext carries a whole mini-batch, so a step costs
a few vectorised ciphertext operations instead of thousands of Paillier exponentiations. CKKS is
approximate: every decrypted value carries an absolute error of about 1e-6 (see the tests for
the measured effect on the trained weights), and every slot (value plus mask) must stay well
below 2^19 in magnitude (60-bit last prime, 40-bit scale): standardise features and keep
targets, residuals and `mask_scale` moderate.

Per mini-batch `rows` (the order is agreed from a shared seed, `batch_order`; no message):

1. every feature holder h sends [[u_h]] = Enc(X_h[rows] w_h) to the label holder   (enc_forward)
2. the label holder, with u_g = X_g[rows] w_g + b (its columns plus the intercept), forms
       regression: [[d]] = sum_h [[u_h]] + Enc(u_g - y)                  (d = u - y exactly)
       binary:     [[z]] = sum_h [[u_h]] + Enc(u_g - 2*yhat),  [[d]] = 0.25 [[z]]
   with yhat = 2y - 1 in {-1, 1}. That is FATE's second-order Taylor expansion of the logistic
   loss at u = 0: log(1 + exp(-yhat u)) ~ log 2 - yhat u / 2 + u^2 / 8, whose gradient in u is
   d = 0.25 u - 0.5 yhat (equivalently sigmoid(u) ~ 0.5 + 0.25 u in the exact residual
   sigmoid(u) - y). It sends [[d]] to every feature holder                  (enc_residual)
3. every party k (the label holder too) computes the element-wise products [[d_i X_k[i, j]]]
   homomorphically (one plaintext multiplication), adds a fresh random mask r_ij ~ U(-R, R) to
   every slot and sends that to the arbiter                          (masked_enc_gradient)
4. the arbiter decrypts, sums each block of the batch (one block per feature) and returns the
   masked sums g_j + sum_i r_ij                                          (masked_gradient)
5. the party removes its masks, divides by the batch size and steps: w_k -= lr * X_k^T d / |rows|

The products are packed: [[d]] is the batch repeated K = slots // |rows| times, one block per
feature, so a party's gradient needs ceil(features / K) ciphertexts and no rotation keys; the
arbiter does the sums of step 4 in the clear on masked values.

Loss (optional, `losses=`): the label holder squares [[z]] (binary) or [[d]] (regression),
masks it the same way, the arbiter returns the masked sum, and the label holder unmasks it:
binary loss = mean(z^2) / 8 + log 2 - 1/2 (the Taylor loss above, since yhat^2 = 1), regression
loss = mean(d^2) / 2. Only the label holder learns the loss; the arbiter sees it masked.

Threat model: semi-honest parties (they follow the protocol and try to learn from what they
see) and an arbiter that colludes with no party. What each role sees:

- the arbiter: the public parameters, batch and feature counts, and masked values d_i X[i, j] +
  r_ij (and masked squared residuals); never a ciphertext it could decrypt unmasked. The masks
  are real numbers drawn from os.urandom, uniform on [-R, R] (`mask_scale` R, default 2^12): the
  hiding is statistical (a value of magnitude m shifts the masked distribution by m / 2R in
  statistical distance), not perfect as with masks modulo a group order; FATE's float masks have
  the same nature.
- the label holder: [[u_h]] of every feature holder (ciphertexts only), its own features and
  labels, and its own gradients in the clear; never another party's features or weights.
- a feature holder: [[d]] (ciphertexts only) and its own gradient X_h^T d / |rows| in the clear;
  never the labels or another party's features. As in FATE, a plaintext gradient still leaks
  about the residuals: with more features than batch rows, X_h^T d can be solved for d, and so
  for the labels; keep `batch_size` well above every party's feature count.
- the wire: CKKS ciphertexts, the public key material, and masked sums; never a feature value,
  a label, a weight or an unmasked gradient.
- the decrypted values returned to a party are sums of slots whose plaintexts that party does
  not know (they involve another party's u_h), which blunts the Li-Micciancio key-recovery
  attack on CKKS decryptions; the arbiter must still never decrypt an unmasked ciphertext.

Not covered: a malicious party or arbiter (e.g. the label holder sending a crafted [[d]], the
arbiter returning wrong sums), collusion of the arbiter with any party (they decrypt everything),
what the final weights reveal, and prediction: `predict_hetero` works on the plain weights, as
FATE's Hetero-LR predict, where feature holders send X_h w_h in the clear to the label holder.

The classes do no I/O: messages are `Message`s carrying bytes (ciphertext serialisations or
float64 arrays), so the same protocol can run in process (`fit_hetero_lr`, which records every
message in `wire`) and over a transport.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts

from fedsilo.errors import ConfigError, DataError, MalformedUpdate
from fedsilo.vertical.batches import batch_order

__all__ = [
    "Arbiter",
    "CkksParams",
    "FeatureHolder",
    "LabelHolder",
    "Message",
    "batch_order",
    "fit_hetero_lr",
    "predict_hetero",
]

TASKS = ("binary", "regression")
ARBITER = "arbiter"

#: every kind of message that crosses between parties
KINDS = (
    "public_context",       # arbiter -> parties: CKKS public key and relinearisation keys
    "enc_forward",          # feature holder -> label holder: [[X_h w_h]]
    "enc_residual",         # label holder -> feature holder: [[d]]
    "masked_enc_gradient",  # party -> arbiter: [[d * X + r]] (one per chunk of features)
    "masked_gradient",      # arbiter -> party: float64 block sums of the decrypted masked values
    "masked_enc_loss",      # label holder -> arbiter: [[residual^2 + r]]
    "masked_loss",          # arbiter -> label holder: float64 masked sum
)


@dataclass(frozen=True)
class CkksParams:
    """CKKS parameters. The default (N = 8192, 200-bit modulus) is 128-bit secure and has two
    multiplicative levels, the depth of the binary protocol (0.25 [[z]], then times X)."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


@dataclass(frozen=True)
class Message:
    """One message between two parties. `meta` holds small public integers (batch size, block
    count), never data."""

    sender: str
    receiver: str
    kind: str
    payload: bytes = field(repr=False)
    meta: Mapping[str, int] = field(default_factory=dict)


def _secure_uniform(n: int, scale: float) -> np.ndarray:
    """n floats uniform on [-scale, scale), from os.urandom (53 random bits each)."""
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return (raw.astype(np.float64) * 2.0 ** -53 * 2.0 - 1.0) * scale


def _tiles(rows: int, slots: int) -> int:
    if rows < 1 or rows > slots:
        raise ConfigError(f"batch of {rows} rows does not fit {slots} CKKS slots")
    return slots // rows


def _load(ctx: ts.Context, payload: bytes, size: int, what: str) -> ts.CKKSVector:
    if not isinstance(payload, bytes | bytearray):
        raise MalformedUpdate(f"{what}: expected bytes, got {type(payload).__name__}")
    try:
        vec = ts.ckks_vector_from(ctx, bytes(payload))
    except Exception as e:  # TenSEAL raises plain ValueError/RuntimeError on bad input
        raise MalformedUpdate(f"{what}: not a CKKS vector for this context ({e})") from e
    if vec.size() != size:
        raise MalformedUpdate(f"{what}: expected {size} slots, got {vec.size()}")
    return vec


class Arbiter:
    """Holds the CKKS secret key; decrypts masked ciphertexts and returns their block sums.

    `view`, if a list, receives every decrypted (masked) vector, for inspection in tests."""

    name = ARBITER

    def __init__(self, params: CkksParams | None = None,
                 view: list[np.ndarray] | None = None) -> None:
        self.params = params or CkksParams()
        p = self.params
        if sum(p.coeff_mod_bit_sizes) > {4096: 109, 8192: 218, 16384: 438, 32768: 881}.get(
                p.poly_modulus_degree, 0):
            raise ConfigError(f"CKKS parameters {p} are not 128-bit secure (or not supported)")
        if len(p.coeff_mod_bit_sizes) < 4:
            raise ConfigError("CKKS needs at least two multiplicative levels (4 primes)")
        self._ctx = ts.context(ts.SCHEME_TYPE.CKKS, p.poly_modulus_degree,
                               coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes))
        self._ctx.global_scale = 2.0 ** p.scale_bits
        self._view = view

    def public_context(self) -> bytes:
        """The public key and relinearisation keys (no secret key, no Galois keys)."""
        return bytes(self._ctx.serialize(save_public_key=True, save_secret_key=False,
                                         save_galois_keys=False, save_relin_keys=True))

    def decrypt_masked(self, payload: bytes, block: int, blocks: int) -> np.ndarray:
        """Decrypt a masked vector of `blocks` blocks of `block` slots; return the block sums."""
        if block < 1 or blocks < 1 or block * blocks > self.params.slots:
            raise MalformedUpdate(f"bad layout: {blocks} blocks of {block} slots")
        vec = _load(self._ctx, payload, block * blocks, "masked ciphertext")
        values = np.asarray(vec.decrypt(), dtype=np.float64)
        if self._view is not None:
            self._view.append(values.copy())
        return values.reshape(blocks, block).sum(axis=1)


class _Party:
    """A data party: its columns, its weights, and the masked-gradient half of the protocol."""

    def __init__(self, name: str, X: np.ndarray, public_context: bytes,
                 mask_scale: float = 2.0 ** 12, intercept: bool = False) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise DataError(f"{name}: expected a non-empty 2-D feature block, got {X.shape}")
        if not np.isfinite(X).all():
            raise DataError(f"{name}: features contain NaN or Inf")
        if not 0 < mask_scale <= 2.0 ** 16:
            raise ConfigError("mask_scale must be in (0, 2^16] (CKKS headroom)")
        self.name = name
        self.X = np.hstack([X, np.ones((X.shape[0], 1))]) if intercept else X
        self.w = np.zeros(self.X.shape[1])
        self.mask_scale = float(mask_scale)
        self._ctx = ts.context_from(public_context)
        if self._ctx.is_private():
            raise ConfigError(f"{name}: the context must not carry the secret key")
        self.slots = int(self._ctx.seal_context().data.key_context_data().parms()
                         .poly_modulus_degree()) // 2
        self._masks: list[np.ndarray] = []
        self._rows: np.ndarray | None = None

    def masked_gradient_requests(self, rows: np.ndarray, enc_d: bytes) -> list[Message]:
        """[[d * X[rows, j] + r]] for every chunk of features, to the arbiter."""
        rows = np.asarray(rows)
        b = len(rows)
        k = _tiles(b, self.slots)
        d = _load(self._ctx, enc_d, k * b, f"{self.name}: residual")
        xb = self.X[rows]
        f = xb.shape[1]
        self._masks, self._rows = [], rows
        out = []
        for start in range(0, f, k):
            chunk = xb[:, start:start + k]
            plain = np.zeros((k, b))
            plain[:chunk.shape[1]] = chunk.T
            mask = _secure_uniform(k * b, self.mask_scale)
            self._masks.append(mask.reshape(k, b)[:chunk.shape[1]].sum(axis=1))
            enc = d * plain.ravel().tolist() + mask.tolist()
            out.append(Message(self.name, ARBITER, "masked_enc_gradient",
                               bytes(enc.serialize()), {"block": b, "blocks": k}))
        return out

    def apply_gradient(self, replies: Sequence[np.ndarray], lr: float) -> np.ndarray:
        """Unmask the arbiter's block sums, step the weights; returns the gradient."""
        if self._rows is None or len(replies) != len(self._masks):
            raise MalformedUpdate(f"{self.name}: {len(replies)} gradient replies, "
                                  f"expected {len(self._masks)}")
        parts = []
        for reply, mask in zip(replies, self._masks):
            reply = np.asarray(reply, dtype=np.float64)
            if reply.ndim != 1 or len(reply) < len(mask) or not np.isfinite(reply).all():
                raise MalformedUpdate(f"{self.name}: malformed gradient reply")
            parts.append(reply[:len(mask)] - mask)
        grad = np.concatenate(parts) / len(self._rows)
        self.w = self.w - lr * grad
        self._masks, self._rows = [], None
        return grad

    def _encrypt_tiled(self, v: np.ndarray) -> ts.CKKSVector:
        k = _tiles(len(v), self.slots)
        return ts.ckks_vector(self._ctx, np.tile(v, k).tolist())


class FeatureHolder(_Party):
    """A party with columns X_h and no labels (FATE's host)."""

    def __init__(self, name: str, X: np.ndarray, public_context: bytes,
                 mask_scale: float = 2.0 ** 12) -> None:
        super().__init__(name, X, public_context, mask_scale, intercept=False)

    def forward(self, rows: np.ndarray, to: str) -> Message:
        """[[X_h[rows] w_h]], tiled, to the label holder."""
        u = self.X[np.asarray(rows)] @ self.w
        return Message(self.name, to, "enc_forward",
                       bytes(self._encrypt_tiled(u).serialize()), {"block": len(u)})


class LabelHolder(_Party):
    """The party with columns X_g (plus the intercept, the last weight) and the labels y."""

    def __init__(self, name: str, X: np.ndarray, y: np.ndarray, task: str, public_context: bytes,
                 mask_scale: float = 2.0 ** 12) -> None:
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        super().__init__(name, X, public_context, mask_scale, intercept=True)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != self.X.shape[0]:
            raise DataError(f"{name}: {len(y)} labels for {self.X.shape[0]} rows")
        if not np.isfinite(y).all():
            raise DataError(f"{name}: labels contain NaN or Inf")
        if task == "binary" and not np.isin(y, (0.0, 1.0)).all():
            raise DataError(f"{name}: binary labels must be 0 or 1")
        self.y = y
        self.task = task
        self._z: ts.CKKSVector | None = None
        self._loss_mask = 0.0
        self._loss_rows = 0
        self._d = b""

    def residual(self, rows: np.ndarray, forwards: Mapping[str, bytes],
                 receivers: Sequence[str]) -> list[Message]:
        """[[d]] from the feature holders' [[u_h]] (one per feature holder, all required)."""
        rows = np.asarray(rows)
        b = len(rows)
        k = _tiles(b, self.slots)
        u_g = self.X[rows] @ self.w
        y = self.y[rows]
        plain = u_g - 2.0 * (2.0 * y - 1.0) if self.task == "binary" else u_g - y
        z = self._encrypt_tiled(plain)
        for sender in sorted(forwards):
            z = z + _load(self._ctx, forwards[sender], k * b, f"{self.name}: forward of {sender}")
        self._z = z
        d = z * 0.25 if self.task == "binary" else z
        payload = bytes(d.serialize())
        self._d = payload
        return [Message(self.name, r, "enc_residual", payload, {"block": b}) for r in receivers]

    def own_residual(self) -> bytes:
        """The [[d]] of the last `residual` call (for the label holder's own gradient)."""
        return self._d

    def masked_loss_request(self, rows: np.ndarray) -> Message:
        """[[z^2 + r]] (binary) or [[d^2 + r]] (regression), first block only, to the arbiter."""
        if self._z is None:
            raise MalformedUpdate(f"{self.name}: no residual to take the loss of")
        b = len(rows)
        k = _tiles(b, self.slots)
        sq = self._z.square()
        keep = np.zeros(k * b)
        keep[:b] = 1.0  # keep one copy of the batch; the other blocks become pure mask
        mask = _secure_uniform(k * b, self.mask_scale)
        self._loss_mask = float(mask[:b].sum())
        self._loss_rows = b
        enc = sq * keep.tolist() + mask.tolist()
        return Message(self.name, ARBITER, "masked_enc_loss", bytes(enc.serialize()),
                       {"block": b, "blocks": k})

    def receive_loss(self, sums: np.ndarray) -> float:
        total = float(np.asarray(sums, dtype=np.float64)[0]) - self._loss_mask
        mean = total / self._loss_rows
        return mean / 8.0 + math.log(2.0) - 0.5 if self.task == "binary" else mean / 2.0


def _floats(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float64).tobytes()


def fit_hetero_lr(blocks: Mapping[str, np.ndarray], y: np.ndarray, label_holder: str,
                  task: str = "binary", epochs: int = 1, lr: float = 0.1, batch_size: int = 64,
                  seed: int = 0, params: CkksParams | None = None,
                  mask_scale: float = 2.0 ** 12, wire: list[Message] | None = None,
                  losses: list[float] | None = None,
                  arbiter_view: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Train Hetero-LR in process; returns each party's weights (the label holder's end with the
    intercept). `wire` receives every message between parties, `losses` the label holder's
    per-batch (Taylor, for binary) loss, `arbiter_view` every vector the arbiter decrypted."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if label_holder not in blocks:
        raise ConfigError(f"label holder {label_holder!r} holds no block")
    if ARBITER in blocks:
        raise ConfigError(f"{ARBITER!r} is reserved for the arbiter")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
    n = {np.asarray(X).shape[0] for X in blocks.values()}
    if len(n) != 1:
        raise DataError(f"blocks have different row counts: {sorted(n)}")
    rows = n.pop()
    arbiter = Arbiter(params, view=arbiter_view)
    if batch_size > arbiter.params.slots:
        raise ConfigError(f"batch_size {batch_size} exceeds {arbiter.params.slots} CKKS slots")
    log: list[Message] = wire if wire is not None else []

    def send(m: Message) -> Message:
        assert m.kind in KINDS
        log.append(m)
        return m

    pub = arbiter.public_context()
    names = list(blocks)
    for name in names:
        send(Message(ARBITER, name, "public_context", pub))
    lh = LabelHolder(label_holder, blocks[label_holder], y, task, pub, mask_scale)
    fhs = {name: FeatureHolder(name, blocks[name], pub, mask_scale)
           for name in names if name != label_holder}

    def gradient_round(party: _Party, enc_d: bytes, batch: np.ndarray) -> None:
        replies = []
        for req in party.masked_gradient_requests(batch, enc_d):
            send(req)
            sums = arbiter.decrypt_masked(req.payload, req.meta["block"], req.meta["blocks"])
            reply = send(Message(ARBITER, party.name, "masked_gradient", _floats(sums)))
            replies.append(np.frombuffer(reply.payload, dtype=np.float64))
        party.apply_gradient(replies, lr)

    for batch in batch_order(rows, batch_size, epochs, seed):
        forwards = {name: send(fh.forward(batch, label_holder)).payload
                    for name, fh in fhs.items()}
        residuals = {m.receiver: send(m).payload
                     for m in lh.residual(batch, forwards, list(fhs))}
        if losses is not None:
            req = send(lh.masked_loss_request(batch))
            sums = arbiter.decrypt_masked(req.payload, req.meta["block"], req.meta["blocks"])
            reply = send(Message(ARBITER, label_holder, "masked_loss", _floats(sums)))
            losses.append(lh.receive_loss(np.frombuffer(reply.payload, dtype=np.float64)))
        gradient_round(lh, lh.own_residual(), batch)
        for name, fh in fhs.items():
            gradient_round(fh, residuals[name], batch)
    out = {name: fh.w.copy() for name, fh in fhs.items()}
    out[label_holder] = lh.w.copy()
    return {name: out[name] for name in names}


def predict_hetero(blocks: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                   task: str = "binary") -> np.ndarray:
    """P(y = 1) (binary, exact sigmoid) or the predicted value (regression), in the clear. The
    party whose weights are one longer than its columns holds the intercept."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if set(blocks) != set(weights):
        raise ConfigError("blocks and weights name different parties")
    total: Any = 0.0
    intercepts = 0
    for name, X in blocks.items():
        X = np.asarray(X, dtype=np.float64)
        w = np.asarray(weights[name], dtype=np.float64)
        if len(w) == X.shape[1] + 1:
            intercepts += 1
            total = total + X @ w[:-1] + w[-1]
        elif len(w) == X.shape[1]:
            total = total + X @ w
        else:
            raise ConfigError(f"{name}: {len(w)} weights for {X.shape[1]} columns")
    if intercepts != 1:
        raise ConfigError(f"expected exactly one party with an intercept, got {intercepts}")
    u = np.asarray(total, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-u)) if task == "binary" else u
