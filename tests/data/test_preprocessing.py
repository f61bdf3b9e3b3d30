"""Federated statistics (merged per-institution aggregates) equal pooled statistics."""

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.loading import read_table
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor, as_labels, merge_all
from fedsilo.data.schema import Schema
from fedsilo.errors import DataError
from tests.conftest import EXAMPLES

HEART = EXAMPLES / "heart_disease" / "data"
COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
           "oldpeak", "slope", "ca", "thal", "num"]
SCHEMA = Schema(target="num", task="binary", positive_above=0,
                numeric=("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak",
                         "slope", "ca"),
                categorical=("cp", "restecg", "thal"))


@pytest.fixture(scope="module")
def hospitals():
    files = ["cleveland", "hungarian", "switzerland", "va"]
    return [read_table(HEART / f"processed.{f}.data", COLUMNS) for f in files]


def test_federated_statistics_equal_pooled(hospitals):
    federated = Preprocessor.from_statistics(
        merge_all([LocalStatistics.of(h, SCHEMA) for h in hospitals]), SCHEMA)
    pool = pd.concat(hospitals, ignore_index=True)
    for col in SCHEMA.numeric:
        values = pd.to_numeric(pool[col], errors="coerce").dropna()
        assert federated.means[col] == pytest.approx(values.mean(), rel=1e-12)
        assert federated.stds[col] == pytest.approx(values.std(ddof=0), rel=1e-9)
    for col in SCHEMA.categorical:
        assert set(federated.levels[col]) == set(as_labels(pool[col]))
    pooled = Preprocessor.from_statistics(LocalStatistics.of(pool, SCHEMA), SCHEMA)
    x_fed, y_fed = federated.transform(pool)
    x_pool, y_pool = pooled.transform(pool)
    np.testing.assert_allclose(x_fed, x_pool, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y_fed, y_pool)


def test_statistics_hold_aggregates_not_rows(hospitals):
    stats = LocalStatistics.of(hospitals[0], SCHEMA)
    assert stats.rows == len(hospitals[0])
    for moments in stats.numeric.values():
        assert len(moments) == 3  # count, sum, sum of squares: no row-level data


def test_missing_values_are_imputed_with_the_global_mean(hospitals):
    pre = Preprocessor.from_statistics(
        merge_all([LocalStatistics.of(h, SCHEMA) for h in hospitals]), SCHEMA)
    x, _ = pre.transform(hospitals[2])  # Switzerland: ca mostly missing
    assert np.isfinite(x).all()
    ca = pre.feature_names.index("ca")
    missing = hospitals[2]["ca"].isna().to_numpy()
    np.testing.assert_allclose(x[missing, ca], 0.0, atol=1e-6)  # mean -> 0 after scaling


def test_one_hot_uses_union_of_categories_with_int_and_float_spellings_alike():
    a = pd.DataFrame({"cp": [1.0, 2.0], "v": [1.0, 2.0], "y": [0, 1]})
    b = pd.DataFrame({"cp": [2, 4], "v": [3.0, 4.0], "y": [1, 0]})
    schema = Schema(target="y", task="binary", numeric=("v",), categorical=("cp",))
    pre = Preprocessor.from_statistics(
        merge_all([LocalStatistics.of(a, schema), LocalStatistics.of(b, schema)]), schema)
    assert pre.levels["cp"] == ("1", "2", "4")
    x, _ = pre.transform(b)
    np.testing.assert_array_equal(x[:, 1:], [[0, 1, 0], [0, 0, 1]])


def test_regression_target_is_standardised_from_federated_moments():
    a = pd.DataFrame({"v": [1.0, 2.0], "y": [100.0, 200.0]})
    b = pd.DataFrame({"v": [3.0], "y": [600.0]})
    schema = Schema(target="y", task="regression", numeric=("v",))
    pre = Preprocessor.from_statistics(
        LocalStatistics.of(a, schema).merge(LocalStatistics.of(b, schema)), schema)
    assert pre.target_mean == pytest.approx(300.0)
    assert pre.target_std == pytest.approx(np.std([100.0, 200.0, 600.0]))


def test_missing_column_is_named():
    frame = pd.DataFrame({"v": [1.0], "y": [1]})
    schema = Schema(target="y", task="binary", numeric=("v", "w"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['w'\]"):
        LocalStatistics.of(frame, schema)


def test_binary_task_with_three_classes_is_refused():
    frame = pd.DataFrame({"v": [1.0, 2.0, 3.0], "y": [0, 1, 2]})
    schema = Schema(target="y", task="binary", numeric=("v",))
    with pytest.raises(DataError, match="expected exactly 2"):
        Preprocessor.from_statistics(LocalStatistics.of(frame, schema), schema)
