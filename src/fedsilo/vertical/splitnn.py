"""Split learning (SplitNN) for a vertical federation: parties hold different columns of the
same, already aligned rows (see `fedsilo.vertical.psi`); one of them, the label holder, holds the
labels.

Vepakomma et al., "Split learning for health" (2018), the vertical ("vanilla, label at the top")
configuration, as in NVFlare's split-learning example:

    party k (feature holder)   h_k = bottom_k(x_k[batch])         -> sends h_k (+ noise)
    label holder               z   = top(concat_k h_k)            (its own h_L never leaves it)
                               L   = loss(z, y[batch]); steps the top
                               g_k = dL/dh_k                      -> sends g_k back to party k
    party k                    backprop g_k through bottom_k; steps its bottom

Every party runs SGD on its own parameters only; the mini-batch order is shared (agreed from a
seed, `batch_order`), so every party knows which of its rows make the batch. The top's input is
the parties' activations concatenated along the columns in a fixed party order (the order of
`blocks` in `fit_splitnn`).

The classes here do no I/O: a message is a float32 `np.ndarray` of shape (batch, width), so the
same protocol runs in process (`fit_splitnn`, which records every message in `wire`) and later
over a transport.

What each party sees (semi-honest parties):

- the label holder: the activations h_k (plus noise) of every other party's bottom, for every
  batch, and the rows' positions; never their features or their bottom's weights. Activations
  are a learned function of the features and can be inverted or used for attribute inference
  (model inversion / feature reconstruction, e.g. He et al. 2019 "Model inversion attacks against
  collaborative inference"), especially with shallow bottoms.
- a feature holder: the gradients g_k w.r.t. its own activations, never the labels or the top.
  These gradients DO leak label information: for a binary task with a linear top, the sign and
  norm of g_k separate the classes (Li et al. 2022 "Label leakage and protection in two-party
  split learning", norm and direction attacks; Fu et al. 2022 "Label inference attacks against
  vertical federated learning"). Split learning is not label-private without a defence on the
  gradients (e.g. Marvell, gradient noise), which this module does not implement.
- the wire: activations and gradients only, never a raw feature value or a label.

`noise_std` adds Gaussian noise N(0, noise_std^2) to every activation a feature holder sends,
drawn from the bottom's own seeded generator (the label holder's own activations never cross the
wire, so they are not noised). It is a HEURISTIC against activation inversion: it gives no
formal differential-privacy guarantee unless the activations are clipped to a bounded norm and the
privacy loss is accounted over all batches and epochs, which is not done here. The gradient
w.r.t. the noisy activation is applied to the clean one (additive noise has unit Jacobian).

Not covered: malicious parties (a label holder may send crafted gradients to reconstruct
features, e.g. feature-space hijacking), collusion, and the leakage of the row alignment itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedsilo.core.rng import derive_seed
from fedsilo.errors import ConfigError, DataError, MalformedUpdate, ProtocolError
from fedsilo.vertical.batches import SeedLike, batch_order

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
Kind = Literal["activations", "gradients"]


@dataclass(frozen=True)
class WireMessage:
    """One message between two parties: a float32 (batch, width) array, as bytes."""

    sender: str
    receiver: str
    kind: Kind
    shape: tuple[int, ...]
    payload: bytes = field(repr=False)

    def array(self) -> np.ndarray:
        """The payload decoded (float32, C order)."""
        return np.frombuffer(self.payload, dtype=np.float32).reshape(self.shape)


def _check_message(a: np.ndarray, rows: int, what: str, width: int | None = None) -> np.ndarray:
    """A received (rows, width) float32 array, finite; else MalformedUpdate."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise MalformedUpdate(f"{what}: expected a float32 array, got "
                              f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim != 2 or a.shape[0] != rows or (width is not None and a.shape[1] != width):
        want = f"({rows}, {width if width is not None else 'width'})"
        raise MalformedUpdate(f"{what}: expected shape {want}, got {a.shape}")
    if not np.isfinite(a).all():
        raise MalformedUpdate(f"{what}: contains NaN or Inf")
    return np.ascontiguousarray(a)


def _sgd(module: nn.Module, lr: float) -> torch.optim.Optimizer | None:
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr) if params else None


def _check_lr(lr: float) -> None:
    if not (isinstance(lr, int | float) and np.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")


class BottomParty:
    """A party's bottom model over its own columns `x` (rows aligned with every other party).

    `forward(batch_index)` returns the activations to send (float32, (batch, width)), noised when
    `noise_std > 0`; `backward(grad)` backpropagates the gradient w.r.t. those activations and
    applies one SGD step (learning rate `lr`) to the bottom. One forward, then one backward.
    """

    def __init__(self, name: str, x: np.ndarray, bottom: nn.Module, lr: float,
                 noise_std: float = 0.0, seed: SeedLike = None) -> None:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0:
            raise DataError(f"party {name!r}: features must be a non-empty 2-D array, "
                            f"got shape {x.shape}")
        if not np.isfinite(x).all():
            raise DataError(f"party {name!r}: features contain NaN or Inf")
        _check_lr(lr)
        if not (np.isfinite(noise_std) and noise_std >= 0):
            raise ConfigError(f"noise_std must be >= 0, got {noise_std!r}")
        self.name = name
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.bottom = bottom
        self.lr = float(lr)
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self._opt = _sgd(bottom, self.lr)
        self._pending: torch.Tensor | None = None

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    def forward(self, batch_index: np.ndarray) -> np.ndarray:
        idx = np.asarray(batch_index, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.n_rows:
            raise ProtocolError(f"party {self.name!r}: bad batch index")
        self.bottom.train()
        h = self.bottom(self.x[torch.from_numpy(idx)])
        if h.ndim == 1:
            h = h.unsqueeze(1)
        if h.ndim != 2:
            raise ConfigError(f"party {self.name!r}: bottom must output (batch, width), "
                              f"got {tuple(h.shape)}")
        self._pending = h
        out = h.detach().cpu().numpy().astype(np.float32, copy=True)
        if self.noise_std > 0:
            out += self._rng.normal(0.0, self.noise_std, size=out.shape).astype(np.float32)
        return out

    def backward(self, grad: np.ndarray) -> None:
        if self._pending is None:
            raise ProtocolError(f"party {self.name!r}: gradients received without a forward")
        h, self._pending = self._pending, None
        g = _check_message(grad, h.shape[0], f"gradients for {self.name!r}", h.shape[1])
        if self._opt is None:
            return
        self._opt.zero_grad(set_to_none=True)
        h.backward(torch.from_numpy(g))
        self._opt.step()


def _loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "binary":
        return nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), y)
    if task == "multiclass":
        return nn.functional.cross_entropy(out, y)
    return nn.functional.mse_loss(out.reshape(y.shape) if out.numel() == y.numel() else out, y)


def _labels(y: np.ndarray, task: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] == 0:
        raise DataError("labels must be a non-empty array")
    if task == "multiclass":
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise DataError("multiclass labels must be integers")
        return torch.as_tensor(y.astype(np.int64)).reshape(-1)
    if not np.isfinite(y.astype(np.float64)).all():
        raise DataError("labels contain NaN or Inf")
    if task == "binary":
        if not np.isin(y, (0, 1)).all():
            raise DataError("binary labels must be 0 or 1")
        return torch.as_tensor(y.astype(np.float32)).reshape(-1)
    return torch.as_tensor(y.astype(np.float32))


class TopParty:
    """The label holder: the top model over the concatenated activations, the labels `y`, and
    optionally its own bottom (`own`, a `BottomParty` over its own columns, never on the wire).

    `step(activations, batch_index)` takes the other parties' activations for the batch (keyed
    by party name), runs the top, takes one SGD step on the top (and on its own bottom), and
    returns the gradient w.r.t. each received activation (float32, same shape), keyed by party.
    The top's input columns are the activations in `order` (every party's name, its own too).
    """

    def __init__(self, y: np.ndarray, top: nn.Module, lr: float, task: str,
                 order: Sequence[str], own: BottomParty | None = None) -> None:
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        _check_lr(lr)
        order = tuple(order)
        if len(set(order)) != len(order) or not order:
            raise ConfigError(f"order must name each party once, got {order!r}")
        if own is not None and own.name not in order:
            raise ConfigError(f"own bottom {own.name!r} is not in order {order!r}")
        self.y = _labels(y, task)
        if own is not None and own.n_rows != self.y.shape[0]:
            raise DataError(f"labels have {self.y.shape[0]} rows, own features {own.n_rows}")
        self.top = top
        self.task = task
        self.lr = float(lr)
        self.order = order
        self.own = own
        self.others = tuple(p for p in order if own is None or p != own.name)
        self._opt = _sgd(top, self.lr)
        self._widths: dict[str, int] = {}

    def step(self, activations: Mapping[str, np.ndarray],
             batch_index: np.ndarray) -> dict[str, np.ndarray]:
        idx = np.asarray(batch_index, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= self.y.shape[0]:
            raise ProtocolError("label holder: bad batch index")
        if set(activations) != set(self.others):
            raise ProtocolError(f"label holder: expected activations from {sorted(self.others)}, "
                                f"got {sorted(activations)}")
        received: dict[str, torch.Tensor] = {}
        for name in self.others:
            a = _check_message(activations[name], idx.size, f"activations from {name!r}",
                               self._widths.get(name))
            self._widths.setdefault(name, a.shape[1])
            received[name] = torch.from_numpy(a.copy()).requires_grad_(True)
        own_h = None
        if self.own is not None:
            self.own.forward(idx)
            own_h = self.own._pending
            assert own_h is not None
        inputs = [own_h if self.own is not None and p == self.own.name else received[p]
                  for p in self.order]
        self.top.train()
        out = self.top(torch.cat(inputs, dim=1))  # type: ignore[arg-type]
        loss = _loss(out, self.y[torch.from_numpy(idx)], self.task)
        if self._opt is not None:
            self._opt.zero_grad(set_to_none=True)
        own_params: list[torch.Tensor] = []
        if self.own is not None:
            own_params = [p for p in self.own.bottom.parameters() if p.requires_grad]
            for p in own_params:
                p.grad = None
        loss.backward()
        if self._opt is not None:
            self._opt.step()
        if self.own is not None:
            self.own._pending = None
            if self.own._opt is not None:
                self.own._opt.step()
        self.last_loss = float(loss.detach())
        grads: dict[str, np.ndarray] = {}
        for name, t in received.items():
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            grads[name] = g.numpy().astype(np.float32, copy=True)
        return grads


@dataclass
class SplitNN:
    """The trained modules (the same objects passed to `fit_splitnn`, trained in place), with
    the training loss of every batch. Unpacks as `bottoms, top = fit_splitnn(...)`."""

    bottoms: dict[str, nn.Module]
    top: nn.Module
    order: tuple[str, ...]
    task: str
    label_holder: str
    losses: list[float] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.bottoms, self.top))


def new_bottom(columns: int, hidden: int, seed: int, party: str) -> nn.Module:
    """A party's bottom model (one hidden layer), initialised from the run's seed and the
    party's name alone, so that each party can build its own wherever it runs."""
    torch.manual_seed(derive_seed(seed, "splitnn", "bottom", party))
    return nn.Sequential(nn.Linear(columns, hidden), nn.ReLU())


def new_top(inputs: int, outputs: int, seed: int) -> nn.Module:
    """The label holder's linear top model, initialised from the run's seed."""
    torch.manual_seed(derive_seed(seed, "splitnn", "top"))
    return nn.Linear(inputs, outputs)


def noise_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of the noise party `index` (its place in the top's input order) adds."""
    return np.random.SeedSequence([seed, 1, index])


def _rows(blocks: Mapping[str, np.ndarray]) -> int:
    if not blocks:
        raise DataError("no parties")
    rows = {name: np.asarray(b).shape[0] if np.asarray(b).ndim == 2 else -1
            for name, b in blocks.items()}
    if len(set(rows.values())) != 1 or -1 in rows.values():
        raise DataError(f"blocks must be 2-D with the same number of aligned rows, got {rows}")
    return next(iter(rows.values()))


def fit_splitnn(blocks: Mapping[str, np.ndarray], y: np.ndarray, label_holder: str,
                bottoms: Mapping[str, nn.Module], top: nn.Module, task: str, epochs: int,
                lr: float, batch_size: int, seed: int, noise_std: float = 0.0,
                wire: list[WireMessage] | None = None) -> SplitNN:
    """Train a SplitNN in process: one `BottomParty` per block, the label holder's `TopParty`
    (with its own bottom when `label_holder` is in `blocks`), over the shared `batch_order`.

    The top's input is the bottoms' activations concatenated in the order of `blocks`. Every
    message that crosses between parties is appended to `wire` (when given). `noise_std` noises
    the activations of the feature holders (not the label holder's own). The modules are trained
    in place and returned in a `SplitNN`.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if set(bottoms) != set(blocks):
        raise ConfigError(f"bottoms {sorted(bottoms)} do not match blocks {sorted(blocks)}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be an int >= 0, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    n = _rows(blocks)
    if np.asarray(y).shape[0] != n:
        raise DataError(f"labels have {np.asarray(y).shape[0]} rows, the blocks {n}")
    order = tuple(blocks)
    parties = {name: BottomParty(name, blocks[name], bottoms[name], lr,
                                 noise_std=0.0 if name == label_holder else noise_std,
                                 seed=noise_seed(seed, i))
               for i, name in enumerate(order)}
    top_party = TopParty(y, top, lr, task, order, own=parties.get(label_holder))
    feature_holders = [p for p in order if p != label_holder]
    result = SplitNN(dict(bottoms), top, order, task, label_holder)
    for idx in batch_order(n, batch_size, epochs, seed):
        acts = {}
        for name in feature_holders:
            acts[name] = parties[name].forward(idx)
            if wire is not None:
                wire.append(WireMessage(name, label_holder, "activations", acts[name].shape,
                                        acts[name].tobytes()))
        grads = top_party.step(acts, idx)
        result.losses.append(top_party.last_loss)
        for name in feature_holders:
            if wire is not None:
                wire.append(WireMessage(label_holder, name, "gradients", grads[name].shape,
                                        grads[name].tobytes()))
            parties[name].backward(grads[name])
    return result


def predict_splitnn(blocks: Mapping[str, np.ndarray], bottoms: Mapping[str, nn.Module],
                    top: nn.Module, task: str) -> np.ndarray:
    """Predictions of a trained SplitNN (activations concatenated in the order of `blocks`, as in
    training): P(y=1) of shape (n,) for "binary", class probabilities (n, C) for "multiclass",
    the top's output for "regression" ((n,) when it has one column)."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if set(bottoms) != set(blocks):
        raise ConfigError(f"bottoms {sorted(bottoms)} do not match blocks {sorted(blocks)}")
    _rows(blocks)
    hs = []
    with torch.no_grad():
        for name, x in blocks.items():
            bottoms[name].eval()
            h = bottoms[name](torch.as_tensor(np.asarray(x), dtype=torch.float32))
            hs.append(h.unsqueeze(1) if h.ndim == 1 else h)
        top.eval()
        out = top(torch.cat(hs, dim=1))
        if task == "binary":
            return torch.sigmoid(out.reshape(-1)).numpy()
        if task == "multiclass":
            return torch.softmax(out, dim=1).numpy()
        return (out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out).numpy()
