"""Candidates in flight at once (orchestrator/campaign/parallel.py) with scripted scores: who is judged against which
champion, the rebase of a keep that arrived after the champion moved, the reject when it no longer applies,
and a branch that only ever holds kept commits; a lost worker (retried once, then a pause). Everything but
training is real (git, ledger, policy); the real Ray executor's end-to-end tests are in test_ray.py."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field

import pytest

from agents.base import Proposal, ProposalContext, ScopedEditor
from conftest import HANG_S, make_repo
from orchestrator import daemon
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.policy import Policy
from orchestrator.config import Settings
from orchestrator.ledger import ledger
from orchestrator.measure.executor import LOST
from orchestrator.measure.experiment import Measurement
from orchestrator.scoring.scorer import Scores
from scripted import BASE, ScriptedExecutor


@dataclass
class PlacedGainAgent:
    """Writes `# gain G` as line `line` of train.py, one (gain, line) per proposal: far-apart lines merge."""

    edits: list[tuple[float, int]]
    name: str = "placed"
    model: str | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        gain, line = self.edits.pop(0)
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        lines = editor.read("trainer/train.py").splitlines(keepends=True)
        lines.insert(line, f"# gain {gain} (proposal {ctx.seq})\n")
        editor.create("trainer/train.py", "".join(lines))
        return Proposal(f"gain {gain} at line {line} (#{ctx.seq})")


class Overlapping(ScriptedExecutor):
    """Scores a run by formula from the files of its commit, as if each run had its own slot (as on Ray); the first
    candidate's measurement waits until the second is in flight, and the second's until the first was applied:
    both overlap, the first lands first."""

    def __init__(self):
        super().__init__(holds_slots=True)
        self.second_started = threading.Event()
        self.db = None

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None):
        seq, first = int(spec.run_dir.name), 2  # one baseline: the first experiment is run #2
        self.db = spec.state_dir / "experiments.db"
        if seq == first:
            assert self.second_started.wait(HANG_S)
        if seq == first + 1:
            self.second_started.set()
            assert wait(lambda: self.status_of(first) in ("keep", "discard", "rejected"))
        return super().measure(spec, should_stop, on_phase, avoid, near)

    def status_of(self, seq: int) -> str:
        con = sqlite3.connect(self.db)
        try:
            return con.execute("SELECT status FROM run WHERE seq = ?", (seq,)).fetchone()[0]
        finally:
            con.close()


def wait(predicate, timeout: float = HANG_S) -> bool:
    done = threading.Event()
    while not done.wait(0.05):
        if predicate():
            return True
        timeout -= 0.05
        if timeout < 0:
            return False
    return False


def campaign(tmp_path, agent, max_experiments: int) -> CampaignLoop:
    repo = make_repo(tmp_path / "repo")
    settings = Settings(
        state_dir=repo / "state",
        program="model",
        tag="p",
        budget_s=1,
        max_experiments=max_experiments,
        policy=Policy(baseline_runs=1, min_pairs=1, max_pairs=1),
        repo=repo,
        parallel=2,
    )
    row = daemon.open_campaign(settings, agent.name, None, None)
    return CampaignLoop(settings, row, agent, Overlapping())


@pytest.fixture(autouse=True)
def no_fast_blas(monkeypatch):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")


@dataclass
class Flaky:
    """An executor whose first `losses` measurements lose their worker, then scores every run alike."""

    losses: int
    name: str = "flaky"
    holds_slots: bool = True
    avoided: list = field(default_factory=list)

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None):
        on_phase("training", None)
        self.avoided.append(avoid)
        if self.losses:
            self.losses -= 1
            return Measurement(LOST, "the Ray worker was lost (node-a): ActorDiedError", node="node-a")
        scores = Scores(BASE, BASE + 0.1, "v" * 64, "t" * 64, "k" * 64)
        return Measurement("measured", scores=scores, train_wall_s=spec.budget_s, cpu_share=0.9, node="node-b")

    def fingerprint(self) -> dict:
        return {"machine": "flaky"}

    def close(self) -> None:
        pass


@pytest.mark.parametrize("losses", [1, 2])
def test_a_lost_worker_interrupts_the_attempt_and_is_retried_once(tmp_path, monkeypatch, data_dir, losses):
    flaky = Flaky(losses)
    repo = make_repo(tmp_path / "repo")
    settings = Settings(
        state_dir=repo / "state",
        program="model",
        tag="f",
        budget_s=1,
        max_experiments=0,
        repo=repo,
        policy=Policy(baseline_runs=1),
    )
    loop = CampaignLoop(settings, daemon.open_campaign(settings, "offline", None, None), PlacedGainAgent([]), flaky)
    reason = loop.run()
    runs = ledger.campaign_runs(loop.db, loop.campaign.id)
    baseline, lost = runs[0], runs[1]
    assert (lost.kind, lost.status, lost.rerun_of, lost.node) == ("lost", "interrupted", baseline.id, "node-a")
    assert flaky.avoided[:2] == [None, "node-a"], "measured once more away from the node it was lost on"
    if losses == 1:
        assert reason == "reached --max-experiments 0"
        assert (baseline.status, baseline.node, baseline.val_bpb) == ("measured", "node-b", BASE)
    else:
        assert "lost its worker twice" in reason and baseline.status == "interrupted"
        campaign = ledger.find_campaign(loop.db, "model", "f")
        assert campaign.status == "paused" and "lost its worker twice" in campaign.stop_reason


def test_the_agent_sees_the_candidates_in_flight():
    from agents.history import render

    history = [
        {"seq": 1, "kind": "baseline", "status": "keep", "val_bpb": 3.0, "description": "baseline"},
        {"seq": 2, "kind": "experiment", "status": "training", "val_bpb": None, "description": "MODEL_DIM 128 -> 64"},
        {"seq": 3, "kind": "experiment", "status": "discard", "val_bpb": 3.1, "description": "DEPTH 2 -> 3"},
    ]
    text = render(history, None)
    assert "In flight now, against the same champion (propose something different): #2 MODEL_DIM 128 -> 64" in text
    assert "In flight" not in render(history[::2], None)
