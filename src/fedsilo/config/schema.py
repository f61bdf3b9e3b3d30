"""The run-config schema. Unknown keys, wrong types and bad values fail with a message naming
the section, the key, the value found and what was expected."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from fedsilo.aggregation.secure.threshold import check_cohort
from fedsilo.algorithms.fedavg import FedAvgParams, HyperParams
from fedsilo.algorithms.registry import STRATEGY_NAMES, STRATEGY_REGISTRY
from fedsilo.algorithms.sampling import cohort_size
from fedsilo.data.levels import levels_needed
from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.limits import MAX_COLUMNS, MAX_INSTITUTIONS, MAX_LEVELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(_Section):
    name: str = "run"
    seed: int = 0
    rounds: int = Field(default=10, ge=1)
    evaluate_every: int = Field(default=1, ge=1)
    output_dir: str = "results"
    compare: bool = True
    torch_threads: int = Field(default=1, ge=1)
    round_timeout: float | None = Field(default=None, gt=0)  # deadline per stage (deployment)
    # async: rounds = model versions (commits); vertical: parties hold different columns of
    # the same rows ([vertical], docs/vertical.md)
    mode: Literal["sync", "async", "vertical"] = "sync"
    checkpoint_every: int = Field(default=1, ge=0)  # 0: no checkpoints


class StoreSection(_Section):
    """Where runs are recorded: by default fedsilo.db (SQLite) in run.output_dir; or a
    consortium's PostgreSQL by URL (postgresql+psycopg://user:password@host/db)."""

    url: str | None = None
    enabled: bool = True


class LoggingSection(_Section):
    tensorboard: bool = False  # also write TensorBoard event files to the results folder


class InstitutionSource(_Section):
    name: str
    path: str | None = None  # a CSV, Parquet, .npz or image folder; optional with data.loader


class PartitionSection(_Section):
    path: str
    method: Literal["iid", "dirichlet", "quantity", "column"] = "iid"
    institutions: int | None = Field(default=None, ge=1, le=MAX_INSTITUTIONS)
    alpha: float = Field(default=0.5, gt=0)
    column: str | None = None
    merge: dict[str, str] = {}

    @model_validator(mode="after")
    def _needs(self) -> PartitionSection:
        if self.method == "column" and not self.column:
            raise ValueError("method 'column' needs 'column' (the column to split by)")
        if self.method != "column" and not self.institutions:
            raise ValueError(f"method '{self.method}' needs 'institutions' (how many)")
        return self


class DataSection(_Section):
    task: Literal["regression", "binary", "multiclass"]
    target: str = "label"  # a table's target column; array data's labels go by this name
    # array data (.npz, image folders, a loader returning arrays): one example's input shape,
    # channel first; optional in simulation (read from the data), required in deployment
    shape: list[int] | None = Field(default=None, min_length=1)
    loader: str | None = None  # "module.path:callable": load(name, args) -> table or arrays
    id: str | None = None  # run.mode = "vertical": the column naming each row's customer
    loader_args: dict[str, Any] = {}
    numeric: list[str] | None = None
    categorical: list[str] = []
    exclude: list[str] = []
    columns: list[str] | None = Field(default=None, max_length=MAX_COLUMNS)
    na_values: list[str] = ["?", ""]
    positive_above: float | None = None
    scale_target: bool = True
    test_fraction: float = Field(default=0.25, gt=0, lt=1)
    max_levels: int = Field(default=MAX_LEVELS, ge=1)  # per categorical column, per institution
    # vocabulary of each categorical column (and a classification target without
    # positive_above): secure preprocessing sums one count per declared level
    levels: dict[str, list[str | int | float]] | None = None
    institutions: list[InstitutionSource] = Field(default=[], max_length=MAX_INSTITUTIONS)
    partition: PartitionSection | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if self.institutions and self.partition is not None:
            raise ValueError("give either [[data.institutions]] (one CSV per institution) or "
                             "[data.partition] (one CSV split into institutions), not both")
        names = [i.name for i in self.institutions]
        if len(set(names)) != len(names):
            raise ValueError(f"institution names must be unique, got {names}")
        if self.loader is not None:
            if not FACTORY_PATTERN.fullmatch(self.loader):
                raise ValueError(f"data.loader must be \"module.path:callable\", got "
                                 f"'{self.loader}'")
            if self.partition is not None or not self.institutions:
                raise ValueError("data.loader loads each institution's data: name them in "
                                 "[[data.institutions]] (a path there is optional)")
        else:
            nameless = [i.name for i in self.institutions if i.path is None]
            if nameless:
                raise ValueError(f"[[data.institutions]] {nameless} have no path (give one, "
                                 f"or a data.loader)")
        if self.shape is not None and any(n < 1 for n in self.shape):
            raise ValueError(f"data.shape must hold positive sizes, got {self.shape}")
        return self

    def missing_levels(self) -> list[str]:
        """The columns whose vocabulary secure preprocessing needs and `levels` lacks: every
        categorical column, and a classification target without positive_above."""
        need = list(self.categorical)
        if self.task != "regression" and self.positive_above is None:
            need.append(self.target)
        return [c for c in dict.fromkeys(need) if c not in (self.levels or {})]

    def declared_institutions(self) -> int | None:
        """How many institutions the config names; None when only the data tells."""
        if self.institutions:
            return len(self.institutions)
        if self.partition is not None and self.partition.method != "column":
            return self.partition.institutions
        return None


# "package.module:callable" (dotted attribute after the colon allowed); imported, never exec'd
FACTORY_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
FACTORY_RESERVED = ("num_features", "num_outputs")  # passed by fedsilo, not by [model.args]


class ModelSection(_Section):
    """A built-in model (`kind`), or your own model: `factory` names a callable by import path
    ("my_package.models:build"), called with `args` plus num_features and num_outputs under
    the run's model seed; it must return an nn.Module, or with framework "sklearn" a
    scikit-learn linear estimator with partial_fit (coef_ and intercept_ travel).

    `batchnorm`: how BatchNorm layers travel. "average" (default): every entry, running
    statistics included, is averaged like any parameter. "local" (FedBN, Li et al. ICLR 2021):
    every BatchNorm entry stays in the institution, which trains and evaluates with its own;
    the server's BatchNorm entries never move (PyTorch models only)."""

    kind: Literal["linear_regression", "logistic_regression", "mlp", "xgboost"] | None = None
    # kind "xgboost": XGBoost's parameters (objective, max_depth, eta, ...); [run] rounds are
    # its boosting rounds (docs/trees.md)
    params: dict[str, int | float | str | bool] = {}
    framework: Literal["torch", "sklearn"] = "torch"
    hidden: list[int] = [32]
    factory: str | None = None
    args: dict[str, int | float | str | bool | list[Any]] = {}
    batchnorm: Literal["average", "local"] = "average"

    @field_validator("factory")
    @classmethod
    def _factory_path(cls, factory: str | None) -> str | None:
        if factory is not None and not FACTORY_PATTERN.fullmatch(factory):
            raise ValueError(f"factory must be \"module.path:callable\" (e.g. "
                             f"\"my_package.models:build\"), got '{factory}'")
        return factory

    @model_validator(mode="after")
    def _kind_or_factory(self) -> ModelSection:
        if self.factory is None:
            if self.kind is None:
                raise ValueError("set kind (a built-in model) or factory "
                                 "(\"module.path:callable\", your own model)")
            if self.args:
                raise ValueError("args are passed to a factory only; set factory or remove "
                                 "[model.args]")
            return self
        if self.kind is not None:
            raise ValueError("set kind or factory, not both (a factory builds the whole model)")
        if "hidden" in self.model_fields_set:
            raise ValueError("hidden applies to kind 'mlp' only; pass a factory's sizes in "
                             "[model.args]")
        reserved = sorted(set(self.args) & set(FACTORY_RESERVED))
        if reserved:
            raise ValueError(f"args {reserved} are set by fedsilo from the data, not in "
                             f"[model.args]")
        return self

    @model_validator(mode="after")
    def _xgboost_params(self) -> ModelSection:
        if self.params and self.kind != "xgboost":
            raise ValueError("params are XGBoost's (kind = 'xgboost'); a factory takes "
                             "[model.args]")
        if self.kind == "xgboost" and self.framework != "torch":
            raise ValueError("kind 'xgboost' is its own framework: leave framework unset")
        return self

    @model_validator(mode="after")
    def _batchnorm_torch(self) -> ModelSection:
        if self.batchnorm == "local" and self.framework != "torch":
            raise ValueError("batchnorm 'local' keeps a PyTorch model's BatchNorm layers in "
                             "each institution: framework must be 'torch'")
        return self

    @model_validator(mode="after")
    def _sklearn_linear(self) -> ModelSection:
        if self.framework == "sklearn" and self.kind == "mlp":
            raise ValueError("framework 'sklearn' supports linear_regression and "
                             "logistic_regression only")
        return self


class ClientSection(_Section):
    """Local training. `loss`: your own PyTorch loss by import path ("my_package.losses:fn",
    `fn(outputs, targets) -> scalar tensor`, client/user_functions.py) instead of the
    built-in one; it travels in the model spec, not in the training settings."""

    epochs: int | None = Field(default=None, ge=1)
    steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=0.01, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    loss: str | None = None

    @field_validator("loss")
    @classmethod
    def _loss_path(cls, loss: str | None) -> str | None:
        if loss is not None and not FACTORY_PATTERN.fullmatch(loss):
            raise ValueError(f"loss must be \"module.path:callable\" (e.g. "
                             f"\"my_package.losses:focal\"), got '{loss}'")
        return loss

    @model_validator(mode="after")
    def _epochs_or_steps(self) -> ClientSection:
        if self.epochs is not None and self.steps is not None:
            raise ValueError("set epochs or steps, not both")
        return self

    def train_config(self) -> dict[str, Any]:
        cfg = self.model_dump(exclude={"loss"})
        if cfg["epochs"] is None and cfg["steps"] is None:
            cfg["epochs"] = 1
        return cfg


class EvaluationSection(_Section):
    """Your own metrics, by import path: each `fn(y_true, y_pred) -> float` runs on every
    institution's held-out split after the built-in metrics and is reported under the name
    after the colon ("my_package.metrics:balanced_accuracy" -> "balanced_accuracy");
    y_pred is what the trainer predicts: probabilities (classification) or values
    (regression). An institution sends the value only if its site policy's 'metrics' lists
    that name. `primary`: the metric the report's table, the progress bar and the plot use,
    a built-in one the task computes (classification: accuracy, log_loss; regression: rmse,
    mse, mae, r2) or one of your own by name (e.g. "c_index"); unset: accuracy or rmse.
    With your own primary metric the report's further metrics are your other ones (the
    task's AUC, R² and MAE are left out: they may not mean anything for your target)."""

    metrics: list[str] = []
    primary: str | None = None  # the report's metric (default the task's: accuracy, rmse)

    @field_validator("metrics")
    @classmethod
    def _metric_paths(cls, metrics: list[str]) -> list[str]:
        from fedsilo.evaluation.metrics import BUILT_IN

        names: list[str] = []
        for path in metrics:
            if not FACTORY_PATTERN.fullmatch(path):
                raise ValueError(f"metrics must be \"module.path:callable\" (e.g. "
                                 f"\"my_package.metrics:balanced_accuracy\"), got '{path}'")
            name = path.partition(":")[2]
            if name in BUILT_IN or name in names:
                clash = "a built-in metric" if name in BUILT_IN else "another metric's name"
                raise ValueError(f"metric '{path}' would be reported as '{name}', {clash}")
            names.append(name)
        return metrics


# the strategies the golden results and the conformance suite were recorded for
# (tests/golden imports this list); every strategy fedsilo knows is in
# fedsilo.algorithms.registry (STRATEGY_NAMES), FedDyn included
STRATEGIES = ("fedavg", "fedsgd", "fedadam", "fedavgm", "fedyogi", "fedadagrad", "fedprox",
              "scaffold", "fednova", "fedasync", "fedbuff")
ASYNC_STRATEGIES = ("fedasync", "fedbuff")
# hyper-parameter -> the strategies that take it (any other strategy refuses it)
STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    key: tuple(n for n, e in STRATEGY_REGISTRY.items() if key in e.params.model_fields)
    for entry in STRATEGY_REGISTRY.values() for key in entry.params.model_fields}
# the flat section of earlier versions listed every key; a dumped config holds these values
# for the keys its strategy did not take, and still parses
_FORMER_DEFAULTS: dict[str, Any] = {
    "server_lr": None, "momentum": 0.9, "beta1": None, "beta2": None, "eps": 1e-8,
    "tau": 1e-3, "mu": 0.01, "buffer_size": 10, "mixing": 0.6, "staleness": "polynomial",
    "staleness_a": 0.5, "staleness_b": 4.0, "max_staleness": None}


class StrategySection(_Section):
    """The federated algorithm and its hyper-parameters, in one flat section: `name`, the
    common keys below, and the keys the named strategy takes (its `HyperParams` model in
    algorithms/registry.py), held typed in `hyper` and read as `section.<key>`. A key the
    strategy does not take is an error (it would silently do nothing); a key set to None
    means the strategy's default."""

    name: Literal[STRATEGY_NAMES] = "fedavg"  # type: ignore[valid-type]
    fraction: float = Field(default=1.0, gt=0, le=1)
    min_clients: int = Field(default=1, ge=1)
    weighted: bool = True  # uniform-mean strategies (SCAFFOLD, FedDyn): false by default
    stragglers: float = Field(default=0.0, ge=0, le=1)
    straggler_policy: Literal["drop", "partial"] = "partial"
    hyper: HyperParams = Field(default_factory=FedAvgParams)

    @model_validator(mode="before")
    @classmethod
    def _hyper_of_strategy(cls, data: Any) -> Any:
        """Split the flat keys: the common ones stay, the rest must be the named strategy's
        and are validated by its model (errors name `strategy.<key>`)."""
        if not isinstance(data, dict) or isinstance(data.get("hyper"), HyperParams):
            return data
        common = {k: v for k, v in data.items() if k in cls.model_fields and k != "hyper"}
        name = data.get("name", "fedavg")
        entry = STRATEGY_REGISTRY.get(name) if isinstance(name, str) else None
        if entry is None:  # the name's own error lists the strategies
            return common
        given = {k: v for k, v in data.items() if k not in common and v is not None}
        takes = entry.params.model_fields
        for key in sorted(given):
            if key not in takes and (key not in _FORMER_DEFAULTS
                                     or given[key] != _FORMER_DEFAULTS[key]):
                raise ValueError(_not_taken(name, key, list(takes)))
        if entry.uniform:
            common.setdefault("weighted", False)
        hyper = entry.params.model_validate({k: v for k, v in given.items() if k in takes})
        return {**common, "hyper": hyper}

    @model_validator(mode="after")
    def _hyper_fits_name(self) -> StrategySection:
        if type(self.hyper) is not STRATEGY_REGISTRY[self.name].params:
            raise ValueError(f"strategy '{self.name}' takes "
                             f"{STRATEGY_REGISTRY[self.name].params.__name__}, not "
                             f"{type(self.hyper).__name__}")
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler,
              info: SerializationInfo) -> dict[str, Any]:
        """Dumped flat, as written: the common keys, then the strategy's own."""
        out = dict(handler(self))
        out.pop("hyper", None)
        return {**out, **self.hyper.model_dump(mode=info.mode)}

    def __getattr__(self, key: str) -> Any:
        """A hyper-parameter by its flat name (`cfg.strategy.server_lr`): the named strategy's
        value; for a key it does not take, the value the flat section used to default to."""
        hyper = self.__dict__.get("hyper")
        if hyper is not None and key in type(hyper).model_fields:
            return getattr(hyper, key)
        if key in _FORMER_DEFAULTS:
            return _FORMER_DEFAULTS[key]
        return super().__getattr__(key)  # type: ignore[misc]


def _not_taken(name: str, key: str, takes: list[str]) -> str:
    """Why `key` is refused for strategy `name`, and what it takes."""
    users = STRATEGY_KEYS.get(key)
    who = f"{', '.join(users)} does" if users else "no strategy does"
    common = [k for k in StrategySection.model_fields if k not in ("name", "hyper")]
    own = f"{', '.join(takes)} and" if takes else "only"
    return (f"strategy '{name}' does not take '{key}' ({who}); {name} takes {own} the "
            f"common keys {', '.join(common)}")


class AggregationSection(_Section):
    """How updates are combined. `secure` turns on secure aggregation: the server learns only
    the sum ("secagg+": sparse neighbour graph of `neighbours`; "secagg": everyone; "ckks":
    homomorphic encryption with TenSEAL, for small consortia)."""

    secure: Literal["none", "secagg+", "secagg", "ckks"] = "none"
    threshold: int | None = Field(default=None, ge=2)
    neighbours: int | None = Field(default=None, ge=2)
    frac_bits: int = Field(default=24, ge=1, le=51)
    max_abs: float = Field(default=2.0**30, gt=0)
    ring_bits: Literal[32, 64] = 64  # 32: half the bytes and masking work, less range
    robust: Literal["none", "median", "trimmed_mean", "krum", "multikrum"] = "none"
    trim_fraction: float = Field(default=0.1, ge=0, lt=0.5)
    byzantine: int = Field(default=1, ge=0)
    select: int | None = Field(default=None, ge=1)
    norm_bound: float | None = Field(default=None, gt=0)
    default_bound: bool = True  # plain mean, K >= 4: updates above 5x the median norm scaled
    # [[aggregation.layers]]: the stack top-down, e.g. { kind = "topk", fraction = 0.1 }
    # (kinds and settings: aggregation/build.py CONFIG_LAYERS); instead of robust/norm_bound
    layers: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _needs_threshold(self) -> AggregationSection:
        if self.secure in ("secagg+", "secagg") and self.threshold is None:
            raise ValueError(f"secure = '{self.secure}' needs 'threshold' (Shamir t)")
        if self.layers is not None:
            return self._layers_fit()
        clear = self.robust if self.robust != "none" else (
            "norm_bound" if self.norm_bound is not None else None)
        if clear and self.secure != "none":
            raise ValueError(f"'{clear}' needs each institution's update in the clear and "
                             f"secure = '{self.secure}' hides them: choose one")
        return self

    def _layers_fit(self) -> AggregationSection:
        from fedsilo.aggregation.build import SHORT_FORMS, config_stack_problem

        assert self.layers is not None
        given = {k: getattr(self, k) for k in SHORT_FORMS if k in self.model_fields_set}
        problem = config_stack_problem(self.layers, given, self.secure_spec())
        if problem:
            raise ValueError(problem)
        return self

    def secure_spec(self) -> dict[str, Any] | None:
        """The secure sum's part of the aggregator spec, or None."""
        if self.secure == "ckks":
            return {"protocol": "ckks"}
        if self.secure == "none":
            return None
        return {"protocol": self.secure, "threshold": self.threshold,
                "neighbours": self.neighbours, "frac_bits": self.frac_bits,
                "max_abs": self.max_abs, "ring_bits": self.ring_bits}


class PersonalizationSection(_Section):
    """Personal models that never leave their institution: local fine-tuning of the final
    global model (`finetune_epochs` > 0) and Ditto (`ditto_lambda`: the pull λ towards the
    global model, `ditto_epochs` of personal training per round)."""

    finetune_epochs: int = Field(default=0, ge=0)
    finetune_lr: float | None = Field(default=None, gt=0)
    ditto_lambda: float | None = Field(default=None, ge=0)
    ditto_epochs: int = Field(default=1, ge=1)
    ditto_lr: float | None = Field(default=None, gt=0)


class ClockSection(_Section):
    """The clock a run is driven under. 'virtual' (the default of `fedsilo run`): simulated
    seconds, a task takes examples × seconds_per_example / speed plus a network delay
    (asynchronous runs; a synchronous round waits for its whole cohort). 'wall' (the default
    of a session over a network transport; `fedsilo server` always): real time."""

    kind: Literal["virtual", "wall"] | None = None
    seconds_per_example: float = Field(default=1e-3, ge=0)
    speeds: dict[str, float] = {}
    delay: Literal["constant", "exponential", "lognormal"] = "constant"
    delay_mean: float = Field(default=0.0, ge=0)
    delays: dict[str, float] = {}
    barrier: bool = False  # institutions wait for each commit: with fedbuff and buffer_size =
    #                        the number of institutions, synchronous FedAvg in simulated time


class AttackSection(_Section):
    """Simulation only: a `fraction` of institutions send poisoned updates ('sign_flip': the
    update times -scale; 'scale': the update times scale), to test robust aggregation."""

    fraction: float = Field(default=0.0, ge=0, lt=1)
    kind: Literal["sign_flip", "scale"] = "sign_flip"
    scale: float = Field(default=4.0, gt=0)


class PrivacySection(_Section):
    """Differential privacy. central: clip in each institution, the server adds Gaussian noise
    to the sum; distributed: each institution adds its share of the noise before secure
    aggregation; local: DP-SGD (Opacus) inside each institution. ε at `delta` is reported
    every round; `target_epsilon` stops training when the next round would exceed it."""

    mode: Literal["none", "central", "distributed", "local"] = "none"
    noise_multiplier: float = Field(default=1.0, gt=0)
    clip_norm: float = Field(default=1.0, gt=0)
    adaptive_clipping: bool = False
    target_quantile: float = Field(default=0.5, gt=0, lt=1)
    clip_learning_rate: float = Field(default=0.2, gt=0)
    clip_count_stddev: float | None = Field(default=None, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    target_epsilon: float | None = Field(default=None, gt=0)
    min_contributors: int | None = Field(default=None, ge=1)
    deterministic_noise: bool = False
    max_grad_norm: float = Field(default=1.0, gt=0)
    local_epsilon: dict[str, float] = {}


class VerticalSection(_Section):
    """A vertical run (run.mode = "vertical"): the parties' rows are aligned by private set
    intersection on data.id, then [model] kind picks the protocol: logistic_regression /
    linear_regression (Hetero-LR, homomorphic encryption), mlp (split learning), xgboost
    (column-split trees)."""

    label_holder: str
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=0.1, gt=0)
    batch_size: int = Field(default=64, ge=1)
    noise: float = Field(default=0.0, ge=0)  # split learning: Gaussian noise on activations


class CommitSection(_Section):
    """How an asynchronous run (run.mode = 'async') of a synchronous strategy (fedavg,
    fedprox, scaffold, fednova, fedadam, ...) commits: FedBuff's buffer of K accepted
    updates, each weighed by its staleness s(τ) (fedbuff and fedasync take these keys in
    [strategy] instead). buffer_size: default the number of institutions."""

    buffer_size: int | None = Field(default=None, ge=1)
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    staleness_a: float = Field(default=0.5, ge=0)
    staleness_b: float = Field(default=4.0, ge=0)
    max_staleness: int | None = Field(default=None, ge=0)


class SimulationSection(_Section):
    """Where a simulation's institutions run. 'inprocess' (the default): each in this
    process, one task at a time. 'ray': in a pool of Ray actors (`pip install
    'fedsilo[ray]'`), `actors` of them (default: the cluster's CPUs over each actor's
    `resources`, e.g. {num_cpus = 1}), each loading and training many institutions in turn;
    `address` "auto", "ray://host:port" or "host:port" joins a running cluster (unset: a
    local one is started); a task whose actor dies is run again on its replacement up to
    `retries` times, then counted as dropped (docs/ray.md)."""

    backend: Literal["inprocess", "ray"] = "inprocess"  # where the institutions run
    address: str | None = None  # Ray: "auto", "ray://host:port", "host:port"; unset: a local one
    actors: int | None = Field(default=None, ge=1)  # Ray actors (default: CPUs / resources)
    resources: dict[str, float] = {}  # each actor's Ray resources, e.g. {num_cpus = 1}
    retries: int = Field(default=1, ge=0)  # re-runs of a task whose actor died, then dropped

    @field_validator("resources")
    @classmethod
    def _positive(cls, resources: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in resources.items() if v < 0]
        if bad:
            raise ValueError(f"simulation.resources: {bad} must be >= 0")
        return resources


class RunConfig(_Section):
    """A whole simulation: run, data, model, client, strategy sections."""

    run: RunSection = Field(default_factory=RunSection)
    data: DataSection
    model: ModelSection
    client: ClientSection = Field(default_factory=ClientSection)
    strategy: StrategySection = Field(default_factory=StrategySection)
    aggregation: AggregationSection = Field(default_factory=AggregationSection)
    privacy: PrivacySection = Field(default_factory=PrivacySection)
    personalization: PersonalizationSection = Field(default_factory=PersonalizationSection)
    attack: AttackSection = Field(default_factory=AttackSection)
    clock: ClockSection = Field(default_factory=ClockSection)
    commit: CommitSection | None = None
    store: StoreSection = Field(default_factory=StoreSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    vertical: VerticalSection | None = None
    simulation: SimulationSection = Field(default_factory=SimulationSection)
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _ray_fits(self) -> RunConfig:
        """The Ray backend carries plain tasks and replies: what keeps secrets in the
        simulation's one process (the simulated CA's keys for a secure sum), runs its own
        processes (XGBoost's tracker, vertical protocols) or wraps institutions in the
        server's process (attacks) is refused, naming the reason."""
        if self.simulation.backend != "ray":
            return self
        asked = []
        if self.aggregation.secure != "none":
            asked.append(f"aggregation.secure = {self.aggregation.secure!r}")
        if self.run.mode == "vertical":
            asked.append("run.mode = 'vertical'")
        if self.model.kind == "xgboost":
            asked.append("model.kind = 'xgboost'")
        if self.attack.fraction:
            asked.append("attack.fraction")
        if asked:
            raise ValueError(f"simulation.backend = 'ray' runs plain horizontal rounds: "
                             f"{asked} cannot run on it (secure sums keep the simulated "
                             f"certificate authority's keys and masks in one process; XGBoost "
                             f"and vertical runs start their own processes; attacks wrap "
                             f"institutions in the server's process): use backend = "
                             f"'inprocess' (docs/ray.md)")
        return self

    @model_validator(mode="after")
    def _vertical_fits(self) -> RunConfig:
        vertical = self.run.mode == "vertical"
        if self.vertical is not None and not vertical:
            raise ValueError("[vertical] describes a vertical run: set run.mode = 'vertical'")
        if not vertical:
            return self
        problems = []
        if self.vertical is None:
            problems.append("[vertical] label_holder is missing")
        elif self.vertical.label_holder not in [i.name for i in self.data.institutions]:
            problems.append(f"vertical.label_holder '{self.vertical.label_holder}' is none of "
                            f"[[data.institutions]]")
        if self.data.id is None:
            problems.append("data.id (the column naming each row's customer) is missing")
        if len(self.data.institutions) < 2:
            problems.append("a vertical run needs 2 or more [[data.institutions]]")
        if self.model.factory is not None or self.model.framework != "torch":
            problems.append("[model] kind picks the vertical protocol (logistic_regression, "
                            "linear_regression, mlp, xgboost)")
        if self.aggregation.secure != "none" or self.privacy.mode != "none":
            problems.append("[aggregation] secure and [privacy] apply to horizontal runs (a "
                            "vertical protocol protects its own messages: docs/vertical.md)")
        if problems:
            raise ValueError("run.mode = 'vertical': " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _trees_fit(self) -> RunConfig:
        """XGBoost's federated engine trains every tree in one collective, synchronously, its
        tracker summing the institutions' gradient histograms in the clear: what needs
        updates to sum (secure aggregation, DP, robust rules, strategies, async) is refused."""
        if self.model.kind != "xgboost":
            return self
        asked = [f"{what} = {value!r}" for what, value, plain in (
            ("aggregation.secure", self.aggregation.secure, "none"),
            ("privacy.mode", self.privacy.mode, "none"),
            ("aggregation.robust", self.aggregation.robust, "none"),
            ("run.mode", "sync" if self.run.mode == "vertical" else self.run.mode, "sync"),
            ("strategy.name", self.strategy.name, "fedavg")) if value != plain]
        if self.attack.fraction:
            asked.append("attack.fraction")
        if self.data.shape is not None:
            asked.append("data.shape (array data)")
        if asked:
            raise ValueError(f"kind 'xgboost' trains through XGBoost's federated engine, whose "
                             f"tracker sums gradient histograms in the clear: {asked} cannot "
                             f"apply to it (docs/trees.md)")
        return self

    def primary_metric(self) -> str:
        """The report's metric: [evaluation] primary, else the task's (accuracy, rmse)."""
        from fedsilo.evaluation.metrics import PRIMARY

        return self.evaluation.primary or PRIMARY[self.data.task]

    @model_validator(mode="after")
    def _primary_fits(self) -> RunConfig:
        from fedsilo.evaluation.metrics import PER_ROUND

        primary = self.evaluation.primary
        if primary is None:
            return self
        own = [path.partition(":")[2] for path in self.evaluation.metrics]
        known = [*PER_ROUND[self.data.task], *own]
        if primary not in known:
            raise ValueError(f"evaluation.primary '{primary}' is not a metric of this run "
                             f"({', '.join(known)})")
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> RunConfig:
        if self.privacy.mode == "distributed" and self.aggregation.secure == "none":
            raise ValueError("privacy.mode = 'distributed' needs secure aggregation "
                             "([aggregation] secure = ...): otherwise use 'central'")
        if self.privacy.mode != "none" and (self.aggregation.robust != "none"
                                            or self.aggregation.norm_bound is not None):
            raise ValueError("robust aggregation with differential privacy is not supported "
                             "(its sensitivity differs from the mean's)")
        if self.privacy.mode == "local" and self.client.steps is not None:
            raise ValueError("privacy.mode = 'local': DP-SGD trains in epochs (Poisson-sampled "
                             "batches): set client.epochs instead of client.steps")
        self._async_fits()
        declared = self.data.declared_institutions()
        problem = self._institutions_problem(declared) if declared else None
        if problem:
            raise ValueError(problem)
        if self.attack.fraction and self.aggregation.secure != "none":
            raise ValueError("[attack] poisons plain updates; it cannot run with secure "
                             "aggregation")
        missing = self.data.missing_levels()
        if self.aggregation.secure != "none" and missing:
            raise ValueError(levels_needed(self.aggregation.secure, missing))
        return self

    def _async_fits(self) -> None:
        name, is_async = self.strategy.name, self.run.mode == "async"
        if name in ASYNC_STRATEGIES and not is_async:
            raise ValueError(f"strategy '{name}' needs run.mode = 'async'; async strategies: "
                             f"{', '.join(ASYNC_STRATEGIES)}")
        if self.commit is not None and (not is_async or name in ASYNC_STRATEGIES):
            raise ValueError("[commit] sets the buffer of an asynchronous run (run.mode = "
                             "'async') of a synchronous strategy; fedbuff and fedasync take "
                             "buffer_size and the staleness keys in [strategy]")
        if not is_async:
            return
        secure, buffer = self.aggregation.secure, self.commit_buffer()
        if secure != "none" and (name == "fedasync" or secure == "ckks"):
            raise ValueError("asynchronous secure aggregation is FedBuff with secure = "
                             "'secagg+' or 'secagg' (each buffer is a secure group); not "
                             f"{name} with '{secure}'")
        if secure != "none" and buffer is not None and buffer <= (self.aggregation.threshold
                                                                  or 0):
            raise ValueError(f"secure FedBuff: buffer_size ({buffer}) must exceed the Shamir "
                             f"threshold ({self.aggregation.threshold})")
        m = self.privacy.min_contributors or self.strategy.min_clients
        if self.privacy.mode in ("central", "distributed") and buffer is not None and buffer < m:
            raise ValueError(f"privacy.mode = '{self.privacy.mode}' in async mode: every commit "
                             f"must hold min_contributors = {m} institutions' updates, and the "
                             f"buffer holds {buffer}")
        if self.privacy.mode in ("central", "distributed") and self.privacy.adaptive_clipping:
            raise ValueError("privacy.adaptive_clipping in async mode: a stale update was "
                             "clipped at an older, larger clip norm than the one the commit's "
                             "noise is calibrated to; use a fixed clip_norm")
        if self.strategy.stragglers:
            raise ValueError("stragglers are a synchronous notion; in async mode give slow "
                             "institutions a lower [clock] speed")

    def commit_buffer(self) -> int | None:
        """Updates per commit of an asynchronous run (FedAsync: 1; None: as many as there
        are institutions)."""
        if self.strategy.name == "fedasync":
            return 1
        if self.strategy.name == "fedbuff":
            return int(self.strategy.buffer_size)
        return (self.commit or CommitSection()).buffer_size

    def check_institutions(self, count: int) -> None:
        """Raise ConfigError if a run of this config cannot work with `count` institutions
        (the number the config declares is checked on loading)."""
        problem = self._institutions_problem(count)
        if problem:
            raise ConfigError(problem)

    def _institutions_problem(self, count: int) -> str | None:
        """Why `count` institutions cannot run this config: SecAgg(+) rounds need more
        institutions than the Shamir threshold (secure FedBuff's groups are checked against
        buffer_size instead); a central/distributed DP round needs privacy.min_contributors."""
        m = self.privacy.min_contributors
        if m is not None and m > count and self.privacy.mode in ("central", "distributed"):
            return (f"privacy.min_contributors = {m} with {count} institution(s): no round "
                    f"could have enough contributors")
        a = self.aggregation
        if a.secure not in ("secagg+", "secagg") or self.run.mode == "async":
            return None
        assert a.threshold is not None
        cohort = cohort_size(count, self.strategy.fraction, self.strategy.min_clients)
        try:
            check_cohort(a.threshold, a.neighbours if a.secure == "secagg+" else None, cohort)
        except FedsiloError as e:
            return (f"aggregation.secure = '{a.secure}' with {count} institution(s), {cohort} "
                    f"per round: {e}")
        return None

    def resolve(self, path: str) -> Path:
        """A data path from the config, relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p


def _format(err: ValidationError, source: str) -> str:
    lines = [f"invalid run config {source}:"]
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{where}'")
        elif e["type"] == "missing":
            lines.append(f"  - missing required key '{where}'")
        elif e["type"] == "value_error" and isinstance(e.get("input"), dict):  # a whole section
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {msg}" if not e["loc"] else f"  - {where}: {msg}")
        else:
            lines.append(f"  - {where}: {e['msg']} (found {e.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], base_dir: Path, source: str = "") -> RunConfig:
    """Validate a config mapping. Raises ConfigError listing every problem."""
    if "base_dir" in raw:
        raise ConfigError(f"invalid run config {source}: unknown key 'base_dir'")
    try:
        return RunConfig(**raw, base_dir=base_dir)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None
    except TypeError as e:
        raise ConfigError(f"invalid run config {source}: {e}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run config; data paths resolve relative to its folder.

    Raises:
        ConfigError: missing file, invalid TOML, unknown key, wrong type or value.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"run config not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"run config {p} is not valid TOML: {e}") from None
    return parse_config(raw, p.resolve().parent, str(p))
