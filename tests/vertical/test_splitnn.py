"""Split learning (fedsilo.vertical.splitnn): equals centralised logistic regression with linear
bottoms, learns a real dataset with MLP bottoms, and puts only activations and gradients on the
wire (never a raw feature value or a label)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from fedsilo.errors import ConfigError, DataError, MalformedUpdate, ProtocolError
from fedsilo.vertical.splitnn import (
    BottomParty,
    TopParty,
    WireMessage,
    batch_order,
    fit_splitnn,
    predict_splitnn,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # tiny models: intra-op threads only add overhead; restored afterwards
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SumTop(nn.Module):
    """The identity top: the sum of the parties' (width-1) outputs, no parameters."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.sum(dim=1, keepdim=True)


def synthetic(n: int = 300, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 9)).astype(np.float32)
    w = rng.normal(size=9)
    y = (x @ w + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
    return {"A": x[:, :3], "B": x[:, 3:7], "C": x[:, 7:]}, y


def test_linear_splitnn_equals_centralised_logistic_regression() -> None:
    blocks, y = synthetic()
    torch.manual_seed(0)
    bottoms: dict[str, nn.Module] = {
        name: nn.Linear(b.shape[1], 1, bias=(name == "A")) for name, b in blocks.items()}
    joined = nn.Linear(sum(b.shape[1] for b in blocks.values()), 1)
    with torch.no_grad():
        joined.weight.copy_(torch.cat([bottoms[k].weight for k in blocks], dim=1))
        joined.bias.copy_(bottoms["A"].bias)  # type: ignore[arg-type]
    epochs, lr, bs, seed = 5, 0.5, 32, 7

    wire: list[WireMessage] = []
    fit = fit_splitnn(blocks, y, "A", bottoms, SumTop(), "binary", epochs, lr, bs, seed,
                      wire=wire)

    x = torch.as_tensor(np.concatenate([blocks[k] for k in blocks], axis=1))
    yt = torch.as_tensor(y)
    opt = torch.optim.SGD(joined.parameters(), lr=lr)
    for idx in batch_order(len(y), bs, epochs, seed):
        opt.zero_grad()
        i = torch.from_numpy(idx)
        nn.functional.binary_cross_entropy_with_logits(joined(x[i]).reshape(-1), yt[i]).backward()
        opt.step()

    split_w = torch.cat([fit.bottoms[k].weight for k in blocks], dim=1)
    with torch.no_grad():
        diff = max(float((split_w - joined.weight).abs().max()),
                   float((fit.bottoms["A"].bias - joined.bias).abs().max()))  # type: ignore
    print(f"max |w_split - w_central| after {epochs} epochs: {diff:.3e}")
    assert diff < 1e-5
    assert float(joined.weight.detach().abs().max()) > 0.1  # it did train
    p_split = predict_splitnn(blocks, fit.bottoms, fit.top, "binary")
    with torch.no_grad():
        p_central = torch.sigmoid(joined(x).reshape(-1)).numpy()
    assert np.abs(p_split - p_central).max() < 1e-5
    trained_bottoms, trained_top = fit  # unpacks as (bottoms, top)
    assert trained_bottoms == fit.bottoms and trained_top is fit.top
    assert len(fit.losses) == epochs * -(-len(y) // bs)
    # B and C send activations and receive gradients each batch; A (label holder) sends nothing
    n_batches = epochs * -(-len(y) // bs)
    assert len(wire) == 4 * n_batches
    assert {m.sender for m in wire if m.kind == "activations"} == {"B", "C"}


def breast_cancer_split(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                dict[str, np.ndarray], np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    sc = StandardScaler().fit(xtr)
    xtr, xte = sc.transform(xtr).astype(np.float32), sc.transform(xte).astype(np.float32)
    cols = np.random.default_rng(seed).permutation(x.shape[1])
    a, b = np.sort(cols[:15]), np.sort(cols[15:])
    return ({"A": xtr[:, a], "B": xtr[:, b]}, ytr.astype(np.float32),
            {"A": xte[:, a], "B": xte[:, b]}, yte)


def mlp_bottoms(blocks: dict[str, np.ndarray], width: int = 4) -> dict[str, nn.Module]:
    return {name: nn.Sequential(nn.Linear(b.shape[1], 16), nn.ReLU(), nn.Linear(16, width))
            for name, b in blocks.items()}


def mlp_top(n_parties: int, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(n_parties * width, 16), nn.ReLU(), nn.Linear(16, 1))


def accuracy(train: dict[str, np.ndarray], ytr: np.ndarray, test: dict[str, np.ndarray],
             yte: np.ndarray, label_holder: str, noise_std: float, seed: int = 0) -> float:
    torch.manual_seed(seed)
    bottoms = mlp_bottoms(train)
    fit = fit_splitnn(train, ytr, label_holder, bottoms, mlp_top(len(train)), "binary",
                      epochs=20, lr=0.05, batch_size=32, seed=seed, noise_std=noise_std)
    p = predict_splitnn(test, fit.bottoms, fit.top, "binary")
    return float(((p > 0.5) == (yte == 1)).mean())


@pytest.mark.parametrize("label_holder", ["A", "L"])
def test_mlp_splitnn_learns_breast_cancer_and_noise_effect(label_holder: str) -> None:
    """"A": the label holder has its own bottom on 15 columns, B's activations are noised;
    "L": the label holder has labels only, both A's and B's activations are noised."""
    train, ytr, test, yte = breast_cancer_split()
    chance = max(yte.mean(), 1 - yte.mean())
    accs = {s: float(np.mean([accuracy(train, ytr, test, yte, label_holder, s, seed)
                              for seed in (0, 1)]))
            for s in (0.0, 0.5, 2.0)}
    print(f"label holder {label_holder}: test accuracy by noise_std {accs} (chance {chance:.3f})")
    assert accs[0.0] > 0.93 > chance + 0.25
    assert accs[0.0] >= accs[2.0] - 0.02  # noise does not help (monotone-ish)
    assert accs[2.0] > chance - 0.05  # and still trains to something sane


def payloads_contain(wire: list[WireMessage], needle: bytes) -> bool:
    return any(needle in m.payload for m in wire)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_wire_carries_only_activations_and_gradients(task: str) -> None:
    train, ytr, _, _ = breast_cancer_split()
    if task == "regression":  # continuous labels: every label value is a distinctive float
        ytr = (train["A"][:, 0] * 1.7 + train["B"][:, 1] + 0.123).astype(np.float32)
    torch.manual_seed(0)
    width, bs = 4, 50
    blocks = {"A": train["A"][:, :8], "B": train["B"], "C": train["A"][:, 8:]}
    wire: list[WireMessage] = []
    fit_splitnn(blocks, ytr, "A", mlp_bottoms(blocks, width), mlp_top(3, width), task,
                epochs=2, lr=0.05, batch_size=bs, seed=3, noise_std=0.1, wire=wire)
    n = len(ytr)
    batches = list(batch_order(n, bs, 2, 3))
    assert len(wire) == 4 * len(batches)
    for k, idx in enumerate(batches):
        msgs = wire[4 * k: 4 * k + 4]
        assert [(m.sender, m.receiver, m.kind) for m in msgs] == [
            ("B", "A", "activations"), ("C", "A", "activations"),
            ("A", "B", "gradients"), ("A", "C", "gradients")]
        for m in msgs:
            assert m.shape == (len(idx), width)
            assert len(m.payload) == 4 * len(idx) * width
            assert np.isfinite(m.array()).all()
    # no raw feature value (float32 or float64) of any party, no label, no label vector
    rng = np.random.default_rng(0)
    for name, x in blocks.items():
        for i in rng.choice(n, 10, replace=False):
            for v in x[i]:
                assert not payloads_contain(wire, np.float32(v).tobytes()), (name, i)
                assert not payloads_contain(wire, np.float64(v).tobytes()[2:]), (name, i)
            assert not payloads_contain(wire, x[i].tobytes())
    for idx in batches:
        assert not payloads_contain(wire, ytr[idx[:4]].astype(np.float32).tobytes())
        assert not payloads_contain(wire, ytr[idx[:4]].astype(np.int64).tobytes())
    if task == "regression":
        for v in ytr[rng.choice(n, 50, replace=False)]:
            assert not payloads_contain(wire, np.float32(v).tobytes())


def test_protocol_errors() -> None:
    x = np.ones((6, 2), np.float32)
    party = BottomParty("B", x, nn.Linear(2, 3), lr=0.1, seed=0)
    with pytest.raises(ProtocolError):
        party.backward(np.zeros((2, 3), np.float32))  # no forward yet
    party.forward(np.array([0, 1]))
    with pytest.raises(MalformedUpdate):
        party.backward(np.zeros((2, 4), np.float32))
    party.forward(np.array([0, 1]))
    with pytest.raises(MalformedUpdate):
        party.backward(np.full((2, 3), np.nan, np.float32))
    with pytest.raises(ProtocolError):
        party.forward(np.array([6]))
    top = TopParty(np.array([0, 1, 0, 1, 0, 1]), nn.Linear(3, 1), 0.1, "binary", ["B"])
    with pytest.raises(ProtocolError):
        top.step({"C": np.zeros((2, 3), np.float32)}, np.array([0, 1]))
    with pytest.raises(MalformedUpdate):
        top.step({"B": np.zeros((2, 3), np.float64)}, np.array([0, 1]))
    grads = top.step({"B": np.zeros((2, 3), np.float32)}, np.array([0, 1]))
    assert grads["B"].shape == (2, 3) and grads["B"].dtype == np.float32
    with pytest.raises(DataError):
        TopParty(np.array([0, 2]), nn.Linear(3, 1), 0.1, "binary", ["B"])
    with pytest.raises(ConfigError):
        fit_splitnn({"A": x}, np.zeros(6), "A", {"A": nn.Linear(2, 1)}, SumTop(), "ordinal",
                    1, 0.1, 2, 0)
    with pytest.raises(DataError):
        fit_splitnn({"A": x, "B": x[:5]}, np.zeros(6), "A",
                    {"A": nn.Linear(2, 1), "B": nn.Linear(2, 1)}, SumTop(), "binary", 1, 0.1, 2, 0)


def test_multiclass_and_determinism() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    y = np.argmax(x[:, :3] + x[:, 3:], axis=1)
    blocks = {"A": x[:, :3], "B": x[:, 3:]}

    def run() -> np.ndarray:
        torch.manual_seed(0)
        bottoms = mlp_bottoms(blocks)
        top = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        fit = fit_splitnn(blocks, y, "L", bottoms, top, "multiclass", epochs=30, lr=0.2,
                          batch_size=24, seed=5, noise_std=0.1)
        return predict_splitnn(blocks, fit.bottoms, fit.top, "multiclass")

    p1, p2 = run(), run()
    assert p1.shape == (240, 3)
    np.testing.assert_array_equal(p1, p2)
    assert (p1.argmax(1) == y).mean() > 0.8


def test_label_holder_alone_regression_sends_nothing() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = x @ np.arange(4.0) + 1.0
    torch.manual_seed(0)
    wire: list[WireMessage] = []
    bottoms, top = fit_splitnn({"H": x}, y, "H", {"H": nn.Sequential(nn.Linear(4, 8), nn.ReLU())},
                               nn.Linear(8, 1), "regression", 20, 0.05, 32, 0, wire=wire)
    p = predict_splitnn({"H": x}, bottoms, top, "regression")
    assert p.shape == (200,) and wire == []
    assert np.mean((p - y) ** 2) < 0.1 * np.var(y)
