"""Federated gradient-boosted trees: fedsilo's histogram-based engine against the linear and MLP
models of the same data (table A), and against Flower's bagging approach (table B).

What is run, exactly (every method of one dataset sees the same workload: the same
institutions, the same train/test rows -- fedsilo's per-institution split from the config's
`seed` and `test_fraction` --, the same preprocessing, and is scored on every institution's
held-out rows, the metric weighted by test rows; RMSE is recombined from the weighted MSE):

Table A (the table in docs/benchmarks.md). Each example config run unchanged through
`run_simulation` (federated run, then each institution alone, then all training rows pooled;
the same recipe and rounds for the three):
  - heart disease (4 hospitals, accuracy): heart_disease.toml (logistic regression, FedAvg,
    15 rounds), heart_disease_mlp.toml (MLP 16 hidden, FedAvg, 15 rounds),
    heart_disease_xgboost.toml (XGBoost federated, 20 boosting rounds, max_depth 3, eta 0.2);
  - house prices (4 regions split by ocean_proximity, RMSE in dollars): house_prices.toml
    (linear regression, FedAdam, 20 rounds), house_prices_xgboost.toml (XGBoost federated,
    50 boosting rounds, max_depth 6, eta 0.1).
  The federated wall time is the time of the federated phase alone (from the start of the
  run to the start of the first local-only reference), the total that of the whole call.

Table B (bagging baseline). The XGBoost config of each dataset with `rounds` = R (default 20),
trained three ways on the same per-institution rows, under fedsilo's federated preprocessing
(the session's preprocessor), with the same XGBoost params (`booster_params`: the config's
[model.params] over hist trees, nthread 1, the run's seed):
  - fedsilo: XGBoost's federated engine (`run_session`: one worker process per institution
    and a tracker process, gradient histograms summed across institutions): R boosting
    rounds = R trees;
  - bagging, Flower's `FedXgbBagging` reproduced with the real xgboost library: each round,
    every client boosts LOCAL_ROUNDS (1) new tree on its own training rows starting from the
    current global model (`xgb.train(params, dtrain, 1, xgb_model=global)`, then the new tree
    sliced off as Flower's client does; in round 1 each client trains from scratch), and the
    server appends every client's new tree to the global model in the JSON (Flower's
    `aggregate`: each tree's `id`, `gbtree_model_param.num_trees`, `tree_info`,
    `iteration_indptr` updated; in round 1 the first client's model is the start). With K
    clients each round adds K trees. Run for R/K rounds (R trees, as many as fedsilo's) and
    for R rounds (K*R trees, as many rounds as fedsilo's);
  - pooled XGBoost (reference): `xgb.train` on all training rows together, R rounds.
  The bagging clients run one after another in this process (no transport, no serialisation
  beyond the JSON merge); fedsilo's run includes starting its worker and tracker processes and
  the gRPC traffic between them, and scoring after each boosting round.

Run from the repository root:  .venv/bin/python benchmarks/trees.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.client.institution import Institution
from fedsilo.client.xgb_trainer import XGBoostTrainer
from fedsilo.config.build import build_schema
from fedsilo.config.schema import RunConfig, parse_config
from fedsilo.data.local_data import LocalData
from fedsilo.data.prepare import InstitutionSplit, Preprocessor, local_data, pooled
from fedsilo.evaluation.metrics import PRIMARY, weighted_mean
from fedsilo.evaluation.report import ComparisonRow
from fedsilo.session import run_session
from fedsilo.simulation.institutions import load_tables
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.inprocess import InProcessTransport
from fedsilo.trees.xgb import BOOSTER, booster_array, booster_params, load_booster

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LOCAL_ROUNDS = 1  # Flower's xgboost examples: num_local_round = 1

TABLE_A = {
    "heart disease": [("logistic regression", "heart_disease/heart_disease.toml"),
                      ("MLP", "heart_disease/heart_disease_mlp.toml"),
                      ("XGBoost (fedsilo)", "heart_disease/heart_disease_xgboost.toml")],
    "house prices": [("linear regression", "house_prices/house_prices.toml"),
                     ("XGBoost (fedsilo)", "house_prices/house_prices_xgboost.toml")],
}
TREES = {"heart disease": "heart_disease/heart_disease_xgboost.toml",
         "house prices": "house_prices/house_prices_xgboost.toml"}


def config(path: str, **run: Any) -> RunConfig:
    """The example config, unchanged but for `run` keys (and no run store)."""
    file = EXAMPLES / path
    raw = tomllib.loads(file.read_text())
    raw["run"].update(run)
    raw["store"] = {"enabled": False}
    return parse_config(raw, file.parent.resolve())


def fmt(metric: str, value: float) -> str:
    return f"{value:,.0f}" if metric == "rmse" else f"{value:.4f}"


# ---------------------------------------------------------------------------------- table A


def table_a() -> list[dict[str, Any]]:
    rows = []
    for dataset, methods in TABLE_A.items():
        for method, path in methods:
            cfg = config(path)
            metric = PRIMARY[cfg.data.task]
            o, fed_s, total = timed_simulation(cfg)
            rows.append({"dataset": dataset, "method": method, "config": path,
                         "metric": metric, "rounds": cfg.run.rounds,
                         "local_only": o.local_only,
                         "local_only_everywhere": o.local_only_everywhere,
                         "federated": o.federated, "pooled": o.pooled,
                         "federated_s": fed_s, "total_s": total})
            print(f"  A {dataset:13s} {method:20s} fed {fmt(metric, o.federated)}"
                  f"  pooled {fmt(metric, o.pooled)}  "
                  f"fed {fed_s:.1f} s, total {total:.1f} s", flush=True)
    return rows


def timed_simulation(cfg: RunConfig) -> tuple[ComparisonRow, float, float]:
    """The report's overall row, the federated phase's wall time and the whole call's."""
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()
    result = run_simulation(
        cfg, phase=lambda name, rounds: marks.append((name, time.perf_counter())),
        write=False)
    total = time.perf_counter() - start
    fed_end = next(t for name, t in marks if name.startswith("local-only"))
    assert result.comparison is not None
    return result.comparison.overall, fed_end - start, total


# ---------------------------------------------------------------------------------- table B


def aggregate(prev: bytes | None, curr: bytes) -> bytes:
    """Flower's bagging aggregation (flwr.server.strategy.fedxgb_bagging.aggregate): append
    `curr`'s tree(s) of one parallel group to `prev` as one new boosting iteration."""
    if not prev:
        return curr
    p, c = json.loads(prev), json.loads(curr)
    pm, cm = p["learner"]["gradient_booster"]["model"], c["learner"]["gradient_booster"]["model"]
    n_prev = int(pm["gbtree_model_param"]["num_trees"])
    parallel = int(cm["gbtree_model_param"]["num_parallel_tree"])
    pm["gbtree_model_param"]["num_trees"] = str(n_prev + parallel)
    pm["iteration_indptr"].append(pm["iteration_indptr"][-1] + parallel)
    for k in range(parallel):
        tree = cm["trees"][k]
        tree["id"] = n_prev + k
        pm["trees"].append(tree)
        pm["tree_info"].append(0)
    return json.dumps(p).encode()


def bagging(datas: Sequence[LocalData], params: dict[str, Any], rounds: int) -> bytes:
    """Flower's federated XGBoost bagging: `rounds` rounds over every client in turn."""
    import xgboost as xgb

    dtrains = [xgb.DMatrix(d.x_train, label=d.y_train) for d in datas]  # each client's, once
    model: bytes | None = None
    for _ in range(rounds):
        sent = []
        for dtrain in dtrains:  # every client starts from the same global model
            if model is None:
                bst = xgb.train(params, dtrain, LOCAL_ROUNDS)
            else:
                start = xgb.Booster()
                start.load_model(bytearray(model))
                bst = xgb.train(params, dtrain, LOCAL_ROUNDS, xgb_model=start)
                n = bst.num_boosted_rounds()
                bst = bst[n - LOCAL_ROUNDS:n]  # only the new tree(s) travel
            sent.append(bytes(bst.save_raw("json")))
        for tree in sent:  # the server appends every client's tree(s)
            model = aggregate(model, tree)
    assert model is not None
    return model


def score(model: bytes, splits: Sequence[InstitutionSplit], pre: Preprocessor,
          spec: dict[str, Any]) -> tuple[float, int]:
    """The primary metric of a booster on every institution's test rows (weighted by test
    rows), the way fedsilo scores it, and the booster's number of trees."""
    params = {BOOSTER: booster_array(model)}
    per = [XGBoostTrainer(local_data(s, pre), spec).evaluate(params)[1] for s in splits]
    metric = PRIMARY[pre.schema.task]
    trees = len(json.loads(model)["learner"]["gradient_booster"]["model"]["trees"])
    assert load_booster(params).num_boosted_rounds() > 0
    return weighted_mean(per, [len(s.test) for s in splits])[metric], trees


def table_b(rounds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for dataset, path in TREES.items():
        rows += trees_of(dataset, path, rounds)
    return rows


def trees_of(dataset: str, path: str, rounds: int) -> list[dict[str, Any]]:
    """Table B's rows of one dataset."""
    import xgboost as xgb

    rows: list[dict[str, Any]] = []
    cfg = config(path, rounds=rounds, compare=False)
    tables = load_tables(cfg)
    schema = build_schema(cfg, next(iter(tables.values())))
    members = {n: Institution(n, t) for n, t in sorted(tables.items())}
    start = time.perf_counter()
    fed = run_session(cfg, InProcessTransport(dict(members)), schema, "fedsilo")
    fed_s = time.perf_counter() - start
    spec, pre = fed.setup["model"], fed.preprocessor
    splits = [m.split(fed.setup["data"]) for m in members.values()]
    datas = [local_data(s, pre) for s in splits]
    params = booster_params(spec, datas[0].task, datas[0].num_classes)
    k, metric = len(splits), PRIMARY[schema.task]

    def row(method: str, model: bytes, seconds: float, note: str) -> None:
        value, trees = score(model, splits, pre, spec)
        rows.append({"dataset": dataset, "method": method, "metric": metric,
                     "value": value, "trees": trees, "seconds": seconds, "note": note,
                     "clients": k, "params": params})
        print(f"  B {dataset:13s} {method:28s} {fmt(metric, value):>8s}  {trees:3d} trees"
              f"  {seconds:6.2f} s", flush=True)

    row("fedsilo federated", booster_bytes(fed.history.params), fed_s,
        f"{rounds} boosting rounds")
    # as many trees as bagging grows in as many rounds: K*R boosting rounds
    longer = config(path, rounds=k * rounds, compare=False)
    start = time.perf_counter()
    more = run_session(longer, InProcessTransport(dict(members)), schema, "fedsilo-long")
    more_s = time.perf_counter() - start
    assert [len(m.split(more.setup["data"]).test) for m in members.values()] == \
        [len(s.test) for s in splits]  # the same rows
    row("fedsilo federated", booster_bytes(more.history.params), more_s,
        f"{k * rounds} boosting rounds")
    for bag_rounds in (rounds // k, rounds):
        start = time.perf_counter()
        model = bagging(datas, params, bag_rounds)
        row("Flower-style bagging", model,
            time.perf_counter() - start,
            f"{bag_rounds} rounds x {k} clients x {LOCAL_ROUNDS} local round")
    every = local_data(pooled(splits), pre)
    start = time.perf_counter()
    bst = xgb.train(params, xgb.DMatrix(every.x_train, label=every.y_train), rounds)
    row("pooled XGBoost (reference)", bytes(bst.save_raw("json")),
        time.perf_counter() - start, f"{rounds} boosting rounds, all rows in one place")
    return rows


def booster_bytes(params: Any) -> bytes:
    return bytes(np.asarray(params[BOOSTER], np.uint8).tobytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="table B: boosting rounds R")
    ap.add_argument("--skip-a", action="store_true", help="table B only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
    if not args.skip_a:
        print("Table A (docs/benchmarks.md): each config through run_simulation", flush=True)
        out["table_a"] = table_a()
    print(f"Table B: fedsilo federated trees vs Flower's bagging, R = {args.rounds}",
          flush=True)
    out["table_b"] = table_b(args.rounds)
    print()
    if "table_a" in out:
        print("| dataset | model | rounds | local-only | local-only (all tests) | federated "
              "| pooled | federated wall | whole run |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in out["table_a"]:
            m = r["metric"]
            print(f"| {r['dataset']} ({m}) | {r['method']} | {r['rounds']} | "
                  f"{fmt(m, r['local_only'])} | {fmt(m, r['local_only_everywhere'])} | "
                  f"{fmt(m, r['federated'])} | {fmt(m, r['pooled'])} | "
                  f"{r['federated_s']:.1f} s | {r['total_s']:.1f} s |")
        print()
    print("| dataset | method | how | trees | metric | wall |")
    print("|---|---|---|---|---|---|")
    for r in out["table_b"]:
        m = r["metric"]
        print(f"| {r['dataset']} | {r['method']} | {r['note']} | {r['trees']} | "
              f"{m} {fmt(m, r['value'])} | {r['seconds']:.2f} s |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
