"""Your own model: a run config names a factory by import path
(`[model] factory = "my_package.models:build"`, keyword arguments from `[model.args]`) that
returns a PyTorch module, or with `framework = "sklearn"` a scikit-learn linear estimator.

The factory is imported (importlib; never unpickled, never exec'd) and called with the args
plus `num_features` and `num_outputs`, under `torch.manual_seed(<the run's model seed>)`, so
the server and every institution build the same initial weights. The server records the
model's architecture (parameter names and shapes, and their SHA-256) in the run setup; an
institution whose factory builds anything else refuses before training, naming the first
parameter that differs. A scikit-learn estimator's parameters are its `coef` and `intercept`
(client/sklearn_trainer.py); one whose `random_state` is None gets the model seed. The same
import machinery loads a run's own loss and metrics (client/user_functions.py).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.errors import ConfigError

log = logging.getLogger(__name__)
Architecture = list[tuple[str, tuple[int, ...]]]


def import_factory(path: str, what: str = "model.factory") -> Callable[..., Any]:
    """The callable `path` ("module.path:callable") names; `what` is the config key that
    names it, for the messages ("model.factory", "client.loss", "evaluation.metrics").

    Raises:
        ConfigError: malformed path, module not importable, or no such callable.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} must be \"module.path:callable\", got '{path}'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what} '{path}': cannot import module '{module_name}' "
                          f"({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} '{path}': module '{module_name}' has no "
                              f"'{attr}'") from None
    if not callable(obj):
        raise ConfigError(f"{what} '{path}' is not callable (it is a "
                          f"{type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def run_user_code(path: str, what: str, fn: Callable[..., Any], *args: Any,
                  **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, the callable `path` names. Any failure of the user's code is a
    ConfigError naming `what` and `path` and the error's type only: its text may quote data,
    so it stays in this institution's log."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as e:  # the user's code: any failure is a configuration problem
        log.warning("%s '%s' failed: %s: %s", what, path, type(e).__name__, e)
        raise ConfigError(f"{what} '{path}' failed with {type(e).__name__} (details in this "
                          f"institution's log: the text may quote data)") from None


def build_user_model(factory: str, args: Mapping[str, Any], num_features: int,
                     num_outputs: int, seed: int) -> nn.Module:
    """The module `factory` builds from `args`, num_features and num_outputs, under
    torch.manual_seed(seed) (the global generator is restored afterwards, as for the built-in
    models).

    Raises:
        ConfigError: the factory cannot be imported, fails, or returns no nn.Module.
    """
    build = import_factory(factory)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = run_user_code(factory, "model.factory", build, **dict(args),
                              num_features=num_features, num_outputs=num_outputs)
    finally:
        torch.random.set_rng_state(generator_state)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory '{factory}' must return a torch.nn.Module, it "
                          f"returned {type(model).__name__} ({_short(model)})")
    return model


def build_user_estimator(factory: str, args: Mapping[str, Any], num_features: int,
                         num_outputs: int, seed: int) -> Any:
    """The scikit-learn estimator `factory` builds (framework = "sklearn"), called as for a
    PyTorch model. An estimator whose `random_state` is None gets the run's model seed
    (modulo 2**32, scikit-learn's range), so every institution's estimator draws the same
    numbers.

    Raises:
        ConfigError: the factory cannot be imported, fails, or returns no scikit-learn
            estimator with partial_fit.
    """
    from sklearn.base import BaseEstimator

    build = import_factory(factory)
    est = run_user_code(factory, "model.factory", build, **dict(args),
                        num_features=num_features, num_outputs=num_outputs)
    if not isinstance(est, BaseEstimator) or not callable(getattr(est, "partial_fit", None)):
        raise ConfigError(f"model.factory '{factory}' must return a scikit-learn estimator "
                          f"with partial_fit (framework = 'sklearn'), it returned "
                          f"{type(est).__name__} ({_short(est)})")
    if "random_state" in est.get_params(deep=False) and est.random_state is None:
        est.set_params(random_state=seed % 2**32)
    return est


def architecture_of(shapes: Architecture) -> dict[str, Any]:
    """What the setup carries about a model: its parameters' names and shapes, in order,
    and their SHA-256."""
    parameters = [[name, list(shape)] for name, shape in shapes]
    sha = hashlib.sha256(json.dumps(parameters).encode()).hexdigest()
    return {"sha256": sha, "parameters": parameters}


def params_architecture(params: Mapping[str, np.ndarray]) -> Architecture:
    return [(name, tuple(int(d) for d in np.shape(a))) for name, a in params.items()]


def module_architecture(model: nn.Module) -> Architecture:
    """Names and shapes as TorchTrainer names the parameters (state_dict order)."""
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def with_architecture(setup: Mapping[str, Any],
                      initial: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """`setup` with the architecture of the server's `initial` parameters in its model spec,
    when the model comes from a factory (built-in models are fedsilo's own code: unchanged)."""
    model = setup.get("model") or {}
    if "factory" not in model:
        return dict(setup)
    arch = architecture_of(params_architecture(initial))
    return {**setup, "model": {**model, "architecture": arch}}


def check_architecture(here: Architecture, spec: Mapping[str, Any]) -> None:
    """Refuse a model whose parameters (`here`: names and shapes, module_architecture or
    params_architecture) differ from the architecture the server recorded in `spec` (none
    recorded: nothing to check).

    Raises:
        ConfigError: naming the first parameter that differs.
    """
    expected = spec.get("architecture")
    if not expected:
        return
    if architecture_of(here)["sha256"] == expected.get("sha256"):
        return
    server = [(str(n), tuple(int(d) for d in s)) for n, s in expected.get("parameters", [])]
    what = f"model from {spec.get('factory', spec.get('kind'))} differs from the server's"
    for i, ((name, shape), (s_name, s_shape)) in enumerate(zip(here, server)):
        if name != s_name:
            raise ConfigError(f"{what}: parameter {i} is '{name}' here, '{s_name}' at the "
                              f"server")
        if shape != s_shape:
            raise ConfigError(f"{what}: parameter '{name}' has shape {shape} here, {s_shape} "
                              f"at the server")
    if len(here) > len(server):
        raise ConfigError(f"{what}: parameter '{here[len(server)][0]}' exists here, not at "
                          f"the server")
    if len(server) > len(here):
        raise ConfigError(f"{what}: parameter '{server[len(here)][0]}' exists at the server, "
                          f"not here")
    raise ConfigError(f"{what}: architecture digest {architecture_of(here)['sha256'][:12]} "
                      f"here, {str(expected.get('sha256'))[:12]} at the server")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
