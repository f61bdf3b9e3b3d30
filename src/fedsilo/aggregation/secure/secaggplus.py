"""SecAgg+ (Bell et al., CCS 2020) — SecAgg (Bonawitz et al., CCS 2017) on a sparse graph.

Per round, with the server relaying every message and learning only the sum:

1. advertise  each institution makes two X25519 key pairs (c: to encrypt shares, s: to agree
              pairwise masks) and a 32-byte self-mask seed b; it sends the public keys.
2. share      the server sends each one its neighbours' public keys (a random k-regular ring
              graph from the round's public seed; k >= n-1 is the complete graph of SecAgg).
              Each splits b and its s private key into t-of-k Shamir shares and sends one
              AES-GCM-sealed pair of shares per neighbour (round, sender, recipient bound).
3. fit        y_u = encode(x_u) + PRG(b_u) + Σ_v ±PRG(agree(s_u, s_v)) mod 2^64 over the
              neighbours v that finished step 2 (+ if u < v, − otherwise): pairwise masks
              cancel in the sum; y_u alone is uniform.
4. unmask     survivors reveal, for each neighbour, the share of b (if the neighbour sent y)
              or of s (if it dropped after step 2) — never both. The server rebuilds b of
              every survivor and s of every dropout, removes their masks and decodes the sum.

Tolerates up to k − t dropouts per neighbourhood at any step; fewer than t surviving
neighbours for anyone aborts the round (nothing is applied). Security model: honest-but-
curious server and institutions (no consistency round / signatures of the active-adversary
variant); t > k/2 so that no set of shares an honest survivor reveals can rebuild both secrets.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator
from fedsilo.aggregation.secure import crypto, shamir
from fedsilo.aggregation.secure.fixedpoint import FixedPoint
from fedsilo.aggregation.secure.threshold import check_cohort
from fedsilo.aggregation.sum import add_into
from fedsilo.core.params import ArraySpec, Params, ParamSpec, zeros
from fedsilo.core.rng import generator
from fedsilo.errors import ConfigError, ProtocolError, SecureAggregationAborted

log = logging.getLogger(__name__)
MASK, SHARE = b"fedsilo/secagg/mask", b"fedsilo/secagg/share"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ProtocolError("secure aggregation: payload is not valid base64") from None


def ring_graph(ids: list[str], k: int, seed: int) -> dict[str, list[str]]:
    """Each id's k neighbours on a public random cycle (a Harary graph): its ⌊k/2⌋
    successors and predecessors, and for odd k the id opposite it. A k-regular graph needs
    n·k even: with odd n and odd k everyone gets k + 1. Everyone else when k >= n - 1."""
    n = len(ids)
    if k >= n - 1:
        return {u: [v for v in ids if v != u] for u in ids}
    order = [ids[i] for i in generator(seed, "secagg-graph").permutation(n)]
    half = k // 2 if n % 2 == 0 else (k + 1) // 2
    out: dict[str, list[str]] = {}
    for i, u in enumerate(order):
        near = {order[(i + d) % n] for d in range(-half, half + 1) if d}
        if k % 2 == 1 and n % 2 == 0:
            near.add(order[(i + n // 2) % n])
        out[u] = sorted(near)
    return out


@dataclass
class ServerRound:
    """What the server knows during one round: public keys, the graph, who is still in."""

    round: int
    seed: int
    threshold: int
    ids: list[str] = field(default_factory=list)
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    graph: dict[str, list[str]] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)
    survivors: set[str] = field(default_factory=set)
    inbox: dict[str, dict[str, str]] = field(default_factory=dict)
    unmasked: bool = False

    def x(self, client: str) -> int:
        return self.ids.index(client) + 1


class SecAggPlus:
    """Secure sum layer. Args: `threshold` t (Shamir; > half the neighbourhood), `neighbours`
    k (None = everyone: SecAgg), `fixed` the fixed-point encoding (precision, range)."""

    name = "secagg+"
    pre_stages = ("advertise", "share")
    post_stages = ("unmask",)

    def __init__(self, threshold: int, neighbours: int | None = None,
                 fixed: FixedPoint | None = None) -> None:
        if threshold < 2:
            raise ConfigError(f"secagg+: threshold must be >= 2, got {threshold}")
        if neighbours is not None and neighbours < threshold:
            raise ConfigError(f"secagg+: neighbours ({neighbours}) must be >= threshold "
                              f"({threshold})")
        self.threshold, self.neighbours = threshold, neighbours
        self.fixed = fixed or FixedPoint()

    # server half -------------------------------------------------------------------------
    def init(self) -> None:
        return None

    def client_config(self, state: Any, round: int) -> Mapping[str, Any]:
        return {}

    def encoded_spec(self, spec: ParamSpec) -> ParamSpec:
        return {n: ArraySpec(s.shape, self.fixed.dtype) for n, s in spec.items()}

    def zero(self, spec: ParamSpec) -> Accumulator:
        return Accumulator(zeros(self.encoded_spec(spec)))

    def accumulate(self, acc: Accumulator, encoded: Params) -> None:
        for name, total in acc.sums.items():
            np.add(total, encoded[name], out=total)  # wraps mod 2^64
        acc.count += 1

    def merge(self, a: Accumulator, b: Accumulator) -> Accumulator:
        raise SecureAggregationAborted("secagg+: partial sums of one round cannot be merged")

    def finalize(self, state: Any, acc: Accumulator) -> tuple[Any, Params, dict[str, float]]:
        rnd: ServerRound | None = acc.extra.get("secagg")
        if rnd is None or not rnd.unmasked:
            raise SecureAggregationAborted("secagg+: the round was not unmasked")
        sums = {n: self.fixed.decode(s) for n, s in acc.sums.items()}
        return state, sums, {"contributions": float(acc.count),
                             "secagg_dropouts": float(len(rnd.ids) - acc.count)}

    def begin(self, acc: Accumulator, round: int, seed: int, cohort: list[str]) -> None:
        """Start the protocol for `round` over `cohort` (called by the engine)."""
        try:
            check_cohort(self.threshold, self.neighbours, len(cohort))
        except (SecureAggregationAborted, ConfigError) as e:
            raise type(e)(f"secagg+: {e}") from None
        self.fixed.check_headroom(len(cohort))
        acc.extra["secagg"] = ServerRound(round, seed, self.threshold, sorted(cohort))

    def stage_requests(self, stage: str, acc: Accumulator,
                       alive: list[str]) -> dict[str, dict[str, Any]]:
        rnd: ServerRound = acc.extra["secagg"]
        base = {"round": rnd.round, "threshold": rnd.threshold}
        if stage == "advertise":
            return {u: base for u in alive}
        if stage == "share":
            return {u: {**base, "x": {v: rnd.x(v) for v in [u, *rnd.graph[u]]},
                        "peers": {v: rnd.keys[v] for v in rnd.graph[u]}} for u in alive}
        if stage == "unmask":
            survivors = rnd.survivors = set(alive)
            return {u: {**base, "survivors": [v for v in rnd.graph[u] if v in survivors],
                        "dropped": [v for v in rnd.graph[u]
                                    if v in rnd.shared and v not in survivors]}
                    for u in alive}
        raise ProtocolError(f"secagg+: unknown stage '{stage}'")

    def stage_collect(self, stage: str, acc: Accumulator,
                      replies: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Fold in the stage's replies; returns who is still in. Raises
        SecureAggregationAborted when recovery is no longer possible."""
        rnd: ServerRound = acc.extra["secagg"]
        if stage == "advertise":
            rnd.keys = {u: (r["c_pk"], r["s_pk"]) for u, r in replies.items()}
            rnd.ids = sorted(rnd.keys)
            self._enough(len(rnd.ids), "advertised keys")
            k = len(rnd.ids) - 1 if self.neighbours is None else self.neighbours
            rnd.graph = ring_graph(rnd.ids, k, rnd.seed)
            return rnd.ids
        if stage == "share":
            rnd.shared = set(replies)
            for u, r in replies.items():
                for v, sealed in r["shares"].items():
                    if v in rnd.graph.get(u, []):
                        rnd.inbox.setdefault(v, {})[u] = sealed
            self._enough(len(rnd.shared), "shared keys")
            return sorted(rnd.shared)
        if stage == "unmask":
            self._unmask(rnd, acc, replies)
            return sorted(replies)
        raise ProtocolError(f"secagg+: unknown stage '{stage}'")

    def fit_config(self, acc: Accumulator, client: str) -> dict[str, Any]:
        rnd: ServerRound = acc.extra["secagg"]
        peers = [v for v in rnd.graph[client] if v in rnd.shared]
        return {"secagg": {"round": rnd.round, "peers": peers,
                           "inbox": {v: s for v, s in rnd.inbox.get(client, {}).items()
                                     if v in rnd.shared}}}

    def _enough(self, count: int, what: str) -> None:
        if count <= self.threshold:
            raise SecureAggregationAborted(f"secagg+: only {count} institutions {what}; "
                                           f"threshold {self.threshold} needs more")

    def _unmask(self, rnd: ServerRound, acc: Accumulator,
                replies: Mapping[str, Mapping[str, Any]]) -> None:
        b_shares: dict[str, list[tuple[int, int]]] = {}
        s_shares: dict[str, list[tuple[int, int]]] = {}
        for u, reply in sorted(replies.items()):
            for v, (_, reason) in reply.get("corrupt", {}).items():
                log.warning("secagg+ round %d: share from %s to %s rejected: %s", rnd.round,
                            v, u, reason)
            for v, (x, y) in reply.get("b", {}).items():
                b_shares.setdefault(v, []).append((int(x), int(y, 16)))
            for v, (x, y) in reply.get("s", {}).items():
                s_shares.setdefault(v, []).append((int(x), int(y, 16)))
        survivors = rnd.survivors
        dropped = rnd.shared - survivors
        scratch = _Flat(acc.sums, self.fixed.dtype)
        for v in sorted(survivors):  # remove self masks
            seed = self._rebuild(b_shares.get(v, []), f"the self-mask seed of {v}")
            scratch.apply(acc.sums, seed, -1)
        for v in sorted(dropped):  # remove the pairwise masks survivors added with v
            sk = crypto.private_from(self._rebuild(s_shares.get(v, []), f"the key of {v}"))
            for u in rnd.graph[v]:
                if u in survivors:  # u added +mask if u < v, else -mask: undo it
                    seed = crypto.agree(sk, unb64(rnd.keys[u][1]), MASK)
                    scratch.apply(acc.sums, seed, -1 if u < v else 1)
        rnd.unmasked = True

    def _rebuild(self, shares: list[tuple[int, int]], what: str) -> bytes:
        try:
            return shamir.combine(shares, self.threshold)
        except SecureAggregationAborted as e:
            raise SecureAggregationAborted(f"secagg+: cannot rebuild {what}: {e}") from None

    # client half -------------------------------------------------------------------------
    def stage_respond(self, stage: str, payload: Mapping[str, Any], ctx: dict[str, Any],
                      me: str) -> dict[str, Any]:
        if stage == "advertise":
            c_sk, c_pk = crypto.keypair()
            s_sk, s_pk = crypto.keypair()
            ctx.update(c_sk=c_sk, s_sk=s_sk, b=crypto.random_seed(),
                       secagg_round=payload["round"], me=me)
            return {"c_pk": b64(c_pk), "s_pk": b64(s_pk)}
        if ctx.get("secagg_round") != payload.get("round"):
            raise ProtocolError(f"secagg+: stage '{stage}' for round {payload.get('round')}, "
                                f"keys are for round {ctx.get('secagg_round')}")
        if stage == "share":
            return self._share(payload, ctx, me)
        if stage == "unmask":
            return self._reveal(payload, ctx, me)
        raise ProtocolError(f"secagg+: unknown stage '{stage}'")

    def _share(self, payload: Mapping[str, Any], ctx: dict[str, Any], me: str) -> dict:
        peers: dict[str, list[str]] = dict(payload["peers"])
        xs: dict[str, int] = {v: int(x) for v, x in payload["x"].items()}
        ctx["peers"], ctx["x"] = peers, xs
        t, order = int(payload["threshold"]), sorted(peers)
        b_sh = shamir.split(ctx["b"], t, [xs[v] for v in order])
        s_sh = shamir.split(crypto.private_bytes(ctx["s_sk"]), t, [xs[v] for v in order])
        sealed = {}
        for v, (x, yb), (_, ys) in zip(order, b_sh, s_sh):
            key = crypto.agree(ctx["c_sk"], unb64(peers[v][0]), SHARE)
            plain = json.dumps({"x": x, "b": f"{yb:x}", "s": f"{ys:x}"}).encode()
            sealed[v] = b64(crypto.seal(key, plain, _aad(ctx["secagg_round"], me, v)))
        return {"shares": sealed}

    def _reveal(self, payload: Mapping[str, Any], ctx: dict[str, Any], me: str) -> dict:
        survivors, dropped = set(payload["survivors"]), set(payload["dropped"])
        if survivors & dropped:
            raise ProtocolError("secagg+: the server asked for both secrets of "
                                f"{sorted(survivors & dropped)}; refusing")
        known = set(ctx.get("peers", {}))
        if not (survivors | dropped) <= known:
            raise ProtocolError("secagg+: unmask names institutions that are not neighbours")
        out: dict[str, dict[str, tuple[int, str]]] = {"b": {}, "s": {}, "corrupt": {}}
        for v in sorted(survivors | dropped):
            sealed = ctx.get("inbox", {}).get(v)
            if sealed is None:
                continue
            try:
                key = crypto.agree(ctx["c_sk"], unb64(ctx["peers"][v][0]), SHARE)
                share = json.loads(crypto.open_sealed(key, unb64(sealed),
                                                      _aad(ctx["secagg_round"], v, me)))
            except ProtocolError as e:
                out["corrupt"][v] = (0, str(e))
                continue
            which = "b" if v in survivors else "s"
            out[which][v] = (int(share["x"]), share[which])
        return out

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               ctx: dict[str, Any]) -> Params:
        cfg = config.get("secagg")
        if not isinstance(cfg, Mapping) or cfg.get("round") != ctx.get("secagg_round"):
            raise ProtocolError("secagg+: fit task without this round's key exchange")
        ctx["inbox"] = dict(cfg["inbox"])
        flat = _Flat(update, self.fixed.dtype)
        y = np.empty(flat.total, self.fixed.dtype)
        for name, view in flat.split(y).items():
            self.fixed.encode_into(update[name], view)
        scratch = np.empty_like(y)
        np.add(y, crypto.expand_mask(ctx["b"], scratch), out=y)
        me = ctx["me"]
        for v in cfg["peers"]:
            seed = crypto.agree(ctx["s_sk"], unb64(ctx["peers"][v][1]), MASK)
            crypto.expand_mask(seed, scratch)
            (np.add if me < v else np.subtract)(y, scratch, out=y)
        return flat.split(y)


def _aad(round: int, sender: str, recipient: str) -> bytes:
    return f"fedsilo-secagg|{round}|{sender}|{recipient}".encode()


class _Flat:
    """All named arrays as one ring vector (one PRG stream covers the whole model)."""

    def __init__(self, like: Mapping[str, np.ndarray], dtype: np.dtype) -> None:
        self.dtype = dtype
        self.shapes = {n: a.shape for n, a in like.items()}
        self.sizes = {n: int(np.prod(s, dtype=np.int64)) for n, s in self.shapes.items()}
        self.total = sum(self.sizes.values())
        self._scratch: np.ndarray | None = None

    def split(self, flat: np.ndarray) -> Params:
        out, start = {}, 0
        for n, shape in self.shapes.items():
            out[n] = flat[start:start + self.sizes[n]].reshape(shape)
            start += self.sizes[n]
        return out

    def apply(self, sums: Params, seed: bytes, sign: int) -> None:
        """sums += sign · PRG(seed), name by name, mod 2^64."""
        if self._scratch is None:
            self._scratch = np.empty(self.total, self.dtype)
        mask = self.split(crypto.expand_mask(seed, self._scratch))
        for n, total in sums.items():
            if sign > 0:
                add_into(total, mask[n])
            else:
                np.subtract(total, mask[n], out=total)
