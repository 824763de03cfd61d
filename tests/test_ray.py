"""The `ray` executor and parallel campaigns, on a local Ray instance of this machine (2 slots of 1 CPU).

The local path never imports Ray (fast test); the rest is slow: real training runs of a few seconds."""

from __future__ import annotations

import subprocess
import sys

import git
import psutil
import pytest

from conftest import ROOT, make_spec
from test_daemon import arx, rows


def test_the_local_path_never_imports_ray():
    code = (
        "import sys; import orchestrator.cli, orchestrator.daemon, orchestrator.campaign, orchestrator.executor; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def executor():
    from orchestrator.ray_executor import RayExecutor

    ex = RayExecutor("local", {"CPU": 1}, 2)
    yield ex
    ex.close()


@pytest.mark.slow
def test_a_measurement_on_a_ray_slot_is_scored_here(executor, stdlib, tmp_path):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    spec = make_spec(ROOT, tmp_path / "run", stdlib, budget_s=2.0, commit=commit)
    phases = []
    m = executor.measure(spec, lambda: False, lambda phase, pid: phases.append(phase))
    assert m.ok, f"{m.status}: {m.reason}\n{m.log_tail}"
    assert m.node and m.fingerprint["cores"] == 1  # pinned to its slot's one CPU
    assert m.scores.val_bpb > 0 and m.train_wall_s >= 2.0
    assert (spec.run_dir / "train.log").read_text().count("step") > 0
    assert (spec.run_dir / "eval.log").exists() and not (spec.run_dir / "model.safetensors").exists()
    assert phases[0] == "training" and "evaluating" in phases


@pytest.mark.slow
def test_two_candidates_in_flight_on_two_ray_slots(repo, data_dir):
    result = arx(
        repo,
        "start",
        "--program",
        "model",
        "--tag",
        "par",
        "--budget",
        "2",
        "--max-experiments",
        "4",
        "--baseline-runs",
        "1",
        "--max-reruns",
        "0",
        "--cpu-share-drop",
        "0.9",  # 2 runs on 2 cores beside the daemon's scorer: contention is not what this test is about
        "--executor",
        "ray",
        "--ray-address",
        "local",
        "--parallel",
        "2",
        "--foreground",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reached --max-experiments 4" in result.stdout
    runs = rows(
        repo,
        'SELECT seq, kind, status, val_bpb, decision_reason, "commit", parent_commit, node, started_at, ended_at '
        "FROM run ORDER BY seq",
    )
    assert sum(r[1] == "experiment" for r in runs) == 4
    for seq, kind, status, val, reason, commit, parent, node, started, ended in runs:
        assert reason and ended, f"run {seq} ({status}) has no reason or end"
        if status in ("keep", "discard") and kind != "experiment" or status == "keep":
            assert val and node, f"run {seq} lacks metrics or its node"
    measured = sorted((r[8], r[9]) for r in runs if r[3] is not None and r[1] != "baseline")
    assert any(a[1] > b[0] for a, b in zip(measured, measured[1:])), "no two runs were in flight at once"
    kept = [r for r in runs if r[2] == "keep" and r[1] in ("experiment", "rebase")]
    r = git.Repo(repo)
    chain = [c.hexsha for c in reversed(list(r.iter_commits("main..autoresearch/par")))]
    assert chain == [k[5] for k in kept], "the branch holds exactly the kept commits, in order"
    for k, before in zip(kept, [r.commit("main").hexsha, *chain]):
        assert k[6] == before, "each kept commit was judged against the champion it sits on"
    assert not any(p.name().startswith(("raylet", "gcs_server")) for p in psutil.process_iter()), "Ray left behind"
