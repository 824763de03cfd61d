"""The `ray` executor and parallel campaigns, on a local Ray instance of this machine (2 slots of 1 CPU).

The local path never imports Ray (fast test); the rest is slow: real training runs of a few seconds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, make_spec


def test_the_local_path_never_imports_ray():
    code = (
        "import sys; import orchestrator.cli, orchestrator.daemon, orchestrator.campaign, orchestrator.executor; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
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
