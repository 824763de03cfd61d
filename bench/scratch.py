"""What the benchmarks share: a scratch repository of this checkout's code, real campaigns in it, and an executor
that remembers measurements.

At a fixed step count a run is bit-for-bit deterministic (same code, same seed, same steps: same weights, same
val_bpb), so trials that share a commit and a seed share one real measurement instead of training it again. The
cache checks that claim: the first hits are measured again and compared, and the JSON says how they compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from dataclasses import asdict, replace
from pathlib import Path

from orchestrator import fingerprint
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.policy import Policy
from orchestrator.config import Settings
from orchestrator.daemon import open_campaign
from orchestrator.ledger import ledger
from orchestrator.measure.executor import LocalExecutor
from orchestrator.measure.experiment import Measurement
from orchestrator.programs import ROOT
from orchestrator.scoring.scorer import Scores

CODE = ("trainer", "inside", "orchestrator", "agents", "prompts", "pyproject.toml")  # what a campaign needs
FIXED_STEPS_BUDGET_S = 3600.0  # a run at a fixed step count stops at its steps; the budget only bounds the watchdog
TINY = {"DEPTH": "1", "MODEL_DIM": "64", "SEQ_LEN": "128", "DEVICE_BATCH": "8", "TOTAL_BATCH_TOKENS": "2**10"}


def scratch_repo(dest: Path, edits: dict[str, str]) -> Path:
    """A git repository holding this checkout's code with `edits` (constant -> value) made to train.py. With
    BENCH_STEPS among them the trainer stops after that many steps (its schedules follow the steps), so the other
    processes on a shared machine change how long a run takes but not its score: what is left is the seed's."""
    dest.mkdir(parents=True)
    for name in CODE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dest / name)
    train = dest / "trainer" / "train.py"
    train.write_text(edit_constants(train.read_text(), edits))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "bench base"], cwd=dest, check=True)
    return dest


def edit_constants(text: str, edits: dict[str, str]) -> str:
    for name, value in edits.items():
        text, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, count=1, flags=re.MULTILINE)
        if not n:  # a bench-only constant: added after the last hyperparameter
            text = text.replace("\nPRINT_EVERY_S = ", f"\n{name} = {value}\nPRINT_EVERY_S = ", 1)
    if "BENCH_STEPS" in edits:
        text, n = re.subn(r'int\(os\.environ\.get\("ARX_MAX_STEPS", "0"\)\) or None', "BENCH_STEPS", text)
        assert n == 1, "train.py no longer reads ARX_MAX_STEPS where the bench expects it"
    return text


def fixed_step_policy(**over) -> Policy:
    """The default keep rule, but for the load check: at a fixed step count the machine's load changes how long a
    run takes, not its score, so there is nothing to measure again for (and cached runs keep their old CPU figures)."""
    return Policy(**({"cpu_tolerance": 1.0} | over))


def campaign(
    repo: Path, tag: str, agent, experiments: int, seed: int, executor, policy: Policy, budget_s=FIXED_STEPS_BUDGET_S
) -> list[ledger.Run]:
    """One real campaign of the daemon's loop in `repo` (git, worktree, ledger, sandbox, sealed scorer)."""
    settings = Settings(
        state_dir=repo / "state",
        program="model",
        tag=tag,
        budget_s=budget_s,
        max_experiments=experiments,
        seed=seed,
        repo=repo,
        policy=policy,
    )
    loop = CampaignLoop(settings, open_campaign(settings, agent.name, None, None), agent, executor)
    loop.run()
    return ledger.campaign_runs(loop.db, loop.campaign.id)


def kernel_cache(repo: Path) -> Path:
    """The kernel cache a campaign in `repo` uses (programs.Paths.kernels): measurements made outside the campaign
    use it too, because a run with the daemon's kernels (-mfma) and one with MLX's own differ in their last bits,
    and 16 steps of training make that a difference of up to 0.04 bpb on some seeds."""
    return Path(os.environ.get("ARX_KERNEL_DIR") or repo / "state" / "kernels")


class CachedExecutor:
    """The local executor, remembering every measurement by (the trainer's files at the commit, the seed).

    `verify` cache hits are measured again for real and compared; `checks` holds the largest difference seen."""

    name = "cached"
    holds_slots = False

    def __init__(self, path: Path, verify: int = 2):
        self.inner, self.path, self.verify = LocalExecutor(), path, verify
        self.cache: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}
        self.lock = threading.Lock()
        self.hits = self.misses = 0
        self.checks: list[float] = []

    def key(self, spec) -> str:
        h = hashlib.sha256(f"{spec.seed}|{spec.corpus.dataset}|{spec.program}".encode())
        files = subprocess.run(
            ["git", "ls-tree", "-r", spec.commit, "--", "trainer", "inside"],
            cwd=spec.worktree,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        h.update(files.encode())  # blob hashes: the files' contents
        h.update(b"kernel cache" if spec.kernels else b"own kernels")  # its -mfma kernels round otherwise than MLX's
        return h.hexdigest()[:24]

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None) -> Measurement:
        key = self.key(spec)
        hit = self.cache.get(key)
        if hit is None or len(self.checks) < self.verify:
            m = self.inner.measure(spec, should_stop, on_phase)
            if hit is not None and m.ok:
                self.checks.append(abs(m.scores.val_bpb - hit["scores"]["val_bpb"]))
            if hit is None and m.ok:
                self.misses += 1
                with self.lock:
                    self.cache[key] = {
                        "scores": asdict(m.scores),
                        "claimed": m.claimed,
                        "cpu_free": m.cpu_free,
                        "train_wall_s": m.train_wall_s,
                    }
                    self.path.write_text(json.dumps(self.cache))
            if hit is None:
                return m
        self.hits += 1
        on_phase("evaluating", None)
        scores = Scores(**hit["scores"])
        return replace(
            Measurement(
                "measured",
                scores=scores,
                claimed=hit["claimed"],
                cpu_free=hit["cpu_free"],
                train_wall_s=hit.get("train_wall_s"),
            ),
            node="cache",
        )

    def fingerprint(self) -> dict:
        return fingerprint.current()

    def close(self) -> None:
        pass

    def report(self) -> dict:
        return {
            "measured": self.misses,
            "served_from_cache": self.hits,
            "cache_hits_measured_again": len(self.checks),
            "largest_difference_on_a_repeat": max(self.checks, default=None),
        }
