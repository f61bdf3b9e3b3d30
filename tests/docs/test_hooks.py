"""The site's build hooks (docs/hooks/): the configuration reference walks the whole schema,
the benchmark page renders a results file, the navigation lists every tutorial."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from pydantic import BaseModel

from fedsilo.config.schema import RunConfig

HOOKS = Path(__file__).resolve().parents[2] / "docs" / "hooks"


def hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    ref = hook("config_reference")
    out = []
    for name, field in model.model_fields.items():
        if name in ("base_dir", "hyper"):
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        out.append(dotted)
        for sub in ref._models_in(field.annotation):
            out += all_keys(sub, dotted)
    return out


def test_every_key_of_the_schema_is_on_the_page_with_a_description() -> None:
    ref = hook("config_reference")
    text = ref.render()
    for dotted in all_keys(RunConfig):
        section, _, key = dotted.rpartition(".")
        assert (f"`{key}`" if section else f"`[{key}]`") in text, dotted
        if section:
            assert f"[{section}]" in text, section
    for line in text.splitlines():
        if line.startswith("| `"):
            assert not line.rstrip().endswith("|  |"), f"no description: {line}"


def test_fallback_descriptions_name_real_keys() -> None:
    """A description kept for a key the schema dropped or renamed fails here."""
    from fedsilo.algorithms.registry import STRATEGY_REGISTRY

    ref = hook("config_reference")
    known = set(all_keys(RunConfig))
    known |= {f"strategy.{k}" for e in STRATEGY_REGISTRY.values() for k in e.params.model_fields}
    assert set(ref.FALLBACK) - known == set()


def test_a_refusal_is_the_schemas_own_message() -> None:
    ref = hook("config_reference")
    assert ref.refusal("privacy.delta", 1) == \
        "privacy.delta: Input should be less than 1 (found 1)"
    assert "strategy.mu" in ref.refusal("strategy.mu", -1, strategy="fedprox")
    assert ref.refusal("run.rounds", 3) is None


def _results(cpu: str, **records: object) -> dict:
    machine = {"cpu": cpu, "cores_usable": 2, "memory_gib": 8.0, "python": "3.11",
               "git_commit": "abc", "load_average_1m_at_start": 0.1}
    return {"date": "2026-02-01", "quick": False, "machine": machine, "skipped": [],
            "runs": [], **records}


def test_benchmark_results_become_tables(tmp_path: Path) -> None:
    bench = hook("benchmarks")
    assert "No machine-readable results" in bench.results_section(tmp_path)
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "2026-01-01.json").write_text(json.dumps({"machine": "old"}))
    (results / "2026-02-01.json").write_text(json.dumps(_results("2 vCPU", compression=[
        {"task": "digits", "bytes_per_fit_reply": 2429},
        {"task": "heart", "bytes_per_fit_reply": 382}])))
    text = bench.results_section(tmp_path)
    assert "2026-02-01.json" in text and "2 vCPU" in text
    assert "### Goals" in text  # README's summary first
    assert "### compression" in text  # then every record
    assert "| task | bytes_per_fit_reply |" in text and "| heart | 382 |" in text


@pytest.mark.parametrize("listed", [True, False])
def test_every_tutorial_page_is_in_the_navigation(tmp_path: Path, listed: bool) -> None:
    nav_hook = hook("tutorials_nav")
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "tutorials" / "a.md").write_text("# Alpha\n")
    (tmp_path / "tutorials" / "new.md").write_text("# A new example\n\ntext\n")
    pages = [{"Alpha": "tutorials/a.md"}] + ([{"New": "tutorials/new.md"}] if listed else [])
    config = SimpleNamespace(docs_dir=str(tmp_path), nav=[{"Tutorials": list(pages)}])
    nav_hook.on_config(config)
    tutorials = config.nav[0]["Tutorials"]
    assert tutorials[0] == {"Alpha": "tutorials/a.md"}
    expected = {"New": "tutorials/new.md"} if listed else {"A new example": "tutorials/new.md"}
    assert tutorials[1:] == [expected]


def test_quick_benchmark_results_are_never_shown(tmp_path: Path) -> None:
    bench = hook("benchmarks")
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "2026-02-01.json").write_text(json.dumps(_results("full-run CPU")))
    (results / "2026-03-01-quick.json").write_text(json.dumps(_results("quick-run CPU")))
    text = bench.results_section(tmp_path)
    assert "2026-02-01.json" in text and "full-run CPU" in text
    assert "quick-run CPU" not in text
