"""Schedules must reach the optimizers: read back what they used, and check what they did."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from conftest import TRAINED_STEPS
from trainer import train


def one_update(frac: float, grad_value: float = 0.0):
    """A fresh optimizer at `frac` of the budget, one update of a matrix, embedding, head, scalar."""
    params = {
        "blocks": [{"w": mx.ones((4, 4))}],
        "wte": {"weight": mx.ones((5, 4))},
        "lm_head": {"weight": mx.ones((5, 4))},
        "resid_lambdas": mx.ones((2,)),
    }
    opt = train.build_optimizer()
    opt.init(params)
    train.apply_schedule(opt, frac)
    grads = tree_map(lambda p: mx.full(p.shape, grad_value), params)
    new = opt.apply_gradients(grads, params)
    mx.eval(new, opt.state)
    return opt, params, new


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.6, 0.9])
def test_weight_decay_and_lr_act_inside_muon(frac):
    s = train.schedule(frac)
    _, params, new = one_update(frac)  # zero gradient: the only change is decoupled weight decay
    shrink = 1 - np.array(new["blocks"][0]["w"])
    np.testing.assert_allclose(shrink, s["matrix_lr"] * s["weight_decay"], rtol=1e-3)


@pytest.mark.parametrize("frac", [0.0, 0.05, 0.5])
def test_momentum_acts_inside_muon(frac):
    opt, _, _ = one_update(frac, grad_value=1.0)
    v = np.array(opt.optimizers[0].state["blocks"][0]["w"]["v"])
    np.testing.assert_allclose(v, 1 - train.schedule(frac)["momentum"], rtol=1e-5)  # v = (1 - m) g from v = 0


@pytest.mark.parametrize("frac", [0.2, 0.75, 0.95])
def test_adamw_lrs_act(frac):
    s = train.schedule(frac)
    _, params, new = one_update(frac, grad_value=1.0)
    # bias-corrected AdamW's first step moves every weight by lr (g / |g|), as in PyTorch
    np.testing.assert_allclose(1 - np.array(new["wte"]["weight"]), s["embedding_lr"], rtol=1e-4)
    np.testing.assert_allclose(1 - np.array(new["lm_head"]["weight"]), s["unembedding_lr"], rtol=1e-4)
    np.testing.assert_allclose(1 - np.array(new["resid_lambdas"]), s["scalar_lr"], rtol=1e-4)


def test_schedule_shape():
    assert train.schedule(0.0)["momentum"] == pytest.approx(train.MOMENTUM_START)
    assert train.schedule(0.5)["momentum"] == pytest.approx(train.MOMENTUM_END)
    assert train.schedule(0.2)["matrix_lr"] == pytest.approx(train.MATRIX_LR)
    assert train.schedule(0.75)["matrix_lr"] == pytest.approx(train.MATRIX_LR * 0.5)
    assert train.schedule(1.0)["matrix_lr"] == pytest.approx(train.MATRIX_LR * train.FINAL_LR_FRAC)
    assert train.schedule(0.5)["weight_decay"] == pytest.approx(train.WEIGHT_DECAY / 2)


def test_a_real_run_traces_its_schedule(stepped_run):
    """train.json's trace is read back from the optimizers during a real run (counted in steps, so
    that every machine traces the same points)."""
    trace = json.loads((stepped_run / "train.json").read_text())["schedule_trace"]
    assert [p["step"] for p in trace] == list(range(1, TRAINED_STEPS + 1))
    assert [p["frac"] for p in trace] == pytest.approx([i / TRAINED_STEPS for i in range(TRAINED_STEPS)])
    for point in trace:
        want = train.schedule(point["frac"])
        for key in ("matrix_lr", "embedding_lr", "momentum", "weight_decay"):
            assert point[key] == pytest.approx(want[key], rel=1e-5), (key, point)
    assert trace[-1]["frac"] > 0.5 and trace[-1]["weight_decay"] < trace[0]["weight_decay"]


@pytest.mark.parametrize(("accum", "streams"), [(1, 2), (2, 2), (2, 3)])
def test_streamed_step_equals_one_pass(accum, streams):
    """Splitting micro-batches across streams changes the speed, not the gradient (SGD with lr 1
    makes the parameter change equal to the gradient; Muon and Adam would hide a wrong scale)."""
    config = train.model_config(vocab_size=50) | {"depth": 2, "model_dim": 32, "head_dim": 16, "seq_len": 16}
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 50, (6, 16)), rng.integers(0, 50, (6, 16))) for _ in range(accum)]
    results = []
    for n in (1, streams):
        mx.random.seed(0)
        model = train.build_model(config)
        model.update(
            tree_map(lambda p: p + 0.01 * mx.random.normal(p.shape), model.parameters())
        )  # no zero projections
        optimizer = optim.SGD(learning_rate=1.0)
        step = train.make_train_step(model, optimizer, iter(batches), accum, n)
        loss = step()
        mx.eval(model.parameters())
        results.append((loss.item(), dict(tree_flatten(model.parameters()))))
    (loss1, p1), (loss2, p2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-5)
    for name in p1:
        np.testing.assert_allclose(np.array(p1[name]), np.array(p2[name]), atol=1e-6, err_msg=name)


def test_the_compiled_update_follows_the_schedule(monkeypatch):
    """The optimizer's update is compiled with its state as an input: learning rates, Muon's momentum and its
    weight decay change at every step, and a compiled update that froze their first values would train on with
    them. Three steps at three points of the schedule, compiled and not, must move the weights alike."""
    config = train.model_config(vocab_size=50) | {"depth": 2, "model_dim": 32, "head_dim": 16, "seq_len": 16}
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 50, (4, 16)), rng.integers(0, 50, (4, 16))) for _ in range(3)]
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(train, "COMPILE", compiled)
        model = train.build_model(config, seed=1)
        model.update(tree_map(lambda p: p + 0.01 * mx.random.normal(p.shape, key=mx.random.key(3)), model.parameters()))
        optimizer = train.build_optimizer()
        step = train.make_train_step(model, optimizer, iter(batches), 1, 2)
        for frac in (0.0, 0.5, 0.95):  # momentum ramps, the LRs decay, weight decay shrinks
            train.apply_schedule(optimizer, frac)
            mx.eval(step(), model.parameters(), optimizer.state)
        results.append(dict(tree_flatten(model.parameters())))
    for name in results[0]:
        np.testing.assert_allclose(
            np.array(results[0][name]), np.array(results[1][name]), rtol=1e-4, atol=2e-5, err_msg=name
        )
