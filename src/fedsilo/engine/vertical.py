"""The server's half of a deployed vertical run (run.mode = "vertical" over any transport):
it drives the stages of `fedsilo.vertical.stages`, relays the parties' sealed messages (it
cannot open them), and in Hetero-LR is the arbiter: it holds the CKKS secret key and decrypts
only masked gradients. It learns the shared row count, each party's column count, and the
label holder's test metrics; never an ID, a feature, a label or a weight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsilo.core.messages import Reply, ReplySpec, StageTask, Task, TaskKind
from fedsilo.core.params import ArraySpec, Params
from fedsilo.core.transport import ServerTransport
from fedsilo.engine.stages import ask_all
from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.vertical import stages as st
from fedsilo.vertical.local import Layout, held_out_count
from fedsilo.vertical.protocols import Recipe

PSI_BYTES = 1 << 30      # a PSI reply: 32 bytes per ID (and the AES-GCM overhead)
CIPHERTEXT_BYTES = 16 << 20  # one serialised CKKS vector, with room


@dataclass
class VerticalOutcome:
    """What the server learnt: the label holder's test metrics (per reference), the shared
    rows, each party's column count, the training's seconds, and the bytes it relayed or
    received per stage."""

    metrics: dict[str, dict[str, float]]
    shared: int
    columns: dict[str, int]
    seconds: float
    wire: dict[str, int] = field(default_factory=dict)


class _Relay:
    """Stages as tasks over the transport; the first refusal stops the run with its reason."""

    def __init__(self, transport: ServerTransport, run_id: str, timeout: float | None) -> None:
        self.transport, self.run_id, self.timeout = transport, run_id, timeout
        self.wire: dict[str, int] = {}

    def ask(self, stage: str, asks: Mapping[str, tuple[Params, dict[str, Any], ReplySpec]],
            step: int = 0) -> dict[str, Reply]:
        tasks = [Task(self.run_id, step + 1, 0, TaskKind.STAGE, name, params, expects=spec,
                      body=StageTask(stage, payload))
                 for name, (params, payload, spec) in asks.items()]
        replies = ask_all(self.transport, tasks, self.timeout, f"vertical run, stage {stage}")
        for name, reply in replies.items():  # an empty reply passes the transport's check
            want = set(asks[name][2].arrays or {})
            if set(reply.update or {}) != want:
                raise ProtocolError(f"vertical run, stage {stage}: {name} did not send "
                                    f"{sorted(want) or 'nothing'}")
        kind = stage.removeprefix(st.PREFIX)
        self.wire[kind] = self.wire.get(kind, 0) + sum(
            a.nbytes for r in replies.values() for a in (r.update or {}).values())
        return replies


def _bytes_spec(names: list[str], each: int) -> ReplySpec:
    return ReplySpec({n: ArraySpec((-1,), np.dtype(np.uint8)) for n in names},
                     max(1, len(names)) * each)


NONE = ReplySpec({}, 0)


def run_vertical_session(spec: Mapping[str, Any], transport: ServerTransport, run_id: str,
                         timeout: float | None = None,
                         read: Mapping[str, Any] | None = None) -> VerticalOutcome:
    """`spec`: the run as each party's open task carries it (config.vertical.open_spec).
    Align the parties' rows, train the vertical model across them, and ask the label
    holder for its test metrics.

    Raises:
        ConfigError: a party is not connected, or the protocol cannot be deployed.
        AggregationError: a party refused a stage (its reason).
    """
    recipe, layout = Recipe.from_dict(spec["recipe"]), Layout.from_dict(spec["layout"])
    if recipe.protocol == "trees":
        raise ConfigError("vertical XGBoost runs in simulation only in this release (fedsilo "
                          "run); deploy Hetero-LR (logistic/linear regression) or split "
                          "learning (mlp)")
    parties: list[str] = spec["parties"]
    holder, others = parties[0], parties[1:]
    missing = sorted(set(parties) - set(transport.clients()))
    if missing:
        raise ConfigError(f"vertical run: every party must take part; not connected: "
                          f"{', '.join(missing)}")
    relay = _Relay(transport, run_id, timeout)
    arbiter = None
    opening: Params = {}
    if recipe.protocol == "hetero_lr":
        from fedsilo.vertical.hetero_lr import Arbiter

        arbiter = Arbiter()
        if recipe.batch_size > arbiter.params.slots:
            raise ConfigError(f"vertical.batch_size {recipe.batch_size} exceeds the "
                              f"{arbiter.params.slots} CKKS slots of Hetero-LR")
        opening = {"context": np.frombuffer(arbiter.public_context(), np.uint8)}
    payload = {"spec": spec, "read": dict(read or {})}
    keys = relay.ask(st.OPEN, {p: (opening, payload, NONE) for p in parties})
    adverts = {p: keys[p].payload.get("key") for p in parties}
    hub_names = [f"{k}.{p}" for p in others for k in ("salt", "request")]
    peers = relay.ask(st.PEERS, {p: ({}, {"keys": adverts},
                                     _bytes_spec(hub_names, PSI_BYTES) if p == holder else NONE)
                                 for p in parties})
    hub = peers[holder].update or {}
    responses = relay.ask(st.RESPOND, {p: ({"salt": hub[f"salt.{p}"],
                                            "request": hub[f"request.{p}"]}, {},
                                           _bytes_spec(["double", "own"], PSI_BYTES))
                                       for p in others})
    align_in = {f"{k}.{p}": (responses[p].update or {})[k] for p in others
                for k in ("double", "own")}
    aligned = relay.ask(st.ALIGN, {holder: (align_in, {}, _bytes_spec(
        [f"positions.{p}" for p in others], PSI_BYTES))})
    positions = aligned[holder].update or {}
    rows = relay.ask(st.ROWS, {p: ({"positions": positions[f"positions.{p}"]}, {}, NONE)
                               for p in others})
    shape = {p: (r.payload.get("rows"), r.payload.get("columns"))
             for p, r in {**rows, holder: aligned[holder]}.items()}
    counts = {s[0] for s in shape.values()}
    if len(counts) != 1 or not all(isinstance(s[0], int) and isinstance(s[1], int)
                                   for s in shape.values()):
        raise ProtocolError(f"vertical run: the parties disagree on the shared rows "
                            f"({sorted(map(str, counts))})")
    shared = int(counts.pop() or 0)
    columns = {p: int(shape[p][1]) for p in parties}  # type: ignore[arg-type]
    train_rows = shared - held_out_count(shared, layout.test_fraction)
    batches = _batch_sizes(train_rows, recipe)
    start = time.monotonic()
    if arbiter is not None:
        _hetero(relay, arbiter, holder, others, columns, batches)
    else:
        _split(relay, holder, others, batches, recipe.hidden)
    scores = relay.ask(st.PREDICT, {p: ({}, {}, _bytes_spec(["scores"], 8 * shared * max(
        1, recipe.hidden) + 64)) for p in others})
    evaluation = relay.ask(st.EVALUATE, {holder: (
        {f"scores.{p}": (scores[p].update or {})["scores"] for p in others}, {}, NONE)})
    metrics = evaluation[holder].payload.get("metrics")
    if not isinstance(metrics, Mapping) or set(metrics) != set(st.REFERENCES):
        raise ProtocolError("vertical run: the label holder's evaluation carries no metrics")
    try:
        result = {k: {str(m): float(v) for m, v in dict(metrics[k]).items()}
                  for k in st.REFERENCES}
    except (TypeError, ValueError):
        raise ProtocolError("vertical run: the label holder's metrics are not numbers") from None
    return VerticalOutcome(result, shared, columns, time.monotonic() - start, relay.wire)


def _batch_sizes(n: int, recipe: Recipe) -> list[int]:
    """The rows of every mini-batch, in order (the parties derive the same order)."""
    per_epoch = [min(recipe.batch_size, n - s) for s in range(0, n, recipe.batch_size)]
    return per_epoch * recipe.epochs


def _hetero(relay: _Relay, arbiter: Any, holder: str, others: list[str],
            columns: Mapping[str, int], batches: list[int]) -> None:
    """Hetero-LR: per mini-batch forward, residual, gradient; the arbiter decrypts the
    masked gradients and sends their sums back with the party's next task."""
    slots = arbiter.params.slots
    sums: dict[str, Params] = {p: {} for p in [holder, *others]}

    def decrypt(reply: Reply, count: int, rows: int) -> Params:
        """The block sums of a party's masked gradient requests, decrypted only in the
        protocol's layout: `rows` slots per block, slots // rows blocks."""
        layout = reply.payload.get("layout")
        if layout != [[rows, slots // rows]] * count:
            raise ProtocolError(f"vertical run: {reply.client_id} sent a masked gradient in "
                                f"another layout than the protocol's")
        update = reply.update or {}
        return {f"sums.{i}": arbiter.decrypt_masked(update[f"masked.{i}"].tobytes(),
                                                    int(block), int(blocks))
                for i, (block, blocks) in enumerate(layout)}

    for step, rows in enumerate(batches):
        k = slots // rows
        chunks = {p: math.ceil((columns[p] + (p == holder)) / k) for p in sums}
        forwards = relay.ask(st.HLR_FORWARD, {p: (sums[p], {"step": step}, _bytes_spec(
            ["forward"], CIPHERTEXT_BYTES)) for p in others}, step)
        residual_names = [f"residual.{p}" for p in others]
        masked = [f"masked.{i}" for i in range(chunks[holder])]
        residual = relay.ask(st.HLR_RESIDUAL, {holder: (
            {**sums[holder], **{f"forward.{p}": (forwards[p].update or {})["forward"]
                                for p in others}},
            {"step": step}, _bytes_spec(residual_names + masked, CIPHERTEXT_BYTES))}, step)
        sums[holder] = decrypt(residual[holder], chunks[holder], rows)
        update = residual[holder].update or {}
        gradients = relay.ask(st.HLR_GRADIENT, {p: (
            {"residual": update[f"residual.{p}"]}, {"step": step},
            _bytes_spec([f"masked.{i}" for i in range(chunks[p])], CIPHERTEXT_BYTES))
            for p in others}, step)
        for p in others:
            sums[p] = decrypt(gradients[p], chunks[p], rows)
    relay.ask(st.HLR_FINISH, {p: (sums[p], {}, NONE) for p in sums}, len(batches))


def _split(relay: _Relay, holder: str, others: list[str], batches: list[int],
           hidden: int) -> None:
    """Split learning: per mini-batch the feature holders' activations to the label holder,
    the gradients back with their next task."""
    gradients: dict[str, Params] = {p: {} for p in others}
    for step, rows in enumerate(batches):
        size = 4 * rows * hidden + 64  # float32 activations, sealed
        acts = relay.ask(st.SPLIT_FORWARD, {p: (gradients[p], {"step": step},
                                                _bytes_spec(["activations"], size))
                                            for p in others}, step)
        back = relay.ask(st.SPLIT_STEP, {holder: (
            {f"activations.{p}": (acts[p].update or {})["activations"] for p in others},
            {"step": step}, _bytes_spec([f"gradient.{p}" for p in others], size))}, step)
        update = back[holder].update or {}
        gradients = {p: {"gradient": update[f"gradient.{p}"]} for p in others}
    relay.ask(st.SPLIT_FINISH, {p: (gradients[p], {}, NONE) for p in others}, len(batches))
