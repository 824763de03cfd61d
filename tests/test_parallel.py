"""Candidates in flight at once (orchestrator/parallel.py) with scripted scores: who is judged against which
champion, the rebase of a keep that arrived after the champion moved, the reject when it no longer applies,
and a branch that only ever holds kept commits; a lost worker (retried once, then a pause). Everything but
training is real (git, ledger, policy); the real Ray executor's end-to-end tests are in test_ray.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import git
import pytest

from agents.base import Proposal, ProposalContext, ScopedEditor
from conftest import HANG_S, make_repo
from orchestrator import daemon, ledger
from orchestrator.campaign import CampaignLoop, Settings
from orchestrator.executor import LOST, LocalExecutor
from orchestrator.experiment import Measurement
from orchestrator.parallel import ParallelLoop
from orchestrator.policy import Policy
from orchestrator.scorer import Scores
from scripted import BASE, GAIN, SEED_LUCK


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


class ScriptedParallel(ParallelLoop):
    """Scores a run by formula from the files of its commit; the first candidate's measurement waits until the
    second is in flight, and the second's until the first was applied: both overlap, the first lands first."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.second_started = threading.Event()

    def _measure(self, run, run_dir: Path, near: str | None = None) -> bool:
        source = self.repo.git.show(f"{run.commit}:trainer/train.py")
        first = self.s.policy.baseline_runs + 1  # the seq of the first experiment
        if run.kind == "experiment" and run.seq == first:
            assert self.second_started.wait(HANG_S)
        if run.kind == "experiment" and run.seq == first + 1:
            self.second_started.set()
            assert wait(lambda: self.status_of(first) in ("keep", "discard", "rejected"))
        run.val_bpb = BASE + SEED_LUCK[run.seed] - sum(float(g) for g in GAIN.findall(source))
        run.test_bpb, run.tok_per_sec, run.cpu_share, run.node = run.val_bpb + 0.1, 1000.0, 0.9, "scripted"
        self.save(run)
        return True

    def status_of(self, seq: int) -> str:
        return next(r.status for r in ledger.campaign_runs(self.db, self.campaign.id) if r.seq == seq)


def wait(predicate, timeout: float = HANG_S) -> bool:
    done = threading.Event()
    while not done.wait(0.05):
        if predicate():
            return True
        timeout -= 0.05
        if timeout < 0:
            return False
    return False


def campaign(tmp_path, agent, max_experiments: int) -> ScriptedParallel:
    repo = make_repo(tmp_path / "repo")
    settings = Settings(
        state_dir=repo / "state",
        program="model",
        tag="p",
        budget_s=1,
        max_experiments=max_experiments,
        policy=Policy(max_reruns=0),
        repo=repo,
        parallel=2,
    )
    row = daemon.open_campaign(settings, agent.name, None, None)
    return ScriptedParallel(settings, row, agent)


class Slotted(LocalExecutor):
    """This machine, as if each measurement had its own slot (as on Ray): the scripted runs need no lock."""

    holds_slots = True


@pytest.fixture(autouse=True)
def scripted_slots(monkeypatch):
    monkeypatch.setattr("orchestrator.campaign.make_executor", lambda s: Slotted())
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")


def test_a_keep_that_lands_after_the_champion_moved_is_rebased_and_judged_again(tmp_path):
    loop = campaign(tmp_path, PlacedGainAgent([(1.0, 10), (1.0, 200)]), max_experiments=2)
    assert loop.run() == "reached --max-experiments 2"
    runs = ledger.campaign_runs(loop.db, loop.campaign.id)
    assert [(r.kind, r.status) for r in runs if r.kind != "baseline"] == [
        ("experiment", "keep"),
        ("experiment", "discard"),
        ("rebase", "keep"),
    ]
    first, second, rebased = [r for r in runs if r.kind != "baseline"]
    base = loop.campaign.base_commit
    assert first.parent_commit == second.parent_commit == base  # both built on the same champion
    assert rebased.parent_commit == first.commit and rebased.rerun_of == second.id
    assert "champion moved" in second.decision_reason and f"#{rebased.seq}" in second.decision_reason
    assert rebased.val_bpb == pytest.approx(BASE + SEED_LUCK[rebased.seed] - 2.0)  # both gains: really rebased
    repo = git.Repo(loop.s.repo)
    chain = list(repo.iter_commits(f"{base}..{loop.campaign.branch}"))
    assert [c.hexsha for c in reversed(chain)] == [first.commit, rebased.commit]
    assert [p.hexsha for p in chain[0].parents] == [first.commit]  # in order: each on the one before
    assert not git.Repo(loop.campaign.worktree).is_dirty(untracked_files=True)


def test_a_keep_that_no_longer_applies_is_rejected(tmp_path):
    loop = campaign(tmp_path, PlacedGainAgent([(1.0, 10), (1.0, 10)]), max_experiments=2)  # the same line: conflict
    assert loop.run() == "reached --max-experiments 2"
    runs = [r for r in ledger.campaign_runs(loop.db, loop.campaign.id) if r.kind != "baseline"]
    assert [(r.kind, r.status) for r in runs] == [("experiment", "keep"), ("experiment", "rejected")]
    assert "no longer applies" in runs[1].decision_reason
    chain = list(git.Repo(loop.s.repo).iter_commits(f"{loop.campaign.base_commit}..{loop.campaign.branch}"))
    assert [c.hexsha for c in chain] == [runs[0].commit]


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
    monkeypatch.setattr("orchestrator.campaign.make_executor", lambda s: flaky)
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
    loop = CampaignLoop(settings, daemon.open_campaign(settings, "offline", None, None), PlacedGainAgent([]))
    reason = loop.run()
    runs = ledger.campaign_runs(loop.db, loop.campaign.id)
    baseline, lost = runs[0], runs[1]
    assert (lost.kind, lost.status, lost.rerun_of, lost.node) == ("lost", "interrupted", baseline.id, "node-a")
    assert flaky.avoided[:2] == [None, "node-a"], "measured once more away from the node it was lost on"
    if losses == 1:
        assert reason == "reached --max-experiments 0"
        assert (baseline.status, baseline.node, baseline.val_bpb) == ("keep", "node-b", BASE)
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
