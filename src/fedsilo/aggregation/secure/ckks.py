"""CKKS homomorphic sum (TenSEAL): for small consortia.

Per round, with the server relaying every message:

1. keygen   the key holder (the first institution of the sorted cohort) makes a fresh CKKS
            key pair, keeps the secret context in its private round context (it never leaves
            that process) and sends the public context, signed with its identity key
            (identity.py) over (round, its name, SHA-256 of the context).
2. fit      every institution checks the holder's signature against its own CA, encrypts its
            (example-weighted) update under that public context, and signs its package over
            (round, its name, SHA-256 of the public context, SHA-256 of its ciphertexts); name,
            signature and certificate travel in a JSON header framed with the ciphertexts.
            The server checks the packages and keeps them (it adds nothing itself).
3. decrypt  the server sends the holder every package. The holder answers once per round and
            only if every signature is its CA's for a distinct institution, every package is of
            its round and its key, and there are at least max(2, min_contributors); it adds
            the ciphertexts, decrypts, checks every value is finite and within range, adds
            flooding noise, and returns the sum. Anything else is refused (ProtocolError).

Why: the server can no longer collect exact decryptions under a fixed key (passive key recovery,
Li & Micciancio, EUROCRYPT 2021): keys are fresh each round and the decryption is flooded; it can
no longer have one institution's ciphertext decrypted (signed packages, a minimum of distinct
contributors, one decryption per round); and no kit holds a CKKS secret.

Parameters (N = 8192, coeff_mod_bit_sizes [60, 60, 60], scale 2^80; 4096 values per
ciphertext): ciphertexts hold |v| < 2^39; the holder refuses a sum with |v| > MAX_ABS = 2^38.
Measured with TenSEAL 0.3 (sums of 10 ciphertexts, 4096 values each, magnitudes 1e-3..3e5):
the key-dependent error (a sum of encryptions of zero) is 2.8e-20 ~ 2^-65, and the total error
is at most 2^-51.4·R, R the power of two at or above the ciphertext's largest |value| (double
rounding in the decoder dominates). Stated bound, with >= 8x margin: B(R) = 2^-48·R + 2^-58
(for up to ~100 contributors). Flooding: per ciphertext, Gaussian noise of standard deviation
σ = 2^s·B(R) with s = 40 (SD(N(0,σ²), N(e,σ²)) <= |e|/(σ√(2π)) < 2^-41 per value), drawn from
a numpy Generator seeded with secrets.randbits(128): σ ≈ 2^-8·R, i.e. ~0.4-0.8% of the largest
weighted sum in each block of 4096 values (of the largest parameter in the mean). R is derived
from the released sum itself, so σ reveals nothing the sum does not. The total weight (the
mean's WEIGHT_KEY, a sum of example counts: an integer) is released rounded to the nearest
integer instead: with a key-dependent error below 2^-58 the rounded value does not depend on
the key at all, and the server's check of the total weight against the example counts holds.

Trust that remains: the holder learns the (flooded) sum, like the server, and must report it
honestly. Costs: ciphertexts ~64 bytes per value (~16x float32), the public context (~390 KB)
goes to every institution every round. Pick CKKS for a handful of institutions and models up to
~1e5 parameters; SecAgg+ otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator
from fedsilo.aggregation.mean import WEIGHT_KEY
from fedsilo.aggregation.secure import identity
from fedsilo.aggregation.secure.payloads import unb64
from fedsilo.core.params import ArraySpec, Params, ParamSpec
from fedsilo.errors import MalformedUpdate, ProtocolError, SecureAggregationAborted

SLOTS = 4096  # values per ciphertext at poly modulus degree 8192
POLY_DEGREE, COEFF_MOD_BITS, SCALE_BITS = 8192, (60, 60, 60), 80
MAX_ABS = 2.0**38               # largest |value| of a decrypted sum the holder releases
REL_ERROR, ABS_ERROR = 2.0**-48, 2.0**-58  # B(R) = REL_ERROR·R + ABS_ERROR
STATISTICAL_BITS = 40           # s: flooding σ = 2^s·B(R)
KEYGEN = b"fedsilo-ckks-key-v1\n"       # the holder signs the public context it made
PACKAGE = b"fedsilo-ckks-package-v1\n"  # an institution signs the ciphertexts it sent


def new_context() -> tuple[Any, bytes]:
    """A fresh CKKS key pair: (the secret TenSEAL context, the public context serialized
    without secret, relinearization or Galois keys)."""
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_DEGREE,
                     coeff_mod_bit_sizes=list(COEFF_MOD_BITS))
    ctx.global_scale = 2.0**SCALE_BITS
    public = ctx.serialize(save_public_key=True, save_secret_key=False,
                           save_galois_keys=False, save_relin_keys=False)
    return ctx, public


def error_bound(max_abs: float) -> float:
    """B(R): the stated bound on the decryption error of a ciphertext whose largest |value| is
    `max_abs` (R: the power of two at or above it)."""
    if max_abs <= 0:
        return ABS_ERROR
    return REL_ERROR * math.ldexp(1.0, math.frexp(max_abs)[1]) + ABS_ERROR


def flooding_stddev(max_abs: float) -> float:
    """σ = 2^s·B(R) of the noise added to a decrypted ciphertext."""
    return math.ldexp(error_bound(max_abs), STATISTICAL_BITS)


def flood(values: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """`values` plus Gaussian flooding noise, σ per block of SLOTS values (one ciphertext);
    `rng` defaults to a generator seeded from the OS CSPRNG."""
    rng = rng or np.random.default_rng(secrets.randbits(128))
    out = np.array(values, np.float64).reshape(-1)
    for i in range(0, out.size, SLOTS):
        block = out[i:i + SLOTS]
        block += rng.normal(0.0, flooding_stddev(float(np.max(np.abs(block)))), block.size)
    return out


def _pack(blobs: list[bytes]) -> np.ndarray:
    out = b"".join(len(b).to_bytes(4, "little") + b for b in blobs)
    return np.frombuffer(out, np.uint8)


def _unpack(arr: np.ndarray) -> list[bytes]:
    data, blobs, pos = np.asarray(arr, np.uint8).tobytes(), [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        if n <= 0 or pos + 4 + n > len(data):
            raise MalformedUpdate("ckks: ciphertext framing is broken")
        blobs.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return blobs


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ciphertext_digest(ciphertexts: Mapping[str, list[bytes]]) -> str:
    """SHA-256 over every parameter name and its ciphertexts, length-framed, names sorted."""
    h = hashlib.sha256()
    for name in sorted(ciphertexts):
        for part in (name.encode(), *ciphertexts[name]):
            h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def key_message(round: int, holder: str, context_digest: str) -> bytes:
    """What the key holder signs for the public context it made."""
    return KEYGEN + "\n".join([str(round), holder, context_digest]).encode()


def package_message(round: int, institution: str, context_digest: str, digest: str) -> bytes:
    """What an institution signs for its ciphertext package."""
    return PACKAGE + "\n".join([str(round), institution, context_digest, digest]).encode()


def split_package(encoded: Mapping[str, np.ndarray]) -> tuple[dict[str, Any],
                                                               dict[str, list[bytes]]]:
    """An encoded package -> (its header, its ciphertexts per name). Every name's array is
    the framed JSON header followed by the framed ciphertexts; the headers must agree.

    Raises:
        MalformedUpdate: broken framing, an unparsable or inconsistent header.
    """
    headers, ciphertexts = set(), {}
    for name, arr in encoded.items():
        blobs = _unpack(arr)
        if len(blobs) < 2:
            raise MalformedUpdate(f"ckks: '{name}' carries no header and ciphertexts")
        headers.add(blobs[0])
        ciphertexts[name] = blobs[1:]
    if len(headers) != 1:
        raise MalformedUpdate("ckks: the package headers of its parameters differ")
    try:
        header = json.loads(headers.pop())
        fields = {k: header[k] for k in ("institution", "round", "context", "signature",
                                         "certificate")}
    except (ValueError, KeyError, TypeError):
        raise MalformedUpdate("ckks: the package header is not the expected JSON") from None
    if not (isinstance(fields["institution"], str) and isinstance(fields["round"], int)
            and all(isinstance(fields[k], str) for k in ("context", "signature",
                                                         "certificate"))):
        raise MalformedUpdate("ckks: the package header has fields of the wrong type")
    return fields, ciphertexts


def verify_package(trust: identity.Trust, header: Mapping[str, Any],
                   ciphertexts: Mapping[str, list[bytes]]) -> None:
    """Check the package's signature is its institution's, by a certificate `trust` issued.

    Raises:
        ProtocolError: it is not (the reason names the institution, never a value).
    """
    try:
        signature = base64.b64decode(header["signature"], validate=True)
    except ValueError:
        raise ProtocolError(f"the package of '{header['institution']}' has a malformed "
                            f"signature") from None
    message = package_message(header["round"], header["institution"], header["context"],
                              ciphertext_digest(ciphertexts))
    trust.verify(header["institution"], header["certificate"], message, signature,
                 what="the ciphertext package")


class CKKSSum:
    """Homomorphic secure sum with per-round keys made by the key holder. `min_contributors`:
    the fewest distinct institutions whose sum the holder decrypts (never below 2); `keys`:
    this party's identity material (identity.py: `ca.pem`, and an institution's `client.key`
    and `client.pem`; without any, this process's simulated CA)."""

    name = "ckks"
    hides_individual_updates = True  # the server learns only the sum
    needs_individual_updates = False
    commutes_with_secure_sum = False  # a secure sum is innermost: nothing is masked twice
    preserves_sensitivity = True  # the sum of the contributions, exactly (in its precision)
    pre_stages = ("keygen",)
    post_stages = ("decrypt",)

    def __init__(self, min_contributors: int = 2,
                 keys: Mapping[str, bytes] | None = None) -> None:
        import tenseal as ts

        self._ts = ts
        self.min_contributors = max(2, int(min_contributors))
        self.credentials = identity.Credentials.from_keys(keys or {})
        self._public: dict[str, Any] = {}  # context digest -> public context (latest two)

    def _credentials(self, me: str | None) -> identity.Credentials:
        return self.credentials or identity.simulated(me)

    def _public_context(self, data: bytes) -> Any:
        """The public context `data`, parsed once (a secret one is refused)."""
        digest = _sha(data)
        if digest not in self._public:
            try:
                ctx = self._ts.context_from(data)
            except Exception:
                raise ProtocolError("ckks: the public key is not a CKKS context") from None
            if ctx.has_secret_key():
                raise ProtocolError("ckks: the public key carries a secret key")
            self._public = {**dict(list(self._public.items())[-1:]), digest: ctx}
        return self._public[digest]

    # server half -------------------------------------------------------------------------
    def init(self) -> None:
        return None

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return {}

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return {n: ArraySpec((-1,), np.dtype(np.uint8)) for n in spec}

    def zero(self, spec: ParamSpec) -> Accumulator:
        return Accumulator({}, extra={"ckks": {"shapes": {n: s.shape for n, s in spec.items()},
                                               "packages": {}}})

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        """Check one institution's package (signature, round, key, ciphertext counts, each
        ciphertext parses) and keep it; all checked before it is kept: all or none."""
        state = acc.extra["ckks"]
        header, ciphertexts = split_package(encoded)
        if set(ciphertexts) != set(state["shapes"]):
            raise MalformedUpdate("ckks: the package's parameter names differ from the model's")
        key = state.get("key")
        if key is None:
            raise MalformedUpdate("ckks: a package arrived before the round's key was made")
        if header["round"] != state["round"] or header["context"] != key["digest"]:
            raise MalformedUpdate("ckks: the package is not of this round's key")
        if header["institution"] in state["packages"]:
            raise MalformedUpdate(f"ckks: a second package of '{header['institution']}'")
        try:
            verify_package(self._credentials(None).trust, header, ciphertexts)
        except ProtocolError as e:
            raise MalformedUpdate(f"ckks: {e}") from None
        self._check_ciphertexts(state["shapes"], ciphertexts,
                                self._public_context(base64.b64decode(key["public"])))
        state["packages"][header["institution"]] = {
            n: base64.b64encode(np.asarray(a, np.uint8).tobytes()).decode()
            for n, a in encoded.items()}
        acc.count += 1

    def _check_ciphertexts(self, shapes: Mapping[str, tuple[int, ...]],
                           ciphertexts: Mapping[str, list[bytes]], ctx: Any) -> None:
        for name, shape in shapes.items():
            blobs = ciphertexts[name]
            expected = max(-(-int(np.prod(shape, dtype=np.int64)) // SLOTS), 1)
            if len(blobs) != expected:
                raise MalformedUpdate(f"ckks: '{name}' has {len(blobs)} ciphertexts, "
                                      f"expected {expected}")
            for b in blobs:
                try:
                    self._ts.ckks_vector_from(ctx, b)
                except Exception:
                    raise MalformedUpdate(f"ckks: '{name}' is not a valid ciphertext") from None

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        raise SecureAggregationAborted("ckks: partial sums cannot be merged")

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        plain = acc.extra["ckks"].get("plain")
        if plain is None:
            raise SecureAggregationAborted("ckks: the sum was not decrypted")
        return state, plain, {"contributions": float(acc.count)}

    # stages, server side -----------------------------------------------------------------
    def begin(self, acc: Accumulator, round: int, seed: int, cohort: list[str]) -> None:
        state = acc.extra["ckks"]
        state.update(round=round, key=None, packages={})
        state.pop("plain", None)

    def fit_config(self, acc: Accumulator, client: str) -> dict[str, Any]:
        """The round's signed public key, for every institution's encode."""
        key = acc.extra["ckks"].get("key")
        if key is None:
            raise SecureAggregationAborted("ckks: the round has no key")
        return {"ckks": {k: key[k] for k in ("holder", "public", "signature", "certificate")}}

    def stage_requests(self, stage: str, acc: Accumulator,
                       alive: list[str]) -> dict[str, dict[str, Any]]:
        state = acc.extra["ckks"]
        if stage == "keygen":
            state["alive"] = list(alive)
            return {sorted(alive)[0]: {"round": state["round"]}} if alive else {}
        if stage == "decrypt":
            holder = (state.get("key") or {}).get("holder")
            if holder not in alive or not state["packages"]:
                return {}
            return {holder: {"round": state["round"],
                             "packages": [state["packages"][n]
                                          for n in sorted(state["packages"])]}}
        raise ProtocolError(f"ckks: unknown stage '{stage}'")

    def stage_check(self, stage: str, acc: Accumulator, client: str, answer: Any) -> Any:
        """A keygen answer: the signed public context; a decrypt answer: the plain sum, one
        base64 text per parameter name.

        Raises:
            ProtocolError: the answer is malformed or (keygen) not signed by `client`.
        """
        if stage == "keygen":
            return self._check_key(acc, client, answer)
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

    def _check_key(self, acc: Accumulator, client: str, answer: Any) -> dict[str, Any]:
        if not isinstance(answer, Mapping) or not all(
                isinstance(answer.get(k), str) for k in ("public", "signature", "certificate")):
            raise ProtocolError(f"ckks: the keygen answer of '{client}' is malformed")
        try:
            public = base64.b64decode(answer["public"], validate=True)
            signature = base64.b64decode(answer["signature"], validate=True)
        except ValueError:
            raise ProtocolError(f"ckks: the keygen answer of '{client}' is not base64") from None
        self._public_context(public)
        message = key_message(acc.extra["ckks"]["round"], client, _sha(public))
        self._credentials(None).trust.verify(client, answer["certificate"], message, signature,
                                             what="the public key")
        return {"holder": client, "public": answer["public"], "digest": _sha(public),
                "signature": answer["signature"], "certificate": answer["certificate"]}

    def stage_collect(self, stage: str, acc: Accumulator,
                      replies: Mapping[str, Mapping[str, Any]]) -> list[str]:
        state = acc.extra["ckks"]
        if stage == "keygen":
            if not replies:
                raise SecureAggregationAborted("ckks: the key holder made no key")
            state["key"] = next(iter(replies.values()))
            return list(state["alive"])
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

    # institution half --------------------------------------------------------------------
    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               context: dict[str, Any]) -> Params:
        """Encrypt under the round's public key (after checking the holder signed it) and sign
        the package."""
        me, rnd = str(context.get("me", "")), int(context.get("round", 0))
        creds = self._credentials(me)
        public, digest = self._checked_key(config.get("ckks"), rnd, creds.trust)
        ctx = self._public_context(public)
        ciphertexts = {}
        for name, a in update.items():
            flat = np.asarray(a, np.float64).reshape(-1)
            ciphertexts[name] = [self._ts.ckks_vector(ctx, flat[i:i + SLOTS]).serialize()
                                 for i in range(0, max(flat.size, 1), SLOTS)]
        signer = creds.signer_for(me)
        message = package_message(rnd, me, digest, ciphertext_digest(ciphertexts))
        header = json.dumps({"institution": me, "round": rnd, "context": digest,
                             "signature": base64.b64encode(signer.sign(message)).decode(),
                             "certificate": signer.certificate}).encode()
        return {n: _pack([header, *blobs]) for n, blobs in ciphertexts.items()}

    def _checked_key(self, key: Any, rnd: int, trust: identity.Trust) -> tuple[bytes, str]:
        """The round's public context, after checking its holder's signature.

        Raises:
            ProtocolError: no key in the task, or one its holder did not sign for this round.
        """
        if not isinstance(key, Mapping) or not all(
                isinstance(key.get(k), str) for k in ("holder", "public", "signature",
                                                      "certificate")):
            raise ProtocolError("ckks: the fit task carries no signed public key")
        try:
            public = base64.b64decode(key["public"], validate=True)
            signature = base64.b64decode(key["signature"], validate=True)
        except ValueError:
            raise ProtocolError("ckks: the round's public key is not base64") from None
        digest = _sha(public)
        trust.verify(key["holder"], key["certificate"], key_message(rnd, key["holder"], digest),
                     signature, what="the public key")
        return public, digest

    def stage_respond(self, stage: str, payload: Mapping[str, Any], ctx: dict[str, Any],
                      me: str) -> dict[str, Any]:
        if stage == "keygen":
            return self._keygen(payload, ctx, me)
        if stage == "decrypt":
            return self._decrypt(payload, ctx, me)
        raise ProtocolError(f"ckks: unknown stage '{stage}'")

    def _keygen(self, payload: Mapping[str, Any], ctx: dict[str, Any],
                me: str) -> dict[str, Any]:
        """Make this round's key pair; the secret context stays in `ctx`."""
        rnd = int(ctx.get("round", -1))
        if payload.get("round") != rnd:
            raise ProtocolError("ckks: a keygen request for another round")
        if "ckks" in ctx:
            raise ProtocolError("ckks: this round's key was already made")
        signer = self._credentials(me).signer_for(me)
        secret, public = new_context()
        ctx["ckks"] = {"secret": secret, "digest": _sha(public), "decrypted": False}
        signature = signer.sign(key_message(rnd, me, _sha(public)))
        return {"public": base64.b64encode(public).decode(),
                "signature": base64.b64encode(signature).decode(),
                "certificate": signer.certificate}

    def _decrypt(self, payload: Mapping[str, Any], ctx: dict[str, Any],
                 me: str) -> dict[str, Any]:
        """Check every package, add them, decrypt, check, flood, answer (once per round)."""
        mine = ctx.get("ckks")
        if mine is None:
            raise ProtocolError("ckks: this institution made no key this round and cannot "
                                "decrypt")
        if mine["decrypted"]:
            raise ProtocolError("ckks: this round's sum was already decrypted")
        packages = self._checked_packages(payload, int(ctx.get("round", -1)), mine["digest"], me)
        mine["decrypted"] = True
        plain = {}
        for name in packages[0]:
            values = self._decrypted(mine["secret"], [p[name] for p in packages])
            released = np.rint(values) if name == WEIGHT_KEY else flood(values)
            plain[name] = base64.b64encode(released.tobytes()).decode()
        return {"plain": plain}

    def _checked_packages(self, payload: Mapping[str, Any], rnd: int, digest: str,
                          me: str) -> list[dict[str, list[bytes]]]:
        """The ciphertexts of the packages in a decrypt request, each checked.

        Raises:
            ProtocolError: another round, a package not of this key, a signature not its
                institution's, a duplicated institution, too few institutions, names that
                differ between packages.
        """
        if payload.get("round") != rnd:
            raise ProtocolError("ckks: a decrypt request for another round")
        raw = payload.get("packages")
        if not isinstance(raw, list):
            raise ProtocolError("ckks: the decrypt request carries no packages")
        trust, seen, out = self._credentials(me).trust, set(), []
        for item in raw:
            try:
                header, ciphertexts = split_package(
                    {n: np.frombuffer(unb64(t), np.uint8) for n, t in dict(item).items()})
            except (MalformedUpdate, ProtocolError, TypeError, ValueError):
                raise ProtocolError("ckks: a package in the decrypt request is malformed") \
                    from None
            who = header["institution"]
            if header["round"] != rnd:
                raise ProtocolError(f"ckks: the package of '{who}' is of another round")
            if header["context"] != digest:
                raise ProtocolError(f"ckks: the package of '{who}' is not under this "
                                    f"round's key")
            if who in seen:
                raise ProtocolError(f"ckks: two packages of '{who}'")
            verify_package(trust, header, ciphertexts)
            seen.add(who)
            out.append(ciphertexts)
        if len(seen) < self.min_contributors:
            raise ProtocolError(f"ckks: {len(seen)} institutions in the decrypt request, "
                                f"fewer than {self.min_contributors}: their sum is not "
                                f"decrypted")
        if any(set(p) != set(out[0]) or any(len(p[n]) != len(out[0][n]) for n in p)
               for p in out):
            raise ProtocolError("ckks: the packages hold different parameters")
        return out

    def _decrypted(self, secret: Any, parts: list[list[bytes]]) -> np.ndarray:
        """Σ of the institutions' ciphertexts of one parameter, decrypted and range-checked."""
        values = []
        for i in range(len(parts[0])):
            try:
                total = self._ts.ckks_vector_from(secret, parts[0][i])
                for p in parts[1:]:
                    total.add_(self._ts.ckks_vector_from(secret, p[i]))
                values.append(np.asarray(total.decrypt(), np.float64))
            except Exception:
                raise ProtocolError("ckks: a ciphertext does not decrypt under this round's "
                                    "key") from None
        out = np.concatenate(values)
        if not np.all(np.isfinite(out)):
            raise ProtocolError("ckks: the decrypted sum has non-finite values")
        if out.size and float(np.max(np.abs(out))) > MAX_ABS:
            raise ProtocolError(f"ckks: the decrypted sum is outside the range CKKS holds "
                                f"(|value| <= 2^{int(math.log2(MAX_ABS))})")
        return out
