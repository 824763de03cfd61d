"""Shared parts of the hostile campaigns: a scripted attacker, the campaign runner and the invariants.

Every attack is a file an LLM could write into its worktree. After each campaign the tests check, from
outside, what no attack may achieve: a changed file outside the run directories, a planted secret in
anything the daemon wrote, a process left alive, a score that differs from the honest score of the same
checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from agents.base import Abandoned, Proposal
from conftest import ROOT, make_repo
from orchestrator import daemon, fingerprint
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.policy import Policy
from orchestrator.config import Settings
from orchestrator.ledger import ledger
from orchestrator.measure import experiment
from orchestrator.measure.executor import LocalExecutor
from orchestrator.scoring import corpus, scorer

SECRET = "sk-ant-hostile-test-secret-" + uuid.uuid4().hex[:8]
MARKER = "arx-hostile-marker-" + uuid.uuid4().hex[:8]
EVENT_TIMEOUT_S = 30  # longest wait for something that must happen (a killed process to vanish); never a speed measure
STALL_S = 180  # the first step compiles: over a minute on a loaded 2-core machine
SNAPSHOT_SKIP = {".git", ".pytest_cache", ".ruff_cache", "state"}
DAEMON_DATA_ROOT: Path | None = None  # one for the session: the daemons of every module share its prepared data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, stdlib):
    """Only a data root (the root conftest's fixture runs a prepare of its own): the daemon materializes and
    prepares `stdlib` itself, trusted then sandboxed, as in production. Import it into a test module to use it.

    ARX_DATA_DIR points here only while the module runs, and back at the session's prepared `stdlib` (set up
    first, so it is what is restored) after: the stand-ins of other modules read their data through it, and a
    root that holds no prepared data has them prepare it in the stand-in itself."""
    global DAEMON_DATA_ROOT
    DAEMON_DATA_ROOT = DAEMON_DATA_ROOT or Path(os.environ.get("ARX_TEST_DATA_DIR") or tmp_path_factory.mktemp("data"))
    saved = os.environ.get("ARX_DATA_DIR")
    os.environ["ARX_DATA_DIR"] = str(DAEMON_DATA_ROOT)
    yield DAEMON_DATA_ROOT
    if saved is None:
        os.environ.pop("ARX_DATA_DIR", None)
    else:
        os.environ["ARX_DATA_DIR"] = saved


class ScriptedAttacker:
    """Stands in for the LLM: each proposal writes one attack into the worktree, as an agent could."""

    name = "scripted"
    model = None

    def __init__(self, steps: dict):
        self.steps = list(steps.items())

    def propose(self, ctx) -> Proposal:
        if not self.steps:
            raise Abandoned("script finished")
        description, edit = self.steps.pop(0)
        for path in ctx.editable:  # each attack starts from the base files, even after a kept one
            (ctx.worktree / path).write_text(ctx.base_files[path])
        edit(ctx.worktree)
        return Proposal(description=description, hypothesis="an attack the daemon must survive")


def replace(path: str, old: str, new: str, count: int = 1):
    def edit(wt: Path) -> None:
        file = wt / path
        text = file.read_text()
        assert old in text, f"{old!r} not in {path}"
        file.write_text(text.replace(old, new, count))

    return edit


def append(path: str, code: str):
    def edit(wt: Path) -> None:
        file = wt / path
        file.write_text(file.read_text() + "\n" + code)

    return edit


TRAIN_MAIN_BLOCK = 'if __name__ == "__main__":\n    blas.reexec_with_openblas()'


def inject(code: str, path: str = "trainer/train.py", block: str = TRAIN_MAIN_BLOCK):
    """Module-level code placed before the file's `if __name__ == "__main__":` block, so that it runs in the
    trainer (where the module is __main__) as well as in every process that imports it."""
    return replace(path, block, code + "\n\n" + block)


def chain(*edits):
    def edit(wt: Path) -> None:
        for e in edits:
            e(wt)

    return edit


# ---------------------------------------------------------------------------------------------
# What the daemon's side looks like before and after
# ---------------------------------------------------------------------------------------------
def watched_roots(repo: Path) -> list[Path]:
    """The daemon's checkout (with its venv), the scratch repository, the Python installation."""
    return [ROOT, repo, Path(sys.base_prefix).resolve() / "lib"]


def snapshot(roots: list[Path]) -> dict[str, tuple[int, int]]:
    files = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not (d in SNAPSHOT_SKIP and Path(dirpath) in (ROOT, *roots))]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                files[path] = (st.st_mtime_ns, st.st_size)
    return files


def changed_files(before: dict, after: dict) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def files_with(root: Path, needle: str) -> list[str]:
    """Every file under root (the state folder: ledger, logs, runs, conversations) that holds `needle`."""
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


def marked_processes(marker: str = MARKER) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " ".join(
                f"{k}={v}" for k, v in (p.info["environ"] or {}).items()
            )
        except (psutil.Error, TypeError):
            continue
        if marker in text and p.pid != os.getpid():
            found.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:200]}")
    return found


def survivors(marker: str = MARKER) -> list[str]:
    """Marked processes still alive once the kernel has had EVENT_TIMEOUT_S to reap a killed namespace."""
    end = time.time() + EVENT_TIMEOUT_S
    while (left := marked_processes(marker)) and time.time() < end:
        time.sleep(0.2)
    return left


# ---------------------------------------------------------------------------------------------
# One campaign of attacks
# ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    repo: Path
    state: Path
    db: Path
    wt: Path
    reason: str
    seconds: float
    runs: dict = field(default_factory=dict)  # description -> Run
    baseline: object = None
    changed: list[str] = field(default_factory=list)
    settings: Settings | None = None


def run_campaign(tmp: Path, program: str, steps: dict, **settings_kw) -> Outcome:
    """One real campaign (real daemon loop, real sandbox, real trainer) fed `steps` by a scripted attacker,
    with a planted ANTHROPIC_API_KEY in the daemon's environment."""
    repo = make_repo(tmp / "repo")
    corpus.materialize("stdlib")  # trusted set-up that may compile stdlib bytecode: before the snapshot
    fingerprint.backend()
    for module in ("orchestrator.scoring.leakcheck", "orchestrator.scoring.scorer", "tiktoken"):
        __import__(module)
    kw = {
        "state_dir": repo / "state",
        "program": program,
        "tag": "hostile",
        "budget_s": 2,
        "max_experiments": len(steps),
        "stall_s": STALL_S,
        "memory_mb": 3000,
        "policy": Policy(baseline_runs=1, max_pairs=1),
        "repo": repo,
        "backoff_s": 0.1,
    }
    settings = Settings(**(kw | settings_kw))
    row = daemon.open_campaign(settings, "scripted", None, None)
    before = snapshot(watched_roots(repo))
    saved_env = os.environ.get("ANTHROPIC_API_KEY")
    os.environ["ANTHROPIC_API_KEY"] = SECRET
    started = time.time()
    try:
        reason = CampaignLoop(settings, row, ScriptedAttacker(steps), LocalExecutor()).run()
    finally:
        if saved_env is None:
            os.environ.pop("ANTHROPIC_API_KEY", None)
        else:
            os.environ["ANTHROPIC_API_KEY"] = saved_env
    seconds = time.time() - started
    db = settings.state_dir / "experiments.db"
    all_runs = ledger.campaign_runs(db, row.id)
    out = Outcome(repo, settings.state_dir, db, Path(row.worktree), reason, seconds, settings=settings)
    out.runs = {r.description: r for r in all_runs if r.kind == "experiment"}
    out.baseline = next(r for r in all_runs if r.kind == "baseline")
    out.changed = changed_files(before, snapshot(watched_roots(repo)))
    print(f"\n[hostile] {program} campaign of {len(steps)} attacks: {seconds:.0f}s; {reason}", file=sys.stderr)
    return out


ORACLE_COPY = (
    "oracle.safetensors"  # the attack keeps a copy of its weights: the daemon deletes a discarded run's checkpoint
)
KEEP_A_COPY = f"""    if status == "ok":
        import shutil
        shutil.copy(run_dir / "model.safetensors", run_dir / "{ORACLE_COPY}")
"""


def honest_scores(out: Outcome, run, tmp: Path) -> scorer.Scores:
    """The run's weights scored with the unchanged trainer's build_model (the daemon checkout's), in a sandbox:
    what the run would score if its model process had only computed the model."""
    s = out.settings
    src = Path(run.run_dir)
    run_dir = tmp / f"oracle-{run.seq:04d}"
    run_dir.mkdir()
    shutil.copy(src / ORACLE_COPY, run_dir / "model.safetensors")
    shutil.copy(src / "model_config.json", run_dir / "model_config.json")
    spec = experiment.Spec(
        program=s.program,
        worktree=ROOT,
        run_dir=run_dir,
        corpus=corpus.materialize(s.dataset),
        budget_s=s.budget_s,
        seed=0,
        state_dir=s.state_dir,
        train_deadline_s=0,
        memory_mb=s.memory_mb,
    )
    prepared = experiment.prepare(spec, lambda: False, lambda phase, pid: None)
    return scorer.evaluate(
        run_dir,
        prepared,
        spec.corpus,
        lambda vocab: experiment.SandboxedModel(spec, lambda: False, lambda p, q: None, vocab),
    )


def git_status(path: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], cwd=path, capture_output=True, text=True, check=True
    ).stdout
