"""Benchmarks of the daemon itself, printed as JSON (never timed assertions in tests).

    python -m bench status      # `arx-daemon status` on a ledger of 10,000 runs
    python -m bench overhead    # a real offline campaign: per-experiment overhead, daemon RSS and CPU while a
                                # trainer runs
    python -m bench eval        # sealed evaluation (two sandboxed model processes + the trusted scorer) on a 30 s
                                # run at the CPU default
    python -m bench --parallel [--budget 5 --experiments 4]  # experiments per hour with 1 and 2 Ray slots, and the
                                # per-run overhead through Ray vs local

Overhead per experiment = the run's wall time minus the agent's time, the trainer's own time
(startup after imports + training) and the evaluator's own time: what is left is git, the
ledger, process start-up and the decision.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.scratch import scratch_repo
from orchestrator import report
from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import Campaign
from orchestrator.programs import ROOT


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
        repo = scratch_repo(Path(tmp) / "repo", {})
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


def bench_eval(budget: float = 30.0, default_budget: float = 300.0, rounds: int = 3) -> dict:
    """Train the checkout's trainer for `budget` seconds with a kernel cache, as a campaign does, then time its
    sealed evaluation `rounds` times each way, alternating: the forward compiled with the cache's kernels (what
    campaigns run) and uncompiled (a run without a cache)."""
    from dataclasses import replace

    from orchestrator.measure import experiment, sandbox
    from orchestrator.scoring import corpus

    with tempfile.TemporaryDirectory() as tmp:
        spec = experiment.Spec(
            program="model",
            worktree=ROOT,
            run_dir=Path(tmp) / "runs" / "0001",
            corpus=corpus.materialize("stdlib"),
            budget_s=budget,
            seed=1,
            state_dir=Path(tmp),
            kernels=Path(tmp) / "kernels",
            train_deadline_s=budget + 120,
            unsafe_no_sandbox=sandbox.backend().name == "none",
        )
        trained = experiment.train(spec, lambda: False, lambda phase, pid: None)
        ways = {"compiled": spec, "uncompiled": replace(spec, kernels=None)}
        seen: dict[str, list] = {way: [] for way in ways}
        for _ in range(rounds):
            for way, s in ways.items():
                m = experiment.score(
                    s, trained, lambda vocab, s=s: experiment.SandboxedModel(s, lambda: False, lambda p, q: None, vocab)
                )
                if not m.ok:
                    raise SystemExit(f"error: the evaluation failed ({m.status}): {m.reason}")
                seen[way].append(m)
        log = (spec.run_dir / "eval.log").read_text()
        detail = seen["compiled"][0].scores.detail
        return {
            "sandbox": sandbox.backend().name,
            "train_budget_s": budget,
            "train_wall_s": trained.train_wall_s,
            "val_bpb": {way: round(ms[0].scores.val_bpb, 6) for way, ms in seen.items()},
            "eval_seconds": {way: [m.eval_seconds for m in ms] for way, ms in seen.items()},
            "waiting_for_logits_seconds": {
                way: [m.scores.detail["transfer_seconds"] for m in ms] for way, ms in seen.items()
            },
            "eval_fraction_of_default_budget": round(
                statistics.median(m.eval_seconds for m in seen["compiled"]) / default_budget, 4
            ),
            "kernels_compiled_by_model_processes": sum(
                int(line.rsplit(": ", 1)[1]) for line in log.splitlines() if line.startswith("kernels compiled here: ")
            ),
            "rows": detail["rows"],
            "probes": detail["probes"],
            "causality_max_diff": detail["causality_max_diff"],
            "claimed_tok_per_sec": trained.claimed.get("tok_per_sec"),
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
