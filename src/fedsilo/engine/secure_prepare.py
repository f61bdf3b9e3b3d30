"""Secure federated preprocessing: the prepare stage through SecAgg+, so the server learns
only sums over institutions (issue 12 §3).

Each institution lays out its training-split statistics as one public-layout vector: for every
numeric column (and a regression target) its non-missing count, sum and sum of squares; for
every categorical column one count per level of the vocabulary the config declares
(`[data] levels`); for a classification target one count per class (the vocabulary's, or
("0", "1") with `positive_above`). A label outside the vocabulary is refused by its own
institution (DataError naming the column, never the label). The vector is split into two
limbs (x = hi · 2^32 + lo, hi integral, 0 <= lo < 2^32), encoded in fixed point (2^-16, |limb|
<= 2^36: values up to 2^68, 2,047 institutions) and summed with the run's SecAgg+ protocol
(aggregation/secure/secaggplus.py: advertise, share, masked input, unmask), as PREPARE tasks.
A CKKS run sums them the same way (SecAgg, everyone's neighbour; its masking is independent
of the fit rounds' protocol). Secure aggregation without declared levels is refused before
any task is sent (`prepare_spec`): a secure run never sends statistics in the clear.

What the server learns: each institution's training and test row counts (in the clear: they
weight the rounds and bound the example counts it may claim later, algorithms/admission.py),
and the sums over the institutions whose masked vector arrived. No institution's mean, sum,
category set or class counts. The plausibility rules (data/plausible.py) apply to the summed
statistics (a failure names no institution: the sum hides which one lied).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsilo.aggregation.base import Accumulator
from fedsilo.aggregation.secure.fixedpoint import FixedPoint
from fedsilo.aggregation.secure.secaggplus import SecAggPlus
from fedsilo.algorithms.admission import Admission
from fedsilo.core.messages import Rejection, Reply, ReplySpec, Task, TaskKind
from fedsilo.core.params import ArraySpec
from fedsilo.core.rng import derive_seed
from fedsilo.core.transport import ServerTransport
from fedsilo.data.levels import levels_needed
from fedsilo.data.plausible import check_statistics, plausible_test_rows
from fedsilo.data.preprocessing import LocalStatistics, Moments, Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.engine.prepare import fatal, stop_if_fatal
from fedsilo.errors import (
    AggregationError,
    ConfigError,
    DataError,
    FedsiloError,
    ProtocolError,
)

log = logging.getLogger(__name__)
FIXED = FixedPoint(frac_bits=16, max_abs=2.0**36, ring_bits=64)
LIMB = 2.0**32
RANGE = 2.0**68  # the largest |statistic| two limbs carry
NAME = "statistics"


@dataclass(frozen=True)
class Layout:
    """Where each statistic sits in the vector (public: from the schema and vocabulary)."""

    schema: Schema
    levels: dict[str, tuple[str, ...]]
    classes: tuple[str, ...]

    @classmethod
    def of(cls, schema: Schema, vocabulary: Mapping[str, Sequence[str]]) -> Layout:
        """Raises ConfigError: a categorical column (or a classification target without
        positive_above) has no declared vocabulary."""
        missing = missing_vocabulary(schema, vocabulary)
        if missing:
            raise ConfigError(f"secure preprocessing needs [data] levels for {missing}")
        levels = {c: tuple(dict.fromkeys(str(v) for v in vocabulary[c]))
                  for c in schema.categorical}
        classes: tuple[str, ...] = ()
        if schema.task != "regression":
            classes = (("0", "1") if schema.positive_above is not None
                       else tuple(dict.fromkeys(str(v) for v in vocabulary[schema.target])))
        return cls(schema, levels, classes)

    @property
    def size(self) -> int:
        moments = 3 * (len(self.schema.numeric) + (self.schema.task == "regression"))
        return moments + sum(len(v) for v in self.levels.values()) + len(self.classes)

    def vector(self, stats: LocalStatistics) -> np.ndarray:
        """`stats` as the layout's float64 vector. Raises DataError: a label outside the
        vocabulary (the reason names the column, not the label)."""
        out: list[float] = []
        for c in self.schema.numeric:
            out.extend(stats.numeric[c])
        if self.schema.task == "regression":
            assert stats.target is not None
            out.extend(stats.target)
        for c, levels in self.levels.items():
            out.extend(self._counts(f"column '{c}'", stats.categories[c], levels))
        out.extend(self._counts(f"target '{self.schema.target}'", stats.classes, self.classes))
        return np.asarray(out, np.float64)

    @staticmethod
    def _counts(what: str, counts: Mapping[str, int], levels: tuple[str, ...]) -> list[float]:
        if set(counts) - set(levels):
            raise DataError(f"{what} holds a level that is not in the declared [data] levels")
        return [float(counts.get(v, 0)) for v in levels]

    def statistics(self, total: np.ndarray, rows: int) -> LocalStatistics:
        """The summed statistics a summed vector holds (levels and classes no institution
        has are dropped, as in the clear merge)."""
        values = iter(total.tolist())

        def moments() -> Moments:
            return round(next(values)), next(values), next(values)

        numeric = {c: moments() for c in self.schema.numeric}
        target = moments() if self.schema.task == "regression" else None
        cats = {c: {v: n for v in levels if (n := round(next(values))) > 0}
                for c, levels in self.levels.items()}
        classes = {v: n for v in self.classes if (n := round(next(values))) > 0}
        return LocalStatistics(rows, numeric, cats, target, classes)


def missing_vocabulary(schema: Schema, vocabulary: Mapping[str, Sequence[str]]) -> list[str]:
    """The columns secure preprocessing needs a declared vocabulary for and has none."""
    need = list(schema.categorical)
    if schema.task != "regression" and schema.positive_above is None:
        need.append(schema.target)
    return [c for c in need if c not in vocabulary]


def limbs(vector: np.ndarray) -> np.ndarray:
    """[hi..., lo...] with vector = hi · 2^32 + lo. Raises DataError beyond RANGE."""
    if not np.all(np.abs(vector) < RANGE):
        raise DataError(f"a statistic is beyond what secure preprocessing carries "
                        f"(2^{int(np.log2(RANGE))})")
    hi = np.floor(vector / LIMB)
    return np.concatenate([hi, vector - hi * LIMB])


def unlimb(summed: np.ndarray) -> np.ndarray:
    half = len(summed) // 2
    return np.round(summed[:half]) * LIMB + summed[half:]


def layer(spec: Mapping[str, Any], keys: Mapping[str, bytes] | None) -> SecAggPlus:
    neighbours = spec.get("neighbours")
    return SecAggPlus(int(spec["threshold"]), None if neighbours is None else int(neighbours),
                      FIXED, keys)


# institution half ----------------------------------------------------------------------------
_STATE: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def respond(institution: Any, task: Task, split: Callable[[], Any],
            keys: Mapping[str, bytes]) -> Reply:
    """An institution's answer to one step of secure preprocessing (`task.config["secure"]`:
    "step", "protocol", "levels", "payload"). Each advertise starts a fresh SecAgg+ session
    for the run (new keys and masks); within it every step is answered once. Raises
    FedsiloError (the caller replies with it)."""
    me = institution.name
    spec = task.config["secure"]
    step = str(spec["step"])
    runs = _STATE.setdefault(institution, {})
    if step == "advertise":
        policy = getattr(institution, "policy", None)
        if policy is not None:  # (Institution._prepare checked it already, before any work)
            policy.check_prepare_protection(spec)
        part = split()
        schema = Schema.from_dict(task.config["schema"])
        layout = Layout.of(schema, spec["levels"])
        vector = limbs(layout.vector(LocalStatistics.of(part.train, schema)))
        runs[task.run_id] = {"layer": layer(spec["protocol"], keys), "vector": vector,
                             "ctx": {"me": me, "round": 0}, "rows": len(part.train)}
        state = runs[task.run_id]
        answer = state["layer"].stage_respond("advertise", spec["payload"], state["ctx"], me)
        return Reply(task.task_id, me, task.round, task.model_version, len(part.train),
                     payload={"rows": len(part.train), "test_rows": len(part.test),
                              "stage": answer})
    if task.run_id not in runs:
        raise ProtocolError(f"secure preprocessing: step '{step}' before advertise")
    state = runs[task.run_id]
    if step == "masked":
        masked = state["layer"].encode({NAME: state["vector"]}, state["rows"],
                                       {"secagg": spec["payload"]}, state["ctx"])
        return Reply(task.task_id, me, task.round, task.model_version, state["rows"],
                     update={NAME: masked[NAME]})
    if step not in ("share", "unmask"):
        raise ProtocolError(f"secure preprocessing: unknown step '{step}'")
    answer = state["layer"].stage_respond(step, spec["payload"], state["ctx"], me)
    if step == "unmask":
        runs.pop(task.run_id, None)
    return Reply(task.task_id, me, task.round, task.model_version, 0,
                 payload={"stage": answer})


# server half ---------------------------------------------------------------------------------
@dataclass
class _Exchange:
    transport: ServerTransport
    config: Mapping[str, Any]
    run_id: str
    timeout: float | None
    fatal: list[FedsiloError]

    def ask(self, step: str, requests: Mapping[str, Any],
            check: Callable[[Reply], Any], expects: ReplySpec | None = None) -> dict[str, Any]:
        """Send `step` to each institution in `requests`; their checked answers (an error
        reply or a failed check is a rejection with its reason; a data or config error of
        the institution stops the run after this step)."""
        base = {k: v for k, v in self.config.items() if k != "secure"}
        tasks = {c: Task(self.run_id, 0, 0, TaskKind.PREPARE, c, {},
                         {**base, "secure": {**self.config["secure"], "step": step,
                                             "payload": p}}, expects=expects)
                 for c, p in sorted(requests.items())}
        self.transport.dispatch(list(tasks.values()))
        answers: dict[str, Any] = {}
        for reply in self.transport.poll(self.timeout):
            rejection = None
            task = tasks.get(reply.client_id)
            if task is None or reply.task_id != task.task_id or reply.client_id in answers:
                rejection = Rejection(reply.client_id, ProtocolError.code,
                                      f"not an answer to prepare/{step} now")
            elif reply.error is not None:
                rejection = Rejection.of(reply)
                stop = fatal(reply)
                if stop is not None:
                    self.fatal.append(stop)
            else:
                try:
                    answers[reply.client_id] = check(reply)
                except (ProtocolError, DataError) as e:
                    rejection = Rejection(reply.client_id, e.code, f"prepare/{step}: {e}")
            if rejection is not None:
                log.warning("prepare/%s: %s is out: %s", step, reply.client_id,
                            rejection.reason)
            self.transport.acknowledge(reply, rejection)
        stop_if_fatal(self.fatal)
        return answers


def secure_preprocessing(transport: ServerTransport, config: Mapping[str, Any], run_id: str,
                         min_institutions: int, timeout: float | None,
                         classes: tuple[str, ...] | None, max_levels: int,
                         keys: Mapping[str, bytes] | None = None,
                         ) -> tuple[Preprocessor, Admission]:
    """engine/prepare.federated_preprocessing when `config["secure"]` is set (see above).

    Raises:
        ConfigError: no vocabulary for a categorical column, or too few institutions for the
            threshold; DataError: an institution found its data unusable, or the summed
            statistics could not come from real rows; AggregationError (or
            SecureAggregationAborted): too few institutions took part to the end.
    """
    schema = Schema.from_dict(config["schema"])
    cohort = sorted(transport.clients())
    config = with_threshold(config, len(cohort))
    spec = config["secure"]
    layout = Layout.of(schema, spec["levels"])
    sum_layer = layer(spec["protocol"], keys)
    acc: Accumulator = sum_layer.zero({NAME: ArraySpec((2 * layout.size,), np.dtype(np.float64))})
    sum_layer.begin(acc, 0, int(spec["protocol"].get("seed", 0)), cohort)
    ex = _Exchange(transport, config, run_id, timeout, [])
    fraction = float(config["split"]["test_fraction"])

    def advert(reply: Reply) -> Any:
        rows, test = reply.payload.get("rows"), reply.payload.get("test_rows")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (rows, test)):
            raise DataError("statistics: row counts that are not counts")
        assert isinstance(rows, int) and isinstance(test, int)
        if reply.num_examples != rows or test > plausible_test_rows(rows, fraction):
            raise DataError("statistics: more test rows than the training rows allow at "
                            "data.test_fraction")
        return rows, test, sum_layer.stage_check("advertise", acc, reply.client_id,
                                                  reply.payload.get("stage"))

    adverts = ex.ask("advertise", sum_layer.stage_requests("advertise", acc, cohort), advert)
    counts = {c: (rows, test) for c, (rows, test, _) in adverts.items()}
    alive = sum_layer.stage_collect("advertise", acc, {c: a for c, (_, _, a) in adverts.items()})
    shares = ex.ask("share", sum_layer.stage_requests("share", acc, alive),
                    lambda r: sum_layer.stage_check("share", acc, r.client_id,
                                                    r.payload.get("stage")))
    alive = sum_layer.stage_collect("share", acc, shares)
    want = ArraySpec((2 * layout.size,), FIXED.dtype)

    def masked(reply: Reply) -> Any:
        update = reply.update or {}
        got = update.get(NAME)
        if (set(update) != {NAME} or got is None or got.dtype != want.dtype
                or got.shape != want.shape):
            raise ProtocolError("prepare: the masked statistics are not the vector expected")
        return got

    inputs = ex.ask("masked", {c: sum_layer.fit_config(acc, c)["secagg"] for c in alive},
                    masked, ReplySpec({NAME: want}, want.dtype.itemsize * want.shape[0]))
    for c in sorted(inputs):
        sum_layer.accumulate(acc, {NAME: inputs[c]})
    received = sorted(inputs)
    reveals = ex.ask("unmask", sum_layer.stage_requests("unmask", acc, received),
                     lambda r: sum_layer.stage_check("unmask", acc, r.client_id,
                                                     r.payload.get("stage")))
    sum_layer.stage_collect("unmask", acc, reveals)
    _, sums, _ = sum_layer.finalize(None, acc)
    if len(received) < min_institutions:
        raise AggregationError(f"prepare: {len(received)} institutions' statistics were "
                               f"summed, need {min_institutions}")
    rows = sum(counts[c][0] for c in received)
    merged = layout.statistics(unlimb(sums[NAME]), rows)
    try:
        check_statistics(merged, schema, max_levels, error=len(received) * FIXED.precision)
    except DataError as e:
        raise DataError(f"the summed statistics of {len(received)} institutions are not "
                        f"plausible ({e}); secure aggregation hides which institution sent "
                        f"them") from None
    log.info("prepare: the statistics of %d institutions were summed with SecAgg+ (the server "
             "saw their row counts and masked vectors only)", len(received))
    admission = Admission({c: counts[c][0] for c in received},
                          {c: counts[c][1] for c in received}, {})
    return Preprocessor.from_statistics(merged, schema, classes), admission


SECURE = ("secagg+", "secagg", "ckks")


def prepare_spec(aggregation: Any, data: Any, seed: int, schema: Schema) -> dict[str, Any] | None:
    """What the prepare tasks carry to run secure preprocessing (None: preprocessing in the
    clear, for secure = "none" only): for [aggregation] secure = "secagg+" / "secagg", the
    run's threshold and neighbours; for "ckks" (whose fit rounds encrypt, but whose
    statistics are summed with SecAgg, everyone's neighbour) the run's threshold if it sets
    one, else a majority of the cohort (`with_threshold`); and the declared [data] levels.

    Raises:
        ConfigError: secure aggregation without the levels of a categorical column (or of a
            classification target without positive_above): refused before any task is
            sent, naming the columns and the TOML line to add, never a value.
    """
    if aggregation.secure not in SECURE:
        return None
    vocabulary = dict(data.levels or {})
    missing = missing_vocabulary(schema, vocabulary)
    if missing:
        raise ConfigError(levels_needed(aggregation.secure, missing))
    neighbours = aggregation.neighbours if aggregation.secure == "secagg+" else None
    return {"protocol": {"threshold": aggregation.threshold, "neighbours": neighbours,
                         "seed": derive_seed(seed, 0, "secure-preprocessing")},
            "levels": {c: [_label(v) for v in vocabulary[c]] for c in vocabulary}}


def with_threshold(config: Mapping[str, Any], cohort: int) -> Mapping[str, Any]:
    """`config` with a SecAgg threshold for a protocol that left it open (a CKKS run that
    sets none): a majority of each institution's neighbourhood, at least 2.

    Raises:
        ConfigError: fewer than 3 institutions (a threshold of 2 needs 3): the statistics
            cannot be summed securely, and a secure run never sends them in the clear.
    """
    protocol = config["secure"]["protocol"]
    if protocol.get("threshold") is not None:
        return config
    if cohort < 3:
        raise ConfigError(f"secure preprocessing sums the statistics with SecAgg, which needs "
                          f"at least 3 institutions, {cohort} available (a secure run never "
                          f"sends them in the clear)")
    threshold = max(2, (cohort - 1) // 2 + 1)
    return {**config, "secure": {**config["secure"],
                                 "protocol": {**protocol, "threshold": threshold}}}


def _label(v: object) -> str:
    """A declared level written as institutions write labels (as_labels: 1.0 -> "1")."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
        return str(int(v))
    return str(v)
