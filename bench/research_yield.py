"""Research yield: what a real offline campaign leaves behind, validated on seeds it never saw.

    python -m bench --yield [--experiments 30] [--steps 16] [--fresh-seeds 5] [--agents local]

One real campaign per agent (the daemon's loop: git, worktree, ledger, sandbox, sealed scorer, the keep rule)
of N experiments on the default CPU model at a fixed step count, the knobs that change the compute per step
frozen (so a gain is a better use of the same steps, not more work per step). Then the base, the final champion
and every champion in between are measured again on fresh seeds, on val and on test:

- the validated gain: base minus champion, mean over the fresh seeds, and on how many seeds the champion won;
- the gain per hour of the campaign's machine time;
- false keeps: a kept change whose fresh-seed mean is not better than the champion it replaced.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from agents.offline import OfflineAgent
from bench.scratch import CachedExecutor, campaign, fixed_step_policy, kernel_cache, scratch_repo
from bench.verdicts import DEFAULT_STEPS
from orchestrator.ledger.statuses import Kind, Status
from orchestrator.measure import experiment, sandbox
from orchestrator.measure.executor import LocalExecutor
from orchestrator.scoring import corpus

COMPUTE = frozenset(  # constants whose change alters the work per step (or the step count itself)
    {"DEPTH", "MODEL_DIM", "HEAD_DIM", "KV_HEAD_RATIO", "MLP_RATIO", "VE_GATE_CHANNELS", "SEQ_LEN", "DEVICE_BATCH",
     "TOTAL_BATCH_TOKENS", "STREAMS", "BENCH_STEPS"}
)  # fmt: skip
FRESH_SEED_BASE = 10_000  # far above any seed a campaign of a few hundred runs uses


def agent_for(name: str, seed: int):
    if name == "local":
        return OfflineAgent(seed=seed, frozen=COMPUTE)
    if name == "optuna":
        from agents.optuna_search import OptunaAgent

        return OptunaAgent(seed=seed, frozen=COMPUTE)
    raise SystemExit(f"error: unknown agent {name!r}; choose local or optuna")


class Remeasure:
    """Val and test of any commit of a repository on any seed, measured for real (through the cache)."""

    def __init__(self, runner: CachedExecutor, repo: Path):
        self.runner, self.repo = runner, repo
        self.wt = repo / "state" / "validate"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(self.wt)], cwd=repo, check=True)
        self.corpus = corpus.materialize("stdlib")

    def scores(self, commit: str, seed: int) -> tuple[float, float]:
        subprocess.run(["git", "checkout", "-q", "--detach", commit], cwd=self.wt, check=True)
        spec = experiment.Spec(
            program="model",
            worktree=self.wt,
            run_dir=self.repo / "state" / "validate-runs" / f"{seed}-{commit[:10]}",
            corpus=self.corpus,
            budget_s=3600.0,
            seed=seed,
            state_dir=self.repo / "state",
            kernels=kernel_cache(self.repo),  # compiled as the campaign's runs were: the flags change the digits
            train_deadline_s=7200.0,
            commit=commit,
            unsafe_no_sandbox=sandbox.backend().name == "none",
        )
        m = self.runner.measure(spec, lambda: False, lambda phase, pid: None)
        if not m.ok:
            raise SystemExit(f"error: a fresh-seed measurement failed ({m.status}): {m.reason}\n{m.log_tail}")
        return m.scores.val_bpb, m.scores.test_bpb


def one_agent(name: str, tmp: Path, runner: CachedExecutor, experiments: int, steps: int, fresh: list[int]) -> dict:
    repo = scratch_repo(tmp / name, {"BENCH_STEPS": str(steps)})
    started = time.time()
    runs = campaign(repo, "yield", agent_for(name, 0), experiments, 0, LocalExecutor(), fixed_step_policy())
    hours = (time.time() - started) / 3600
    chain = [runs[0].commit] + [r.commit for r in runs if r.kind == Kind.EXPERIMENT and r.status == Status.KEEP]
    kept = {r.commit: r for r in runs if r.kind == Kind.EXPERIMENT and r.status == Status.KEEP}
    again = Remeasure(runner, repo)
    scores = {c: [again.scores(c, s) for s in fresh] for c in chain}

    def gains(a: str, b: str, which: int) -> list[float]:
        return [x[which] - y[which] for x, y in zip(scores[a], scores[b])]

    base, champ = chain[0], chain[-1]
    val, test = gains(base, champ, 0), gains(base, champ, 1)
    false_keeps = [
        {
            "seq": kept[b].seq,
            "change": kept[b].description,
            "fresh_val_gain": round(statistics.fmean(gains(a, b, 0)), 4),
        }
        for a, b in zip(chain, chain[1:])
        if statistics.fmean(gains(a, b, 0)) <= 0
    ]
    judged = [r for r in runs if r.kind == Kind.EXPERIMENT and r.status in (Status.KEEP, Status.DISCARD)]
    return {
        "experiments": sum(r.kind == Kind.EXPERIMENT for r in runs),
        "judged": len(judged),
        "kept": [kept[c].description for c in chain[1:]],
        "runs": len(runs),
        "campaign_hours": round(hours, 3),
        "validated_val_gain": round(statistics.fmean(val), 4),
        "validated_test_gain": round(statistics.fmean(test), 4),
        "fresh_seeds_champion_better_val": f"{sum(g > 0 for g in val)}/{len(val)}",
        "fresh_seeds_champion_better_test": f"{sum(g > 0 for g in test)}/{len(test)}",
        "val_gain_per_hour": round(statistics.fmean(val) / hours, 4) if hours else None,
        "base_fresh_val": [round(v, 4) for v, _ in scores[base]],
        "champion_fresh_val": [round(v, 4) for v, _ in scores[champ]],
        "false_keeps": false_keeps,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench --yield", description=__doc__.split("\n\n")[0])
    parser.add_argument("--yield", dest="yield_", action="store_true", required=True)
    parser.add_argument("--experiments", type=int, default=30, help="experiments per campaign")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps of the default model")
    parser.add_argument("--fresh-seeds", type=int, default=5, help="seeds the validation re-measures on")
    parser.add_argument("--agents", default="local", help="comma-separated: local (the offline search), optuna")
    parser.add_argument("--cache", default="state/bench-runs.json", help="measurements kept between invocations")
    args = parser.parse_args(argv)
    runner = CachedExecutor(Path(args.cache), verify=0)
    fresh = [FRESH_SEED_BASE + i for i in range(1, args.fresh_seeds + 1)]
    out: dict = {
        "command": " ".join(["python -m bench", *argv]),
        "steps": args.steps,
        "frozen": sorted(COMPUTE),
        "policy": fixed_step_policy().to_dict(),
        "fresh_seeds": fresh,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.agents.split(","):
            out[name] = one_agent(name, Path(tmp), runner, args.experiments, args.steps, fresh)
    out["fresh_runs"] = runner.report()
    print(json.dumps(out, indent=2))
    return 0
