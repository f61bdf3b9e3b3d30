"""SecAgg+ (Bell et al., CCS 2020) — SecAgg (Bonawitz et al., CCS 2017) on a sparse graph.

Per round, with the server relaying every message and learning only the sum:

1. advertise  each institution makes two X25519 key pairs (c: to encrypt shares, s: to agree
              pairwise masks) and a 32-byte self-mask seed b; it sends the public keys, signed
              with its identity key together with its certificate (identity.py).
2. share      the server sends each one its neighbours' signed keys (a random k-regular ring
              graph from the round's public seed; k >= n-1 is the complete graph of SecAgg).
              Each checks every signature against its own CA, and refuses the round if one
              fails (the server relayed keys their owner did not sign); then it splits b and
              its s private key into t-of-k Shamir shares and sends one AES-GCM-sealed pair of
              shares per neighbour (round, sender, recipient bound).
3. fit        y_u = encode(x_u) + PRG(b_u) + Σ_v ±PRG(agree(s_u, s_v)) mod 2^64 over the
              neighbours v that finished step 2 (+ if u < v, − otherwise): pairwise masks
              cancel in the sum; y_u alone is uniform.
4. unmask     survivors reveal, for each neighbour, the share of b (if the neighbour sent y)
              or of s (if it dropped after step 2) — never both. The server rebuilds b of
              every survivor and s of every dropout, removes their masks and decodes the sum.

An institution answers each stage, and sends its masked input, at most once per round, so
however the server asks it never reveals both secrets of a neighbour; t > k/2 on the graph the
round really uses (threshold.py) then keeps any t shares of one secret from meeting t of the
other. Every message is checked where it arrives (payloads.py): a malformed reply makes its
sender a dropout, with the reason recorded; a malformed or unsafe request is refused.
Tolerates up to k − t dropouts per neighbourhood at any step; fewer than t surviving
neighbours for anyone aborts the round (nothing is applied). What this does not cover (t
neighbours colluding with the server, a server that drops honest institutions):
docs/explanation/secure-aggregation.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator
from fedsilo.aggregation.secure import crypto, identity, payloads, shamir
from fedsilo.aggregation.secure.fixedpoint import FixedPoint
from fedsilo.aggregation.secure.payloads import Advert, Reveal, b64, unb64
from fedsilo.aggregation.secure.threshold import check_cohort, majority, neighbourhood
from fedsilo.core.params import ArraySpec, Params, ParamSpec, zeros
from fedsilo.core.rng import generator
from fedsilo.errors import ConfigError, ProtocolError, SecureAggregationAborted

log = logging.getLogger(__name__)
MASK, SHARE = b"fedsilo/secagg/mask", b"fedsilo/secagg/share"
__all__ = ["SecAggPlus", "b64", "ring_graph", "unb64"]


def ring_graph(ids: list[str], k: int, seed: int) -> dict[str, list[str]]:
    """Each id's neighbours on a public random cycle (a Harary graph): its ⌊d/2⌋ successors
    and predecessors, and for odd d the id opposite it, d = neighbourhood(n, k): k, or k + 1
    when n and k are odd (a k-regular graph needs n·k even). Everyone else when k >= n - 1."""
    n = len(ids)
    d = neighbourhood(n, k)
    if d >= n - 1:
        return {u: [v for v in ids if v != u] for u in ids}
    order = [ids[i] for i in generator(seed, "secagg-graph").permutation(n)]
    half = d // 2
    out: dict[str, list[str]] = {}
    for i, u in enumerate(order):
        near = {order[(i + step) % n] for step in range(-half, half + 1) if step}
        if d % 2 == 1:  # only with n even
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
    adverts: dict[str, Advert] = field(default_factory=dict)
    graph: dict[str, list[str]] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)
    survivors: set[str] = field(default_factory=set)
    asked: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # unmask
    inbox: dict[str, dict[str, str]] = field(default_factory=dict)
    unmasked: bool = False

    def x(self, client: str) -> int:
        return self.ids.index(client) + 1


class SecAggPlus:
    """Secure sum layer. Args: `threshold` t (Shamir; > half the neighbourhood), `neighbours`
    k (None = everyone: SecAgg), `fixed` the fixed-point encoding (precision, range), `keys`
    this party's own key material (identity.py: `ca.pem`, and an institution's `client.key`
    and `client.pem`; without any, this process's simulated CA)."""

    name = "secagg+"
    hides_individual_updates = True  # the server learns only the sum
    needs_individual_updates = False
    commutes_with_secure_sum = False  # a secure sum is innermost: nothing is masked twice
    preserves_sensitivity = True  # the sum of the contributions, exactly (in its precision)
    pre_stages = ("advertise", "share")
    post_stages = ("unmask",)

    def __init__(self, threshold: int, neighbours: int | None = None,
                 fixed: FixedPoint | None = None,
                 keys: Mapping[str, bytes] | None = None) -> None:
        if threshold < 2:
            raise ConfigError(f"secagg+: threshold must be >= 2, got {threshold}")
        if neighbours is not None and neighbours < threshold:
            raise ConfigError(f"secagg+: neighbours ({neighbours}) must be >= threshold "
                              f"({threshold})")
        self.threshold, self.neighbours = threshold, neighbours
        self.fixed = fixed or FixedPoint()
        self.credentials = identity.Credentials.from_keys(keys or {})

    def _credentials(self, me: str | None) -> identity.Credentials:
        """This party's key material: its own, or the process's simulated CA's for `me`
        (None: the server)."""
        return self.credentials or identity.simulated(me)

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
            xs = {v: i + 1 for i, v in enumerate(rnd.ids)}  # rnd.x, without a scan per lookup
            return {u: {**base, "x": {v: xs[v] for v in [u, *rnd.graph[u]]},
                        "peers": {v: rnd.adverts[v].wire() for v in rnd.graph[u]}}
                    for u in alive}
        if stage == "unmask":
            rnd.survivors = set(alive)
            rnd.asked = {u: ({v for v in rnd.graph[u] if v in rnd.survivors},
                             {v for v in rnd.graph[u]
                              if v in rnd.shared and v not in rnd.survivors}) for u in alive}
            return {u: {**base, "survivors": sorted(s), "dropped": sorted(d)}
                    for u, (s, d) in rnd.asked.items()}
        raise ProtocolError(f"secagg+: unknown stage '{stage}'")

    def stage_check(self, stage: str, acc: Accumulator, client: str, answer: Any) -> Any:
        """`client`'s answer to `stage`, checked and typed (payloads.py).

        Raises:
            ProtocolError: it is malformed, or (advertise) its keys are not signed by the
                key of a certificate the trusted CA issued to `client`.
        """
        rnd: ServerRound = acc.extra["secagg"]
        if stage == "advertise":
            ad = payloads.advert(answer, client)
            self._credentials(None).trust.verify(client, ad.cert, ad.signed(rnd.round, client),
                                                 ad.sig)
            return ad
        if stage == "share":
            return payloads.shares(answer, client, rnd.graph[client])
        if stage == "unmask":
            survivors, dropped = rnd.asked[client]
            return payloads.reveal(answer, client, rnd.x(client), survivors, dropped)
        raise ProtocolError(f"secagg+: unknown stage '{stage}'")

    def stage_collect(self, stage: str, acc: Accumulator,
                      replies: Mapping[str, Any]) -> list[str]:
        """Fold in the stage's checked replies (`stage_check`); returns who is still in.
        Raises SecureAggregationAborted when recovery is no longer possible."""
        rnd: ServerRound = acc.extra["secagg"]
        if stage == "advertise":
            rnd.adverts, rnd.ids = dict(replies), sorted(replies)
            try:  # on the graph of those who advertised (odd n and odd k: k + 1 each)
                check_cohort(self.threshold, self.neighbours, len(rnd.ids))
            except (ConfigError, SecureAggregationAborted) as e:
                raise SecureAggregationAborted(f"secagg+: {len(rnd.ids)} institutions "
                                               f"advertised keys: {e}") from None
            k = len(rnd.ids) - 1 if self.neighbours is None else self.neighbours
            rnd.graph = ring_graph(rnd.ids, k, rnd.seed)
            return rnd.ids
        if stage == "share":
            rnd.shared = set(replies)
            for u, sealed in replies.items():
                for v, item in sealed.items():
                    rnd.inbox.setdefault(v, {})[u] = item
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

    def _unmask(self, rnd: ServerRound, acc: Accumulator, replies: Mapping[str, Reveal]) -> None:
        b_shares: dict[str, list[tuple[int, int]]] = {}
        s_shares: dict[str, list[tuple[int, int]]] = {}
        for u, reveal in sorted(replies.items()):
            for v, reason in reveal.corrupt.items():
                log.warning("secagg+ round %d: share from %s to %s rejected: %s", rnd.round,
                            v, u, reason)
            x = rnd.x(u)
            for v, y in reveal.b.items():
                b_shares.setdefault(v, []).append((x, y))
            for v, y in reveal.s.items():
                s_shares.setdefault(v, []).append((x, y))
        survivors = rnd.survivors
        dropped = rnd.shared - survivors
        masks: list[tuple[bytes, int]] = []  # (seed, sign): every mask to add to the sum
        for v in sorted(survivors):  # remove self masks
            masks.append((self._rebuild(b_shares.get(v, []), f"the self-mask seed of {v}"), -1))
        for v in sorted(dropped):  # remove the pairwise masks survivors added with v
            sk = crypto.private_from(self._rebuild(s_shares.get(v, []), f"the key of {v}"))
            for u in rnd.graph[v]:
                if u in survivors:  # u added +mask if u < v, else -mask: undo it
                    masks.append((crypto.agree(sk, rnd.adverts[u].s_pk, MASK),
                                  -1 if u < v else 1))
        # all of them in one pass over the sum (every secret rebuilt before it is touched)
        crypto.add_masks(list(acc.sums.values()), masks)
        rnd.unmasked = True

    def _rebuild(self, shares: list[tuple[int, int]], what: str) -> bytes:
        try:
            return shamir.combine(shares, self.threshold)
        except SecureAggregationAborted as e:
            raise SecureAggregationAborted(f"secagg+: cannot rebuild {what}: {e}") from None

    # client half -------------------------------------------------------------------------
    def stage_respond(self, stage: str, payload: Mapping[str, Any], ctx: dict[str, Any],
                      me: str) -> dict[str, Any]:
        """Answer the server's request for `stage`, once per round.

        Raises:
            ProtocolError: a stage asked twice, a request for another round or malformed,
                a neighbour's keys not signed by it, or an unmask request that could
                reveal both secrets of a neighbour.
        """
        answered: set[str] = ctx.setdefault("secagg_answered", set())
        if stage in answered:
            raise ProtocolError(f"secagg+: stage '{stage}' was already answered this round; "
                                f"an institution answers each stage once")
        answered.add(stage)
        round = payloads.round_of(payload)
        if stage == "advertise":
            return self._advertise(round, ctx, me)
        if ctx.get("secagg_round") != round:
            raise ProtocolError(f"secagg+: stage '{stage}' for round {round}, keys are for "
                                f"round {ctx.get('secagg_round')}")
        if stage == "share":
            return self._share(payload, ctx, me)
        if stage == "unmask":
            return self._reveal(payload, ctx, me)
        raise ProtocolError(f"secagg+: unknown stage '{stage}'")

    def _advertise(self, round: int, ctx: dict[str, Any], me: str) -> dict[str, Any]:
        signer = self._credentials(me).signer_for(me)
        c_sk, c_pk = crypto.keypair()
        s_sk, s_pk = crypto.keypair()
        ctx.update(c_sk=c_sk, s_sk=s_sk, b=crypto.random_seed(), secagg_round=round, me=me)
        ad = Advert(c_pk, s_pk, signer.certificate)
        return dataclasses.replace(ad, sig=signer.sign(ad.signed(round, me))).wire()

    def _share(self, payload: Mapping[str, Any], ctx: dict[str, Any], me: str) -> dict:
        request, t, round = payloads.share_request(payload, me), self.threshold, ctx["secagg_round"]
        if request.threshold != t:
            raise ProtocolError(f"secagg+: the server asks for threshold {request.threshold}, "
                                f"this run's is {t}; refusing")
        if not t <= len(request.peers) or not majority(t, len(request.peers)):
            raise ProtocolError(f"secagg+: {len(request.peers)} neighbours for threshold {t} "
                                f"(t must be at most their number and exceed half of it); "
                                f"refusing")
        trust = self._credentials(me).trust
        for v, ad in sorted(request.peers.items()):
            try:
                trust.verify(v, ad.cert, ad.signed(round, v), ad.sig)
            except ProtocolError as e:
                raise ProtocolError(f"secagg+: refusing round {round}: {e} (the server relayed "
                                    f"keys '{v}' did not sign)") from None
        ctx["peers"], ctx["x"] = request.peers, request.x
        order = sorted(request.peers)
        b_sh = shamir.split(ctx["b"], t, [request.x[v] for v in order])
        s_sh = shamir.split(crypto.private_bytes(ctx["s_sk"]), t, [request.x[v] for v in order])
        sealed = {}
        for v, (x, yb), (_, ys) in zip(order, b_sh, s_sh):
            key = crypto.agree(ctx["c_sk"], request.peers[v].c_pk, SHARE)
            plain = json.dumps({"x": x, "b": f"{yb:x}", "s": f"{ys:x}"}).encode()
            sealed[v] = b64(crypto.seal(key, plain, _aad(round, me, v)))
        return {"shares": sealed}

    def _reveal(self, payload: Mapping[str, Any], ctx: dict[str, Any], me: str) -> dict:
        survivors, dropped = payloads.unmask_request(payload)
        if survivors & dropped:
            raise ProtocolError("secagg+: the server asked for both secrets of "
                                f"{sorted(survivors & dropped)}; refusing")
        if "masked_with" not in ctx:
            raise ProtocolError("secagg+: unmask asked, but no input was masked this round")
        if not (survivors | dropped) <= set(ctx["masked_with"]):
            raise ProtocolError("secagg+: unmask names institutions this one did not mask with")
        if len(survivors) < self.threshold:
            raise ProtocolError(f"secagg+: {len(survivors)} neighbours survived, fewer than "
                                f"the threshold {self.threshold}: the round cannot be "
                                f"unmasked; revealing nothing")
        x, round = ctx["x"][me], ctx["secagg_round"]
        out: dict[str, dict[str, Any]] = {"b": {}, "s": {}, "corrupt": {}}
        for v in sorted(survivors | dropped):
            sealed = ctx["inbox"].get(v)
            if sealed is None:
                continue
            try:
                key = crypto.agree(ctx["c_sk"], ctx["peers"][v].c_pk, SHARE)
                b, s = payloads.share_plain(
                    crypto.open_sealed(key, unb64(sealed), _aad(round, v, me)), x)
            except ProtocolError as e:
                out["corrupt"][v] = str(e)
                continue
            which = "b" if v in survivors else "s"
            out[which][v] = (x, f"{b if which == 'b' else s:x}")
        return out

    def encode(self, update: Params, num_examples: int, config: Mapping[str, Any],
               ctx: dict[str, Any]) -> Params:
        """Mask the encoded update, once per round, with the neighbours whose keys were
        checked at the share stage (at least t of them).

        Raises:
            ProtocolError: no key exchange this round, an input already sent, or neighbours
                the request names that are unknown or too few.
        """
        if not isinstance(config.get("secagg"), Mapping):
            raise ProtocolError("secagg+: fit task without this round's key exchange")
        round, peers, inbox = payloads.fit_request(config["secagg"])
        if round != ctx.get("secagg_round") or "peers" not in ctx:
            raise ProtocolError("secagg+: fit task without this round's key exchange")
        if "masked_with" in ctx:
            raise ProtocolError("secagg+: this round's input was already sent; an institution "
                                "sends it once")
        if not set(peers) | set(inbox) <= set(ctx["peers"]):
            raise ProtocolError("secagg+: the fit task names neighbours whose keys were not "
                                "exchanged")
        if len(peers) < self.threshold:
            raise ProtocolError(f"secagg+: {len(peers)} neighbours to mask with, fewer than "
                                f"the threshold {self.threshold}: refusing to send an input "
                                f"the round could not unmask")
        ctx["inbox"], ctx["masked_with"] = inbox, peers
        flat = _Flat(update)
        y = np.empty(flat.total, self.fixed.dtype)
        for name, view in flat.split(y).items():
            self.fixed.encode_into(update[name], view)
        me = ctx["me"]
        masks = [(ctx["b"], 1)] + [(crypto.agree(ctx["s_sk"], ctx["peers"][v].s_pk, MASK),
                                    1 if me < v else -1) for v in peers]
        crypto.add_masks([y], masks)  # y += PRG(b) + Σ ±PRG(s_uv), in one pass over y
        return flat.split(y)


def _aad(round: int, sender: str, recipient: str) -> bytes:
    return f"fedsilo-secagg|{round}|{sender}|{recipient}".encode()


class _Flat:
    """All named arrays as one ring vector (one PRG stream covers the whole model)."""

    def __init__(self, like: Mapping[str, np.ndarray]) -> None:
        self.shapes = {n: a.shape for n, a in like.items()}
        self.sizes = {n: int(np.prod(s, dtype=np.int64)) for n, s in self.shapes.items()}
        self.total = sum(self.sizes.values())

    def split(self, flat: np.ndarray) -> Params:
        out, start = {}, 0
        for n, shape in self.shapes.items():
            out[n] = flat[start:start + self.sizes[n]].reshape(shape)
            start += self.sizes[n]
        return out
