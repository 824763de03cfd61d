"""The A/A machinery: agents whose edits only move the random stream or fix a planted handicap, and
the benchmark that runs real campaigns with them (slow: it trains)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.base import ProposalContext
from bench.scripted_agents import PlantedAgent, RandomStreamAgent
from conftest import ROOT, copy_trainer


def ctx(wt: Path, seq: int) -> ProposalContext:
    return ProposalContext(
        program="model",
        worktree=wt,
        editable=["trainer/train.py"],
        readable=[],
        history=[],
        best=None,
        last_failure_tail=None,
        budget_s=1,
        hardware={},
        seq=seq,
    )


def test_random_stream_edits_change_only_the_random_stream(tmp_path):
    wt = copy_trainer(tmp_path)
    before = (wt / "trainer/train.py").read_text().splitlines()
    RandomStreamAgent().propose(ctx(wt, 7))
    after = (wt / "trainer/train.py").read_text().splitlines()
    added, removed = [x for x in after if x not in before], [x for x in before if x not in after]
    assert added == ["    seed += 7000  # A/A: another random stream (init and data order)"] and removed == []
    RandomStreamAgent().propose(ctx(wt, 9))  # on top of a kept A/A edit: replaced, not stacked
    again = (wt / "trainer/train.py").read_text()
    assert again.count("# A/A:") == 1 and "seed += 9000" in again


def test_planted_agent_restores_the_spoiled_constant_once(tmp_path):
    wt = copy_trainer(tmp_path)
    text = (wt / "trainer/train.py").read_text()
    (wt / "trainer/train.py").write_text(text.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.01"))
    agent = PlantedAgent("MATRIX_LR", "0.04")
    assert agent.propose(ctx(wt, 4)).description == "planted improvement: MATRIX_LR = 0.04"
    assert "MATRIX_LR = 0.04  # restored" in (wt / "trainer/train.py").read_text()
    with pytest.raises(Exception, match="already"):
        agent.propose(ctx(wt, 5))


@pytest.mark.slow
def test_verdict_benchmark_on_a_tiny_budget(data_dir, tmp_path):
    """The benchmark itself cannot rot: one A/A proposal per model and one planted trial, two steps each, the old
    rule replayed on the same runs (a cache file of its own, so every run is measured here)."""
    cache = tmp_path / "runs.json"
    cmd = [sys.executable, "-m", "bench", "--aa", "--parts", "aa,planted", "--experiments", "1", "--trials", "1"]
    cmd += ["--steps", "2", "--tiny-steps", "2", "--plants", "MATRIX_LR:0.02:0.04", "--cache", str(cache)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.index("{\n") :])
    for model in ("aa_tiny", "aa_default"):
        aa = result[model]
        assert aa["proposals_judged"] == 1 and aa["false_keeps"] in (0, 1) and aa["runs"] >= 4, aa
        assert aa["seed_sigma_dof"] >= 2
    planted = result["planted"][0]
    assert planted["trials"] == 1 and planted["kept"] in (0, 1) and planted["per_trial"][0]["candidate_runs"] >= 1
    assert planted["old_rule"]["candidate_runs_per_verdict"] >= 1
    assert result["policy"]["baseline_runs"] == 3 and result["runs"]["measured"] >= 8 and json.loads(cache.read_text())
