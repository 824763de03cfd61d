"""Hostile claims through the real daemon: a trainer that lies about its throughput or its time, trains past
its budget, warm-starts from another run, or declares a vocabulary smaller than its tokenizer's.

The policy here has a wide noise band (min_delta 0.5), so an honest change is a tie: exactly where a
claimed throughput could decide. Scores must stay honest: not below the baseline by a wide margin.
"""

from __future__ import annotations

from pathlib import Path

import payloads as p
import pytest
from attack_kit import SECRET, chain, data_dir, files_with, inject, replace, run_campaign, survivors

from orchestrator.campaign.facts import ALLOWANCE_FACTOR, MIN_ALLOWANCE_S
from orchestrator.campaign.policy import Policy

pytestmark = pytest.mark.slow
__all__ = ["data_dir"]  # the fixture, imported
TRAIN = "trainer/train.py"
END_OF_MAIN = '    return 0 if status == "ok" else 3\n'
BEFORE_SAVE = '    if status == "ok":\n        mx.save_safetensors'
FAILED = ("invalid", "crash", "timeout", "rejected")
HONEST_MARGIN = 0.85  # a run may score at most 15% below the baseline: far wider than seed and load noise at 2 s

ATTACKS = {
    "claims 100x the throughput": replace(TRAIN, END_OF_MAIN, p.INFLATE_CLAIMS + END_OF_MAIN),
    "trains 20x its budget and reports a twentieth": chain(
        replace(TRAIN, *p.TRAIN_LONGER), replace(TRAIN, *p.UNDER_REPORT)
    ),
    "warm-starts from another run": chain(
        inject(p.WARM_START),
        replace(
            TRAIN,
            "    mx.eval(model.parameters())\n    num_params",
            "    _arx_warm_start(model)\n    mx.eval(model.parameters())\n    num_params",
        ),
    ),
    "declares a 256-token vocabulary": replace(TRAIN, *p.SMALL_VOCAB),
}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, data_dir):
    return run_campaign(
        tmp_path_factory.mktemp("hostile-claims"),
        "model",
        ATTACKS,
        policy=Policy(baseline_runs=1, max_pairs=1, min_delta=0.5),
    )


def assert_honest(campaign, name: str) -> None:
    r = campaign.runs[name]
    if r.status in FAILED:
        return
    assert r.val_bpb >= HONEST_MARGIN * campaign.baseline.val_bpb, (
        f"{name}: val_bpb {r.val_bpb:.3f} vs baseline {campaign.baseline.val_bpb:.3f} "
        f"(trained {r.train_wall_s:.0f}s by the daemon's clock, "
        f"baseline {campaign.baseline.train_wall_s:.0f}s)"
    )


def test_the_campaign_ran_every_attack(campaign):
    assert campaign.reason.startswith("reached --max-experiments"), campaign.reason
    assert len(campaign.runs) == len(ATTACKS), sorted(campaign.runs)
    assert campaign.changed == [], "changed: " + ", ".join(campaign.changed)
    assert files_with(campaign.state, SECRET) == [] and survivors() == []


def test_a_claimed_throughput_decides_nothing(campaign):
    """HOLE where it fails: the policy breaks ties with the trainer's own tok_per_sec from train.json."""
    r = campaign.runs["claims 100x the throughput"]
    assert not (r.status == "keep" and "tok/s" in r.decision_reason), r.decision_reason


def test_training_past_the_budget_buys_no_score(campaign):
    """HOLE where it fails: the deadline is budget + an allowance sized for a cold kernel compile (30 s and more),
    so a trainer that trains 20x its 2 s budget finishes inside it and is scored. The allowance is now
    max(MIN_ALLOWANCE_S, 2 x the baseline's start-up): the run is killed and scored as a timeout."""
    r = campaign.runs["trains 20x its budget and reports a twentieth"]
    assert r.status == "timeout" and r.val_bpb is None, (
        f"{r.status}: {r.decision_reason}; trained {r.train_wall_s}s by the daemon's clock, the baseline "
        f"{campaign.baseline.train_wall_s:.0f}s; allowance max("
        f"{MIN_ALLOWANCE_S:.0f}s, {ALLOWANCE_FACTOR:.0f}x start-up)"
    )


def test_no_other_run_is_reachable_to_warm_start_from(campaign):
    r = campaign.runs["warm-starts from another run"]
    log = (Path(r.run_dir) / "train.log").read_text()
    assert "ATTACK warm start candidates: []" in log, log[-2000:]
    assert_honest(campaign, "warm-starts from another run")


def test_a_vocabulary_smaller_than_the_tokenizers_is_invalid(campaign):
    r = campaign.runs["declares a 256-token vocabulary"]
    assert r.status in ("invalid", "crash"), (r.status, r.decision_reason, r.val_bpb)
