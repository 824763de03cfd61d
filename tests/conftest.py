"""Shared fixtures: one materialized and prepared `stdlib` per test session, a measured run, worktree
copies of trainer/, a tiny hand-made tokenizer and held-out corpus for the scorer's own tests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.measure import experiment, sandbox
from orchestrator.scoring import corpus as corpus_mod

ROOT = Path(__file__).resolve().parents[1]
TRAINED_BUDGET_S = 3
TRAINED_STEPS = 6
HANG_S = 1800  # a guard against a hung child, never a speed requirement: the suite must pass on a loaded machine


@dataclass(frozen=True)
class Stdlib:
    data_dir: Path  # ARX_DATA_DIR
    corpus: corpus_mod.Corpus  # training material and held-out split
    prepared: Path  # the checkout's prepared folder (ARX_PREPARED_DIR), published as a campaign would
    state_dir: Path


def make_spec(worktree: Path, run_dir: Path, stdlib: Stdlib, **over) -> experiment.Spec:
    """A measurement of `worktree` as the campaign would make it, sandboxed where this machine can."""
    fields = {
        "program": "model",
        "worktree": worktree.resolve(),
        "run_dir": run_dir.resolve(),
        "corpus": stdlib.corpus,
        "budget_s": 1.0,
        "seed": 0,
        "state_dir": stdlib.state_dir,
        "train_deadline_s": 900.0,  # generous: the machine may be busy; the budget, not the deadline, ends training
        "stall_s": 600.0,
        "eval_timeout_s": 900.0,
        "unsafe_no_sandbox": sandbox.backend().name == "none",
        "kernels": Path(os.environ["ARX_KERNEL_DIR"]),  # one compile phase per trainer version per session
    }
    return experiment.Spec(**(fields | over))


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory) -> Path:
    """One kernel cache for every campaign of the session (ARX_KERNEL_DIR): most share their baseline's code."""
    path = tmp_path_factory.mktemp("kernels").resolve()
    os.environ["ARX_KERNEL_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def stdlib(tmp_path_factory) -> Stdlib:
    """`stdlib` materialized (corpus + held-out split) and prepared once for the whole session.

    ARX_TEST_DATA_DIR reuses a data folder across sessions (the prepared folder is keyed by the data
    code, so an unchanged checkout prepares nothing)."""
    path = Path(os.environ.get("ARX_TEST_DATA_DIR") or tmp_path_factory.mktemp("data")).resolve()
    os.environ["ARX_DATA_DIR"] = str(path)
    state = tmp_path_factory.mktemp("state").resolve()
    found = corpus_mod.materialize("stdlib")
    partial = Stdlib(path, found, Path(), state)
    spec = make_spec(ROOT, state / "runs" / "prepare", partial)
    spec.run_dir.mkdir(parents=True)
    try:
        prepared = experiment.prepare(spec, lambda: False, lambda phase, pid: None)
    except experiment.Failed as e:
        pytest.fail(f"cannot prepare stdlib: {e.reason}\n{e.log_tail}")
    return Stdlib(path, found, prepared, state)


@pytest.fixture(scope="session")
def data_dir(stdlib) -> Path:
    """ARX_DATA_DIR (set for the session) with `stdlib` materialized and prepared."""
    return stdlib.data_dir


@pytest.fixture(scope="session")
def measured(stdlib, tmp_path_factory) -> tuple[Path, experiment.Measurement]:
    """One real training run of the checkout's trainer (3 s of steps), scored by the trusted scorer."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = experiment.measure(make_spec(ROOT, run_dir, stdlib, budget_s=TRAINED_BUDGET_S))
    assert result.ok, f"{result.status}: {result.reason}\n{result.log_tail}"
    return run_dir, result


@pytest.fixture(scope="session")
def trained_run(measured) -> Path:
    return measured[0]


@pytest.fixture(scope="session")
def stepped_run(stdlib, tmp_path_factory) -> Path:
    """A training run counted in steps (ARX_MAX_STEPS), not seconds: the same run on a fast or a loaded machine."""
    run_dir = tmp_path_factory.mktemp("stepped")
    env = {
        "ARX_RUN_DIR": str(run_dir),
        "ARX_PREPARED_DIR": str(stdlib.prepared),
        "ARX_BUDGET_S": str(HANG_S),
        "ARX_MAX_STEPS": str(TRAINED_STEPS),
    }
    result = run_module("trainer.train", ROOT, env)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def copy_trainer(dest: Path) -> Path:
    """A throwaway worktree holding a copy of trainer/ (and inside/, which it imports), for tests that edit the
    research code."""
    for name in ("trainer", "inside"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def edit_constant(worktree: Path, name: str, value: str, file: str = "train.py") -> None:
    path = worktree / "trainer" / file
    lines = path.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
    assert len(hits) == 1, f"{name} not found once in {file}"
    lines[hits[0]] = f"{name} = {value}"
    path.write_text("\n".join(lines) + "\n")


def run_module(
    module: str, cwd: Path, env: dict, args: list[str] | None = None, timeout: float = HANG_S
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *(args or [])],
        cwd=cwd,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def worktree(tmp_path) -> Path:
    return copy_trainer(tmp_path / "wt")


# ---------------------------------------------------------------------------------------------
# A tiny tokenizer and held-out corpus: the scorer's arithmetic and probes, without the real data
# ---------------------------------------------------------------------------------------------
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"th", b"the", b" the", b"  ", b"    ", b"in", b"\xe2\x80"]  # the last is a partial UTF-8 sequence


def write_tokenizer(folder: Path, pattern: str = SPLIT_PATTERN, bos_id: int | None = None) -> Path:
    """tokenizer.json with every byte as a token, a few merges, and BOS after the ranks."""
    ranks = [bytes([b]) for b in range(256)] + MERGES
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "pattern": pattern,
        "ranks": [base64.b64encode(r).decode() for r in ranks],
        "bos": "<|bos|>",
        "bos_id": len(ranks) if bos_id is None else bos_id,
        "vocab_size": len(ranks) + 1,
    }
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return folder


def write_corpus(folder: Path, val: list[str], test: list[str]) -> corpus_mod.Corpus:
    """A held-out split on disk in the layout materialize writes; no training material."""
    heldout = folder / "heldout"
    heldout.mkdir(parents=True, exist_ok=True)
    for split, texts in (("val", val), ("test", test)):
        docs = [corpus_mod.Doc(f"{split}/{i}", "text", t) for i, t in enumerate(texts)]
        corpus_mod.write_jsonl(heldout / f"{split}.jsonl", docs)
    return corpus_mod.Corpus("tiny", "tiny-0", folder / "train", heldout, ())


def write_model_config(run_dir: Path, seq_len) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model_config.json").write_text(json.dumps({"seq_len": seq_len}))
    return run_dir


def tiny_texts() -> tuple[list[str], list[str]]:
    """Real text of several sizes: stdlib sources cut into pieces, unicode, a one-byte and an empty document."""
    source = (corpus_mod.stdlib_root() / "textwrap.py").read_text()
    other = (corpus_mod.stdlib_root() / "shlex.py").read_text()
    val = [source[:2500], "héllo wörld — ünïcode ✓ 🙂 the end", "a", source[2500:3100], "", source[3100:3900]]
    test = [other[:1800], "x = 1\n", "naïve café — “quoted” 🙂🙂", other[1800:2600]]
    return val, test


PROJECT_FILES = ["trainer", "inside", "orchestrator", "agents", "prompts", "pyproject.toml", ".gitignore"]


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
