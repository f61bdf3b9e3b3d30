"""Aggregator stacks from a JSON-able spec, so the server's stack and each institution's client
half are built by the same code from the same words.

A spec is either a list of layers, top-down, each a table with a `kind` from `LAYERS`:

    {"layers": [{"kind": "topk", "fraction": 0.1}, {"kind": "clip", "norm": 1.0},
                {"kind": "mean", "weighted": false}, {"kind": "central_noise", ...},
                {"kind": "sum"}]}

or today's short form ({"layer": "mean" | robust rule, "weighted", "norm_bound",
"default_bound", "privacy": {...}, "secure": {...}}), which `short_form_layers` spells as such
a list: the same layers, built by the same code, so the same stack bit for bit. Every stack is
checked by `check_stack` before it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedsilo.aggregation.base import Layer
from fedsilo.aggregation.dp.clipping import Clip
from fedsilo.aggregation.mean import WeightedMean
from fedsilo.aggregation.sum import PlainSum
from fedsilo.errors import ConfigError

ROBUST_RULES = ("median", "trimmed_mean", "krum", "multikrum")
SECURE_SUMS = ("secagg+", "secagg", "ckks")
NOISE_KINDS = {"central": "central_noise", "distributed": "noise_share"}

Builder = Callable[[Mapping[str, Any], Any, Mapping[str, bytes]], Layer]


@dataclass(frozen=True)
class Kind:
    """How a layer kind is built: `build(entry, inner, keys)`; `leaf`: it aggregates the
    contributions itself and wraps nothing (a sum, a robust rule)."""

    build: Builder
    leaf: bool = False


def build_aggregator(spec: Mapping[str, Any], keys: Mapping[str, bytes] | None = None) -> Layer:
    """The checked stack a spec describes: its "layers" list, or the short form
    {"layer": "mean", "weighted": true, "secure": {...}?} -> WeightedMean(inner=sum), the sum
    being PlainSum or, with "secure", a secure sum (weights applied before masking);
    {"layer": "median" | "trimmed_mean" | "krum" | "multikrum", ...} -> a robust rule instead
    of the mean. "norm_bound": M wraps either in server-side norm bounding; a plain mean
    otherwise gets the default bound (`default_bound`).
    `keys` is local key material that never travels in a spec (the identity that signs
    SecAgg+ keys and CKKS packages: ca.pem, client.key, client.pem)."""
    if "layers" not in spec:
        return build_layers(short_form_layers(spec), keys or {})
    check_declared(spec)
    return build_layers(spec["layers"], keys or {})


def check_declared(spec: Mapping[str, Any]) -> None:
    """A layer list's spec may also state "secure" and "privacy" settings, which an
    institution's site policy checks (client/policy.py): the list must then hold exactly
    those (a spec cannot claim a protection its layers do not give).

    Raises:
        ConfigError: a stated secure sum or noise that the layers do not hold as stated."""
    entries = spec["layers"]
    for key, kinds, want in (("secure", SECURE_SUMS, _declared_secure(spec.get("secure"))),
                             ("privacy", tuple(NOISE_KINDS.values()),
                              _declared_noise(spec.get("privacy")))):
        found = [dict(e) for e in entries if e.get("kind") in kinds]
        if want and found != [want]:
            raise ConfigError(f"aggregator spec: its layers {[e.get('kind') for e in found]} "
                              f"are not the '{key}' it states ({spec.get(key)})")


def _declared_secure(secure: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return {**secure, "kind": _secure_kind(secure)} if secure else None


def _declared_noise(privacy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return {**privacy, "kind": _noise_kind(privacy)} if privacy else None


def build_layers(entries: Sequence[Mapping[str, Any]], keys: Mapping[str, bytes]) -> Layer:
    """The stack `entries` (top-down) describe, checked (`check_stack`).

    Raises:
        ConfigError: an unknown kind, an unsound stack, or one that is not a chain of wrappers
            ending in one leaf (a sum or a robust rule)."""
    if not entries:
        raise ConfigError("aggregation.layers is empty: list at least an aggregation rule")
    kinds = [_kind(e) for e in entries]
    cut = next((i + 1 for i, k in enumerate(kinds) if k.leaf), len(entries))
    names: dict[int, str] = {}
    top = _link(entries[:cut], kinds[:cut], keys, names)
    below = _link(entries[cut:], kinds[cut:], keys, names) if cut < len(entries) else None
    check_stack([*walk(top), *walk(below)], names)
    if below is not None:
        raise ConfigError(f"aggregation: '{entries[cut - 1]['kind']}' aggregates the "
                          f"contributions itself, so nothing can sit below it; found "
                          f"'{entries[cut]['kind']}'")
    if not kinds[-1].leaf:
        raise ConfigError(f"aggregation: the stack ends with '{entries[-1]['kind']}', which "
                          f"wraps a layer below it: end it with a sum or a rule "
                          f"({sorted(k for k, v in LAYERS.items() if v.leaf)})")
    return top


def _kind(entry: Mapping[str, Any]) -> Kind:
    kind = entry.get("kind")
    if kind not in LAYERS:
        raise ConfigError(f"aggregation layer '{kind}' is unknown; known: {sorted(LAYERS)}")
    return LAYERS[kind]


def _link(entries: Sequence[Mapping[str, Any]], kinds: Sequence[Kind],
          keys: Mapping[str, bytes], names: dict[int, str]) -> Layer:
    """Build `entries` bottom-up, each wrapping the one below (`names`: each layer's kind, by
    id); a list without a leaf is put on a plain sum (only so that `check_stack` can judge
    it: such a list is refused after)."""
    inner: Layer | None = None if kinds[-1].leaf else PlainSum()
    for entry, kind in zip(reversed(entries), reversed(kinds)):
        inner = kind.build(entry, inner, keys)
        names[id(inner)] = str(entry["kind"])
    assert inner is not None
    return inner


def walk(layer: Any) -> list[Any]:
    """The layers of a stack, top-down (walking `.inner`)."""
    out = []
    while layer is not None:
        out.append(layer)
        layer = getattr(layer, "inner", None)
    return out


# the stack check -----------------------------------------------------------------------------
def declared(layer: Any, what: str) -> bool:
    """A layer's class declaration `what` (False when it declares nothing). Read on the class:
    NoiseShare hands unknown instance attributes to the secure sum below it."""
    return bool(getattr(type(layer), what, False))


def check_stack(stack: Layer | Sequence[Layer], names: Mapping[int, str] | None = None) -> None:
    """Refuses an unsound stack (a Layer, walked down `.inner`, or its layers top-down),
    naming both layers of the first conflict. From the layers' class declarations:

    1. Secure sums (`hides_individual_updates`) show the server only the sum, so every layer
       above one must declare `commutes_with_secure_sum` (its client half runs inside the
       institution before masking and its server half needs only the sum: Clip, WeightedMean,
       GaussianNoise, NoiseShare). A robust rule or a norm bound (`needs_individual_updates`)
       must see each update; TopK states its own reason (`why_not_above_secure_sum`).
    2. TopK (`sends_sparse`) sends indices and values: a layer above it that reads each
       contribution would read them, not the update; DP clipping above it would let the error
       feedback re-add what the clip removed; a noise share below it would be cut to k values.
    3. DP noise (`adds_dp_noise`, σ = z·C) is calibrated to a sum whose sensitivity to one
       institution is C: that needs a Clip above the noise, and between the clip and the
       sum only layers that pass each clipped contribution into a sum once and unscaled
       (`preserves_sensitivity`). A WeightedMean declares it, though an example-weighted
       mean scales a contribution by n_i (the config builds a uniform mean under DP; a spec
       that asks for weights gets what it asks for). Refused, as before this check existed:
       robust rules and norm bounds with DP. A trimmed mean or median of clipped updates has
       a per-coordinate sensitivity (one institution more or less shifts every coordinate's
       order statistics, up to 2C/(K - 2⌊βK⌋) each, and in L2 up to √d times that), not the
       mean's C; Krum's selection can swap one whole update for another (2C), and a
       server-side bound is not part of the mechanism the accountant describes. Noise
       calibrated to C would then not give the reported ε, and noise calibrated to those
       bounds would drown the model, so these compositions are refused rather than
       recalibrated. TopK above the clip is sound: what is sent, clip(top_k(u + e)), has norm
       at most C whatever the residual e, so σ = z·C keeps its guarantee.

    `names`: the kinds a spec gave the layers (by id), to name them as the config does.

    Raises:
        ConfigError: the first conflict, in words naming both layers.
    """
    chain = list(stack) if isinstance(stack, Sequence) else walk(stack)
    spelled = dict(names or {})

    def label(layer: Any) -> str:
        return spelled.get(id(layer), str(layer.name))

    for i, upper in enumerate(chain):
        for lower in chain[i + 1:]:
            _check_pair(upper, lower, label(upper), label(lower))
    _check_privacy(chain, label)


def _check_pair(upper: Any, lower: Any, up: str, low: str) -> None:
    if declared(lower, "hides_individual_updates") and not declared(
            upper, "commutes_with_secure_sum"):
        why = getattr(type(upper), "why_not_above_secure_sum", None)
        if why is None:
            raise ConfigError(f"aggregation: '{up}' needs each institution's update in the "
                              f"clear, and the secure sum '{low}' below it hides them: "
                              f"choose one")
        raise ConfigError(f"aggregation: '{up}' {why}; the secure sum '{low}' below it: "
                          f"choose one")
    if declared(lower, "sends_sparse"):
        if declared(upper, "needs_individual_updates"):
            raise ConfigError(f"aggregation: '{up}' reads each contribution, and '{low}' below "
                              f"it sends them as indices and values: list '{low}' above "
                              f"'{up}'")
        if declared(upper, "clips_each_update"):
            raise ConfigError(f"aggregation: '{up}' above '{low}' clips before compressing, so "
                              f"the error feedback re-adds what the clip removed and what is "
                              f"sent is no longer bounded by the clip norm: list '{low}' "
                              f"above '{up}' (compress, then clip what is sent)")
    if declared(upper, "sends_sparse") and declared(lower, "noises_each_update"):
        raise ConfigError(f"aggregation: '{up}' would send only k values of the noise that "
                          f"'{low}' below it adds to every coordinate: choose one")


def _check_privacy(chain: Sequence[Any], label: Callable[[Any], str]) -> None:
    noise = next((x for x in chain if declared(x, "adds_dp_noise")), None)
    if noise is None:
        return
    for layer in chain:
        if declared(layer, "needs_individual_updates") and not declared(layer, "sends_sparse"):
            raise ConfigError(f"aggregation: '{label(layer)}' with differential privacy "
                              f"('{label(noise)}') is not supported (its sensitivity differs "
                              f"from the mean's)")
    at = chain.index(noise)
    clips = [i for i, x in enumerate(chain[:at]) if declared(x, "clips_each_update")]
    if not clips:
        raise ConfigError(f"aggregation: '{label(noise)}' has no 'clip' above it: its noise "
                          f"σ = z·C needs each institution's update clipped to norm C")
    for layer in chain[clips[0] + 1:]:
        if not (declared(layer, "preserves_sensitivity") or declared(layer, "clips_each_update")
                or declared(layer, "adds_dp_noise")):
            raise ConfigError(f"aggregation: '{label(layer)}' between the clip "
                              f"'{label(chain[clips[0]])}' and the noise '{label(noise)}' "
                              f"changes the sum's sensitivity to one institution (C), which "
                              f"the noise is calibrated to: remove it")


# short forms ---------------------------------------------------------------------------------
def short_form_layers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Today's short form as a layer list (top-down): [norm_bound | default_bound]?, [clip]?,
    the rule (a weighted mean or a robust rule), [noise]?, then the sum (plain or secure; a
    robust rule only has a sum below it to be refused with)."""
    layer = spec.get("layer", "mean")
    if layer not in ("mean", *ROBUST_RULES):
        raise ConfigError(f"aggregator layer '{layer}' is unknown; known: "
                          f"{['mean', *ROBUST_RULES]}")
    privacy, secure = spec.get("privacy"), spec.get("secure")
    out: list[dict[str, Any]] = []
    if spec.get("norm_bound") is not None:
        out.append({"kind": "norm_bound", "max_norm": spec["norm_bound"]})
    elif default_bound(spec):
        out.append({"kind": "default_bound"})
    if privacy:
        out.append({"kind": "clip", "norm": privacy["clip_norm"],
                    "target_quantile": privacy.get("target_quantile"),
                    "learning_rate": privacy.get("clip_learning_rate", 0.2)})
    out.append(_rule(spec))
    if privacy:
        out.append({**privacy, "kind": _noise_kind(privacy)})
    if secure:
        out.append({**secure, "kind": _secure_kind(secure)})
    elif layer == "mean":
        out.append({"kind": "sum"})
    return out


def _rule(spec: Mapping[str, Any]) -> dict[str, Any]:
    layer = spec.get("layer", "mean")
    if layer == "mean":
        return {"kind": "mean", "weighted": bool(spec.get("weighted", True))}
    keys = ("trim_fraction", "byzantine", "select")
    return {"kind": layer, **{k: spec[k] for k in keys if k in spec}}


def _noise_kind(privacy: Mapping[str, Any]) -> str:
    if privacy.get("mode") not in NOISE_KINDS:
        raise ConfigError(f"privacy.mode '{privacy.get('mode')}' has no aggregation layer")
    return NOISE_KINDS[privacy["mode"]]


def _secure_kind(secure: Mapping[str, Any]) -> str:
    protocol = secure.get("protocol")
    if protocol not in SECURE_SUMS:
        raise ConfigError(f"aggregation.secure '{protocol}' is unknown; known: ['secagg+', "
                          f"'secagg', 'ckks']")
    return str(protocol)


def default_bound(spec: Mapping[str, Any]) -> bool:
    """Whether a stack gets the default bound (robust.MedianNormBound): a mean the server sees
    each update of (no secure sum), not already bounded by DP clipping or norm_bound, and not
    switched off."""
    return (spec.get("layer", "mean") == "mean" and not spec.get("secure")
            and not spec.get("privacy") and spec.get("norm_bound") is None
            and bool(spec.get("default_bound", True)))


# [[aggregation.layers]]: what a config may list ---------------------------------------------
def _number(lo: float, hi: float, lo_in: bool, hi_in: bool) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool)
                and (lo <= v if lo_in else lo < v) and (v <= hi if hi_in else v < hi))
    return ok


def _integer(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


_POSITIVE = ("a number > 0", _number(0, float("inf"), False, False))
RULES = ("mean", *ROBUST_RULES)
# kind -> setting -> (what it must be, check); the first settings listed in REQUIRED are needed
CONFIG_LAYERS: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "topk": {"fraction": ("a number in (0, 1]", _number(0, 1, False, True))},
    "clip": {"norm": _POSITIVE, "target_quantile": ("a number in (0, 1)",
                                                    _number(0, 1, False, False)),
             "learning_rate": _POSITIVE},
    "norm_bound": {"max_norm": _POSITIVE},
    "default_bound": {},
    "mean": {"weighted": ("true or false", lambda v: isinstance(v, bool))},
    "median": {},
    "trimmed_mean": {"trim_fraction": ("a number in [0, 0.5)", _number(0, 0.5, True, False))},
    "krum": {"byzantine": ("an integer >= 0", _integer(0))},
    "multikrum": {"byzantine": ("an integer >= 0", _integer(0)),
                  "select": ("an integer >= 1", _integer(1))},
}
REQUIRED = {"topk": ("fraction",), "clip": ("norm",), "norm_bound": ("max_norm",)}


def check_config_layers(layers: Sequence[Mapping[str, Any]]) -> None:
    """The kinds and settings of a config's [[aggregation.layers]] (top-down).

    Raises:
        ConfigError: the first bad table, named by its position."""
    if not layers:
        raise ConfigError("aggregation.layers is empty: list at least an aggregation rule")
    for i, entry in enumerate(layers):
        where, kind = f"aggregation.layers[{i}]", entry.get("kind")
        if kind not in CONFIG_LAYERS:
            raise ConfigError(f"{where}: kind {kind!r} is unknown; known: "
                              f"{sorted(CONFIG_LAYERS)} (secure sums and DP noise come from "
                              f"[aggregation] secure and [privacy] mode)")
        allowed = CONFIG_LAYERS[kind]
        for key, value in entry.items():
            if key == "kind":
                continue
            if key not in allowed:
                raise ConfigError(f"{where} ({kind}): unknown key '{key}'; allowed: "
                                  f"{sorted(allowed) or 'none'}")
            if not allowed[key][1](value):
                raise ConfigError(f"{where} ({kind}): '{key}' must be {allowed[key][0]} "
                                  f"(found {value!r})")
        missing = [k for k in REQUIRED.get(kind, ()) if k not in entry]
        if missing:
            raise ConfigError(f"{where} ({kind}): missing required key '{missing[0]}'")
    rules = [str(e["kind"]) for e in layers if e["kind"] in RULES]
    if len(rules) > 1:
        raise ConfigError(f"aggregation.layers lists two aggregation rules, '{rules[0]}' and "
                          f"'{rules[1]}': keep one")


def stack_entries(layers: Sequence[Mapping[str, Any]], *, weighted: bool,
                  privacy: Mapping[str, Any] | None, secure: Mapping[str, Any] | None,
                  default: bool = True) -> list[dict[str, Any]]:
    """The whole stack (top-down) a config's layers describe with its other sections: a mean
    if they list no rule (`weighted` unless the mean says), then, under DP (`privacy`: the
    spec config/build.py `privacy_spec` gives), a uniform mean, the clip right above the rule
    (unless listed) and the noise below it; the sum (plain or `secure`) below a mean; the
    default bound above a plain mean the server sees (unless `default` is False, or a bound
    is listed). Conflicts with the other sections are ConfigErrors naming both."""
    check_config_layers(layers)
    out = [dict(e) for e in layers]
    if not any(e["kind"] in RULES for e in out):
        out.append({"kind": "mean"})
    at = next(i for i, e in enumerate(out) if e["kind"] in RULES)
    if out[at]["kind"] == "mean":
        if privacy and out[at].get("weighted"):
            raise ConfigError("aggregation.layers: 'mean' with weighted = true and privacy.mode "
                              f"= '{privacy['mode']}' conflict: an example-weighted mean scales "
                              "an institution's clipped update by its row count, so the sum's "
                              "sensitivity is no longer the clip norm the noise is calibrated "
                              "to: remove weighted")
        out[at] = {"kind": "mean", "weighted": bool(out[at].get("weighted", weighted))
                   and not privacy}
    if privacy:
        at = _private(out, at, privacy)
    bounded = any(e["kind"] in ("norm_bound", "default_bound") for e in out)
    if out[at]["kind"] == "mean" and default and not (privacy or secure or bounded):
        out.insert(at, {"kind": "default_bound"})
        at += 1
    below = [_declared_noise(privacy)] if privacy else []
    if secure:
        below.append(_declared_secure(secure))
    elif out[at]["kind"] == "mean":
        below.append({"kind": "sum"})
    return [*out[:at + 1], *[e for e in below if e], *out[at + 1:]]


def _private(out: list[dict[str, Any]], at: int, privacy: Mapping[str, Any]) -> int:
    """Puts DP clipping (privacy's norm, adaptive settings) in `out`: the listed clip, or one
    right above the rule at `at`; returns the rule's new index."""
    clip = {"kind": "clip", "norm": privacy["clip_norm"],
            "target_quantile": privacy.get("target_quantile"),
            "learning_rate": privacy.get("clip_learning_rate", 0.2)}
    listed = [i for i, e in enumerate(out) if e["kind"] == "clip"]
    for i in listed:
        for key, value in out[i].items():
            if key != "kind" and clip[key] != value:
                raise ConfigError(f"aggregation.layers[{i}] (clip) {key} = {value!r} and "
                                  f"[privacy] (which sets {key} = {clip[key]!r}) conflict: "
                                  f"set it in [privacy] only")
        out[i] = clip
    if listed:
        return at
    out.insert(at, clip)
    return at + 1


SHORT_FORMS = ("robust", "trim_fraction", "byzantine", "select", "norm_bound")


def short_form_conflict(layers: Sequence[Mapping[str, Any]],
                        given: Mapping[str, Any]) -> str | None:
    """Why the short-form settings `given` ([aggregation] robust, trim_fraction, byzantine,
    select, norm_bound, as set in a config) conflict with its layers, or None."""
    rule = next((e for e in layers if e.get("kind") in RULES), {"kind": "mean"})
    bound = next((e for e in layers if e.get("kind") == "norm_bound"), None)
    said = {"robust": "none" if rule["kind"] == "mean" else rule["kind"],
            "norm_bound": None if bound is None else bound.get("max_norm")}
    defaults = {"trim_fraction": 0.1, "byzantine": 1, "select": None}
    for key in ("trim_fraction", "byzantine", "select"):
        said[key] = rule.get(key, defaults[key])
    for key, value in given.items():
        if key in said and said[key] != value:
            return (f"aggregation.{key} = {value!r} conflicts with aggregation.layers, which "
                    f"says {key} = {said[key]!r}: say it in one place")
    return None


# the builders of each kind -------------------------------------------------------------------
def build_robust(spec: Mapping[str, Any]) -> Layer:
    from fedsilo.aggregation.robust import CoordinateMedian, Krum, TrimmedMean

    layer = spec["layer"]
    if layer == "median":
        return CoordinateMedian()
    if layer == "trimmed_mean":
        return TrimmedMean(float(spec.get("trim_fraction", 0.1)))
    select = 1 if layer == "krum" else spec.get("select")
    return Krum(int(spec.get("byzantine", 1)), None if select is None else int(select))


def build_noise(p: Mapping[str, Any], inner: Layer) -> Layer:
    """Central (server adds) or distributed (each institution adds a share) Gaussian noise.
    With adaptive clipping the update noise is raised so that update and clip-bit releases
    together cost the configured multiplier z (Andrew et al. 2021, Thm. 1):
    z_update = (z^-2 - (2 σ_b)^-2)^(-1/2)."""
    from fedsilo.aggregation.dp.accountant import Accountant
    from fedsilo.aggregation.dp.noise import GaussianNoise, NoiseShare

    z, bit = float(p["noise_multiplier"]), float(p.get("bit_stddev", 0.0))
    multiplier = z
    if p.get("target_quantile") is not None:
        if not 2 * bit > z:
            raise ConfigError(f"privacy: adaptive clipping needs 2·clip_count_stddev > "
                              f"noise_multiplier ({2 * bit} <= {z})")
        multiplier = (z**-2 - (2 * bit) ** -2) ** -0.5
    accountant = Accountant.public_cohort(z, float(p["delta"]))
    seed, norm = p.get("deterministic"), float(p["clip_norm"])
    if p["mode"] == "central":
        return GaussianNoise(multiplier, inner, accountant, bit, seed, norm)
    if p["mode"] == "distributed":
        return NoiseShare(multiplier, int(p["min_contributors"]), inner, accountant, bit, seed,
                          norm)
    raise ConfigError(f"privacy.mode '{p['mode']}' has no aggregation layer")


def build_sum(secure: Mapping[str, Any] | None, keys: Mapping[str, bytes]) -> Layer:
    if not secure:
        return PlainSum()
    protocol = secure.get("protocol")
    if protocol == "ckks":
        from fedsilo.aggregation.secure.ckks import CKKSSum

        # keys: identity material only; each round's CKKS key is made by an institution
        return CKKSSum(int(secure.get("min_contributors", 2)), keys)
    if protocol in ("secagg+", "secagg"):
        from fedsilo.aggregation.secure.fixedpoint import FixedPoint
        from fedsilo.aggregation.secure.secaggplus import SecAggPlus

        neighbours = None if protocol == "secagg" else secure.get("neighbours")
        return SecAggPlus(int(secure["threshold"]), neighbours,
                          FixedPoint(int(secure.get("frac_bits", 24)),
                                     float(secure.get("max_abs", 2.0**30)),
                                     int(secure.get("ring_bits", 64))), keys)
    raise ConfigError(f"aggregation.secure '{protocol}' is unknown; known: ['secagg+', "
                      f"'secagg', 'ckks']")


def _bound(entry: Mapping[str, Any], inner: Layer, keys: Mapping[str, bytes]) -> Layer:
    from fedsilo.aggregation.robust import MedianNormBound, NormBound

    if entry["kind"] == "default_bound":
        return MedianNormBound(inner)
    return NormBound(float(entry["max_norm"]), inner)


def _topk(entry: Mapping[str, Any], inner: Layer, keys: Mapping[str, bytes]) -> Layer:
    from fedsilo.aggregation.compress import TopK

    return TopK(float(entry["fraction"]), inner)


def _noise(entry: Mapping[str, Any], inner: Layer, keys: Mapping[str, bytes]) -> Layer:
    mode = {v: k for k, v in NOISE_KINDS.items()}[entry["kind"]]
    return build_noise({**entry, "mode": mode}, inner)


LAYERS: dict[str, Kind] = {
    "sum": Kind(lambda e, inner, keys: PlainSum(), leaf=True),
    **{k: Kind(lambda e, inner, keys: build_sum({**e, "protocol": e["kind"]}, keys), leaf=True)
       for k in SECURE_SUMS},
    **{k: Kind(lambda e, inner, keys: build_robust({**e, "layer": e["kind"]}), leaf=True)
       for k in ROBUST_RULES},
    "mean": Kind(lambda e, inner, keys: WeightedMean(inner, bool(e.get("weighted", True)))),
    "clip": Kind(lambda e, inner, keys: Clip(float(e["norm"]), inner, e.get("target_quantile"),
                                             float(e.get("learning_rate", 0.2)))),
    "central_noise": Kind(_noise),
    "noise_share": Kind(_noise),
    "norm_bound": Kind(_bound),
    "default_bound": Kind(_bound),
    "topk": Kind(_topk),
}


def config_stack_problem(layers: Sequence[Mapping[str, Any]], given: Mapping[str, Any],
                         secure: Mapping[str, Any] | None) -> str | None:
    """What is wrong with a config's [[aggregation.layers]] given its [aggregation] short-form
    settings (`given`: those set) and secure sum, or None (DP is checked when the spec is
    made, config/build.py `aggregator_spec`)."""
    try:
        check_config_layers(layers)
        conflict = short_form_conflict(layers, given)
        if conflict:
            return conflict
        build_layers(stack_entries(layers, weighted=True, privacy=None, secure=secure), {})
    except ConfigError as e:
        return str(e)
    return None
