"""MkDocs hook: the configuration reference, generated at build time from the pydantic schema.

Walks `fedsilo.config.schema.RunConfig` recursively: every section and key with its type,
default, constraints and description (the Field's description, else the comment beside the
key in the source, else a short line from FALLBACK below), what each key refuses, with the
message the schema really gives for one refused value, and the messages of each section's own
checks (read from the validators' source). The page is never checked in, so it cannot drift.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PAGE = "reference/configuration.md"

# Keys whose source carries no comment: one line each (from README's annotated config).
# tests/docs/test_config_reference.py fails if an entry names a key the schema lacks.
FALLBACK: dict[str, str] = {
    "run": "The run: name, seed, rounds, mode, results folder, checkpoints.",
    "data": "The institutions' data and what to learn from it.",
    "logging": "Extra outputs of a run.",
    "run.name": "The run's name: results folder prefix and run-store name (at most 180 "
                "characters).",
    "run.seed": "The run seed: same seed, same bits (public by design).",
    "run.rounds": "Rounds to train (synchronous), or model versions (async), or boosting "
                  "rounds (XGBoost).",
    "run.evaluate_every": "Evaluate every N rounds.",
    "run.output_dir": "Folder of the results folders and the default run store.",
    "run.compare": "Also train the local-only and pooled references (simulation only).",
    "run.torch_threads": "PyTorch threads per process.",
    "data.task": "What is predicted.",
    "data.numeric": "The numeric columns; default: every column not categorical or excluded.",
    "data.categorical": "Columns one-hot encoded.",
    "data.exclude": "Columns never used (identifiers, free text).",
    "data.columns": "Column names of a header-less CSV (the deployed server sees no rows).",
    "data.na_values": "Cells read as missing (imputed with the federated mean).",
    "data.positive_above": "Binary task: a numeric target above this is the positive class.",
    "data.scale_target": "Standardise a regression target federatedly for training.",
    "data.test_fraction": "Each institution's held-out split.",
    "data.institutions": "One table per institution: `[[data.institutions]]`.",
    "data.institutions.name": "The institution's name (unique).",
    "data.partition": "One table split into simulated institutions.",
    "data.partition.path": "The table to split.",
    "data.partition.method": "iid, dirichlet (label skew), quantity skew, or a natural "
                             "split by `column`.",
    "data.partition.institutions": "How many institutions to make.",
    "data.partition.alpha": "Dirichlet concentration (smaller: more skew).",
    "data.partition.column": "The column to split by (method = \"column\").",
    "data.partition.merge": "Values of `column` merged into another's institution.",
    "data.loader_args": "Passed to the loader as `args`.",
    "model.kind": "A built-in model (or set `factory`).",
    "model.framework": "PyTorch, or scikit-learn's SGDClassifier / SGDRegressor.",
    "model.hidden": "Hidden layer sizes of kind \"mlp\".",
    "model.factory": "Your own model: \"module.path:callable\".",
    "model.args": "Keyword arguments for the factory.",
    "model.batchnorm": "How BatchNorm layers travel: averaged, or kept local (FedBN).",
    "client.epochs": "Local epochs per round (default 1 when neither epochs nor steps).",
    "client.steps": "Local optimizer steps per round instead of epochs.",
    "client.batch_size": "Local batch size.",
    "client.lr": "Local learning rate.",
    "client.optimizer": "Local optimizer.",
    "client.momentum": "Local SGD momentum.",
    "client.weight_decay": "Local weight decay.",
    "client.loss": "Your own loss: \"module.path:callable\".",
    "strategy.name": "The federated algorithm.",
    "strategy.fraction": "Share of institutions sampled each round.",
    "strategy.min_clients": "The fewest institutions a round samples and needs.",
    "strategy.stragglers": "Share of each cohort that only does 1..E epochs (or steps).",
    "strategy.straggler_policy": "\"partial\": use stragglers' partial work; \"drop\": leave "
                                 "them out.",
    "aggregation.threshold": "Shamir threshold t (SecAgg, SecAgg+): must exceed half the "
                             "neighbourhood.",
    "aggregation.neighbours": "SecAgg+: k neighbours on a public random ring graph.",
    "aggregation.frac_bits": "Fixed-point precision 2^-frac_bits.",
    "aggregation.max_abs": "Bound on each (weighted) value in fixed point.",
    "aggregation.robust": "A robust rule replacing the mean.",
    "aggregation.trim_fraction": "β of trimmed_mean.",
    "aggregation.byzantine": "f, for krum / multikrum.",
    "aggregation.select": "m, for multikrum (default K - f).",
    "aggregation.norm_bound": "Server-side norm bounding at M, with any rule or the mean.",
    "aggregation.secure": "Secure aggregation: the server learns only the sum.",
    "personalization.finetune_epochs": "Epochs of local fine-tuning of the final global model "
                                       "(0: none).",
    "personalization.ditto_lambda": "Ditto's pull λ towards the global model (unset: no "
                                    "Ditto).",
    "personalization.ditto_epochs": "Ditto: epochs of personal training per round.",
    "attack.fraction": "Share of institutions that attack.",
    "attack.kind": "sign_flip: the update times -scale; scale: the update times scale.",
    "attack.scale": "The attack's factor.",
    "clock.kind": "virtual (simulated seconds) or wall (real time); unset: the driver's "
                  "default.",
    "privacy.mode": "Differential privacy: central, distributed (needs secure aggregation) "
                    "or local DP-SGD.",
    "privacy.noise_multiplier": "z: noise std = z × clip norm.",
    "privacy.clip_norm": "L2 bound of each institution's update (clipped inside it).",
    "privacy.adaptive_clipping": "Quantile clipping (Andrew et al. 2021).",
    "privacy.target_quantile": "Adaptive clipping: the quantile aimed at.",
    "privacy.clip_learning_rate": "Adaptive clipping: the clip norm's learning rate.",
    "privacy.clip_count_stddev": "Adaptive clipping: σ_b of the clip-count noise.",
    "privacy.delta": "δ at which ε is reported.",
    "privacy.target_epsilon": "Budget: training stops before the round that would exceed it.",
    "privacy.min_contributors": "m (default strategy.min_clients): the fewest institutions a "
                                "central/distributed round samples and needs.",
    "privacy.deterministic_noise": "Experiments only: DP noise and sampling from the run seed "
                                   "(nothing then holds against the server).",
    "privacy.max_grad_norm": "Local DP-SGD: per-sample clip norm.",
    "privacy.local_epsilon": "Local DP-SGD: each institution's own budget "
                             "(`{ \"*\" = 3.0, name = 1.0 }`).",
    "personalization.finetune_lr": "Fine-tuning learning rate (default client.lr).",
    "personalization.ditto_lr": "Ditto's learning rate (default client.lr).",
    "clock.speeds": "Relative compute speed per institution.",
    "clock.delays": "Mean network delay per institution.",
    "clock.seconds_per_example": "Simulated compute seconds per example.",
    "clock.delay": "Distribution of the network delay.",
    "clock.delay_mean": "Mean network delay (simulated seconds).",
    "store.url": "SQLAlchemy URL of the run store (default results/fedsilo.db).",
    "store.enabled": "Record the run in the run store.",
    "evaluation.metrics": "Your own metrics: \"module.path:callable\" each.",
    "vertical.label_holder": "The party holding the target.",
    "vertical.epochs": "Training epochs (Hetero-LR, split learning).",
    "vertical.lr": "Learning rate.",
    "vertical.batch_size": "Batch size.",
    "commit.buffer_size": "Updates per commit (default: the number of institutions).",
    "commit.staleness": "s(τ): polynomial (τ+1)^-a, constant 1, hinge.",
    "commit.staleness_a": "a of s(τ).",
    "commit.staleness_b": "b of the hinge.",
    "commit.max_staleness": "Older updates are refused.",
    "strategy.server_lr": "The server optimizer's learning rate.",
    "strategy.mu": "FedProx's proximal weight μ.",
    "strategy.momentum": "Server momentum.",
    "strategy.beta1": "Server optimizer β1.",
    "strategy.beta2": "Server optimizer β2.",
    "strategy.eps": "Server Adam ε.",
    "strategy.tau": "Adaptivity τ.",
    "strategy.mixing": "FedAsync's α.",
    "strategy.buffer_size": "FedBuff's K: updates per commit.",
    "strategy.staleness": "s(τ): polynomial (τ+1)^-a, constant 1, hinge.",
    "strategy.staleness_a": "a of s(τ).",
    "strategy.staleness_b": "b of the hinge.",
    "strategy.max_staleness": "Older updates are refused.",
}

# A config the schema accepts: each refused value is tried on it, one at a time.
_BASE: dict[str, Any] = {"data": {"task": "binary", "institutions": [{"name": "a",
                                                                        "path": "a.csv"}]},
                         "model": {"kind": "logistic_regression"}}
# values for required keys of optional sub-tables, so only the tried key is wrong
_REQUIRED_SAMPLES: dict[str, Any] = {"data.partition.path": "all.csv",
                                     "data.partition.institutions": 2,
                                     "data.institutions.name": "a",
                                     "vertical.label_holder": "a"}


# ---------------------------------------------------------------- types, defaults, limits

def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (X, X | None, list[X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _toml(value: Any) -> str:
    """A value as written in TOML."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return "(its defaults)"
    if isinstance(value, float) and value >= 2**20 and float(value).is_integer():
        exp = int(value).bit_length() - 1
        if 2.0**exp == value:
            return f"2^{exp}"
    return json.dumps(value, ensure_ascii=False)


def type_name(annotation: Any) -> str:
    """A readable name for a field's type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(_toml(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" or unset" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {type_name(args[0])} → {type_name(args[1])}" if args else "table"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "table"
        return {"str": "string", "int": "integer", "float": "number",
                "bool": "boolean"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def default_of(field: FieldInfo) -> str:
    """The default as TOML, or 'required'."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    return _toml(value)


_LIMITS = ((at.Ge, "ge", "≥", "<"), (at.Gt, "gt", ">", "≤"), (at.Le, "le", "≤", ">"),
           (at.Lt, "lt", "<", "≥"), (at.MinLen, "min_length", "at least", "fewer than"),
           (at.MaxLen, "max_length", "at most", "more than"))


def limits(field: FieldInfo) -> list[tuple[str, str, Any]]:
    """(allowed, refused, one refused value) for each numeric or length constraint."""
    out = []
    for item in field.metadata:
        for kind, attr, ok, bad in _LIMITS:
            if isinstance(item, kind):
                bound = getattr(item, attr)
                if attr.endswith("length"):
                    out.append((f"{ok} {bound} items", f"{bad} {bound} items", None))
                    continue
                step = 1 if isinstance(bound, int) and field.annotation is not float else 0.5
                sample = {"ge": bound - step, "gt": bound, "le": bound + step,
                          "lt": bound}[attr]
                out.append((f"{ok} {bound}", f"{bad} {bound}", sample))
    return out


def choices(annotation: Any) -> tuple[Any, ...]:
    """The Literal choices of a field (also inside X | None)."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(c for a in get_args(annotation) for c in choices(a))


# ---------------------------------------------------------------- source comments, messages

def _source(cls: type) -> tuple[str, ast.ClassDef] | None:
    """The class's dedented source and its parsed definition."""
    try:
        text = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return None
    node = ast.parse(text).body[0]
    return (text, node) if isinstance(node, ast.ClassDef) else None


def comments(cls: type) -> dict[str, str]:
    """Each field's comment, from the class or the base class that declares it."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if isinstance(base, type) and issubclass(base, BaseModel) and base is not BaseModel:
            out.update(_own_comments(base))
    return out


def _own_comments(cls: type) -> dict[str, str]:
    """The comments of the fields a class declares: the full-line comments just above each
    and the one beside it (with its continuation lines, whose text is indented)."""
    found = _source(cls)
    if found is None:
        return {}
    text, node = found
    lines = text.splitlines()
    beside: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            beside[tok.start[0]] = tok.string
    out: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        parts, row = [], stmt.lineno - 1
        while row >= 1 and lines[row - 1].strip().startswith("#") and not \
                lines[row - 1].strip().startswith("#  "):
            parts.insert(0, lines[row - 1].strip().lstrip("#").strip())
            row -= 1
        end = stmt.end_lineno or stmt.lineno
        if end in beside and not lines[end - 1].strip().startswith("#"):
            parts.append(beside[end].lstrip("#").strip())
            row = end + 1
            while row <= len(lines) and lines[row - 1].strip().startswith("#  "):
                parts.append(lines[row - 1].strip().lstrip("#").strip())
                row += 1
        parts = [p for p in parts if not p.startswith(("type:", "noqa"))]
        if parts:
            text = " ".join(parts)
            out[stmt.target.id] = text[:1].upper() + text[1:] if text[:1].isascii() else text
    return out


def _message(node: ast.AST) -> str | None:
    """A message literal: a string, an f-string (placeholders shown as {…}), or a sum."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{…}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message(node.left), _message(node.right)
        return (left or "{…}") + (right or "{…}") if left or right else None
    return None


def _called_message(node: ast.AST, module: Any) -> str | None:
    """The message a module-level helper returns, for `raise ValueError(helper(...))`."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    helper = getattr(module, node.func.id, None)
    if not inspect.isfunction(helper) or helper.__module__ != module.__name__:
        return None
    tree = ast.parse(textwrap.dedent(inspect.getsource(helper)))
    found = [_message(n.value) for n in ast.walk(tree)
             if isinstance(n, ast.Return) and n.value is not None]
    return next((m for m in found if m), None)


def messages(cls: type) -> list[str]:
    """The messages a model's own validators raise (or collect, or return)."""
    found = _source(cls)
    if found is None:
        return []
    module = inspect.getmodule(cls)
    out: list[str] = []
    for node in ast.walk(found[1]):
        arg: ast.AST | None = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            arg = node.exc.args[0]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "append" and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "problems" and node.args):
            arg = node.args[0]
        elif isinstance(node, ast.Return) and node.value is not None:
            arg = node.value
        if arg is None:
            continue
        text = _message(arg) or _called_message(arg, module)
        if text and text != "{…}" and text not in out:
            out.append(text)
    return out


# ---------------------------------------------------------------- real refusals

def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of raw with `dotted` set (list items: the first one)."""
    raw = json.loads(json.dumps(raw))
    node = raw
    *parents, last = dotted.split(".")
    path = ""
    for key in parents:
        path = f"{path}.{key}" if path else key
        if key == "institutions" and path == "data.institutions":
            node = node[key][0]
            continue
        node = node.setdefault(key, {})
        for sample_key, sample in _REQUIRED_SAMPLES.items():
            head, _, tail = sample_key.rpartition(".")
            if head == path:
                node.setdefault(tail, sample)
    node[last] = value
    if dotted.startswith("data.partition."):
        raw["data"].pop("institutions", None)
    return raw


def refusal(dotted: str, value: Any, strategy: str | None = None) -> str | None:
    """The message the schema gives for `dotted = value` on an otherwise valid config (with
    [strategy] name = `strategy`, for a strategy's own keys)."""
    from fedsilo.config.schema import parse_config

    raw = _BASE if strategy is None else _set(_BASE, "strategy.name", strategy)
    try:
        parse_config(_set(raw, dotted, value), Path("."), "run.toml")
    except Exception as e:  # noqa: BLE001 - any refusal is what we show
        lines = [ln.strip().removeprefix("- ") for ln in str(e).splitlines()[1:]
                 if ln.strip()]
        return " ".join(lines) or str(e)
    return None


# ---------------------------------------------------------------- the page

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], prefix: str,
          strategy: str | None = None) -> tuple[list[str], list[str]]:
    """The key table's rows, and one refused value per constrained key with its message."""
    notes = comments(model)
    rows, said_list = [], []
    for name, field in model.model_fields.items():
        if name in ("base_dir", "hyper"):
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        text = (field.description or notes.get(name) or FALLBACK.get(dotted)
                or _summary(_models_in(field.annotation)))
        refused = [bad for _, bad, _ in limits(field)]
        sample = next((s for _, _, s in limits(field) if s is not None), None)
        opts = choices(field.annotation)
        if opts:
            refused.append("any other value")
            sample = "?" if sample is None else sample
        if sample is not None:
            said = refusal(dotted, sample, strategy)
            if said:
                said_list.append(f"- `{name} = {_toml(sample)}`: {_cell(said)}")
        default = default_of(field)
        default = "**required**" if default == "required" else f"`{_cell(default)}`"
        rows.append(f"| `{name}` | {_cell(type_name(field.annotation))} | {default} | "
                    f"{_cell(', '.join(refused) or '—')} | {_cell(text)} |")
    return rows, said_list


def _table(model: type[BaseModel], prefix: str, strategy: str | None = None) -> list[str]:
    """A key table, then the refused values with the schema's messages."""
    rows, said = _rows(model, prefix, strategy)
    out = _HEADER + rows + [""]
    if said:
        out += ["Refused, for example (the message `fedsilo run` prints):", ""] + said + [""]
    return out


def _summary(models: list[type[BaseModel]]) -> str:
    """A section's first docstring sentence, for the table of sections."""
    for model in models:
        doc = model.__dict__.get("__doc__")
        if doc:
            text = " ".join(inspect.cleandoc(doc).split())
            return text.split(". ")[0].rstrip(".") + "."
    return ""


_HEADER = ["| key | type | default | refused | description |", "|---|---|---|---|---|"]


def section(model: type[BaseModel], dotted: str, level: int, array: bool) -> list[str]:
    """A section's heading, docstring, key table and checks, then its sub-tables."""
    title = f"[[{dotted}]]" if array else f"[{dotted}]"
    out = [f"{'#' * level} `{title}`", ""]
    doc = model.__dict__.get("__doc__")
    if doc:
        out += [" ".join(inspect.cleandoc(doc).split()), ""]
    out += _table(model, dotted)
    if dotted == "strategy":
        out += strategy_keys()
    checks = messages(model)
    if checks:
        out += ["Checks on the whole section, with their messages:", ""]
        out += [f"- {_cell(m)}" for m in checks] + [""]
    for name, field in model.model_fields.items():
        for sub in _models_in(field.annotation):
            if name != "hyper":
                is_list = get_origin(field.annotation) is list
                out += section(sub, f"{dotted}.{name}", level + 1, is_list)
    return out


def strategy_keys() -> list[str]:
    """The hyper-parameters each strategy takes in the flat [strategy] section."""
    from fedsilo.algorithms.registry import STRATEGY_REGISTRY

    out = ["Each strategy's own keys (a key the named strategy does not take is refused):",
           ""]
    for name, entry in STRATEGY_REGISTRY.items():
        out += [f"**`name = \"{name}\"`**", ""]
        if not entry.params.model_fields:
            out += ["Only the common keys above.", ""]
            continue
        out += _table(entry.params, "strategy", name)
    return out


def render() -> str:
    """The whole configuration reference page."""
    from fedsilo.config.schema import RunConfig

    unknown = refusal("run.roundz", 20)
    out = ["# Configuration reference", "",
           "Generated from the pydantic schema (`src/fedsilo/config/schema.py`) every time the "
           "site is built: it cannot fall behind the code. A run config is a TOML file "
           "(`fedsilo run CONFIG.toml`; paths relative to it); every section below is a TOML "
           "table, every key a key of it. *unset* means the key is absent (TOML has no null).",
           "",
           "A bad key, type or value stops the run with exit code 2 before training, and the "
           "message names the key and the value found. The *refused* column gives what each "
           "key refuses besides a value of the wrong type; under each table, one such value "
           "per key with the message the schema gives for it, produced by validating it while "
           f"this page was built. An unknown key: `{unknown}`.", ""]
    out += ["| section | | description |", "|---|---|---|"]
    for name, field in RunConfig.model_fields.items():
        for sub in _models_in(field.annotation):
            need = "**required**" if field.is_required() else "optional"
            text = FALLBACK.get(name) or _summary([sub])
            out.append(f"| `[{name}]` | {need} | {_cell(text)} |")
    out.append("")
    checks = messages(RunConfig)
    if checks:
        out += ["## Checks across sections", "",
                "Settings that conflict are refused with these messages ({…}: the values of "
                "your config):", ""]
        out += [f"- {_cell(m)}" for m in checks] + [""]
    for name, field in RunConfig.model_fields.items():
        for sub in _models_in(field.annotation):
            out += section(sub, name, 2, get_origin(field.annotation) is list)
    return "\n".join(out) + "\n"


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
