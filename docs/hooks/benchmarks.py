"""MkDocs hook: the benchmark page's measured tables, from `benchmarks/results/*.json`.

When the benchmark runner (`benchmarks/run_all.py`) has written results
(`benchmarks/results/<date>.json`; its `--quick` runs, `<date>-quick.json`, are checks of the
scripts at tiny sizes and never shown), the newest file replaces the
`<!-- benchmark-results -->` marker of docs/benchmarks.md: README's summary of it
(benchmarks/summary.py), then its tables: every list of flat records becomes a table (one
column per key), every dict a one-row table, every other value a row of a summary table.
Without results the marker gives way to a sentence saying so.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

MARKER = "<!-- benchmark-results -->"
PAGE = "benchmarks.md"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown rows for records, columns in order of first appearance."""
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in records]
    return out


def _summary() -> Any:
    """benchmarks/summary.py, the module that writes README's benchmark section."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "summary.py"
    spec = importlib.util.spec_from_file_location("summary", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(results: dict[str, Any], name: str, summary: str = "") -> str:
    """The tables of one results file, after README's summary of it."""
    out = ["## Latest results", "", summary,
           f"Every record of `benchmarks/results/{name}` (the newest results file):", ""]
    scalars = {k: v for k, v in results.items()
               if not (isinstance(v, list) and v and all(isinstance(r, dict) for r in v))
               and not isinstance(v, dict)}
    if scalars:
        out += table([{"key": k, "value": v} for k, v in scalars.items()]) + [""]
    for key, value in results.items():
        if isinstance(value, dict):
            value = [value] if not all(isinstance(v, dict) for v in value.values()) else \
                [{"name": k, **v} for k, v in value.items()]
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            out += [f"### {key}", ""] + table(value) + [""]
    return "\n".join(out)


def results_section(root: Path) -> str:
    """What replaces the marker: the newest results' tables, or a note that there are none."""
    summary = _summary()
    found = summary.newest(root / "benchmarks" / "results")  # the file README shows
    if found is None:
        return ("No machine-readable results are checked in yet (`benchmarks/results/` is "
                "empty): run `python benchmarks/run_all.py`.")
    results = json.loads(found.read_text())
    return render(results, found.name, summary.render(results, found.name))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the benchmark page's marker."""
    if page.file.src_uri != PAGE or MARKER not in markdown:
        return markdown
    root = Path(config.config_file_path).parent
    return markdown.replace(MARKER, results_section(root))
