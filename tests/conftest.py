"""Shared fixtures: one prepared `stdlib` per test session, worktree copies of trainer/, runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """ARX_DATA_DIR with `stdlib` prepared once for the whole session (about 7 s)."""
    path = Path(os.environ.get("ARX_TEST_DATA_DIR") or tmp_path_factory.mktemp("data"))
    env = dict(os.environ, ARX_DATA_DIR=str(path))
    subprocess.run([sys.executable, "-m", "trainer.prepare", "--dataset", "stdlib"], cwd=ROOT, env=env, check=True, capture_output=True)
    os.environ["ARX_DATA_DIR"] = str(path)
    return path


def copy_trainer(dest: Path) -> Path:
    """A throwaway worktree holding a copy of trainer/, for tests that edit the research code."""
    shutil.copytree(ROOT / "trainer", dest / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def edit_constant(worktree: Path, name: str, value: str, file: str = "train.py") -> None:
    path = worktree / "trainer" / file
    lines = path.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
    assert len(hits) == 1, f"{name} not found once in {file}"
    lines[hits[0]] = f"{name} = {value}"
    path.write_text("\n".join(lines) + "\n")


HANG_S = 1800  # a guard against a hung child, never a speed requirement: the suite must pass on a loaded machine


def run_module(module: str, cwd: Path, env: dict, args: list[str] | None = None, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *(args or [])]
    return subprocess.run(command, cwd=cwd, env=dict(os.environ, **env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def worktree(tmp_path) -> Path:
    return copy_trainer(tmp_path / "wt")


TRAINED_STEPS = 6


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory) -> Path:
    """One real training run of the checkout's trainer, evaluated by the sealed evaluator.

    It is counted in steps, not seconds, so that it is the same run on a fast or a loaded machine
    (the time budget is tested by a run of its own).
    """
    run_dir = tmp_path_factory.mktemp("run")
    env = {"ARX_RUN_DIR": str(run_dir), "ARX_BUDGET_S": str(HANG_S), "ARX_MAX_STEPS": str(TRAINED_STEPS)}
    result = run_module("trainer.train", ROOT, env)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_module("trainer.evaluate", ROOT, {}, ["--run-dir", str(run_dir), "--worktree", str(ROOT)])
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


PROJECT_FILES = ["trainer", "orchestrator", "agents", "prompts", "pyproject.toml", ".gitignore"]


def make_repo(dest: Path) -> Path:
    """A scratch git repository holding this checkout's code, so campaigns never branch the real one."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dest / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "scratch copy"], cwd=dest, check=True)
    return dest


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "repo")
