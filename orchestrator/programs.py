"""The two research programs, the paths a campaign uses, and the checks on what a proposal touched."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the daemon's own checkout: its evaluator is the sealed one
# our code in the jail: refused in any proposal (everything outside a program's editable files is, these by name)
LOCKED = (
    "inside/evaluate.py",
    "inside/blas.py",
    "trainer/__init__.py",
    "inside/__init__.py",
    "inside/device.py",
    "inside/loader.py",
)
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def default_state_dir() -> Path:
    return Path(os.environ.get("ARX_STATE_DIR") or ROOT / "state")


@dataclass(frozen=True)
class Program:
    name: str
    branch_prefix: str
    editable: tuple[str, ...]
    readable: tuple[str, ...]

    def branch(self, tag: str) -> str:
        return f"{self.branch_prefix}/{tag}"


PROGRAMS = {
    "model": Program(
        "model",
        "autoresearch",
        ("trainer/train.py",),
        ("trainer/prepare.py", "trainer/data_sources.py", "inside/evaluate.py"),
    ),
    "data": Program(
        "data",
        "autoresearch-data",
        ("trainer/prepare.py", "trainer/data_sources.py"),
        ("trainer/train.py", "inside/evaluate.py"),
    ),
}


def out_of_scope(program: Program, changed: list[str]) -> list[str]:
    """Changed files the program may not touch; locked files always count."""
    return [f for f in changed if f not in program.editable or f in LOCKED]


@dataclass(frozen=True)
class StatePaths:
    """Where one campaign keeps its files inside the state directory."""

    state: Path
    program: str
    tag: str

    @property
    def name(self) -> str:
        return f"{self.program}-{self.tag}"

    @property
    def db(self) -> Path:
        return self.state / "experiments.db"

    @property
    def worktree(self) -> Path:
        return self.state / "worktrees" / self.name

    @property
    def runs(self) -> Path:
        return self.state / "runs" / self.name

    @property
    def log(self) -> Path:
        return self.state / "logs" / f"{self.name}.log"

    @property
    def kernels(self) -> Path:
        """The kernel cache of every campaign of this state directory (ARX_KERNEL_DIR moves it, for one shared by
        several), one folder per trainer code version (orchestrator/measure/kernels.py): each run's TMPDIR starts as a
        copy of its code's folder."""
        return Path(os.environ["ARX_KERNEL_DIR"]) if os.environ.get("ARX_KERNEL_DIR") else self.state / "kernels"

    @property
    def lock(self) -> Path:
        return self.state / "locks" / f"{self.name}.lock"

    def run_dir(self, seq: int) -> Path:
        return self.runs / f"{seq:04d}"

    def conversation(self, seq: int) -> Path:
        """The agent's conversation for a run.

        Kept outside the run dir, which the trainer may write and each measurement wipes.
        """
        return self.state / "conversations" / self.name / f"{seq:04d}.json"


def running_message(paths: StatePaths, pid: int | None) -> str:
    """The one line that refuses a second daemon for a running campaign (`start` says it before loading the daemon)."""
    return (
        f"campaign {paths.name} is already running (pid {pid}); stop it with: arx-daemon stop --program "
        f"{paths.program} --tag {paths.tag}"
    )


def held_locks(state_dir: Path, tag: str | None = None, program: str | None = None) -> list[StatePaths]:
    """The campaigns whose daemon holds its lock, matching `tag` and `program`: a daemon takes its lock before it
    writes its campaign to the ledger (it prepares its data in between), and `stop` right after `start` must
    still find it."""
    from .measure import slots

    found = []
    for lock in sorted((state_dir / "locks").glob("*.lock")):
        prog, _, name = lock.stem.partition("-")
        if prog in PROGRAMS and tag in (None, name) and program in (None, prog) and slots.holder(lock) is not None:
            found.append(StatePaths(state_dir, prog, name))
    return found
