import numpy as np
import pandas as pd
import pytest

from fedsilo.data import partition
from fedsilo.errors import DataError

LABELS = np.repeat(np.arange(10), 200)  # 2,000 rows, 10 balanced classes


def proportions(parts, labels, k_classes=10):
    return np.array([np.bincount(labels[p], minlength=k_classes) / len(p) for p in parts])


def covers_exactly(parts, n):
    return np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_every_client_non_empty_and_rows_assigned_once(alpha):
    parts = partition.dirichlet(LABELS, 20, alpha, np.random.default_rng(0))
    assert all(len(p) > 0 for p in parts)
    assert covers_exactly(parts, len(LABELS))


def test_dirichlet_large_alpha_approaches_iid_small_alpha_is_skewed():
    global_p = np.full(10, 0.1)
    iid_like = proportions(partition.dirichlet(LABELS, 10, 1e4, np.random.default_rng(1)),
                           LABELS)
    skewed = proportions(partition.dirichlet(LABELS, 10, 0.05, np.random.default_rng(1)),
                         LABELS)
    tv_iid = 0.5 * np.abs(iid_like - global_p).sum(axis=1).mean()
    tv_skew = 0.5 * np.abs(skewed - global_p).sum(axis=1).mean()
    assert tv_iid < 0.05
    assert tv_skew > 0.6
    assert skewed.max(axis=1).mean() > 0.5  # a typical institution is dominated by one class
    assert iid_like.max(axis=1).mean() < 0.15


def test_iid_sizes_nearly_equal():
    parts = partition.iid(1003, 10, np.random.default_rng(0))
    assert covers_exactly(parts, 1003)
    assert {len(p) for p in parts} <= {100, 101}


def test_quantity_skew_unequal_sizes_none_empty():
    parts = partition.quantity_skew(1000, 10, 0.3, np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert covers_exactly(parts, 1000) and min(sizes) >= 1
    assert max(sizes) > 3 * np.median(sizes)


def test_natural_split_by_column_with_merge():
    frame = pd.DataFrame({"region": ["A", "B", "A", "C", "B", "A"]})
    parts = partition.by_column(frame, "region", merge={"C": "B"})
    assert sorted(parts) == ["A", "B"]
    assert parts["A"].tolist() == [0, 2, 5] and parts["B"].tolist() == [1, 3, 4]


def test_more_institutions_than_rows_is_an_error():
    with pytest.raises(DataError, match="cannot fill"):
        partition.iid(3, 5, np.random.default_rng(0))
