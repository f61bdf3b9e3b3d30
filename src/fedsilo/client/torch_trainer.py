"""A Trainer for any PyTorch `nn.Module` with a loss chosen by the task (or your own).

In simulation many institutions share one module object (they run one at a time): parameters
are copied in at the start of a task and out at its end, and never otherwise.

BatchNorm rule (`[model] batchnorm`): "average" (default) treats every state_dict entry,
BatchNorm running statistics included, like any parameter. "local" is FedBN (Li et al., "FedBN:
Federated Learning on Non-IID Features via Local Batch Normalization", ICLR 2021): every entry
of a BatchNorm layer (weight, bias, running_mean, running_var, num_batches_tracked) stays in the
institution. Whenever parameters are copied in (fit, gradient, evaluate, predict) the
institution's own BN entries replace the received ones (until its first fit: the received
ones); a fit keeps the trained BN entries here and returns the *received* ones, so the update
(received - returned) is exactly zero there and the server's BN entries do not move under any
mean; a gradient is zero there. The spec of what travels is unchanged (the full state_dict).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedsilo.client.dp_sgd import DPSGD, LocalDP
from fedsilo.client.training import batches, evaluate_on_test
from fedsilo.core.params import Params
from fedsilo.core.trainer import Regularizer, TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError
from fedsilo.evaluation.metrics import MetricFn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> scalar


def _loss_fn(task: str) -> nn.Module:
    if task == "binary":
        return nn.BCEWithLogitsLoss()
    if task == "multiclass":
        return nn.CrossEntropyLoss()
    return nn.MSELoss()


OptimizerFactory = Callable[[Iterator[nn.Parameter], TrainConfig], torch.optim.Optimizer]


BATCHNORM_RULES = ("average", "local")


def batchnorm_names(model: nn.Module) -> tuple[str, ...]:
    """The state_dict names of every entry of every BatchNorm layer of `model`."""
    return tuple(f"{prefix}.{key}" if prefix else key
                 for prefix, module in model.named_modules() if isinstance(module, _BatchNorm)
                 for key in module.state_dict())


def default_optimizer(params: Iterator[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (with momentum / weight decay) or Adam, as the task's TrainConfig says."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


class PlainSGD:
    """p ← p - lr·∇p for every parameter with a gradient: torch.optim.SGD without momentum or
    weight decay, bit for bit (its single-tensor step, the one it takes on CPU), made without
    torch.optim, whose first use imports torch._dynamo (1.2 s and 66 MB per process here).
    The default optimizer when the task asks for nothing more."""

    def __init__(self, params: Iterator[nn.Parameter], lr: float) -> None:
        self.params = list(params)
        self.lr = lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


class TorchTrainer:
    """Trains any `nn.Module` on `data`; parameters named as in `state_dict()`.

    Args:
        model: the module (shared between institutions in simulation).
        data: this institution's arrays.
        loss: a loss taking (model output, target) to a scalar tensor (a module, or your
            own function: `[client] loss`, client/user_functions.py); by default
            BCE-with-logits (binary), cross-entropy (multiclass) or MSE (regression).
        optimizer: a factory (parameters, TrainConfig) -> torch optimizer; a fresh optimizer
            is made for every fit task (no optimizer state crosses rounds).
        batchnorm: "average" (BN entries travel like any parameter) or "local" (FedBN: they
            stay with this trainer, see the module docstring).
        metrics: your own metrics by name, evaluated after the built-in ones
            (`[evaluation] metrics`, evaluation/metrics.py `custom`).
    """

    def __init__(self, model: nn.Module, data: LocalData, loss: LossFn | None = None,
                 optimizer: OptimizerFactory = default_optimizer, name: str = "",
                 batchnorm: str = "average",
                 metrics: Mapping[str, MetricFn] | None = None) -> None:
        if batchnorm not in BATCHNORM_RULES:
            raise ConfigError(f"model.batchnorm must be one of {list(BATCHNORM_RULES)}, got "
                              f"'{batchnorm}'")
        self.model = model
        self.data = data
        self.loss: LossFn = loss if loss is not None else _loss_fn(data.task)
        self.metrics = dict(metrics or {})
        self.make_optimizer = optimizer
        self.name = name
        self._dp: DPSGD | None = None
        self._tensors = dict(model.state_dict(keep_vars=True))
        self._local_names = batchnorm_names(model) if batchnorm == "local" else ()
        self.local_entries: Params = {}  # this institution's BN entries ("local"), once fit
        self._x = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
        y_dtype = np.int64 if data.task == "multiclass" else np.float32
        self._y = torch.from_numpy(np.ascontiguousarray(data.y_train, dtype=y_dtype))

    @property
    def num_examples(self) -> int:
        return len(self.data.y_train)

    def initial_params(self) -> Params:
        return self._dump()

    def fit(self, params: Params, cfg: TrainConfig, rng: np.random.Generator,
            reg: Regularizer | None = None) -> tuple[Params, int, dict[str, float]]:
        """Local training from `params`; returns new parameters, examples seen, mean loss and
        the number of local steps. `reg` adds its terms to every gradient."""
        self._load(params)
        self.model.train()
        if cfg.dp_local:
            if reg is not None:
                raise ConfigError("local DP-SGD cannot be combined with a proximal term or "
                                  "control variates (Opacus owns the gradients)")
            return self._fit_private(params, cfg, rng)
        opt = self._optimizer(cfg)
        terms = self._regularizer_tensors(reg)
        total, count, steps = 0.0, 0, 0
        for idx in batches(self.num_examples, cfg, rng):
            index = torch.from_numpy(idx)
            opt.zero_grad(set_to_none=True)
            loss = self._objective(self._x[index], self._y[index])
            loss.backward()
            if terms:
                self._add_terms(terms, reg.mu if reg is not None else 0.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
        return self._dump_fit(params), self.num_examples, {"train_loss": total / max(count, 1),
                                                 "local_steps": float(steps)}

    def _optimizer(self, cfg: TrainConfig) -> torch.optim.Optimizer | PlainSGD:
        """A fresh optimizer for one fit: PlainSGD where the default optimizer would be plain
        SGD (the same steps), else the factory's."""
        if (self.make_optimizer is default_optimizer and cfg.optimizer == "sgd"
                and cfg.momentum == 0.0 and cfg.weight_decay == 0.0):
            return PlainSGD(self.model.parameters(), cfg.lr)
        return self.make_optimizer(self.model.parameters(), cfg)

    def _regularizer_tensors(self, reg: Regularizer | None
                             ) -> list[tuple[nn.Parameter, torch.Tensor | None,
                                             torch.Tensor | None]]:
        """(parameter, anchor, correction) for every trainable tensor, or [] without terms."""
        if reg is None or (reg.mu == 0.0 and reg.correction is None):
            return []
        out = []
        for name, t in self._tensors.items():
            if not isinstance(t, nn.Parameter) or name in self._local_names:
                continue  # a local BN entry is no one's to pull towards the server's
            anchor = (torch.from_numpy(np.asarray(reg.anchor[name], np.float32))
                      if reg.mu and reg.anchor is not None else None)
            corr = (torch.from_numpy(np.asarray(reg.correction[name], np.float32))
                    if reg.correction is not None else None)
            out.append((t, anchor, corr))
        return out

    @staticmethod
    def _add_terms(terms: list[tuple[nn.Parameter, torch.Tensor | None, torch.Tensor | None]],
                   mu: float) -> None:
        """grad += μ (w - anchor) + correction, in place."""
        with torch.no_grad():
            for p, anchor, corr in terms:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                if anchor is not None:
                    p.grad.add_(p.detach() - anchor, alpha=mu)
                if corr is not None:
                    p.grad.add_(corr)

    def _fit_private(self, params: Params, cfg: TrainConfig,
                     rng: np.random.Generator) -> tuple[Params, int, dict[str, float]]:
        """DP-SGD with Opacus; the institution's accountant persists across rounds."""
        if cfg.steps is not None:
            raise ConfigError("local DP trains in epochs (Poisson-sampled), not steps")
        assert cfg.dp_local is not None
        if self._dp is None:
            self._dp = DPSGD(LocalDP.from_config(cfg.dp_local, self.name), self.num_examples,
                             cfg.batch_size, cfg.epochs or 1)

        def objective(module: nn.Module, index: torch.Tensor) -> torch.Tensor:
            out = module(self._x[index])
            return self.loss(out if self.data.task == "multiclass" else out.reshape(-1),
                             self._y[index])

        loss, used = self._dp.fit(self.model, lambda ps: self.make_optimizer(ps, cfg),
                                  objective, self.num_examples, rng)
        return self._dump_fit(params), self.num_examples, {
            "train_loss": loss, "dp_epsilon": self._dp.epsilon,
            "dp_noise_multiplier": self._dp.noise_multiplier}

    def gradient(self, params: Params) -> tuple[Params, int, dict[str, float]]:
        """Full-batch gradient of the mean loss at `params` (for FedSGD)."""
        self._load(params)
        self.model.zero_grad(set_to_none=True)
        loss = self._objective(self._x, self._y)
        loss.backward()
        grads = {}
        for name, t in self._tensors.items():
            g = t.grad if isinstance(t, nn.Parameter) and t.grad is not None else None
            grads[name] = (g.detach().numpy().copy() if g is not None
                           and name not in self._local_names
                           else np.zeros(tuple(t.shape), dtype=np.float32))
        return grads, self.num_examples, {"train_loss": float(loss.detach())}

    def evaluate(self, params: Params) -> tuple[int, dict[str, float]]:
        """Metrics on this institution's held-out split, in the target's original units."""
        return evaluate_on_test(self, self.data, params, self.metrics)

    def predict(self, params: Params, x: np.ndarray) -> np.ndarray:
        """Probabilities (binary: P(y=1); multiclass: one row per class) or values."""
        self._load(params)
        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if self.data.task == "binary":
            return torch.sigmoid(out.reshape(-1)).numpy()
        if self.data.task == "multiclass":
            return torch.softmax(out, dim=1).numpy()
        return out.reshape(-1).numpy()

    def _objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return self.loss(out if self.data.task == "multiclass" else out.reshape(-1), y)

    def _load(self, params: Params) -> None:
        """Copy `params` in; under "local", this institution's own BN entries instead of the
        received ones (once it has any)."""
        with torch.no_grad():
            for name, t in self._tensors.items():
                # asarray: a 0-d entry (num_batches_tracked) may arrive as a numpy scalar
                t.copy_(torch.from_numpy(np.asarray(self.local_entries.get(name, params[name]))))

    def _dump_fit(self, received: Params) -> Params:
        """The trained parameters; under "local" the trained BN entries are kept here and the
        received ones returned in their place (a zero update)."""
        out = self._dump()
        if self._local_names:
            self.local_entries = {n: out[n] for n in self._local_names}
            out.update({n: np.array(received[n], copy=True) for n in self._local_names})
        return out

    def _dump(self) -> Params:
        return {name: t.detach().numpy().copy() for name, t in self._tensors.items()}
