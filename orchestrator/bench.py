"""Benchmarks of the daemon, printed as JSON (never timed assertions in tests).

    python -m orchestrator.bench status      # `arx-daemon status` on a ledger of 10,000 runs
    python -m orchestrator.bench overhead    # a real offline campaign: per-experiment overhead,
                                             # daemon RSS and CPU while a trainer runs
    python -m orchestrator.bench eval        # sealed evaluation (two sandboxed model processes +
                                             # the trusted scorer) on a 30 s run at the CPU default
    python -m orchestrator.bench policy      # the keep rule alone under simulated Gaussian noise
    python -m orchestrator.bench --aa        # the keep rule's A/A false-keep and planted-improvement
                                             # detection rates, from real campaigns (see bench_aa)
    python -m orchestrator.bench --parallel [--budget 5 --experiments 4]  # experiments per hour with 1 and
                                             # 2 Ray slots, and the per-run overhead through Ray vs local

Overhead per experiment = the run's wall time minus the agent's time, the trainer's own time
(startup after imports + training) and the evaluator's own time: what is left is git, the
ledger, process start-up and the decision.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from . import ledger, report
from .ledger import Campaign
from .programs import ROOT


def build_ledger(state: Path, n_runs: int = 10_000, campaigns: int = 3) -> Path:
    db = state / "experiments.db"
    ledger.engine(db)
    con = sqlite3.connect(db)
    statuses = ["discard"] * 6 + ["keep", "crash", "rejected", "timeout"]
    for c in range(campaigns):
        row = Campaign(
            tag=f"bench{c}",
            program="model",
            branch=f"autoresearch/bench{c}",
            worktree="/nonexistent",
            base_commit="0" * 40,
            agent="claude",
            llm_model="claude-sonnet-4-6",
            dataset="stdlib",
            budget_s=300,
            status="running",
            best_run_id=None,
            noise_sigma=0.004,
        )
        ledger.save(db, row)
        runs = [
            (
                row.id,
                i,
                "experiment" if i > 2 else "baseline",
                statuses[i % len(statuses)],
                3.0 - i * 1e-5,
                3.1 - i * 1e-5,
                5000.0,
                450.0,
                f"{i:040x}",
                f"change number {i}",
                "not better: ...",
                "2026-11-26 00:00:00",
            )
            for i in range(1, n_runs // campaigns + 1)
        ]
        con.executemany(
            "INSERT INTO run (campaign_id, seq, kind, status, val_bpb, test_bpb, tok_per_sec, peak_memory_mb, "
            '"commit", description, decision_reason, started_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)',
            runs,
        )
        con.execute(
            "INSERT INTO llm_call (campaign_id, model, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, cost_usd, latency_s, status, created_at) SELECT ?, 'claude-sonnet-4-6', 2000, "
            "300, 12000, 0, 0.01, 5.0, 'ok', '2026-11-26' FROM run WHERE campaign_id = ?",
            (row.id, row.id),
        )
        best = con.execute(
            "SELECT id FROM run WHERE campaign_id = ? AND status = 'keep' ORDER BY val_bpb LIMIT 1", (row.id,)
        ).fetchone()[0]
        con.execute("UPDATE campaign SET best_run_id = ? WHERE id = ?", (best, row.id))
        con.commit()
    con.close()
    return db


def bench_status() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        db = build_ledger(state)
        inproc = []
        for _ in range(10):
            t = time.perf_counter()
            report.status(db, state)
            inproc.append(time.perf_counter() - t)
        cli = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", "status", "--state-dir", str(state)],
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            cli.append(time.perf_counter() - t)
        runs = sqlite3.connect(db).execute("SELECT COUNT(*) FROM run").fetchone()[0]
    return {
        "runs_in_ledger": runs,
        "status_query_median_ms": round(statistics.median(inproc) * 1000, 1),
        "status_cli_median_ms": round(statistics.median(cli) * 1000, 1),
    }


def bench_overhead(experiments: int = 6, budget: float = 2.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for name in ("trainer", "orchestrator", "agents", "prompts", "pyproject.toml"):
            src = ROOT / name
            (
                shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
                if src.is_dir()
                else shutil.copy(src, repo / name)
            )
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], cwd=repo, check=True)
        env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "start",
            "--program",
            "model",
            "--tag",
            "bench",
            "--budget",
            str(budget),
            "--max-experiments",
            str(experiments),
            "--baseline-runs",
            "1",
            "--foreground",
        ]
        daemon = psutil.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: list[tuple[float, float]] = []

        def sample() -> None:
            daemon.cpu_percent()
            while daemon.poll() is None:
                time.sleep(1.0)
                try:
                    trainers = [c for c in daemon.children() if "trainer.train" in " ".join(c.cmdline())]
                    rss, cpu = daemon.memory_info().rss / 2**20, daemon.cpu_percent()
                except psutil.NoSuchProcess:
                    return
                if trainers:
                    samples.append((rss, cpu))

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        daemon.wait()
        watcher.join()
        db = repo / "state" / "experiments.db"
        rows = (
            sqlite3.connect(db)
            .execute(
                "SELECT total_seconds, agent_seconds, eval_seconds, run_dir FROM run WHERE kind = 'experiment' "
                "AND status IN ('keep', 'discard')"
            )
            .fetchall()
        )
        overheads = []
        for total, agent, eval_s, run_dir in rows:
            info = json.loads((Path(run_dir) / "train.json").read_text())
            overheads.append(total - (agent or 0) - info["startup_seconds"] - info["training_seconds"] - (eval_s or 0))
    return {
        "experiments_measured": len(overheads),
        "overhead_median_s": round(statistics.median(overheads), 3) if overheads else None,
        "overhead_max_s": round(max(overheads), 3) if overheads else None,
        "daemon_rss_mb_max": round(max(s[0] for s in samples), 1) if samples else None,
        "daemon_cpu_percent_median_while_training": round(statistics.median(s[1] for s in samples), 1)
        if samples
        else None,
    }


def bench_eval(budget: float = 30.0, default_budget: float = 300.0) -> dict:
    """Train the checkout's trainer for `budget` seconds and time its sealed evaluation, as a campaign would."""
    from . import corpus, experiment, sandbox

    with tempfile.TemporaryDirectory() as tmp:
        spec = experiment.Spec(
            program="model",
            worktree=ROOT,
            run_dir=Path(tmp) / "runs" / "0001",
            corpus=corpus.materialize("stdlib"),
            budget_s=budget,
            seed=1,
            state_dir=Path(tmp),
            train_deadline_s=budget + 120,
            unsafe_no_sandbox=sandbox.backend().name == "none",
        )
        m = experiment.measure(spec)
        if not m.ok:
            raise SystemExit(f"error: the measurement failed ({m.status}): {m.reason}\n{m.log_tail}")
        detail = m.scores.detail
        return {
            "sandbox": sandbox.backend().name,
            "train_budget_s": budget,
            "train_wall_s": m.train_wall_s,
            "val_bpb": round(m.scores.val_bpb, 4),
            "eval_seconds": m.eval_seconds,
            "eval_fraction_of_default_budget": round(m.eval_seconds / default_budget, 4),
            "logits_transfer_and_model_seconds": detail["transfer_seconds"],
            "rows": detail["rows"],
            "probes": detail["probes"],
            "causality_max_diff": detail["causality_max_diff"],
            "claimed_tok_per_sec": m.claimed.get("tok_per_sec"),
        }


def scratch_repo(dest: Path, edits: dict[str, str]) -> Path:
    """A git repository holding this checkout's code with `edits` (constant -> value) made to the base train.py
    (no edits: the checkout's code as it is, training for its time budget)."""
    dest.mkdir(parents=True)
    for name in ("trainer", "orchestrator", "agents", "prompts", "pyproject.toml"):
        src = ROOT / name
        (
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
            if src.is_dir()
            else shutil.copy(src, dest / name)
        )
    train = dest / "trainer" / "train.py"
    text = train.read_text()
    for name, value in edits.items():
        text, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, count=1, flags=re.MULTILINE)
        if not n:  # a bench-only constant: added after the last hyperparameter
            text = text.replace("\nPRINT_EVERY_S = ", f"\n{name} = {value}\nPRINT_EVERY_S = ", 1)
    # bench only: train a fixed number of steps (when BENCH_STEPS is given), so that the other processes on a
    # shared machine change how long a run takes but not its score; what is left is the noise of the seed
    if "BENCH_STEPS" in edits:
        text, n = re.subn(r'int\(os\.environ\.get\("ARX_MAX_STEPS", "0"\)\) or None', "BENCH_STEPS", text)
        assert n == 1, "train.py no longer reads ARX_MAX_STEPS where the bench expects it"
    train.write_text(text)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "bench base"], cwd=dest, check=True)
    return dest


def aa_campaign(repo: Path, tag: str, agent, experiments: int, budget: float, seed: int) -> list[ledger.Run]:
    from .campaign import CampaignLoop
    from .config import Settings
    from .daemon import open_campaign
    from .executor import LocalExecutor

    settings = Settings(
        state_dir=repo / "state",
        program="model",
        tag=tag,
        budget_s=budget,
        max_experiments=experiments,
        seed=seed,
        repo=repo,
    )
    loop = CampaignLoop(settings, open_campaign(settings, agent.name, None, None), agent, LocalExecutor())
    loop.run()
    return ledger.campaign_runs(loop.db, loop.campaign.id)


def bench_aa(
    experiments: int = 20,
    trials: int = 10,
    steps: int = 16,
    plant: str = "LOGIT_SOFTCAP",
    bad: str = "1.0",
    good: str = "15.0",
    budget: float = 30.0,
) -> dict:
    """False keeps of changes that only move the random stream, and keeps of a planted improvement.

    A/A: one campaign of `experiments` proposals by `RandomStreamAgent` (each consumes k extra random
    numbers before init and shifts the data order's seed). Planted: `trials` campaigns, each on its
    own seeds, whose base has `plant` spoiled to `bad`; `PlantedAgent` restores `good`. The base is
    the tiny model trained for `steps` steps (`budget` only bounds the watchdog). Default policy.
    """
    from agents.scripted import PlantedAgent, RandomStreamAgent

    from .daemon import check_dataset
    from .policy import Policy, pooled

    check_dataset("stdlib")
    tiny = {
        "DEPTH": "1",
        "MODEL_DIM": "64",
        "SEQ_LEN": "128",
        "DEVICE_BATCH": "8",
        "TOTAL_BATCH_TOKENS": "2**10",
        "BENCH_STEPS": str(steps),
    }
    started = time.time()
    out: dict = {
        "policy": Policy().to_dict(),
        "model": tiny,
        "command": " ".join(["python -m orchestrator.bench --aa", *sys.argv[2:]]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if experiments:
            t0 = time.time()
            runs = aa_campaign(
                scratch_repo(Path(tmp) / "aa", tiny), "aa", RandomStreamAgent(), experiments, budget, seed=0
            )
            judged = [r for r in runs if r.kind == "experiment" and r.status in ("keep", "discard")]
            groups: dict[str, list[float]] = {}
            for r in runs:
                if r.val_bpb is not None and not r.contended and r.status in ("keep", "discard"):
                    groups.setdefault(r.commit, []).append(r.val_bpb)
            noise = pooled(list(groups.values()))
            out["aa"] = {
                "experiments_judged": len(judged),
                "false_keeps": sum(r.status == "keep" for r in judged),
                "false_keep_rate": round(sum(r.status == "keep" for r in judged) / max(1, len(judged)), 3),
                "runs": len(runs),
                "contended_runs": sum(r.contended for r in runs),
                "seed_sigma": round(noise.sigma, 5),
                "seed_sigma_dof": noise.dof,
                "target": "<= 1 keep in 20",
                "wall_s": round(time.time() - t0, 1),
            }
        if trials:
            t0 = time.time()
            repo = scratch_repo(Path(tmp) / "planted", tiny | {plant: bad})
            kept, gains, groups, nruns = 0, [], [], 0
            for i in range(trials):
                runs = aa_campaign(repo, f"plant{i}", PlantedAgent(plant, good), 1, budget, seed=100 * (i + 1))
                nruns += len(runs)
                exp = next((r for r in runs if r.kind == "experiment"), None)
                kept += bool(exp and exp.status == "keep")
                base = {r.seed: r.val_bpb for r in runs if r.kind == "baseline" and r.val_bpb is not None}
                if exp and exp.val_bpb is not None and exp.seed in base:
                    gains.append(base[exp.seed] - exp.val_bpb)
                groups.append([r.val_bpb for r in runs if r.kind == "baseline" and r.val_bpb is not None])
            base = pooled(groups)  # the spoiled base's own seed noise, over every trial's baselines
            out["planted"] = {
                "change": f"{plant} {bad} -> {good}",
                "trials": trials,
                "kept": kept,
                "detection_rate": round(kept / trials, 3),
                "paired_gain_mean": round(statistics.fmean(gains), 4) if gains else None,
                "paired_gain_sd": round(statistics.stdev(gains), 4) if len(gains) > 1 else None,
                "base_seed_sigma": round(base.sigma, 5),
                "base_seed_sigma_dof": base.dof,
                "gain_in_base_sigmas": round(statistics.fmean(gains) / base.sigma, 2) if gains and base.sigma else None,
                "gain_in_aa_sigmas": round(statistics.fmean(gains) / out["aa"]["seed_sigma"], 2)
                if gains and out.get("aa")
                else None,
                "runs": nruns,
                "target": ">= 9 kept in 10",
                "wall_s": round(time.time() - t0, 1),
            }
    out["wall_s"] = round(time.time() - started, 1)
    return out


def bench_policy(trials: int = 4000, gain_sigmas: float = 3.0, paired_sd: float = 0.3, seed: int = 1) -> dict:
    """The keep rule alone, under Gaussian seed noise (sigma 1): how often a fresh campaign keeps an A/A
    change (its runs are new seeds) and a real gain of `gain_sigmas` (its paired differences vary by
    `paired_sd`), for a few policies. No training: this shows the statistics behind the defaults."""
    import random

    from .policy import Policy, decide, pooled

    rng = random.Random(seed)

    def one(pol: Policy, gain: float | None) -> bool:
        champ = {s: rng.gauss(0, 1) for s in range(1, pol.baseline_runs + 1)}
        cand: list[float] = []
        for k in range(pol.max_reruns + 1):
            seed_k = k + 1
            if seed_k not in champ:
                champ[seed_k] = rng.gauss(0, 1)
            cand.append(rng.gauss(0, 1) if gain is None else champ[seed_k] - gain + rng.gauss(0, paired_sd))
            d = decide(pol, cand, [champ[i + 1] for i in range(len(cand))], pooled([list(champ.values()), cand]))
            if d.verdict != "rerun":
                return d.verdict == "keep"
        return False

    def campaign(pol: Policy, proposals: int = 20) -> int:
        """False keeps in one campaign of A/A proposals: sigma pools every group measured so far."""
        champ = {s: rng.gauss(0, 1) for s in range(1, pol.baseline_runs + 1)}
        groups, keeps, fresh = [list(champ.values())], 0, pol.baseline_runs + 1
        for _ in range(proposals):
            cand: dict[int, float] = {}
            for k in range(pol.max_reruns + 1):
                seeds = list(champ)
                if k >= len(seeds):
                    champ[fresh], fresh = rng.gauss(0, 1), fresh + 1
                    seeds = list(champ)
                cand[seeds[k]] = rng.gauss(0, 1)
                d = decide(
                    pol,
                    list(cand.values()),
                    [champ[s] for s in cand],
                    pooled([*groups, list(champ.values()), list(cand.values())]),
                )
                if d.verdict != "rerun":
                    break
            groups.append(list(cand.values()))
            if d.verdict == "keep":
                keeps += 1
                groups.append(list(champ.values()))
                champ = dict(cand)
        return keeps

    default = Policy()
    per_campaign = [campaign(default) for _ in range(trials // 10)]
    rows = []
    for runs, reruns in ((3, 2), (3, 3), (5, 2)):
        pol = Policy(baseline_runs=runs, max_reruns=reruns)
        rows.append(
            {
                "baseline_runs": runs,
                "max_reruns": reruns,
                "aa_keep_rate": round(sum(one(pol, None) for _ in range(trials)) / trials, 4),
                f"keep_rate_at_{gain_sigmas:g}_sigma": round(
                    sum(one(pol, gain_sigmas) for _ in range(trials)) / trials, 4
                ),
            }
        )
    return {
        "trials_each": trials,
        "paired_sd_of_a_real_change": paired_sd,
        "policies": rows,
        "aa_campaigns_of_20_default_policy": {
            "campaigns": len(per_campaign),
            "mean_false_keeps": round(statistics.fmean(per_campaign), 3),
            "share_with_at_most_one": round(sum(k <= 1 for k in per_campaign) / len(per_campaign), 3),
        },
    }


PARALLEL_SETUPS = {  # name: start flags; 1 slot of every core vs 2 slots of half each, on a 2-core machine
    "local_1": [],
    "ray_1_slot": ["--executor", "ray", "--ray-address", "local", "--parallel", "1", "--slot-resources", '{"CPU": 2}'],
    "ray_2_slots": ["--executor", "ray", "--ray-address", "local", "--parallel", "2", "--slot-resources", '{"CPU": 1}'],
}


def bench_parallel(experiments: int = 4, budget: float = 5.0) -> dict:
    """Real offline campaigns at one budget: experiments per hour (experiments judged / the span from the first
    experiment's start to the last one's verdict) and each experiment's wall time outside the agent, for the
    local executor, one Ray slot of the same cores, and two Ray slots. The keep rule is set to judge each
    experiment on one run (--min-pairs 1 --max-pairs 1, load ignored), so the figure is throughput, not policy."""
    from datetime import datetime

    out: dict = {"budget_s": budget, "experiments": experiments, "cores": os.cpu_count()}
    for name, flags in PARALLEL_SETUPS.items():
        with tempfile.TemporaryDirectory() as tmp:
            repo = scratch_repo(Path(tmp) / "repo", {})
            env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
            cmd = [sys.executable, "-m", "orchestrator.cli", "start", "--program", "model", "--tag", "bench"]
            cmd += ["--budget", str(budget), "--max-experiments", str(experiments), "--baseline-runs", "1"]
            cmd += ["--min-pairs", "1", "--max-pairs", "1", "--cpu-tolerance", "1", "--foreground", *flags]
            subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            con = sqlite3.connect(repo / "state" / "experiments.db")
            runs = con.execute(
                "SELECT started_at, ended_at, total_seconds - COALESCE(agent_seconds, 0), train_wall_s, eval_seconds "
                "FROM run WHERE kind = 'experiment' AND val_bpb IS NOT NULL ORDER BY seq"
            ).fetchall()
            con.close()
        if not runs:
            out[name] = {"experiments_measured": 0}
            continue
        at = datetime.fromisoformat
        span = (max(at(r[1]) for r in runs) - min(at(r[0]) for r in runs)).total_seconds()
        out[name] = {
            "experiments_measured": len(runs),
            "experiments_per_hour": round(3600 * len(runs) / span, 1),
            "run_wall_s_median": round(statistics.median(r[2] for r in runs), 2),
            "train_wall_s_median": round(statistics.median(r[3] for r in runs), 2),
            "eval_s_median": round(statistics.median(r[4] for r in runs), 2),
        }
    local, one, two = (out[k].get("run_wall_s_median") for k in PARALLEL_SETUPS)
    if local and one:
        out["ray_overhead_per_run_s"] = round(one - local, 2)
    if out["ray_1_slot"].get("experiments_per_hour") and out["ray_2_slots"].get("experiments_per_hour"):
        out["speedup_2_slots"] = round(
            out["ray_2_slots"]["experiments_per_hour"] / out["ray_1_slot"]["experiments_per_hour"], 2
        )
    return out


def main() -> int:
    if "--parallel" in sys.argv[1:]:
        parser = argparse.ArgumentParser(
            prog="python -m orchestrator.bench --parallel", description=bench_parallel.__doc__
        )
        parser.add_argument("--parallel", action="store_true", required=True)
        parser.add_argument("--experiments", type=int, default=4, help="experiments per campaign")
        parser.add_argument("--budget", type=float, default=5.0, help="training seconds per run")
        args = parser.parse_args()
        print(json.dumps(bench_parallel(args.experiments, args.budget), indent=2))
        return 0
    if "--aa" in sys.argv[1:]:
        parser = argparse.ArgumentParser(prog="python -m orchestrator.bench --aa", description=bench_aa.__doc__)
        parser.add_argument("--aa", action="store_true", required=True)
        parser.add_argument("--experiments", type=int, default=20, help="A/A proposals in one campaign (0: skip)")
        parser.add_argument("--trials", type=int, default=10, help="planted-improvement campaigns (0: skip)")
        parser.add_argument("--steps", type=int, default=16, help="training steps per run of the tiny model")
        parser.add_argument("--plant", default="LOGIT_SOFTCAP", help="the constant the planted base spoils")
        parser.add_argument("--bad", default="1.0", help="its spoiled value in the base")
        parser.add_argument("--good", default="15.0", help="the value the planted improvement restores")
        args = parser.parse_args()
        print(
            json.dumps(bench_aa(args.experiments, args.trials, args.steps, args.plant, args.bad, args.good), indent=2)
        )
        return 0
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    out = {}
    if what in ("status", "all"):
        out["status"] = bench_status()
    if what in ("overhead", "all"):
        out["overhead"] = bench_overhead()
    if what in ("eval", "all"):
        out["eval"] = bench_eval()

    if what in ("policy", "all"):
        out["policy"] = bench_policy()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
