"""A ledger written by hand (real SQLite through the real ledger module), whose every figure is known in advance.

`truth` is a campaign with three baselines, a kept candidate judged on two pairs, a discarded one whose first
measurement was set aside, a re-measure of the champion on a new seed, a candidate waiting for its verdict with
its re-run training, a crash and a rejected proposal. Its decisions are written by the real judge's `Verdict`
on real `policy.assess` numbers. `EXPECTED` holds what every view must show, worked out by hand below.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.campaign.judge import Pair, Point, Verdict
from orchestrator.campaign.policy import Noise, Policy, assess
from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import Campaign, Run

NOW = datetime.now(UTC)
FP = "fp-one"
BASE, C1, C2, C3, C4 = "b" * 40, "c1" * 20, "c2" * 20, "c3" * 20, "c4" * 20
POLICY = Policy()
NOISE = Noise(0.04, 2)

# run seq -> (kind, status, commit, seed, val_bpb, test_bpb, extra)
RUNS = {
    1: ("baseline", "measured", BASE, 1, 2.50, 2.60, {}),
    2: ("baseline", "measured", BASE, 2, 2.54, 2.64, {}),
    3: ("baseline", "measured", BASE, 3, 2.46, 2.56, {}),
    4: ("experiment", "keep", C1, 1, 2.47, 2.57, {"description": "MATRIX_LR 0.04 -> 0.05", "peak_memory_mb": 2048}),
    5: ("rerun", "measured", C1, 2, 2.50, 2.61, {"rerun_of": 4}),
    6: ("experiment", "discard", C2, 1, 2.30, 2.40, {"description": "DEPTH 2 -> 3", "contended": True}),
    7: ("rerun", "measured", C2, 1, 2.48, 2.59, {"rerun_of": 6}),
    8: ("remeasure", "measured", C1, 4, 2.55, 2.66, {"rerun_of": 4}),
    9: ("experiment", "waiting", C3, 1, 2.44, 2.55, {"description": "WARMUP 0 -> 10"}),
    10: ("rerun", "training", C3, 2, None, None, {"rerun_of": 9}),
    11: ("experiment", "crash", C4, 1, None, None, {"description": "bf16 everywhere", "error": "ValueError: boom"}),
    12: ("experiment", "rejected", None, None, None, None, {"description": "edited evaluate.py"}),
}

EXPECTED = {
    "baseline": 2.50,  # (2.50 + 2.54 + 2.46) / 3
    "best": (2.47 + 2.50 + 2.55) / 3,  # the champion C1 on seeds 1, 2 and 4 (#4, #5, #8)
    "best_test": (2.57 + 2.61 + 2.66) / 3,
    "best_seeds": 3,
    "when_kept": (2.47 + 2.50) / 2,  # its verdict's pairs: #4 and #5
    "gain": ((2.50 - 2.47) + (2.54 - 2.50)) / 2,  # paired gains on seeds 1 and 2: 0.03, 0.04
    "kept": 1,
    "steps": [(1, 2.50), (4, 2.50 - 0.035)],
    "discard_judged": 2.48,  # #6's verdict used #7 only (#6 was set aside)
    "export": [  # commit, val_bpb, memory_gb, status, description
        ["bbbbbbb", "2.500000", "0.0", "keep", "baseline: the unchanged code (mean of 3 seeds)"],
        ["c1c1c1c", "2.485000", "2.0", "keep", "MATRIX_LR 0.04 -> 0.05"],
        ["c2c2c2c", "2.480000", "0.0", "discard", "DEPTH 2 -> 3"],
        ["c4c4c4c", "0.000000", "0.0", "crash", "bf16 everywhere"],
    ],
}


def point(run: Run) -> Point:
    return Point(run.id, run.seq, run.seed, run.val_bpb, FP, None, None)


def verdict(decision: str, pairs: list[tuple[Run, Run]], aside: list[tuple[Run, str]] = ()) -> str:
    """The decision JSON the real judge writes for these pairs (champion run, candidate run), with the real rule's
    numbers (the verdict is the one given: the ledger is made by hand)."""
    ps = [Pair(point(c), point(x)) for c, x in pairs]
    a = assess(POLICY, [p.gain for p in ps], NOISE)
    v = Verdict(decision, a.reason, a, ps, [(point(r), why) for r, why in aside], NOISE)
    return json.dumps(v.record(POLICY))


def campaign(db: Path, tag: str, **kw) -> Campaign:
    c = Campaign(
        tag=tag,
        program=kw.pop("program", "model"),
        branch=f"autoresearch/{tag}",
        worktree=f"/nonexistent/{tag}",
        base_commit=BASE,
        agent="offline",
        dataset="stdlib",
        budget_s=60,
        status=kw.pop("status", "stopped"),
        settings=json.dumps({"policy": POLICY.to_dict()}),
        **kw,
    )
    ledger.save(db, c)
    return c


def build(state: Path, tag: str = "truth", status: str = "stopped") -> dict[int, Run]:
    """The `truth` campaign in `state`'s ledger; returns its runs by seq."""
    db = state / "experiments.db"
    c = campaign(db, tag, status=status, noise_sigma=NOISE.sigma, noise_dof=NOISE.dof)
    runs: dict[int, Run] = {}
    for seq, (kind, st, commit, seed, val, test, extra) in RUNS.items():
        extra = dict(extra)
        rerun_of = extra.pop("rerun_of", None)
        r = Run(
            campaign_id=c.id,
            seq=seq,
            kind=kind,
            status=st,
            commit=commit,
            parent_commit=C1 if commit in (C2, C3, C4) else BASE,
            seed=seed,
            val_bpb=val,
            test_bpb=test,
            fingerprint_hash=FP if val is not None else None,
            rerun_of=runs[rerun_of].id if rerun_of else None,
            description=extra.pop("description", f"{kind} on seed {seed}"),
            started_at=NOW - timedelta(minutes=60 - seq),
            ended_at=None if st in ("training", "waiting") else NOW - timedelta(minutes=59 - seq),
            decision_reason=None,
            **extra,
        )
        ledger.save(db, r)
        runs[seq] = r
    runs[4].decision = verdict("keep", [(runs[1], runs[4]), (runs[2], runs[5])])
    runs[4].decision_reason = "improved (pooled test): by hand"
    runs[6].decision = verdict("discard", [(runs[4], runs[7])], [(runs[6], "got 0.40 of the machine against 0.90")])
    runs[6].decision_reason = "not better: by hand"
    ledger.save(db, runs[4], runs[6])
    c.best_run_id = runs[4].id
    ledger.save(db, c)
    return runs
