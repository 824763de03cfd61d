"""Training and evaluation end to end: the trainer's outputs, the measured run, the worktree's own code,
and the clear failures (non-finite loss, no prepared data, an incomplete run, a tokenizer off its pin)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import ROOT, TRAINED_BUDGET_S, edit_constant, make_spec, run_module
from inside import evaluate
from orchestrator.measure.experiment import measure
from orchestrator.scoring import scorer
from orchestrator.scoring.corpus import docs_sha256, file_sha256
from trainer import train

MARKER = "built by the worktree's own build_model"
TRAIN_FIELDS = (
    "steps",
    "tokens",
    "tok_per_sec",
    "training_seconds",
    "startup_seconds",
    "peak_memory_mb",
    "num_params",
    "final_loss",
    "config",
    "status",
)


def test_train_json_and_the_measurement(measured, stdlib):
    run_dir, result = measured
    info = json.loads((run_dir / "train.json").read_text())
    assert all(key in info for key in TRAIN_FIELDS)
    assert info["status"] == "ok" and info["steps"] >= 2  # the first step compiles and counts as start-up
    assert info["tokens"] == info["steps"] * info["config"]["total_batch_tokens"]
    assert info["training_seconds"] >= TRAINED_BUDGET_S, (
        "training stops once its steps have used the budget, not before"
    )
    assert (
        info["startup_seconds"] > 0
        and info["tok_per_sec"] > 0
        and info["num_params"] > 0
        and math.isfinite(info["final_loss"])
    )
    config = json.loads((run_dir / "model_config.json").read_text())
    assert (
        config.items() <= info["config"].items()
        and config["vocab_size"] == json.loads((stdlib.prepared / "meta.json").read_text())["vocab_size"]
    )
    assert (run_dir / "model.safetensors").exists()
    assert (
        result.claimed["steps"] == info["steps"] and result.train_wall_s >= info["training_seconds"]
    )  # the daemon's clock

    scores = result.scores
    assert 0 < scores.val_bpb < 20 and 0 < scores.test_bpb < 20
    assert scores.val_sha256 == docs_sha256(stdlib.corpus.heldout("val")) and scores.test_sha256 == docs_sha256(
        stdlib.corpus.heldout("test")
    )
    assert (
        scores.tokenizer_sha256 == file_sha256(stdlib.prepared / "tokenizer.json")
        and result.prepared_dir == stdlib.prepared
    )
    assert (
        scores.detail["probes"] == scorer.expected_probes(scores.detail["rows"])
        and scores.detail["causality_max_diff"] <= scorer.CAUSALITY_TOLERANCE
    )
    eval_log = (run_dir / "eval.log").read_text()
    assert eval_log.count("model loaded; serving logits") == 3  # 2 score, 1 re-scores
    # each with the forward the compile phase traced: compiled, every kernel from the daemon's cache (none made here)
    assert eval_log.count("forward compiled, with the daemon's kernels") == 3, eval_log[-2000:]
    assert eval_log.count("kernels compiled here: 0") == 3, eval_log[-2000:]
    assert scores.detail["rescore_max_diff"] <= scorer.CAUSALITY_TOLERANCE


def test_progress_lines_follow_the_contract(trained_run):
    steps = [line for line in (trained_run / "train.log").read_text().splitlines() if line.startswith("step ")]
    assert steps
    for line in steps:
        fields = line.split(" | ")
        assert [f.split(" ")[0] for f in fields[:4]] == ["step", "loss", "lr", "tok/s"] and fields[4].endswith(
            f"/{TRAINED_BUDGET_S}s"
        ), line


def test_worktree_code_is_what_runs(stdlib, worktree, tmp_path):
    """Trap 10: an edit in a worktree is the code that trains and that the model process rebuilds."""
    edit_constant(worktree, "DEPTH", "1")
    edit_constant(worktree, "MODEL_DIM", "64")
    source = worktree / "trainer" / "train.py"
    head = "def build_model(config: dict, seed: int = 0) -> GPT:\n"
    assert source.read_text().count(head) == 1
    source.write_text(source.read_text().replace(head, f"{head}    print({MARKER!r}, flush=True)\n"))
    run_dir = tmp_path / "run"
    result = measure(make_spec(worktree, run_dir, stdlib, budget_s=1))
    assert result.ok, f"{result.status}: {result.reason}\n{result.log_tail}"
    info = json.loads((run_dir / "train.json").read_text())
    assert info["config"]["depth"] == 1 and info["config"]["model_dim"] == 64
    assert MARKER in (run_dir / "train.log").read_text()
    assert (run_dir / "eval.log").read_text().count(MARKER) == 3  # each model process built the worktree's model
    build = evaluate.load_build_model(worktree)
    assert build.__module__.startswith("arx_candidate_") and build is not train.build_model


def test_non_finite_loss_exits_3(stdlib, worktree, tmp_path):
    edit_constant(worktree, "LOGIT_SOFTCAP", 'float("nan")')
    run_dir = tmp_path / "run"
    result = measure(make_spec(worktree, run_dir, stdlib, budget_s=30))
    assert result.status == "crash" and result.exit_code == 3 and "non-finite" in result.reason, result
    info = json.loads((run_dir / "train.json").read_text())
    assert info["status"] == "nan" and info["steps"] == 1
    assert not (run_dir / "model.safetensors").exists() and result.scores is None


def test_no_prepared_data_is_one_clear_error(tmp_path):
    for env in ({}, {"ARX_PREPARED_DIR": str(tmp_path)}):
        result = run_module("trainer.train", ROOT, {"ARX_RUN_DIR": str(tmp_path / "run"), **env})
        assert result.returncode == 2, result.stderr
        assert "arx-daemon prepare" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "run").exists()


def test_model_process_refuses_an_incomplete_run(tmp_path):
    result = run_module("inside.evaluate", ROOT, {}, ["--run-dir", str(tmp_path), "--worktree", str(ROOT)])
    assert result.returncode == 2 and "lacks model.safetensors, model_config.json" in result.stderr


def test_tokenizer_off_its_pin_is_invalid(stdlib, tmp_path):
    result = measure(make_spec(ROOT, tmp_path / "run", stdlib, tokenizer_sha256="0" * 64))
    assert result.status == "invalid" and "pinned" in result.reason
    assert not (tmp_path / "run" / "train.log").exists(), "nothing trains on a tokenizer off its pin"


@pytest.mark.slow
def test_cli_evaluate_scores_a_hand_run_training(measured, stdlib, tmp_path):
    """`arx-daemon evaluate` on the session's run gives the measured scores again (fresh probes, same rows)."""
    run_dir, result = measured
    out = run_module(
        "orchestrator.cli",
        ROOT,
        {"ARX_STATE_DIR": str(tmp_path)},
        ["evaluate", "--run-dir", str(run_dir), "--prepared", str(stdlib.prepared), "--worktree", str(ROOT)],
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["val_bpb"] == pytest.approx(result.scores.val_bpb, rel=1e-4) and got["test_bpb"] == pytest.approx(
        result.scores.test_bpb, rel=1e-4
    )


def test_requests_larger_than_a_pipe_buffer_are_answered(trained_run, stdlib, tmp_path):
    """16 rows of 1,100 tokens are 70 KB, more than a pipe holds. The scorer once sent a second request while the
    model process was writing its first answer: each waited for the other, and every candidate with SEQ_LEN >= 1024
    ended "sent no logits within 30s" (by the same arithmetic, the GPU's default of 2,048 too)."""
    from orchestrator.measure import experiment

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("model.safetensors", "model_config.json"):
        (run_dir / name).write_bytes((trained_run / name).read_bytes())
    vocab = json.loads((stdlib.prepared / "meta.json").read_text())["vocab_size"]
    model = experiment.SandboxedModel(make_spec(ROOT, run_dir, stdlib), lambda: False, lambda p, q: None, vocab)
    try:
        answers = [a.shape for a in model.logits(np.full((16, 1100), i, dtype=np.int32) for i in range(3))]
    finally:
        model.close()
    assert answers == [(16, 1100, vocab)] * 3, model.reason


def test_a_model_process_that_trains_before_its_first_logits_is_cut_off(
    trained_run, stdlib, worktree, tmp_path, monkeypatch
):
    """Time a model process spends before its first batch is time it could train in (identically in both
    processes, so the probes agree): it gets FIRST_LOGITS_S, not the whole evaluation deadline."""
    from orchestrator.measure import experiment

    source = worktree / "trainer" / "train.py"
    head = "def build_model(config: dict, seed: int = 0) -> GPT:\n"
    source.write_text(source.read_text().replace(head, f"{head}    import time\n    time.sleep(120)\n"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("model.safetensors", "model_config.json"):
        (run_dir / name).write_bytes((trained_run / name).read_bytes())
    monkeypatch.setattr(experiment, "FIRST_LOGITS_S", 3.0)
    spec = make_spec(worktree, run_dir, stdlib)
    trained = experiment.Trained(stdlib.prepared, {}, 1.0, None)
    m = experiment.score(
        spec, trained, lambda vocab: experiment.SandboxedModel(spec, lambda: False, lambda p, q: None, vocab)
    )
    assert m.status == "timeout" and "sent no logits within 3s" in m.reason, (m.status, m.reason)
