"""Faults, each a test: one real campaign (real trainer, real watchdog) fed misbehaving proposals.

A scripted agent stands in for the LLM: it writes each fault into the worktree exactly as a
careless or hostile agent could. The campaign runs once per module; each test reads its run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

from agents.base import Abandoned, Proposal
from conftest import make_repo
from orchestrator import daemon
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.policy import Policy
from orchestrator.config import Settings
from orchestrator.ledger import ledger
from orchestrator.measure import experiment
from orchestrator.measure.executor import LocalExecutor


def patch(path: str, old: str, new: str):
    def edit(wt: Path) -> None:
        file = wt / path
        text = file.read_text()
        assert old in text, f"{old!r} not in {path}"
        file.write_text(text.replace(old, new, 1))

    return edit


def write(path: str, text: str):
    return lambda wt: (wt / path).write_text(text)


def crash_agent(wt: Path) -> None:
    raise RuntimeError("a bug in the agent")


START = "    t_launch = time.time()\n"
COMPILING = "    if os.environ.get('ARX_COMPILE_ONLY') {} '1':\n        time.sleep(600)\n"
FAULTS = {
    "outside scope": patch("pyproject.toml", 'name = "arx"', 'name = "arx2"'),
    "edited evaluate.py": patch(
        "inside/evaluate.py", 'REQUEST = struct.Struct("<4sii")', 'REQUEST = struct.Struct("<4sii")  # mine'
    ),
    "hang": patch(  # in training only: its compile phase passes, the run's stall watchdog must catch it
        "trainer/train.py", START, START + COMPILING.format("!=")
    ),
    "hang while compiling": patch(  # in the compile phase only: its hard deadline must catch it
        "trainer/train.py", START, START + COMPILING.format("==")
    ),
    "memory": patch(
        "trainer/train.py",
        START,
        START + "    hog = []\n    while True:\n        hog.append(bytearray(b'x' * (64 << 20)))\n        "
        "print('growing', flush=True)\n",
    ),
    "garbage": patch("trainer/train.py", START, START + "    print('#$%^ garbage'); return 0\n"),
    "nan": patch("trainer/train.py", "LOGIT_SOFTCAP = 15.0", 'LOGIT_SOFTCAP = float("nan")'),
    "non-causal": patch(
        "trainer/train.py",
        '    if window >= seq_len:\n        return "causal"\n',
        "    return None  # sees the future\n",
    ),
    "agent bug": crash_agent,
    "same as before": patch("trainer/train.py", "LOGIT_SOFTCAP = 15.0", 'LOGIT_SOFTCAP = float("nan")'),
}


class ScriptedAgent:
    name = "scripted"
    model = None

    def __init__(self, steps: dict):
        self.steps = list(steps.items())

    def propose(self, ctx) -> Proposal:
        if not self.steps:
            raise Abandoned("script finished")
        description, edit = self.steps.pop(0)
        edit(ctx.worktree)
        return Proposal(description=description, hypothesis="a fault the daemon must survive")


def stall_margin() -> float:
    """Silence that counts as a hang: short, so the hang fault is caught soon, but scaled by how long
    MLX takes to start here and now, so that a healthy trainer on a loaded machine is never cut."""
    return 8 + 10 * mlx_startup_s()


def mlx_startup_s() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import mlx.core as mx; mx.eval(mx.ones(1))"], check=True)
    return time.monotonic() - started


def compile_deadline_s() -> float:
    """The compile phase's hard deadline for this campaign: 300 s in the daemon, which the compile-phase hang would
    wait out. A healthy compile phase of this model takes 12-16x MLX's start-up here (8 s quiet, 24-30 s at load
    6), and the trusted compile of its 50-odd kernels that follows has the same deadline (6 s quiet, past 33 s
    once when the load rose after the start-up was measured), so 60 s plus 30x the start-up measured now."""
    return 60 + 30 * mlx_startup_s()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "COMPILE_DEADLINE_S", compile_deadline_s())
        yield from run_campaign(tmp_path_factory)


def run_campaign(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("faults") / "repo")
    settings = Settings(
        state_dir=repo / "state",
        program="model",
        tag="faults",
        budget_s=2,
        max_experiments=len(FAULTS),
        stall_s=stall_margin(),
        memory_mb=1200,  # a baseline's tree peaks near 480 MB here; the hog needs 18 steps
        policy=Policy(baseline_runs=1, max_pairs=1),
        repo=repo,
        backoff_s=0.1,
    )
    row = daemon.open_campaign(settings, "scripted", None, None)
    reason = CampaignLoop(settings, row, ScriptedAgent(FAULTS), LocalExecutor()).run()
    db = settings.state_dir / "experiments.db"
    rows = ledger.campaign_runs(db, row.id)
    runs = {r.description: r for r in rows if r.status != "interrupted"}
    cut = [r for r in rows if r.status == "interrupted"]
    yield {"repo": repo, "runs": runs, "cut": cut, "reason": reason, "wt": Path(row.worktree), "db": db}


pytestmark = pytest.mark.slow


def test_campaign_survives_every_fault(campaign):
    assert campaign["reason"] == f"reached --max-experiments {len(FAULTS)}"
    assert not git.Repo(campaign["wt"]).is_dirty(untracked_files=True)
    assert len(list(git.Repo(campaign["repo"]).iter_commits("main..autoresearch/faults"))) == 0


def test_edit_outside_scope_is_rejected(campaign):
    run = campaign["runs"]["outside scope"]
    assert run.status == "rejected" and "pyproject.toml" in run.decision_reason and run.commit is None


def test_edited_evaluator_is_rejected(campaign):
    run = campaign["runs"]["edited evaluate.py"]
    assert run.status == "rejected" and "inside/evaluate.py" in run.decision_reason


def test_hanging_trainer_times_out(campaign):
    run = campaign["runs"]["hang"]
    assert run.status == "timeout" and "printed nothing" in run.decision_reason, run.decision_reason


def test_a_compile_phase_that_hangs_meets_its_deadline(campaign):
    """The compile phase runs main() to trace the step (ARX_COMPILE_ONLY=1): a trainer that hangs only there is
    stopped by the phase's hard deadline, and nothing of it reaches a run."""
    run = campaign["runs"]["hang while compiling"]
    assert run.status == "timeout" and "compile phase ran past its hard deadline" in run.decision_reason
    assert run.val_bpb is None


def test_memory_hog_is_killed(campaign):
    run = campaign["runs"]["memory"]
    why = f"{run.status}: {run.decision_reason}\n{run.error}"
    assert run.status == "crash" and "RSS" in run.decision_reason and "growing" in run.error, why


def test_garbage_without_a_checkpoint_is_a_crash(campaign):
    run = campaign["runs"]["garbage"]
    assert run.status == "crash" and "model.safetensors" in run.decision_reason and "garbage" in run.error


def test_nan_is_a_crash_with_its_reason(campaign):
    run = campaign["runs"]["nan"]
    assert run.status == "crash" and run.exit_code == 3 and "non-finite" in run.decision_reason
    assert json.loads((Path(run.run_dir) / "train.json").read_text())["status"] == "nan"


def test_non_causal_model_is_invalid(campaign):
    run = campaign["runs"]["non-causal"]
    assert run.status == "invalid" and "causality" in run.decision_reason and run.val_bpb is None


def test_a_repeated_change_is_not_trained_twice(campaign):
    run = campaign["runs"]["same as before"]
    assert run.status == "rejected" and "same change as run" in run.decision_reason


def test_an_unexpected_error_is_recorded_and_the_loop_goes_on(campaign):
    [run] = campaign["cut"]
    assert run.description == "(proposing)" and "daemon error RuntimeError" in run.decision_reason
    assert run.commit is None  # cut off before a commit: it taught nothing and did not count as an experiment
    assert campaign["runs"]["(proposing)"].decision_reason == "abandoned: script finished"  # so one more was asked
    import sqlite3

    events = sqlite3.connect(campaign["db"]).execute("SELECT message FROM event WHERE kind = 'error'").fetchall()
    assert len(events) == 1 and "a bug in the agent" in events[0][0]
    assert campaign["runs"]["same as before"].status == "rejected"  # the next proposal still ran
