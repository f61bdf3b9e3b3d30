"""Imports point one way: a package of src/fedsilo imports only packages of a lower layer (or
itself), never one of its own layer or above, so the packages form no cycle.

The layers, bottom to top (docs/architecture.md, "Layers"). Every import counts: at module
level, inside a function, under TYPE_CHECKING; `import fedsilo.X`, `from fedsilo.X import`,
`from fedsilo import X` and relative imports alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fedsilo"
ROOT = "fedsilo"  # the package itself: fedsilo/__init__.py, the lazy public API

LAYERS: dict[str, int] = {
    "errors": 0, "limits": 0,       # leaf modules: imports nothing of fedsilo
    "core": 1,                      # shared vocabulary: messages, params, rng, contracts
    "optim": 2, "evaluation": 2,    # numeric tools over core
    "data": 2,                      # an institution's data: loading, schema, preprocessing
    "aggregation": 3,               # layers of the sum: about updates, not strategies
    "vertical": 3,                  # vertical FL: PSI row alignment over core and data
    "algorithms": 4,                # strategies: folds replies through an aggregator
    "engine": 5,                    # the server's run: drives strategies over a transport
    "config": 6,                    # builds strategies, aggregators and clocks from a run config
    "store": 7,                     # records what the engine publishes, a config's run
    "trees": 7,                     # XGBoost's federated engine: tracker, workers, the boosting
    "client": 8,                    # the institution: client halves, secure prepare, receipts
    "transport": 9,                 # carries tasks to institutions (provisions their policy)
    "session": 10,                  # one run over any transport
    "simulation": 11, "dashboard": 11,  # a simulated run; the results viewer
    "cli": 12,                      # the commands
    ROOT: 13,                       # re-exports the public API of all of the above
}


def package_of(module: str) -> str:
    """The package (layer key) of a dotted module name starting with `fedsilo`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def module_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, fedsilo module) of every import in `tree`, the module `module` (a package when
    `is_package`, for relative imports)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == ROOT:  # `from fedsilo import X`: X a package or a public name
                out += [(node.lineno, f"{ROOT}.{a.name}" if a.name in LAYERS else ROOT)
                        for a in node.names]
            else:
                out.append((node.lineno, target))
    return [(line, m) for line, m in out if m == ROOT or m.startswith(ROOT + ".")]


def check_source(source: str, module: str, filename: str,
                 is_package: bool = False) -> list[str]:
    """The imports of `source` (the code of `module`) that point up or sideways, one
    'file:line: ...' line each."""
    here = package_of(module)
    if here not in LAYERS:
        return [f"{filename}:1: package '{here}' has no layer: add it to LAYERS "
                f"(and to docs/architecture.md, Layers)"]
    problems = []
    for line, target in imported(ast.parse(source, filename), module, is_package):
        there = package_of(target)
        if there == here:
            continue
        if there not in LAYERS:
            problems.append(f"{filename}:{line}: imports {target}, whose package '{there}' "
                            f"has no layer in LAYERS")
        elif LAYERS[there] >= LAYERS[here]:
            problems.append(f"{filename}:{line}: {here} (layer {LAYERS[here]}) imports "
                            f"{target} ({there}, layer {LAYERS[there]}): a package imports "
                            f"only from lower layers")
    return problems


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_import_points_down() -> None:
    problems = []
    for path in modules():
        problems += check_source(path.read_text(encoding="utf-8"), module_of(path),
                                 str(path.relative_to(SRC.parents[1])),
                                 is_package=path.name == "__init__.py")
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_every_package_has_a_layer() -> None:
    packages = {package_of(module_of(p)) for p in modules()}
    assert packages - set(LAYERS) == set()
    assert set(LAYERS) - packages == set(), "LAYERS names a package that no longer exists"


@pytest.mark.parametrize("source", [
    "from fedsilo.client.client import Client\n",
    "import fedsilo.engine.flow\n",
    "from fedsilo import engine\n",
    "from fedsilo import LocalData\n",
    "def f():\n    from fedsilo.algorithms.base import Strategy\n    return Strategy\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fedsilo.store import disk\n",
    "from ..transport import inprocess\n",
    "from ..optim import sgd\n",  # a peer of the same layer: sideways
])
def test_a_wrong_edge_is_caught(source: str) -> None:
    problems = check_source(source, "fedsilo.data.schema", "src/fedsilo/data/schema.py")
    assert len(problems) == 1
    assert problems[0].startswith("src/fedsilo/data/schema.py:")
    assert "data (layer 2) imports fedsilo" in problems[0]


@pytest.mark.parametrize("source", [
    "from fedsilo.core.params import Params\n",
    "import fedsilo.errors\n",
    "from fedsilo.data.local_data import LocalData\n",
    "from . import local_data\n",
    "from .schema import Schema\n",
    "def f():\n    from fedsilo.limits import MAX_LEVELS\n    return MAX_LEVELS\n",
    "import numpy\n",
])
def test_a_right_edge_passes(source: str) -> None:
    assert check_source(source, "fedsilo.data.schema", "src/fedsilo/data/schema.py") == []


def test_the_line_is_named() -> None:
    source = "import numpy\n\n\ndef f():\n    from fedsilo.cli import main\n"
    [problem] = check_source(source, "fedsilo.core.rng", "src/fedsilo/core/rng.py")
    assert problem.startswith("src/fedsilo/core/rng.py:5: core (layer 1) imports fedsilo.cli")


def test_an_unknown_package_is_refused() -> None:
    [problem] = check_source("import os\n", "fedsilo.newpkg.x", "src/fedsilo/newpkg/x.py")
    assert "no layer" in problem
