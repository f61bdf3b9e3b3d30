"""Side values in their own channel (issue 14 §2): DP clipping and noise touch only the model
update. FedNova's a_i and SCAFFOLD's Δc_i are weighted and (securely) summed like the update,
but never clipped nor noised."""

from dataclasses import replace

import numpy as np
import pytest

from fedsilo.aggregation.base import declare_aux, open_accumulator
from fedsilo.aggregation.build import build_aggregator
from fedsilo.algorithms.client_work import CONTROL, NOVA_TAU, aux_names
from fedsilo.algorithms.fednova import NovaWork
from fedsilo.client.client import Client
from fedsilo.client.factory import make_trainer
from fedsilo.config.build import aggregator_spec, build_schema, build_strategy, model_spec
from fedsilo.core.params import global_norm, spec_of, split_prefixed
from fedsilo.data.prepare import federated_preprocessor, local_data, split_institutions
from fedsilo.session import initial_params
from fedsilo.simulation.institutions import load_tables
from fedsilo.simulation.run import run_simulation
from tests.golden.combos import STEPS, build_config

CLIP = 0.5


def central(seed: int = 3) -> dict:
    """An example-weighted mean under central DP (noise stream `seed`)."""
    return {"layer": "mean", "weighted": True, "privacy": {
        "mode": "central", "noise_multiplier": 1.0, "clip_norm": CLIP, "delta": 1e-5,
        "min_contributors": 1, "bit_stddev": 0.0, "deterministic": seed}}


def nova_round(stack, replies):
    """One FedNova round through `stack`: (what each institution sent, τ_eff, the step)."""
    work = NovaWork()
    spec = spec_of({"w": replies[0][0]["w"]})
    acc = open_accumulator(stack, spec, work.aux_spec(spec))
    sent = []
    for i, (update, n) in enumerate(replies):
        context = {"me": f"c{i}", "round": 1}
        declare_aux(context, aux_names("fednova", update))
        encoded = stack.encode(dict(update), n, stack.client_config(stack.init(), 1), context)
        sent.append(encoded)
        stack.accumulate(acc, encoded)
    _, aggregate, _ = stack.finalize(stack.init(), acc)
    step, _, metrics = work.apply(None, aggregate, len(replies), len(replies))
    return sent, metrics["tau_eff"], step


def nova_replies():
    rng = np.random.default_rng(0)
    return [({"w": rng.normal(0, 3, 50), NOVA_TAU: np.array([a])}, n)
            for a, n in ((5.0, 10), (2.0, 30), (7.0, 60))]


def test_fednova_central_dp_clips_and_noises_the_update_not_tau():
    replies = nova_replies()
    sent, tau_eff, step = nova_round(build_aggregator(central()), replies)
    assert tau_eff == pytest.approx((5.0 * 10 + 2.0 * 30 + 7.0 * 60) / 100, abs=1e-12)
    for (update, n), s in zip(replies, sent):
        assert s[NOVA_TAU][0] == update[NOVA_TAU][0] * n  # weighted, never clipped
        assert global_norm({"w": s["w"]}) == pytest.approx(CLIP * n)  # clipped to C, weighted
    _, other_tau, other = nova_round(build_aggregator(central(seed=4)), replies)
    assert other_tau == tau_eff
    assert not np.allclose(step["w"], other["w"])  # the update is noised


def test_fednova_equal_steps_tau_is_exact_under_central_dp():
    replies = [(u, n) for (u, _), n in zip(nova_replies(), (10, 10, 10))]
    for update, _ in replies:
        update[NOVA_TAU] = np.array([5.0])
    _, tau_eff, _ = nova_round(build_aggregator(central()), replies)
    assert tau_eff == 5.0


@pytest.mark.parametrize("protection", ["central_dp", "distributed_dp"])
def test_fednova_run_sees_the_true_tau(protection):
    """A real run: every institution does STEPS plain SGD steps, so a_i = STEPS and the
    (uniform, under DP) mean the server applies is exactly STEPS, while the update is noised."""
    result = run_simulation(build_config("fednova", "sync", protection), write=False)
    for event in result.history.events:
        assert event.metrics["client_work"]["tau_eff"] == float(STEPS)
        assert event.metrics["aggregator"]["noise_stddev"] > 0


def institutions(cfg):
    tables = load_tables(cfg)
    schema = build_schema(cfg, next(iter(tables.values())))
    splits = split_institutions(tables, schema, cfg.data.test_fraction, cfg.run.seed)
    pre = federated_preprocessor(splits, schema)
    return pre, {s.name: make_trainer(model_spec(cfg), local_data(s, pre)) for s in splits}


def scaffold_round(cfg, noise_seed):
    """Round 1 of SCAFFOLD on the heart-disease institutions, with central DP noise drawn from
    `noise_seed`: (state before, state after, server metrics, clients)."""
    pre, trainers = institutions(cfg)
    spec = aggregator_spec(cfg, len(trainers))
    spec["privacy"] = {**spec["privacy"], "deterministic": noise_seed}
    strategy = replace(build_strategy(cfg), aggregator=build_aggregator(spec))
    clients = {n: Client(n, t, build_aggregator(spec)) for n, t in trainers.items()}
    state = strategy.init(initial_params(cfg, pre))
    tasks, open_round = strategy.configure(state, sorted(clients), 1, "side-values", 11)
    for task in tasks:
        assert strategy.accept(state, open_round, clients[task.client_id].handle(task)) is None
    assert len(open_round.received) == len(clients) == open_round.population  # |S|/N = 1
    new, metrics = strategy.commit(state, open_round)
    return state, new, metrics, [clients[c] for c in open_round.received]


def test_scaffold_central_dp_moves_c_by_exactly_the_mean_delta_c():
    cfg = build_config("scaffold", "sync", "central_dp")
    runs = [scaffold_round(cfg, seed) for seed in (1, 2)]
    for _, new, metrics, clients in runs:
        assert metrics["aggregator"]["noise_stddev"] > 0
        for name, c in new.work_state.items():
            total = np.zeros_like(c)
            for client in clients:  # c_i started at 0, so Δc_i = c_i⁺; summed in arrival order
                total += client.state["scaffold_c"][name]
            np.testing.assert_array_equal(c, total / len(clients))
    # the model update is noised: another noise stream moves the model elsewhere
    (before, a, _, _), (_, b, _, _) = runs
    assert not all(np.array_equal(a.params[n], b.params[n]) for n in before.params)


def test_scaffold_declares_its_control_variates_as_aux():
    update = {"w": np.ones(3), CONTROL + "w": np.ones(3)}
    assert aux_names("scaffold", update) == {CONTROL + "w"}
    assert aux_names("local_training", update) == frozenset()
    model, dc = split_prefixed(update, CONTROL)
    assert set(model) == {"w"} and set(dc) == {"w"}
