"""Sealed evaluation: exact bits per byte, outputs, and the worktree's own build_model."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest

from conftest import ROOT, TRAINED_STEPS, edit_constant, run_module
from trainer import evaluate, prepare


class Uniform:
    """A model whose logits are all zero: every next token has probability 1/V."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, x):
        return mx.zeros((*x.shape, self.vocab))


@pytest.mark.parametrize("seq_len", [7, 64, 4096])
def test_uniform_model_scores_log2_v_per_token(data_dir, seq_len):
    enc = evaluate.load_tokenizer(prepare.prepared_dir("stdlib") / "tokenizer.json")
    texts = ["héllo wörld — ünïcode ✓ 🙂", "def f(x):\n    return x * 2\n", "a"]
    scored = evaluate.bits_per_byte(Uniform(enc.n_vocab), enc, texts, seq_len)
    n_tokens = sum(len(enc.encode_ordinary(t)) for t in texts)  # every non-BOS target, once
    n_bytes = sum(len(t.encode()) for t in texts)
    assert scored["tokens"] == n_tokens and scored["bytes"] == n_bytes
    assert scored["bpb"] == pytest.approx(math.log2(enc.n_vocab) * n_tokens / n_bytes, rel=1e-6)


def test_windows_cover_every_target_once():
    stream = np.arange(10)
    inputs, targets = evaluate.windows(stream, 4, pad=0)
    assert inputs.shape == (3, 4)
    assert targets.reshape(-1)[:9].tolist() == list(range(1, 10)) and (targets.reshape(-1)[9:] == -1).all()
    np.testing.assert_array_equal(inputs.reshape(-1)[:9], stream[:9])


def test_train_and_eval_json_fields(trained_run):
    info = json.loads((trained_run / "train.json").read_text())
    for key in ("steps", "tokens", "tok_per_sec", "training_seconds", "startup_seconds", "peak_memory_mb", "num_params", "final_loss", "config", "status"):
        assert key in info, key
    assert info["status"] == "ok" and info["steps"] == TRAINED_STEPS and info["tok_per_sec"] > 0
    assert (trained_run / "model.safetensors").exists() and (trained_run / "model_config.json").exists()
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["status"] == "ok" and result["causal"]
    assert 0 < result["val_bpb"] < 6 and 0 < result["test_bpb"] < 6
    assert len(result["val_sha256"]) == 64 and result["val_sha256"] != result["test_sha256"]


def test_progress_lines_follow_the_contract(data_dir, tmp_path):
    result = run_module("trainer.train", ROOT, {"ARX_RUN_DIR": str(tmp_path), "ARX_BUDGET_S": "2"})
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert steps, result.stdout
    fields = steps[-1].split(" | ")
    assert [f.split(" ")[0] for f in fields[:4]] == ["step", "loss", "lr", "tok/s"] and fields[4].endswith("/2s")
    info = json.loads((tmp_path / "train.json").read_text())
    first, last = info["schedule_trace"][0], info["schedule_trace"][-1]
    assert first["step"] == 1 and info["startup_seconds"] > 0, "the first step compiles: it counts as startup"
    assert last["step"] == info["steps"] and last["frac"] < 1 <= info["training_seconds"] / 2, "the last step began in budget"


def test_worktree_code_is_what_runs(data_dir, worktree, tmp_path):
    """Trap 10: an edit in a worktree is the code that trains and that the evaluator rebuilds."""
    edit_constant(worktree, "DEPTH", "1")
    edit_constant(worktree, "MODEL_DIM", "64")
    run_dir = tmp_path / "run"
    result = run_module("trainer.train", worktree, {"ARX_RUN_DIR": str(run_dir), "ARX_BUDGET_S": "1"})
    assert result.returncode == 0, result.stderr
    info = json.loads((run_dir / "train.json").read_text())
    assert info["config"]["depth"] == 1 and info["config"]["model_dim"] == 64
    result = run_module("trainer.evaluate", ROOT, {}, ["--run-dir", str(run_dir), "--worktree", str(worktree)])
    assert result.returncode == 0, result.stderr
    build = evaluate.load_build_model(worktree)
    assert build.__module__.startswith("arx_candidate_") and len(build(info["config"]).blocks) == 1


def test_non_finite_loss_exits_3(data_dir, worktree, tmp_path):
    edit_constant(worktree, "LOGIT_SOFTCAP", 'float("nan")')
    result = run_module("trainer.train", worktree, {"ARX_RUN_DIR": str(tmp_path), "ARX_BUDGET_S": "30"})
    assert result.returncode == 3, result.stdout + result.stderr
    info = json.loads((tmp_path / "train.json").read_text())
    assert info["status"] == "nan" and info["steps"] == 1
    assert not (tmp_path / "model.safetensors").exists()


def test_unprepared_or_unknown_dataset_is_a_clear_error(data_dir, tmp_path):
    result = run_module("trainer.train", ROOT, {"ARX_RUN_DIR": str(tmp_path), "ARX_DATASET": "nope"})
    assert result.returncode == 2 and "valid: climbmix, stdlib, tinystories" in result.stderr
    result = run_module("trainer.train", ROOT, {"ARX_RUN_DIR": str(tmp_path), "ARX_DATASET": "tinystories", "ARX_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2 and "python -m trainer.prepare --dataset tinystories" in result.stderr


def test_evaluator_refuses_an_incomplete_run(tmp_path):
    result = run_module("trainer.evaluate", ROOT, {}, ["--run-dir", str(tmp_path), "--worktree", str(ROOT)])
    assert result.returncode == 2 and "lacks train.json" in result.stderr
