"""The daemon end to end: the real CLI, the real trainer on `stdlib`, budgets of a few seconds."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import git
import psutil
import pytest

from conftest import HANG_S, make_repo

STATE = "state"


def arx(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(repo: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(repo / STATE / "experiments.db", timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def wait_for(predicate, timeout: float = HANG_S, every: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = predicate()
        except (sqlite3.Error, OSError):  # not written yet
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def training_run(repo: Path) -> tuple | None:
    found = rows(repo, "SELECT id, seq, pid FROM run WHERE status = 'training' AND pid IS NOT NULL")
    return found[0] if found else None


def branch_commits(repo: Path, branch: str) -> set[str]:
    r = git.Repo(repo)
    return {c.hexsha for c in r.iter_commits(f"main..{branch}")}


def worktree_is_clean(repo: Path, name: str) -> bool:
    wt = git.Repo(repo / STATE / "worktrees" / name)
    return not wt.is_dirty(untracked_files=True)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line, non-zero exit (fast)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--program", "vision", "--tag", "x"], "unknown program 'vision'"),
        (["--program", "model", "--tag", "bad tag!"], "bad tag"),
        (["--program", "model", "--tag", "x", "--budget", "-5"], "--budget must be a positive number"),
        (["--program", "model", "--tag", "x", "--agent", "gpt"], "unknown agent"),
    ],
)
def test_bad_flags(repo, args, message):
    result = arx(repo, "start", *args, "--foreground")
    assert result.returncode == 2
    assert (
        result.stderr.strip().startswith("error: ")
        and message in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )


def test_not_a_git_repository(tmp_path, data_dir):
    repo = make_repo(tmp_path / "r")
    subprocess.run(["rm", "-rf", str(repo / ".git")], check=True)
    result = arx(repo, "start", "--program", "model", "--tag", "x", "--foreground")
    assert result.returncode == 2 and f"{repo} is not a git repository" in result.stderr
    assert f"git -C {repo} init" in result.stderr and not (repo / STATE).exists(), "refused before creating state/"


def test_uncommitted_editable_files(repo, data_dir):
    (repo / "trainer" / "train.py").write_text((repo / "trainer" / "train.py").read_text() + "\n# local edit\n")
    result = arx(repo, "start", "--program", "model", "--tag", "x", "--foreground")
    assert result.returncode == 2 and "uncommitted changes in trainer/train.py" in result.stderr


def test_an_unreachable_dataset_is_one_clear_error(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("ARX_DATA_BASE_URL", "http://127.0.0.1:9/data")  # nothing listens there: "offline"
    result = arx(repo, "start", "--program", "model", "--tag", "x", "--dataset", "climbmix", "--foreground")
    assert (
        result.returncode == 2 and "are you offline?" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )


def test_stop_with_nothing_running(repo):
    result = arx(repo, "stop", "--tag", "nothing")
    assert result.returncode == 0 and "nothing to stop: no ledger at" in result.stdout


def test_stop_finds_a_daemon_still_starting(repo):
    """A daemon takes its lock, then prepares its data, then writes its campaign to the ledger: `stop` in
    between must stop it, not answer that the ledger has no such campaign (nor that there is no ledger)."""
    lock = repo / "state" / "locks" / "model-early.lock"
    hold = (
        "import sys, time; from pathlib import Path; from orchestrator.measure import slots\n"
        "f = slots.try_lock(Path(sys.argv[1])); print(1, flush=True); time.sleep(600)"
    )
    starting = subprocess.Popen([sys.executable, "-c", hold, str(lock)], cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert starting.stdout.readline().strip() == "1"  # it holds the lock now
        assert not (repo / "state" / "experiments.db").exists()
        result = arx(repo, "stop", "--tag", "early")
        assert result.returncode == 0 and f"model-early stopped (pid {starting.pid})" in result.stdout, result
        assert starting.wait(timeout=30) == -signal.SIGTERM
    finally:
        starting.kill()
    assert "nothing to stop" in arx(repo, "stop", "--tag", "early").stdout


# ---------------------------------------------------------------------------------------------
# End to end (slow)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_offline_campaign_end_to_end(repo, data_dir):
    result = arx(
        repo,
        "start",
        "--program",
        "model",
        "--tag",
        "e2e",
        "--budget",
        "3",
        "--max-experiments",
        "3",
        "--baseline-runs",
        "1",
        "--max-pairs",
        "2",
        "--foreground",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OFFLINE agent" in result.stdout and "reached --max-experiments 3" in result.stdout
    runs = rows(
        repo,
        'SELECT seq, kind, status, val_bpb, test_bpb, tok_per_sec, decision_reason, "commit", description, diff '
        "FROM run ORDER BY seq",
    )
    experiments = [r for r in runs if r[1] == "experiment"]
    assert len(experiments) == 3 and [r[0] for r in runs] == list(range(1, len(runs) + 1))
    on_branch = branch_commits(repo, "autoresearch/e2e")
    for seq, kind, status, val, test, tok, reason, commit, description, diff in runs:
        assert reason, f"run {seq} has no decision reason"
        if status in ("keep", "discard"):
            assert val and test and tok, f"run {seq} lacks metrics"
        if kind == "experiment":
            assert " -> " in description and diff.startswith("diff --git")
            assert (commit in on_branch) == (status == "keep"), f"run {seq} ({status}) and the branch disagree"
    assert len(on_branch) == sum(r[2] == "keep" for r in experiments)  # only kept commits
    assert worktree_is_clean(repo, "model-e2e")
    view = rows(repo, "SELECT COUNT(*) FROM experiments WHERE tag = 'e2e'")[0][0]
    assert view == len(runs)


@pytest.mark.slow
def test_kill_9_during_training_then_resume(repo, data_dir):
    result = arx(repo, "start", "--program", "model", "--tag", "k9", "--budget", "30", "--baseline-runs", "1")
    assert result.returncode == 0 and "started model-k9 in the background" in result.stdout, result.stderr
    run_id, seq, trainer_pid = wait_for(lambda: training_run(repo))
    daemon_pid = rows(repo, "SELECT pid FROM campaign WHERE tag = 'k9'")[0][0]
    log = Path(rows(repo, "SELECT run_dir FROM run WHERE id = ?", run_id)[0][0]) / "train.log"
    wait_for(lambda: log.stat().st_size)  # the trainer has begun
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(trainer_pid) or psutil.Process(trainer_pid).status() == psutil.STATUS_ZOMBIE)
    status = arx(
        repo,
        "start",
        "--program",
        "model",
        "--tag",
        "k9",
        "--budget",
        "3",
        "--max-experiments",
        "1",
        "--baseline-runs",
        "1",
        "--max-pairs",
        "1",
        "--foreground",
    )
    assert status.returncode == 0, status.stdout + status.stderr
    runs = rows(repo, "SELECT id, seq, status, decision_reason FROM run ORDER BY seq")
    killed = next(r for r in runs if r[0] == run_id)
    assert killed[2] == "interrupted" and "daemon restarted" in killed[3]
    assert [r[1] for r in runs] == list(range(1, len(runs) + 1)), "no run lost or duplicated"
    assert any(r[1] > seq and r[2] in ("keep", "discard", "crash", "rejected") for r in runs), "the loop continued"
    assert worktree_is_clean(repo, "model-k9")


@pytest.mark.slow
def test_stop_during_training(repo, data_dir):
    assert (
        arx(repo, "start", "--program", "model", "--tag", "st", "--budget", "60", "--baseline-runs", "1").returncode
        == 0
    )
    run_id, _, trainer_pid = wait_for(lambda: training_run(repo))
    result = arx(repo, "stop", "--tag", "st")
    assert result.returncode == 0 and "model-st stopped" in result.stdout
    assert rows(repo, "SELECT status FROM run WHERE id = ?", run_id)[0][0] == "interrupted"
    assert rows(repo, "SELECT status, stop_reason FROM campaign WHERE tag = 'st'")[0] == (
        "stopped",
        "stopped by request",
    )
    assert not psutil.pid_exists(trainer_pid) or psutil.Process(trainer_pid).status() == psutil.STATUS_ZOMBIE
    assert worktree_is_clean(repo, "model-st")


@pytest.mark.slow
def test_two_starts_of_one_campaign(repo, data_dir):
    args = ["start", "--program", "model", "--tag", "twice", "--budget", "30", "--baseline-runs", "1", "--foreground"]
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", *args],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    wait_for(lambda: any(p.poll() is not None for p in procs))
    loser = next(p for p in procs if p.poll() is not None)
    assert loser.returncode == 2 and "already running" in loser.stderr.read()
    later = arx(repo, *args[:-1])  # and a detached start while it runs
    assert later.returncode == 2 and "already running" in later.stderr
    assert arx(repo, "stop", "--tag", "twice").returncode == 0
    for p in procs:
        p.wait(timeout=HANG_S)


@pytest.mark.slow
def test_data_program_campaign(repo, data_dir):
    result = arx(
        repo,
        "start",
        "--program",
        "data",
        "--tag",
        "d1",
        "--budget",
        "2",
        "--max-experiments",
        "2",
        "--baseline-runs",
        "1",
        "--max-pairs",
        "1",
        "--foreground",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = rows(repo, "SELECT seq, kind, status, description, diff, run_dir, decision_reason FROM run ORDER BY seq")
    experiments = [r for r in runs if r[1] == "experiment"]
    assert len(experiments) == 2
    for seq, kind, status, description, diff, run_dir, reason in experiments:
        assert status in ("keep", "discard", "crash", "timeout"), reason
        assert "trainer/prepare.py" in diff or "trainer/data_sources.py" in diff
        assert "trainer/train.py" not in diff
        assert (Path(run_dir) / "prepare.log").exists()
    assert rows(repo, "SELECT branch FROM campaign")[0][0] == "autoresearch-data/d1"
    assert not any(r[2] == "invalid" for r in runs), "data knobs must not move the pinned evaluation split"
