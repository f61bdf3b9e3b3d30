"""run.mode = "vertical": a hospital and a laboratory (heart disease split by columns, 736 of
828 patients shared) aligned by PSI and trained by each vertical protocol, from the CLI, with
the label holder alone / vertical / pooled report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fedsilo.cli.main import main
from fedsilo.config.schema import RunConfig, parse_config
from fedsilo.errors import ConfigError
from fedsilo.simulation.vertical import run_vertical
from tests.conftest import EXAMPLES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VERTICAL = EXAMPLES / "heart_vertical"


def config(kind: str = "logistic_regression", **vertical: Any) -> RunConfig:
    raw = tomllib.loads((VERTICAL / "heart_vertical.toml").read_text())
    raw["model"] = {"kind": kind}
    raw["vertical"].update(vertical)
    raw["run"]["rounds"] = 10
    return parse_config(raw, VERTICAL)


@pytest.mark.parametrize("kind", ["logistic_regression", "mlp", "xgboost"])
def test_each_protocol_trains_across_the_parties(kind: str) -> None:
    if kind == "xgboost":
        pytest.importorskip("xgboost", reason="needs the xgboost extra")
    result = run_vertical(config(kind), write=False)
    assert result.shared == 736
    assert set(result.metrics) == {"label holder alone", "vertical", "pooled"}
    accuracy = {k: m["accuracy"] for k, m in result.metrics.items()}
    assert accuracy["vertical"] > 0.6  # two classes, 55 % the larger
    if kind == "xgboost":  # column-split trees equal trees on the joined table
        assert accuracy["vertical"] == pytest.approx(accuracy["pooled"], abs=1e-12)
    assert result.parties["laboratory"]["columns"] == ["chol", "restecg", "thalach", "exang",
                                                       "oldpeak"]


def test_the_cli_prints_the_vertical_report(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(VERTICAL / "heart_vertical.toml"), "--output",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "736 shared rows" in out and "label holder alone" in out and "pooled" in out
    assert list(tmp_path.glob("*/comparison.json"))


@pytest.mark.parametrize(("change", "message"), [
    ({"vertical": None}, "label_holder is missing"),
    ({"vertical": {"label_holder": "bank"}}, "is none of"),
    ({"data_id": None}, "data.id"),
    ({"aggregation": {"secure": "secagg+", "threshold": 2}}, "horizontal runs"),
])
def test_a_vertical_config_names_what_is_missing(change: dict[str, Any], message: str) -> None:
    raw = tomllib.loads((VERTICAL / "heart_vertical.toml").read_text())
    for key, value in change.items():
        if key == "data_id":
            raw["data"].pop("id")
        elif value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, VERTICAL)
