"""The campaign's decisions with scripted scores: noise from baselines, re-runs of marginal
candidates decided on the mean, champion re-measurement. The trainer is replaced by a table of
val_bpb values here (a unit test); everything else (git, ledger, policy, agent) is real."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agents.offline import OfflineAgent
from conftest import HANG_S, make_repo
from orchestrator import daemon, ledger, slots
from orchestrator.campaign import CampaignLoop, Settings
from orchestrator.policy import Policy


class ScriptedScores(CampaignLoop):
    """Measures each run by the next scripted val_bpb instead of training."""

    def __init__(self, *args, scores: list[float], **kw):
        super().__init__(*args, **kw)
        self.scores = list(scores)

    def _measure(self, run, run_dir: Path) -> bool:
        run.val_bpb = self.scores.pop(0)
        run.test_bpb, run.tok_per_sec = run.val_bpb + 0.1, 1000.0
        self.save(run)
        return True


@pytest.fixture
def decided(tmp_path):
    repo = make_repo(tmp_path / "repo")
    settings = Settings(state_dir=repo / "state", program="model", tag="d", budget_s=1, max_experiments=3, policy=Policy(baseline_runs=2, min_delta=0.001, remeasure_every=1), repo=repo)
    row = daemon.open_campaign(settings, "offline", None, None)
    # baselines 3.00 and 3.02 (sigma 0.0141, band 0.0283); exp 1 marginal: 2.99, then re-runs 2.98
    # and 3.01 (mean 2.9933: still inside the band) -> discard; exp 2: 2.90 -> keep; then the
    # champion is re-measured (2.91) before the next experiment; exp 3: 2.95 -> discard.
    loop = ScriptedScores(settings, row, OfflineAgent(seed=3), scores=[3.00, 3.02, 2.99, 2.98, 3.01, 2.90, 2.91, 2.95])
    reason = loop.run()
    return reason, ledger.campaign_runs(settings.state_dir / "experiments.db", row.id), ledger.find_campaign(settings.state_dir / "experiments.db", "model", "d")


def test_noise_rerun_keep_and_remeasure(decided):
    reason, runs, campaign = decided
    assert [(r.seq, r.kind, r.status) for r in runs] == [
        (1, "baseline", "keep"), (2, "baseline", "keep"),
        (3, "experiment", "discard"), (4, "rerun", "discard"), (5, "rerun", "discard"),
        (6, "experiment", "keep"), (7, "remeasure", "keep"), (8, "experiment", "discard"),
    ]
    assert reason == "reached --max-experiments 3"
    assert runs[3].rerun_of == runs[2].id and runs[4].rerun_of == runs[2].id and runs[6].rerun_of == runs[5].id
    assert "inside the noise band after 3 runs" in runs[2].decision_reason and "mean of 3 runs 2.9933" in runs[2].decision_reason
    assert "improved beyond noise" in runs[5].decision_reason
    assert campaign.best_run_id == runs[5].id
    assert "not better" in runs[7].decision_reason and "best 2.9050" in runs[7].decision_reason  # the champion's mean
    assert campaign.noise_sigma == pytest.approx(0.013385, abs=1e-5)  # pooled: baselines, the re-run group, the champion pair
    assert all(r.decision_reason for r in runs)


def test_trainer_slots_are_shared(tmp_path):
    held = slots.try_lock(tmp_path / "slots" / "slot0.lock")
    got = []
    with slots.trainer_slot(tmp_path, 2) as i:
        got.append(i)
    assert got == [1]  # slot 0 is taken, a second slot is free
    waited = threading.Event()

    def later():
        with slots.trainer_slot(tmp_path, 1, on_wait=waited.set) as i:
            got.append(i)

    t = threading.Thread(target=later)
    t.start()
    assert waited.wait(HANG_S) and len(got) == 1  # it waits while slot 0 is held
    held.close()
    t.join(HANG_S)
    assert got == [1, 0]
    with pytest.raises(slots.Stopped):
        blocker = slots.try_lock(tmp_path / "slots" / "slot0.lock")
        with slots.trainer_slot(tmp_path, 1, should_stop=lambda: True):
            pass
    blocker.close()
