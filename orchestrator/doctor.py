"""`arx-daemon doctor`: what this machine offers arx, and a fix for each problem found.

Every fix and hint it prints is a command that works today, as printed (tests/test_doctor.py runs
each one on a machine made to need it): a check that cannot name a working command says what to do
in words instead. `start` asks `repository` before it creates anything.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .programs import ROOT

MIN_FREE_GB = 5


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # what to run (or do) about it: for a failed check, the fix; for a passed one, a hint


def run(cmd: list[str], cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def platform_check() -> Check:
    detail = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    if sys.version_info < (3, 11):
        return Check("platform", False, detail, "arx needs Python 3.11 or newer: uv python install 3.11 && uv sync")
    return Check("platform", True, detail)


def mlx_checks() -> list[Check]:
    from inside import blas  # stdlib only: the orchestrator never imports MLX

    probe = run([sys.executable, "-m", "bench", "trainer", "--matmul"])
    if probe.returncode != 0:
        return [
            Check(
                "mlx",
                False,
                (probe.stderr.strip().splitlines() or ["MLX failed to load"])[-1],
                "reinstall: uv sync (mlx on macOS, mlx[cpu] or mlx[cuda] on Linux)",
            )
        ]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    used = info["blas"]
    slow = info["backend"] == "cpu" and used["source"] == "reference"
    name = " ".join(filter(None, (used["source"], used["version"], used["library"] and f"({used['library']})")))
    detail = f"{info['gflops']:.0f} GFLOP/s fp32 (512x512, slower on a busy machine); BLAS: {name}, {used['note']}"
    return [
        Check("mlx", True, f"MLX {info['mlx_version']}, backend {info['backend']}"),
        Check("matmul", not slow, detail, blas.FIX if slow else ""),
    ]


def repository(root: Path = ROOT) -> Check:
    """Campaigns branch from arx's own checkout: it must be the top of a git repository with a commit."""
    q = shlex.quote(str(root))
    make = f"git -C {q} init -q && git -C {q} add -A && git -C {q} commit -qm arx"
    if not shutil.which("git"):
        return Check("git", False, "git not found", "install git (apt-get install git, or Xcode's command line tools)")
    version = run(["git", "--version"], root).stdout.strip()
    top = run(["git", "rev-parse", "--show-toplevel"], root)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        where = "inside another repository" if top.returncode == 0 else "not a git repository"
        return Check(
            "git",
            False,
            f"{version}; {root} is {where}: campaigns branch from it",
            f"clone arx with git (git clone URL), or make this folder its own repository: {make}",
        )
    head = run(["git", "rev-parse", "--short", "HEAD"], root)
    if head.returncode != 0:
        return Check(
            "git",
            False,
            f"{version}; {root} has no commit yet: campaigns branch from one",
            f"git -C {q} add -A && git -C {q} commit -qm arx",
        )
    branch = run(["git", "branch", "--show-current"], root).stdout.strip() or "a detached HEAD"
    return Check("git", True, f"{version}; {root} is a repository, on {branch} at {head.stdout.strip()}")


def disk() -> Check:
    free_gb = shutil.disk_usage(ROOT).free / 2**30
    ok = free_gb > MIN_FREE_GB
    fix = "" if ok else "free some disk: each run keeps its logs, each kept run a checkpoint (state/runs/)"
    return Check("disk", ok, f"{free_gb:.0f} GB free at {ROOT}", fix)


def datasets() -> Check:
    """Which datasets are prepared for this checkout's data code (start prepares its own by itself)."""
    from .scoring.corpus import data_root

    root = data_root()
    prepared = sorted({p.parent.name.rsplit("-", 1)[0] for p in (root / "prepared").glob("*/meta.json")})
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        return Check(
            "datasets",
            False,
            f"{root} is not writable",
            "point ARX_DATA_DIR at a writable folder: export ARX_DATA_DIR=~/arx-data",
        )
    if prepared:
        return Check("datasets", True, f"prepared in {root}: {', '.join(prepared)}")
    return Check(
        "datasets",
        True,
        f"none prepared yet in {root} (start prepares what it needs by itself)",
        "to prepare now: uv run arx-daemon prepare --dataset stdlib",
    )


def sandbox_check() -> Check:
    from .measure import sandbox

    box = sandbox.backend()
    ok = box.name != "none"
    return Check("sandbox", ok, f"{box.name}: {box.detail}", "" if ok else sandbox.FIX)


def ledger(state_dir: Path) -> Check:
    """The ledger is readable, sound, and not newer than this arx; the daemon's backups of it."""
    from .ledger import backup

    db = state_dir / "experiments.db"
    if not db.exists():
        return Check("ledger", True, f"none yet at {db} (the first start creates it)")
    problem = backup.soundness(db)
    if problem:
        return Check("ledger", False, f"{db} is damaged: {problem}", "; or ".join(backup.fixes(db)))
    version = schema_version(db)
    from .ledger.ledger import SCHEMA_VERSION

    if version > SCHEMA_VERSION:
        return Check(
            "ledger",
            False,
            f"{db} was written by a newer arx (schema v{version}, this arx reads v{SCHEMA_VERSION})",
            f"update arx: git -C {shlex.quote(str(ROOT))} pull && uv sync",
        )
    copies = sorted(backup.folder(db).glob("experiments-*.db"))
    kept = (
        f"{len(copies)} backup{'s' if len(copies) != 1 else ''} in {backup.folder(db)}" if copies else "no backup yet"
    )
    return Check("ledger", True, f"{db}: sound, schema v{version}; {kept}")


def schema_version(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def api_key() -> Check:
    key = bool(os.environ.get("ANTHROPIC_API_KEY"))
    base = os.environ.get("ANTHROPIC_BASE_URL")
    detail = "ANTHROPIC_API_KEY is set" if key else "ANTHROPIC_API_KEY is not set: campaigns use the offline agent"
    hint = "" if key else "to let Claude propose experiments: export ANTHROPIC_API_KEY=sk-ant-..."
    return Check("api key", True, detail + (f"; ANTHROPIC_BASE_URL={base}" if base else ""), hint)


def checks(state_dir: Path) -> list[Check]:
    return [
        platform_check(),
        *mlx_checks(),
        repository(),
        disk(),
        datasets(),
        sandbox_check(),
        ledger(state_dir),
        api_key(),
    ]
