"""CKKS homomorphic sum (TenSEAL): for small consortia.

Each institution encrypts its (weighted) update under the consortium's CKKS key; the server
adds ciphertexts it cannot decrypt (it holds only the public context) and, after collection,
asks one institution to decrypt the sum. The server and that institution learn only the sum.

When to choose which: SecAgg+ costs ~2x a plain round and tolerates dropouts, but needs a
key-exchange round trip per round and reveals nothing to anyone but the sum; CKKS needs no
per-round exchanges or dropout recovery (a missing institution simply is not added), but its
ciphertexts are ~21x the float32 size, the server's additions are 50-200x a plain sum, the
result carries ~1e-8 CKKS noise, and one key-holding institution decrypts (trust: it reports
the sum honestly). Pick CKKS for a handful of institutions and models up to ~1e5 parameters.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator
from fedsilo.aggregation.secure.payloads import unb64
from fedsilo.core.params import ArraySpec, Params, ParamSpec
from fedsilo.errors import ConfigError, MalformedUpdate, ProtocolError, SecureAggregationAborted

SLOTS = 4096  # values per ciphertext at poly modulus degree 8192


def new_keys() -> tuple[bytes, bytes]:
    """A fresh CKKS context: (secret, public) serialized. The secret one stays with the
    institutions; the server gets the public one."""
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192,
                     coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    secret = ctx.serialize(save_secret_key=True)
    ctx.make_context_public()
    return secret, ctx.serialize()


def _pack(blobs: list[bytes]) -> np.ndarray:
    out = b"".join(len(b).to_bytes(4, "little") + b for b in blobs)
    return np.frombuffer(out, np.uint8)


def _unpack(arr: np.ndarray) -> list[bytes]:
    data, blobs, pos = arr.tobytes(), [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        if n <= 0 or pos + 4 + n > len(data):
            raise MalformedUpdate("ckks: ciphertext framing is broken")
        blobs.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return blobs


class CKKSSum:
    """Homomorphic secure sum. `context`: the serialized CKKS context (secret on the
    institutions' side, public on the server's)."""

    name = "ckks"
    pre_stages: tuple[str, ...] = ()
    post_stages = ("decrypt",)

    def __init__(self, context: bytes) -> None:
        import tenseal as ts

        self._ts = ts
        try:
            self.ctx = ts.context_from(context)
        except Exception as e:
            raise ConfigError(f"ckks: the key material is not a CKKS context: {e}") from None

    def init(self) -> None:
        return None

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return {}

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return {n: ArraySpec((-1,), np.dtype(np.uint8)) for n in spec}

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        out = {}
        for name, a in update.items():
            flat = np.asarray(a, np.float64).reshape(-1)
            out[name] = _pack([self._ts.ckks_vector(self.ctx, flat[i:i + SLOTS]).serialize()
                               for i in range(0, max(flat.size, 1), SLOTS)])
        return out

    def zero(self, spec: ParamSpec) -> Accumulator:
        return Accumulator({}, extra={"ckks": {"shapes": {n: s.shape for n, s in spec.items()},
                                               "sum": {}}})

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        """Add one institution's ciphertexts (all parsed before any is added: all or none)."""
        state = acc.extra["ckks"]
        parsed = {}
        for name, shape in state["shapes"].items():
            blobs = _unpack(encoded[name])
            expected = max(-(-int(np.prod(shape, dtype=np.int64)) // SLOTS), 1)
            if len(blobs) != expected:
                raise MalformedUpdate(f"ckks: '{name}' has {len(blobs)} ciphertexts, "
                                      f"expected {expected}")
            try:
                parsed[name] = [self._ts.ckks_vector_from(self.ctx, b) for b in blobs]
            except Exception as e:
                raise MalformedUpdate(f"ckks: '{name}' is not a valid ciphertext: {e}") from None
        for name, vectors in parsed.items():
            if name not in state["sum"]:
                state["sum"][name] = vectors
            else:
                for total, v in zip(state["sum"][name], vectors):
                    total.add_(v)
        acc.count += 1

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        raise SecureAggregationAborted("ckks: partial sums cannot be merged")

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        plain = acc.extra["ckks"].get("plain")
        if plain is None:
            raise SecureAggregationAborted("ckks: the sum was not decrypted")
        return state, plain, {"contributions": float(acc.count)}

    # stages --------------------------------------------------------------------------------
    def begin(self, acc: Accumulator, round: int, seed: int, cohort: list[str]) -> None:
        acc.extra["ckks"]["round"] = round

    def fit_config(self, acc: Accumulator, client: str) -> dict[str, Any]:
        return {}

    def stage_requests(self, stage: str, acc: Accumulator,
                       alive: list[str]) -> dict[str, dict[str, Any]]:
        state = acc.extra["ckks"]
        if not alive or not state["sum"]:
            return {}
        blobs = {n: base64.b64encode(_pack([v.serialize() for v in vs]).tobytes()).decode()
                 for n, vs in state["sum"].items()}
        return {sorted(alive)[0]: {"round": state["round"], "sum": blobs}}

    def stage_check(self, stage: str, acc: Accumulator, client: str, answer: Any) -> Any:
        """A decrypt answer: the plain sum, one base64 text per parameter name."""
        plain = answer.get("plain") if isinstance(answer, Mapping) else None
        try:
            if not isinstance(plain, Mapping) or set(plain) != set(acc.extra["ckks"]["shapes"]):
                raise ProtocolError("names")
            for v in plain.values():  # stage_collect decodes them
                unb64(v)
        except ProtocolError:
            raise ProtocolError(f"ckks: the {stage} answer of '{client}' is not one base64 "
                                f"text per parameter") from None
        return answer

    def stage_collect(self, stage: str, acc: Accumulator,
                      replies: Mapping[str, Mapping[str, Any]]) -> list[str]:
        state = acc.extra["ckks"]
        if not replies:
            raise SecureAggregationAborted("ckks: no institution decrypted the sum")
        answer = next(iter(replies.values()))
        plain = {}
        for name, shape in state["shapes"].items():
            values = np.frombuffer(base64.b64decode(answer["plain"][name]), np.float64)
            size = int(np.prod(shape, dtype=np.int64))
            if values.size != size:
                raise SecureAggregationAborted(f"ckks: decrypted '{name}' has {values.size} "
                                               f"values, expected {size}")
            plain[name] = values.reshape(shape).copy()
        state["plain"] = plain
        return sorted(replies)

    def stage_respond(self, stage: str, payload: Mapping[str, Any], ctx: dict[str, Any],
                      me: str) -> dict[str, Any]:
        if not self.ctx.has_secret_key():
            raise ConfigError("ckks: this party holds no secret key and cannot decrypt")
        plain = {}
        for name, text in payload["sum"].items():
            blobs = _unpack(np.frombuffer(base64.b64decode(text), np.uint8))
            values = np.concatenate([self._ts.ckks_vector_from(self.ctx, b).decrypt()
                                     for b in blobs])
            plain[name] = base64.b64encode(values.astype(np.float64).tobytes()).decode()
        return {"plain": plain}
