"""The A/A machinery: agents whose edits only move the random stream or fix a planted handicap, and
the benchmark that runs real campaigns with them (slow: it trains)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.base import ProposalContext
from agents.scripted import PlantedAgent, RandomStreamAgent
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
    assert added == [
        "    mx.eval(mx.random.uniform(shape=(7,)))  # A/A: 7 extra random numbers before init",
        "    loader = data_sources.batches(tokens, offsets, DEVICE_BATCH, SEQ_LEN, seed + 7)  # A/A: data order",
    ]
    assert removed == ["    loader = data_sources.batches(tokens, offsets, DEVICE_BATCH, SEQ_LEN, seed)"]
    RandomStreamAgent().propose(ctx(wt, 9))  # on top of a kept A/A edit: replaced, not stacked
    again = (wt / "trainer/train.py").read_text()
    assert again.count("# A/A:") == 2 and "shape=(9,)" in again and "seed + 9)" in again and "shape=(7,)" not in again


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
def test_aa_benchmark_on_a_tiny_budget(data_dir):
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.bench", "--aa", "--experiments", "1", "--trials", "1", "--steps", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout[out.stdout.index("{\n") :])
    aa, planted = result["aa"], result["planted"]
    assert (
        aa["experiments_judged"] == 1 and aa["false_keeps"] in (0, 1) and aa["runs"] >= 4 and aa["seed_sigma_dof"] >= 2
    )
    assert planted["trials"] == 1 and planted["kept"] in (0, 1) and planted["runs"] >= 4
    assert result["policy"]["baseline_runs"] == 3 and result["wall_s"] > 0
