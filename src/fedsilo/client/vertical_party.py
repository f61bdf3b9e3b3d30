"""An institution's side of a deployed vertical run (run.mode = "vertical" over `fedsilo
server` / `fedsilo client`): the stages of `fedsilo.vertical.stages`, one task each.

Its table never leaves: what leaves is its signed channel key, its PSI messages, and the
protocol's messages (CKKS ciphertexts and masked values for Hetero-LR; activations and their
gradients for split learning), every party-to-party message sealed to its receiver
(`vertical_channel.Channel`). Only the arbiter's masked gradients (Hetero-LR) and the label
holder's test metrics reach the server in a form it can read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.aggregation.secure.identity import Credentials
from fedsilo.client.policy import PolicyRefused, SitePolicy
from fedsilo.client.vertical_channel import Channel
from fedsilo.core.messages import Reply, Task
from fedsilo.errors import ConfigError, ProtocolError
from fedsilo.evaluation.metrics import compute
from fedsilo.vertical import stages as st
from fedsilo.vertical.batches import batch_order
from fedsilo.vertical.local import Layout, ids_of, label_scale, labelled, party_block
from fedsilo.vertical.protocols import Recipe, fit_predict
from fedsilo.vertical.psi import PsiParty, PsiResponse, new_salt, pack, unpack

Blobs = Mapping[str, np.ndarray]


def blob(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def raw(arrays: Blobs, name: str) -> bytes:
    """The bytes of array `name` of a task (uint8, one dimension)."""
    a = arrays.get(name)
    if a is None or a.dtype != np.uint8 or a.ndim != 1:
        raise ProtocolError(f"vertical run: the task lacks '{name}' (or it is not bytes)")
    return a.tobytes()


@dataclass(frozen=True)
class Spec:
    """What the server's open task says about the run (all of it from the run config)."""

    parties: tuple[str, ...]  # the top's input order: the label holder first
    label_holder: str
    layout: Layout
    recipe: Recipe

    @classmethod
    def from_dict(cls, raw_spec: Mapping[str, Any]) -> Spec:
        try:
            spec = cls(tuple(str(p) for p in raw_spec["parties"]), str(raw_spec["label_holder"]),
                       Layout.from_dict(raw_spec["layout"]), Recipe.from_dict(raw_spec["recipe"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"vertical run: the open task is malformed: {e!r}") from None
        if spec.parties[:1] != (spec.label_holder,):
            raise ConfigError("vertical run: the label holder must come first")
        if spec.layout.task != spec.recipe.task:
            raise ConfigError("vertical run: the layout and the recipe name different tasks")
        return spec

    def check(self, policy: SitePolicy | None, party: str) -> None:
        """Refuse, before reading any data, a run this party's policy does not allow."""
        if self.recipe.protocol == "trees":
            raise ConfigError("vertical XGBoost runs in simulation only in this release")
        if party not in self.parties:
            raise ConfigError(f"vertical run: '{party}' is not one of its parties")
        if policy is None:
            return
        policy.check_vertical(self.recipe.protocol, self.recipe.kind, self.recipe.epochs)
        if party == self.label_holder and not policy.evaluation:
            raise PolicyRefused("site policy: evaluation on this institution's data is not "
                                "allowed (evaluation = false); a vertical run's label holder "
                                "evaluates")


class VerticalParty:
    """One institution's state across the stages of one vertical run."""

    def __init__(self, name: str, run_id: str, spec: Spec, table: pd.DataFrame,
                 credentials: Credentials | None, policy: SitePolicy | None) -> None:
        self.name, self.spec, self.policy = name, spec, policy
        self.holder = name == spec.label_holder
        self.table = labelled(table, spec.layout, name, self.holder)
        self.ids = ids_of(self.table, spec.layout)
        self.channel = Channel(run_id, name, credentials)
        self.others = [p for p in spec.parties if p != spec.label_holder]
        self._psi: PsiParty | None = None
        self._context = b""
        self._model: Any = None  # the protocol's role object
        self._batches: list[np.ndarray] = []
        self._plan = [(st.PEERS, 0), (st.ALIGN, 0)] if self.holder else [
            (st.PEERS, 0), (st.RESPOND, 0), (st.ROWS, 0)]
        self._at = 0  # the index in _plan of the stage expected next
        self._handlers: dict[str, Callable[[Task], Reply]] = {
            st.PEERS: self._peers, st.RESPOND: self._respond, st.ALIGN: self._align,
            st.ROWS: self._rows, st.HLR_FORWARD: self._hlr_forward,
            st.HLR_RESIDUAL: self._hlr_residual, st.HLR_GRADIENT: self._hlr_gradient,
            st.HLR_FINISH: self._hlr_finish, st.SPLIT_FORWARD: self._split_forward,
            st.SPLIT_STEP: self._split_step, st.SPLIT_FINISH: self._split_finish,
            st.PREDICT: self._predict, st.EVALUATE: self._evaluate}

    def opened(self, task: Task) -> Reply:
        self._context = task.params["context"].tobytes() if "context" in task.params else b""
        return self._reply(task, payload={"key": self.channel.advertisement()})

    def handle(self, task: Task) -> Reply:
        """Answer the stage expected next, once: a stage out of order, repeated or skipped
        (a server replaying a message, or asking twice for noised activations) is refused."""
        assert task.body is not None
        stage, step = task.stage.stage, int(task.stage.payload.get("step", 0))
        if self._at >= len(self._plan) or (stage, step) != self._plan[self._at]:
            expected = self._plan[self._at] if self._at < len(self._plan) else ("none", 0)
            raise ProtocolError(f"vertical run: stage {stage} step {step} out of order "
                                f"(expected {expected[0]} step {expected[1]})")
        self._at += 1
        return self._handlers[stage](task)

    # --- private set intersection -------------------------------------------------------

    def _peers(self, task: Task) -> Reply:
        keys = task.stage.payload.get("keys")
        if not isinstance(keys, Mapping) or set(keys) != set(self.spec.parties):
            raise ProtocolError("vertical run: the peers task must carry every party's key")
        self.channel.accept(keys)
        if not self.holder:
            return self._reply(task)
        salt = new_salt()
        self._psi = PsiParty(self.ids, salt, name=self.name)
        request = pack(self._psi.blinded_ids())
        update = {}
        for peer in self.others:
            update[f"salt.{peer}"] = blob(self.channel.seal(peer, "psi.salt", 0, salt))
            update[f"request.{peer}"] = blob(self.channel.seal(peer, "psi.request", 0, request))
        return self._reply(task, update)

    def _respond(self, task: Task) -> Reply:
        hub = self.spec.label_holder
        salt = self.channel.open(hub, "psi.salt", 0, raw(task.params, "salt"))
        request = unpack(self.channel.open(hub, "psi.request", 0, raw(task.params, "request")))
        self._psi = PsiParty(self.ids, salt, name=self.name)
        response = self._psi.respond(request)
        return self._reply(task, {
            "double": blob(self.channel.seal(hub, "psi.double", 0, pack(response.double))),
            "own": blob(self.channel.seal(hub, "psi.own", 0, pack(response.own)))})

    def _align(self, task: Task) -> Reply:
        if self._psi is None:
            raise ProtocolError("vertical run: align before the PSI request")
        matches, sizes = {}, {}
        for peer in self.others:
            double = unpack(self.channel.open(peer, "psi.double", 0,
                                              raw(task.params, f"double.{peer}")))
            own = unpack(self.channel.open(peer, "psi.own", 0, raw(task.params, f"own.{peer}")))
            matches[peer] = self._psi.match(PsiResponse(double, own))
            sizes[peer] = len(own)
        alignment = self._psi.align(matches, sizes)
        update = {f"positions.{peer}": blob(self.channel.seal(
            peer, "psi.positions", 0, np.asarray(pos, np.int64).tobytes()))
            for peer, pos in alignment.positions.items()}
        return self._reply(task, update, self._ready(alignment.rows))

    def _rows(self, task: Task) -> Reply:
        if self._psi is None:
            raise ProtocolError("vertical run: rows before the PSI response")
        data = self.channel.open(self.spec.label_holder, "psi.positions", 0,
                                 raw(task.params, "positions"))
        if len(data) % 8:
            raise ProtocolError("vertical run: malformed PSI positions")
        positions = np.frombuffer(data, np.int64).tolist()
        return self._reply(task, payload=self._ready(self._psi.rows_for(positions)))

    def _ready(self, rows: list[int]) -> dict[str, Any]:
        """The shared rows in the common order, split and standardised here; the plan of the
        training stages that follow."""
        s, r = self.spec, self.spec.recipe
        block = party_block(self.table, rows, s.layout, self.name, self.holder)
        self.test = block.test
        self.x_train, self.x_test = block.x[~block.test], block.x[block.test]
        if block.y is not None:
            self.y_test = block.y[block.test]
            self.mean, self.std = label_scale(block.y[~block.test], r.task)
            self.y_train = (block.y[~block.test] - self.mean) / self.std
        self._batches = list(batch_order(len(self.x_train), r.batch_size, r.epochs, r.seed))
        smallest = min((len(b) for b in self._batches), default=0)
        if r.protocol == "hetero_lr" and smallest <= self.x_train.shape[1] + self.holder:
            raise ConfigError(f"vertical run: a mini-batch of {smallest} rows is not larger "
                              f"than this party's {self.x_train.shape[1]} columns: its gradient "
                              f"would reveal the residuals (and so the labels); raise "
                              f"vertical.batch_size")
        self._plan += self._training_plan()
        return {"rows": len(block.x), "columns": len(block.columns)}

    def _training_plan(self) -> list[tuple[str, int]]:
        steps = range(len(self._batches))
        if self.spec.recipe.protocol == "hetero_lr":
            per_step = ([(st.HLR_RESIDUAL, t) for t in steps] if self.holder else
                        [x for t in steps for x in ((st.HLR_FORWARD, t), (st.HLR_GRADIENT, t))])
            end = [(st.HLR_FINISH, 0)]
        else:
            per_step = [(st.SPLIT_STEP if self.holder else st.SPLIT_FORWARD, t) for t in steps]
            end = [] if self.holder else [(st.SPLIT_FINISH, 0)]
        return per_step + end + [(st.EVALUATE if self.holder else st.PREDICT, 0)]

    # --- Hetero-LR ----------------------------------------------------------------------

    def _hetero(self) -> Any:
        from fedsilo.vertical.hetero_lr import FeatureHolder, LabelHolder

        if self._model is None:
            if not self._context:
                raise ProtocolError("vertical run: Hetero-LR without the arbiter's public key")
            self._model = (LabelHolder(self.name, self.x_train, self.y_train,
                                       self.spec.recipe.task, self._context)
                           if self.holder else
                           FeatureHolder(self.name, self.x_train, self._context))
        return self._model

    def _apply_sums(self, task: Task, due: bool) -> None:
        """Apply the arbiter's sums (`sums.0`, `sums.1`, ...) for this party's last gradient
        request (`due`: there is one, and the task must carry them; else it must not)."""
        count = sum(k.startswith("sums.") for k in task.params)
        if bool(count) != due:
            raise ProtocolError("vertical run: the arbiter's sums are " +
                                ("missing" if due else "unexpected"))
        if count:
            try:
                replies = [np.asarray(task.params[f"sums.{i}"], np.float64)
                           for i in range(count)]
            except KeyError:
                raise ProtocolError("vertical run: the arbiter's sums are misnumbered") from None
            self._hetero().apply_gradient(replies, self.spec.recipe.lr)

    def _step(self, task: Task) -> tuple[int, np.ndarray]:
        step = int(task.stage.payload.get("step", -1))
        if not 0 <= step < len(self._batches):
            raise ProtocolError(f"vertical run: step {step} out of range")
        return step, self._batches[step]

    def _hlr_forward(self, task: Task) -> Reply:
        step, batch = self._step(task)
        self._apply_sums(task, step > 0)
        m = self._hetero().forward(batch, self.spec.label_holder)
        return self._reply(task, {"forward": blob(self.channel.seal(
            self.spec.label_holder, "enc_forward", step, m.payload))})

    def _hlr_residual(self, task: Task) -> Reply:
        step, batch = self._step(task)
        self._apply_sums(task, step > 0)
        lh = self._hetero()
        forwards = {fh: self.channel.open(fh, "enc_forward", step, raw(task.params,
                                                                     f"forward.{fh}"))
                    for fh in self.others}
        update = {f"residual.{m.receiver}": blob(self.channel.seal(
            m.receiver, "enc_residual", step, m.payload))
            for m in lh.residual(batch, forwards, self.others)}
        return self._masked(task, lh.masked_gradient_requests(batch, lh.own_residual()), update)

    def _hlr_gradient(self, task: Task) -> Reply:
        step, batch = self._step(task)
        d = self.channel.open(self.spec.label_holder, "enc_residual", step,
                              raw(task.params, "residual"))
        return self._masked(task, self._hetero().masked_gradient_requests(batch, d), {})

    def _masked(self, task: Task, requests: list[Any], update: dict[str, np.ndarray]) -> Reply:
        """The masked gradient requests, for the arbiter (the server) to decrypt."""
        for i, m in enumerate(requests):
            update[f"masked.{i}"] = blob(m.payload)
        layout = [[int(m.meta["block"]), int(m.meta["blocks"])] for m in requests]
        return self._reply(task, update, {"layout": layout})

    def _hlr_finish(self, task: Task) -> Reply:
        self._apply_sums(task, bool(self._batches))
        return self._reply(task)

    # --- split learning -----------------------------------------------------------------

    def _split(self) -> Any:
        from fedsilo.vertical.splitnn import BottomParty, TopParty, new_bottom, new_top, noise_seed

        if self._model is None:
            r, order = self.spec.recipe, self.spec.parties
            index = order.index(self.name)
            bottom = BottomParty(self.name, self.x_train,
                                 new_bottom(self.x_train.shape[1], r.hidden, r.seed, self.name),
                                 r.lr, noise_std=0.0 if self.holder else r.noise,
                                 seed=noise_seed(r.seed, index))
            if self.holder:
                outputs = 1 if r.task != "multiclass" else int(self.y_train.max()) + 1
                top = new_top(r.hidden * len(order), outputs, r.seed)
                self._model = TopParty(self.y_train, top, r.lr, r.task, order, own=bottom)
            else:
                self._model = bottom
        return self._model

    def _backward(self, task: Task, step: int) -> None:
        """Apply the label holder's gradients for this party's activations of `step` (-1: none
        due, and none may come)."""
        if ("gradient" in task.params) != (step >= 0):
            raise ProtocolError("vertical run: the gradients are " +
                                ("missing" if step >= 0 else "unexpected"))
        if step >= 0:
            g = self.channel.open(self.spec.label_holder, "gradients", step,
                                  raw(task.params, "gradient"))
            width = self.spec.recipe.hidden
            self._split().backward(np.frombuffer(g, np.float32).reshape(-1, width).copy())

    def _split_forward(self, task: Task) -> Reply:
        step, batch = self._step(task)
        self._backward(task, step - 1)
        a = self._split().forward(batch)
        return self._reply(task, {"activations": blob(self.channel.seal(
            self.spec.label_holder, "activations", step, a.tobytes()))})

    def _split_step(self, task: Task) -> Reply:
        step, batch = self._step(task)
        acts = {fh: self._floats(fh, "activations", step, raw(task.params, f"activations.{fh}"),
                                 len(batch)) for fh in self.others}
        grads = self._split().step(acts, batch)
        return self._reply(task, {f"gradient.{fh}": blob(self.channel.seal(
            fh, "gradients", step, np.ascontiguousarray(grads[fh], np.float32).tobytes()))
            for fh in self.others})

    def _split_finish(self, task: Task) -> Reply:
        self._backward(task, len(self._batches) - 1)
        return self._reply(task)

    def _floats(self, sender: str, kind: str, step: int, sealed: bytes, rows: int) -> np.ndarray:
        data = self.channel.open(sender, kind, step, sealed)
        width = self.spec.recipe.hidden
        if len(data) != rows * width * 4:
            raise ProtocolError(f"vertical run: {kind} from '{sender}' have the wrong size")
        return np.frombuffer(data, np.float32).reshape(rows, width)

    # --- evaluation ---------------------------------------------------------------------

    def _predict(self, task: Task) -> Reply:
        if self.spec.recipe.protocol == "hetero_lr":
            part = (self.x_test.astype(np.float64) @ self._hetero().w).astype(np.float64)
        else:
            part = self._bottom_out(self._split())
        return self._reply(task, {"scores": blob(self.channel.seal(
            self.spec.label_holder, "scores", 0, np.ascontiguousarray(part).tobytes()))})

    def _evaluate(self, task: Task) -> Reply:
        if not self.holder:
            raise ProtocolError("vertical run: only the label holder evaluates")
        r, rows = self.spec.recipe, len(self.x_test)
        if r.protocol == "hetero_lr":
            w = self._hetero().w
            u = self.x_test.astype(np.float64) @ w[:-1] + w[-1]
            for fh in self.others:
                data = self.channel.open(fh, "scores", 0, raw(task.params, f"scores.{fh}"))
                if len(data) != rows * 8:
                    raise ProtocolError(f"vertical run: scores from '{fh}' have the wrong size")
                u = u + np.frombuffer(data, np.float64)
            pred = 1.0 / (1.0 + np.exp(-u)) if r.task == "binary" else u
        else:
            pred = self._top_predict(task, rows)
        alone = fit_predict(r, {self.name: self.x_train}, {self.name: self.x_test},
                            self.y_train, self.name)
        metrics = {label: self._metrics(p) for label, p in (("vertical", pred),
                                                             ("label holder alone", alone))}
        return self._reply(task, payload={"metrics": metrics}, examples=rows)

    def _bottom_out(self, party: Any) -> np.ndarray:
        import torch

        bottom = party.own.bottom if self.holder else party.bottom
        bottom.eval()
        with torch.no_grad():
            h = bottom(torch.as_tensor(self.x_test, dtype=torch.float32))
        return np.asarray(h.numpy(), np.float32)

    def _top_predict(self, task: Task, rows: int) -> np.ndarray:
        import torch

        top = self._split()
        hs = [torch.from_numpy(self._bottom_out(top).copy()) if p == self.name else
              torch.from_numpy(self._floats(p, "scores", 0, raw(task.params, f"scores.{p}"),
                                            rows).copy())
              for p in self.spec.parties]
        top.top.eval()
        with torch.no_grad():
            out = top.top(torch.cat(hs, dim=1))
        if self.spec.recipe.task == "binary":
            return torch.sigmoid(out.reshape(-1)).numpy().astype(np.float64)
        if self.spec.recipe.task == "multiclass":
            return torch.softmax(out, dim=1).numpy().astype(np.float64)
        return out.reshape(-1).numpy().astype(np.float64)

    def _metrics(self, pred: np.ndarray) -> dict[str, float]:
        if self.spec.recipe.task == "regression":
            pred = pred * self.std + self.mean
        m = compute(self.spec.recipe.task, self.y_test, pred)
        return self.policy.allowed_metrics(m) if self.policy is not None else m

    def _reply(self, task: Task, update: dict[str, np.ndarray] | None = None,
               payload: dict[str, Any] | None = None, examples: int = 0) -> Reply:
        return Reply(task.task_id, self.name, task.round, task.model_version, examples,
                     update=update or None, payload=payload or {})
