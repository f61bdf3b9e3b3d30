"""The report's further metrics: AUC beside accuracy (binary), R² and MAE beside RMSE
(regression), scored by scikit-learn on the final models only (the per-round history, which
the golden results pin bit for bit, is unchanged); an optional primary metric of your own;
whole-number round ticks on the plot."""

import json

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

from fedsilo.cli.main import main
from fedsilo.config.schema import load_config
from fedsilo.errors import ConfigError
from fedsilo.evaluation import plots
from fedsilo.evaluation.metrics import compute, report_extras
from tests.cli.test_cli import heart_config
from tests.conftest import EXAMPLES


def test_auc_of_a_known_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # 4 (positive, negative) pairs; 3 ordered right: 0.35 < 0.4 is the one wrong
    assert report_extras("binary", y, p) == {"auc": 0.75}
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    assert report_extras("binary", y, p)["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-15)


def test_auc_is_left_out_when_the_test_rows_hold_one_class():
    assert report_extras("binary", np.ones(5), np.linspace(0, 1, 5)) == {}


def test_r2_and_mae_of_a_known_case():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.5, 5.0])
    # errors 0.5, 0, -0.5, 1: MAE 0.5; SSE 1.5 over SST 5: R² 0.7
    got = report_extras("regression", y, pred)
    assert got == pytest.approx({"mae": 0.5, "r2": 0.7}, abs=1e-15)
    rng = np.random.default_rng(1)
    y, pred = rng.normal(size=300), rng.normal(size=300)
    got = report_extras("regression", y, pred)
    assert got["r2"] == pytest.approx(r2_score(y, pred), abs=1e-12)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-12)
    # and the per-round numpy ones agree with scikit-learn
    history = compute("regression", y, pred)
    assert (history["r2"], history["mae"]) == pytest.approx((got["r2"], got["mae"]), abs=1e-12)


def test_binary_report_shows_auc_beside_accuracy(tmp_path, capsys):
    cfg = heart_config(tmp_path, ("rounds = 15", "rounds = 3"))
    assert main(["run", str(cfg), "--quiet", "--output", str(tmp_path / "r")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Other metrics (weighted by test rows)" in out and " auc " in out
    folder = next((tmp_path / "r").glob("heart-disease-*"))
    report = json.loads((folder / "comparison.json").read_text())
    assert report["metric"] == "accuracy"
    auc = report["other_metrics"]["auc"]
    assert auc["higher_is_better"] and len(auc["institutions"]) == 4
    for row in auc["institutions"]:  # better than chance at every hospital
        assert 0.5 < row["federated"] <= 1 and 0.5 < row["pooled"] <= 1
    assert auc["overall"]["federated"] > 0.75 and auc["overall"]["pooled"] > 0.75
    assert (folder / "comparison_auc.csv").read_text().startswith(
        "institution,n_test,local_only_auc,local_only_all_tests_auc,federated_auc,pooled_auc")
    history = json.loads((folder / "history.json").read_text())
    assert all("auc" not in ev["federated"] for ev in history)  # the history is unchanged


def test_regression_report_shows_r2_and_mae():
    from fedsilo.simulation.run import run_simulation

    cfg = load_config(EXAMPLES / "house_prices/house_prices.toml")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"rounds": 3})})
    cmp = run_simulation(cfg, write=False).comparison
    assert cmp is not None and cmp.metric == "rmse"
    others = {c.metric: c for c in cmp.others}
    assert list(others) == ["r2", "mae"]
    assert others["r2"].higher_is_better and not others["mae"].higher_is_better
    # R² = 1 - MSE / Var(test targets): on one institution's test rows, (1 - R²) of two
    # models is in the ratio of their squared RMSEs (the R² of scikit-learn, the RMSE of the
    # institutions' own per-round evaluation; predictions are float32)
    for r2, rmse in zip(others["r2"].rows, cmp.rows):
        assert 0 < r2.federated < 1
        for model in ("local_only", "pooled"):
            assert (1 - r2.federated) / (1 - getattr(r2, model)) == pytest.approx(
                (rmse.federated / getattr(rmse, model)) ** 2, rel=1e-6)
    # MAE (US$) below RMSE, row by row: large errors weigh more in RMSE
    for mae, rmse in zip((*others["mae"].rows, others["mae"].overall), (*cmp.rows, cmp.overall)):
        assert 10_000 < mae.federated < rmse.federated


def test_primary_metric_is_the_task_s_unless_named(tmp_path):
    cfg = load_config(heart_config(tmp_path))
    assert cfg.primary_metric() == "accuracy"
    named = load_config(heart_config(tmp_path, append='\n[evaluation]\nprimary = "log_loss"\n'))
    assert named.primary_metric() == "log_loss"
    with pytest.raises(ConfigError, match="evaluation.primary 'rmse' is not a metric"):
        load_config(heart_config(tmp_path, append='\n[evaluation]\nprimary = "rmse"\n'))


def test_round_axis_counts_whole_rounds(tmp_path, monkeypatch):
    kept = []
    monkeypatch.setattr(plots.plt, "close", kept.append)
    rounds = [{"round": r, "federated": {"accuracy": 0.5 + r / 10},
               "evaluation": {"a": {"accuracy": 0.5}}} for r in (1, 2, 3)]
    plots.plot_rounds(rounds, "accuracy", tmp_path / "m.png")
    ticks = kept[0].axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    plots.plt.close(kept[0])
