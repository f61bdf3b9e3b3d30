"""Site policy: what an institution allows to leave it, decided by the institution.

The policy lives in the institution's kit (`policy.toml`, written by `fedsilo provision` with
safe defaults and edited by the institution); the server never sends it and cannot change it.
Every task is checked against it before any work; a task asking for less protection than the
policy requires is refused with a reason naming the rule, and the refusal is logged locally.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedsilo.algorithms.registry import STRATEGY_NAMES
from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.limits import MAX_LEVELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)
FILENAME = "policy.toml"
STRATEGIES = STRATEGY_NAMES  # every strategy fedsilo knows (algorithms/registry)
MODELS = ("linear_regression", "logistic_regression", "mlp", "xgboost")
METRICS = ("accuracy", "log_loss", "auc", "rmse", "mse", "mae", "r2", "loss")
PROTECTION = {"secagg+": ("secagg+", "secagg"), "ckks": ("ckks",),
              "none": ("none", "secagg+", "secagg", "ckks")}


# explanations written above a key in policy.toml
_COMMENTS = {"factories": ("import paths (\"module.path:callable\") this institution will import",
                           "and run: a run's [model] factory, [client] loss and [evaluation]",
                           "metrics; its own code, installed here; [] allows none (built-in",
                           "models are governed by 'models', metrics' names by 'metrics')")}


class PolicyRefused(FedsiloError):
    """A task asks for something the institution's policy does not allow."""

    code = "policy_refused"


class SitePolicy(BaseModel):
    """An institution's rules for every task (docs/how-to/deploy.md, "Site policy")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secure: Literal["secagg+", "ckks", "none"] = "secagg+"
    min_threshold: int = Field(default=2, ge=2)
    max_epsilon: float | None = Field(default=None, gt=0)
    min_noise_multiplier: float | None = Field(default=None, gt=0)
    max_clip_norm: float | None = Field(default=None, gt=0)
    strategies: list[str] = list(STRATEGIES)
    models: list[str] = list(MODELS)
    # import paths ("module.path:callable") a run may name, for its model factory, loss and
    # metrics: code this institution imports and runs; none by default
    factories: list[str] = []
    max_rounds: int = Field(default=1000, ge=1)
    metrics: list[str] = list(METRICS)
    evaluation: bool = True
    deterministic_noise: bool = False
    categorical: list[str] | None = None  # columns that may be one-hot (levels leave); None: any
    max_levels: int = Field(default=MAX_LEVELS, ge=1)  # values of one column that may leave
    # vertical protocols this institution joins: Hetero-LR sends only ciphertexts and masked
    # values; split learning sends its bottom model's activations (to the label holder only)
    vertical: list[Literal["hetero_lr", "split_learning"]] = ["hetero_lr"]

    @classmethod
    def load(cls, path: str | Path) -> SitePolicy:
        """The policy in `path`.

        Raises:
            ConfigError: the file is missing, is not TOML, or breaks the schema.
        """
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"site policy not found: {p} (fedsilo provision writes one into "
                              f"every institution's kit)")
        try:
            return cls.model_validate(tomllib.loads(p.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        except ValidationError as e:
            where = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"{p}: {where}") from None

    def to_toml(self) -> str:
        """The policy as the commented TOML file a kit holds."""
        lines = ["# This institution's site policy: every task from the server is checked",
                 "# against it before any work. Edit it; the server never sees or sends it."]
        for key, value in self.model_dump().items():
            lines += [f"# {line}" for line in _COMMENTS.get(key, ())]
            if value is not None:
                lines.append(f"{key} = {_toml(value)}")
            else:
                lines.append(f"# {key} = ...  (not set: no limit)")
        return "\n".join(lines) + "\n"

    # checks ------------------------------------------------------------------------------
    def check_fit(self, setup: Mapping[str, Any], config: Mapping[str, Any], round_: int,
                  answered: int, name: str) -> None:
        """Refuse a fit (or secure-sum stage) task weaker than this policy: its run `setup`
        and client settings `config`. `answered`: fit tasks of this run this institution
        already trained (its own count, not the server's); `name`: this institution (its
        local-DP budget)."""
        if not setup:
            raise PolicyRefused("task carries no run setup to check against the site policy")
        self._check_run(setup, round_, answered)
        spec = setup.get("aggregator") or {}
        self._check_protection(spec)
        self._check_privacy(spec.get("privacy"), config.get("dp_local"), answered + 1, name)

    def check_prepare_protection(self, secure: Mapping[str, Any] | None) -> None:
        """Refuse a prepare task weaker than this policy, before any work: a policy that
        requires secure aggregation (secagg+ or ckks) refuses statistics in the clear
        (`secure`: the task's secure-preprocessing spec, None or empty for the clear
        prepare); a secure prepare task (SecAgg, also in a CKKS run) needs a threshold of at
        least min_threshold."""
        if not secure:
            if self.secure != "none":
                raise PolicyRefused(f"site policy requires {self.secure}, the preprocessing "
                                    f"task asks for its statistics in the clear (none)")
            return
        protocol = secure.get("protocol") if isinstance(secure, Mapping) else None
        try:
            threshold = int((protocol or {}).get("threshold") or 0)
        except (TypeError, ValueError):
            threshold = 0
        if threshold < self.min_threshold:
            raise PolicyRefused(f"site policy requires a SecAgg+ threshold of at least "
                                f"{self.min_threshold}, the preprocessing task asks for "
                                f"{threshold}")

    def check_prepare(self, levels: Mapping[str, int]) -> None:
        """Refuse to share category sets the policy does not allow: `levels` maps each column
        the run treats as categorical to how many distinct values this institution has."""
        if self.categorical is not None:
            extra = sorted(set(levels) - set(self.categorical))
            if extra:
                raise PolicyRefused(f"site policy allows categorical columns "
                                    f"{self.categorical}, task treats {extra} as categorical "
                                    f"(their values would leave)")
        many = sorted(c for c, n in levels.items() if n > self.max_levels)
        if many:
            raise PolicyRefused(f"site policy lets at most {self.max_levels} levels of a column "
                                f"leave; {many} ha{'s' if len(many) == 1 else 've'} more")

    def check_evaluate(self, setup: Mapping[str, Any], round_: int) -> None:
        if not self.evaluation:
            raise PolicyRefused("site policy: evaluation on this institution's data is not "
                                "allowed (evaluation = false)")
        if setup:
            self._check_run(setup, round_, 0)

    def check_vertical(self, protocol: str, kind: str, epochs: int) -> None:
        """Refuse a vertical run this institution's policy does not allow."""
        if protocol not in self.vertical:
            raise PolicyRefused(f"site policy allows vertical protocols {self.vertical}, task "
                                f"asks for '{protocol}' (to allow it, add it to 'vertical' in "
                                f"{FILENAME})")
        if kind not in self.models:
            raise PolicyRefused(f"site policy allows models {self.models}, task asks for "
                                f"'{kind}'")
        if epochs > self.max_rounds:
            raise PolicyRefused(f"site policy allows at most {self.max_rounds} rounds, the "
                                f"vertical run asks for {epochs} epochs")

    def allowed_metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The metrics that may leave; the others are dropped (and logged locally). A run's
        own metrics ([evaluation] metrics) leave only if 'metrics' lists the name they are
        reported under (what follows the colon of their import path)."""
        kept = {k: v for k, v in metrics.items() if _base(k) in self.metrics}
        dropped = sorted(set(metrics) - set(kept))
        if dropped:
            log.info("site policy: metrics %s not sent (not in policy.metrics)", dropped)
        return kept

    def _check_run(self, setup: Mapping[str, Any], round_: int, answered: int) -> None:
        strategy = setup.get("strategy")
        if strategy not in self.strategies:
            raise PolicyRefused(f"site policy allows strategies {self.strategies}, task asks "
                                f"for '{strategy}'")
        model = setup.get("model") or {}
        factory = model.get("factory")
        if factory is not None:  # your own model: code this institution would import and run
            if factory not in self.factories:
                raise PolicyRefused(f"site policy allows model factories {self.factories}, "
                                    f"task asks for '{factory}' (to allow it, add it to "
                                    f"'factories' in {FILENAME})")
        elif (kind := model.get("kind")) not in self.models:
            raise PolicyRefused(f"site policy allows models {self.models}, task asks for "
                                f"'{kind}'")
        self._check_paths(model)
        if max(round_, answered + 1) > self.max_rounds:
            raise PolicyRefused(f"site policy allows at most {self.max_rounds} rounds, task "
                                f"is round {max(round_, answered + 1)}")

    def _check_paths(self, model: Mapping[str, Any]) -> None:
        """Refuse a loss or metric (by import path) that `factories` does not list."""
        named = [("client.loss", model.get("loss"))]
        named += [("evaluation.metrics", m) for m in model.get("metrics") or []]
        for key, path in named:
            if path is not None and path not in self.factories:
                raise PolicyRefused(f"site policy allows factories {self.factories}, task "
                                    f"asks for {key} '{path}' (to allow it, add it to "
                                    f"'factories' in {FILENAME})")

    def _check_protection(self, spec: Mapping[str, Any]) -> None:
        secure = spec.get("secure") or {}
        protocol = secure.get("protocol", "none")
        if protocol not in PROTECTION[self.secure]:
            raise PolicyRefused(f"site policy requires {self.secure}, task asks for "
                                f"{protocol}")
        if protocol in ("secagg+", "secagg"):
            threshold = int(secure.get("threshold") or 0)
            if threshold < self.min_threshold:
                raise PolicyRefused(f"site policy requires a SecAgg+ threshold of at least "
                                    f"{self.min_threshold}, task asks for {threshold}")

    def _check_privacy(self, privacy: Mapping[str, Any] | None,
                       local: Mapping[str, Any] | None, rounds: int, name: str) -> None:
        wants_dp = self.max_epsilon is not None or self.min_noise_multiplier is not None
        if privacy is None and local is None:
            if wants_dp:
                raise PolicyRefused("site policy requires differential privacy, task asks for "
                                    "none")
            return
        if privacy is not None:
            self._check_central(privacy, rounds)
        if local is not None and local.get("deterministic") and not self.deterministic_noise:
            raise PolicyRefused("site policy refuses deterministic_noise (the server could "
                                "replay the DP-SGD sampling and noise)")
        if local is not None and self.max_epsilon is not None:
            asked = _local_epsilon(local, name)
            if asked > self.max_epsilon:
                raise PolicyRefused(f"site policy allows ε ≤ {self.max_epsilon} per run, task "
                                    f"asks for local DP with ε = {asked:g}")

    def _check_central(self, p: Mapping[str, Any], rounds: int) -> None:
        if p.get("deterministic") is not None and not self.deterministic_noise:
            raise PolicyRefused("site policy refuses deterministic_noise (the server could "
                                "predict the noise)")
        z = float(p.get("noise_multiplier", 0.0))
        if self.min_noise_multiplier is not None and z < self.min_noise_multiplier:
            raise PolicyRefused(f"site policy requires a noise multiplier of at least "
                                f"{self.min_noise_multiplier}, task asks for {z:g}")
        clip = float(p.get("clip_norm", float("inf")))
        if self.max_clip_norm is not None and clip > self.max_clip_norm:
            raise PolicyRefused(f"site policy allows a clip norm of at most "
                                f"{self.max_clip_norm}, task asks for {clip:g}")
        if self.max_epsilon is not None:
            from fedsilo.aggregation.dp.accountant import Accountant

            delta = float(p.get("delta", 1e-5))
            spent = Accountant.public_cohort(z, delta).epsilon(rounds)
            if spent > self.max_epsilon:
                raise PolicyRefused(f"site policy allows ε ≤ {self.max_epsilon} per run; "
                                    f"training round {rounds} of this run would spend "
                                    f"ε = {spent:.3g} (noise multiplier {z:g}, δ = {delta:g})")


def _base(metric: str) -> str:
    """A personal model's metric ("ditto_accuracy") is allowed as its base metric is."""
    head, _, rest = metric.partition("_")
    return rest if head in ("finetuned", "ditto") and rest else metric


def _local_epsilon(local: Mapping[str, Any], name: str) -> float:
    """This institution's local-DP ε in the task (its own entry, else "*")."""
    budgets = local.get("epsilon") or {}
    return float(budgets.get(name, budgets.get("*", float("inf"))))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def write_policy(kit: Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """Write the kit's policy.toml: safe defaults, with the project's [policy] overrides."""
    try:
        policy = SitePolicy.model_validate(dict(overrides or {}))
    except ValidationError as e:
        raise ConfigError(f"[policy]: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    path = kit / FILENAME
    path.write_text(policy.to_toml())
    return path
