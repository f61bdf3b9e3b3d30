"""Vertical federated trees: a hospital (demographics, the label) and a laboratory (lab
values) with partly overlapping patients, aligned by PSI, trained in XGBoost's column-split
mode: the same model and predictions as one XGBoost on the joined table."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fedsilo.data.loading import read_table
from fedsilo.errors import DataError
from fedsilo.trees.xgb import booster_params
from tests.conftest import EXAMPLES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

xgboost = pytest.importorskip("xgboost",
                              reason="needs the xgboost extra: pip install 'fedsilo[xgboost]'")
from fedsilo.trees.vertical import predict_vertical, train_vertical  # noqa: E402

HEART = EXAMPLES / "heart_disease"
HOSPITAL = ["age", "sex", "cp", "trestbps", "fbs", "restecg", "exang"]
LAB = ["chol", "thalach", "oldpeak", "slope", "ca", "thal"]  # ca, thal: some NaN (missing)
# XGBoost sums float32 gradient histograms; split finding over each party's columns may add
# them in another order than one XGBoost on the joined table, so predictions may differ in
# their last float32 bits. Measured on this data: 0.0 (bit-identical).
TOLERANCE = 1e-6
PARAMS = {**booster_params({"seed": 7}, "binary", 2), "max_depth": 3, "eta": 0.3}
ROUNDS = 8


@pytest.fixture(scope="module")
def heart() -> dict[str, object]:
    raw = tomllib.loads((HEART / "heart_disease.toml").read_text())
    frame = read_table(HEART / "data" / "processed.cleveland.data", raw["data"]["columns"],
                       raw["data"]["na_values"])
    n = len(frame)
    ids = [f"P-{k:05d}" for k in range(n)]
    hospital = np.arange(0, 251)                                   # P-00000 .. P-00250
    lab = np.random.default_rng(3).permutation(np.arange(50, n))   # P-00050 .. P-00302
    return {
        "hospital": frame[HOSPITAL].to_numpy(np.float32)[hospital],
        "labels": (frame["num"].to_numpy() > 0).astype(np.float32)[hospital],
        "lab": frame[LAB].to_numpy(np.float32)[lab],
        "ids": {"hospital": [ids[k] for k in hospital], "lab": [ids[k] for k in lab]},
        "shared": {ids[k] for k in range(50, 251)},
    }


def test_psi_aligned_column_split_trees_equal_trees_on_the_joined_table(heart: dict) -> None:
    ids = heart["ids"]
    model = train_vertical({"hospital": heart["hospital"], "lab": heart["lab"]}, "hospital",
                           heart["labels"], PARAMS, ROUNDS, ids=ids)
    rows = model.rows
    # PSI aligned exactly the shared IDs, row k of both parties the same patient
    assert [ids["hospital"][r] for r in rows["hospital"]] == [ids["lab"][r] for r in rows["lab"]]
    assert {ids["hospital"][r] for r in rows["hospital"]} == heart["shared"]
    assert len(rows["hospital"]) == len(heart["shared"]) == 201
    assert model.order == ["hospital", "lab"]

    joined = np.hstack([heart["hospital"][rows["hospital"]], heart["lab"][rows["lab"]]])
    assert np.isnan(joined).any()  # XGBoost's missing values, across the split too
    central = xgboost.train(PARAMS, xgboost.DMatrix(joined,
                                                    label=heart["labels"][rows["hospital"]]),
                            ROUNDS)
    expected = central.predict(xgboost.DMatrix(joined))

    # every party holds the same, whole model (every split, both parties' thresholds)
    assert model.models["hospital"] == model.models["lab"]
    whole = xgboost.Booster()
    whole.load_model(bytearray(model.models["lab"]))
    assert whole.num_features() == joined.shape[1]
    assert np.abs(whole.predict(xgboost.DMatrix(joined)) - expected).max() <= TOLERANCE

    # collaborative prediction: each party only its own columns; both end with the predictions
    preds = predict_vertical(model.models, {"hospital": heart["hospital"][rows["hospital"]],
                                            "lab": heart["lab"][rows["lab"]]}, "hospital")
    assert set(preds) == {"hospital", "lab"}
    for p in preds.values():
        assert p.shape == expected.shape
        assert np.abs(p - expected).max() <= TOLERANCE


def test_pre_aligned_tables_train_without_psi() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 3] > 0).astype(np.float32)
    params = {"objective": "binary:logistic", "tree_method": "hist", "nthread": 1, "seed": 0}
    model = train_vertical({"a": x[:, :1], "b": x[:, 1:3], "c": x[:, 3:]}, "a", y, params, 3)
    assert model.order == ["a", "b", "c"] and model.rows["c"] == list(range(120))
    central = xgboost.train(params, xgboost.DMatrix(x, label=y), 3)
    ours = xgboost.Booster()
    ours.load_model(bytearray(model.models["c"]))
    d = xgboost.DMatrix(x)
    assert np.abs(ours.predict(d) - central.predict(d)).max() <= TOLERANCE


def test_tables_that_do_not_fit_are_refused() -> None:
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(DataError, match="same rows"):
        train_vertical({"a": x, "b": x[:5]}, "a", np.zeros(10), {}, 1)
    with pytest.raises(DataError, match="label holder"):
        train_vertical({"a": x, "b": x}, "z", np.zeros(10), {}, 1)
    with pytest.raises(DataError, match="labels"):
        train_vertical({"a": x, "b": x}, "a", np.zeros(9), {}, 1)
    with pytest.raises(DataError, match="IDs"):
        train_vertical({"a": x, "b": x}, "a", np.zeros(10), {}, 1,
                       ids={"a": [str(k) for k in range(10)]})
