"""`arx-daemon doctor`: green on a healthy machine, and every fix or hint it prints works as printed.

Each check that can fail here is made to fail for real (a checkout that is not a repository, a
damaged ledger, no prepared data), the fix doctor prints is run in a shell as printed, and the check
is then green. `uv run arx-daemon` in a printed command is this checkout's CLI (`python -m
orchestrator.cli`): the same program, started without uv.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import handmade
from conftest import PROJECT_FILES
from orchestrator import doctor, report
from orchestrator.ledger import backup, ledger
from orchestrator.ledger.ledger import Run
from orchestrator.programs import ROOT

CLI = f"{sys.executable} -m orchestrator.cli"
GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def run_fix(command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a printed command in a shell, as a person would paste it."""
    command = command.replace("uv run arx-daemon", CLI)
    return subprocess.run(
        command, shell=True, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, **(env or {}))
    )


def test_doctor_is_green_on_this_machine(data_dir, tmp_path):
    state = tmp_path / "state"
    handmade.build(state)
    backup.take(state / "experiments.db")
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "doctor", "--state-dir", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
    names = [line[6:].split()[0] for line in lines]
    assert names == ["platform", "mlx", "matmul", "git", "disk", "datasets", "sandbox", "ledger", "api"]
    failed = [line for line in lines if line.startswith("[FIX]")]
    from orchestrator.measure import sandbox

    allowed = ["sandbox"] if sandbox.backend().name == "none" else []  # a machine without one is not healthy
    assert [line[6:].split()[0] for line in failed] == allowed, out.stdout
    assert out.returncode == (1 if allowed else 0)
    assert "is a repository, on" in out.stdout and "prepared in" in out.stdout and "stdlib" in out.stdout
    assert "sound, schema v" in out.stdout and "1 backup in" in out.stdout
    assert "ANTHROPIC_API_KEY is not set" in out.stdout and "GFLOP/s" in out.stdout


def copy_without_git(dest: Path) -> Path:
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def test_git_fix_for_a_folder_that_is_not_a_repository(tmp_path):
    copy = copy_without_git(tmp_path / "arx")
    check = doctor.repository(copy)
    assert not check.ok and "is not a git repository" in check.detail
    result = run_fix(check.fix.split("make this folder its own repository: ", 1)[1], GIT_ID)
    assert result.returncode == 0, result.stderr
    assert doctor.repository(copy).ok


def test_git_fix_for_a_repository_without_a_commit(tmp_path):
    copy = copy_without_git(tmp_path / "arx")
    subprocess.run(["git", "init", "-q", str(copy)], check=True)
    check = doctor.repository(copy)
    assert not check.ok and "has no commit yet" in check.detail
    assert run_fix(check.fix, GIT_ID).returncode == 0  # the fix is the command itself
    assert doctor.repository(copy).ok


def test_git_sees_a_checkout_inside_another_repository(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    copy = copy_without_git(tmp_path / "arx")
    check = doctor.repository(copy)
    assert not check.ok and "inside another repository" in check.detail
    assert run_fix(check.fix.split("make this folder its own repository: ", 1)[1], GIT_ID).returncode == 0
    assert doctor.repository(copy).ok


def damaged_ledger(state: Path) -> Path:
    """The handmade ledger and 40 more runs, backed up as the daemon does at start, then one page of runs damaged."""
    runs = handmade.build(state)
    db = state / "experiments.db"
    filler = [
        Run(campaign_id=runs[1].campaign_id, seq=100 + i, status="discard", val_bpb=2.6, diff="x" * 3000)
        for i in range(40)
    ]
    ledger.save(db, *filler)
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file
    con.close()
    assert backup.take(db) is not None
    data = bytearray(db.read_bytes())
    page = len(data) // 4096 - 5  # a leaf page of the run table (its diffs fill the last pages)
    data[page * 4096 : (page + 1) * 4096] = b"\xde\xad\xbe\xef" * 1024
    db.write_bytes(bytes(data))
    with pytest.raises(sqlite3.DatabaseError):
        report.runs(db)
    return db


@pytest.mark.parametrize("which", ["restore", "salvage"])
def test_ledger_fixes_bring_a_damaged_ledger_back(tmp_path, which):
    state = tmp_path / "state"
    db = damaged_ledger(state)
    check = doctor.ledger(state)
    assert not check.ok and "is damaged" in check.detail
    restore, salvage = check.fix.split("; or ")
    assert restore.startswith("restore the daemon's backup of ") and salvage.startswith("salvage what is readable: ")
    fix = restore if which == "restore" else salvage
    result = run_fix(fix.split(": ", 1)[1])
    assert result.returncode == 0, result.stderr
    assert doctor.ledger(state).ok, doctor.ledger(state).detail
    found = report.status(db, state)
    if which == "restore":  # the backup holds everything
        assert [c["tag"] for c in found] == ["truth"] and found[0]["kept"] == 1
    else:  # the dump keeps every row it could read: the campaign, its figures, all but a page of runs
        assert [c["tag"] for c in found] == ["truth"] and found[0]["kept"] == 1
        assert 12 < len(report.runs(db)) < 12 + 40
        assert Path(f"{db}.damaged").exists(), "the damaged file is kept"


def test_a_ledger_from_a_newer_arx_is_named(tmp_path):
    state = tmp_path / "state"
    handmade.build(state)
    con = sqlite3.connect(state / "experiments.db")
    con.execute("PRAGMA user_version = 999")
    con.commit()
    con.close()
    check = doctor.ledger(state)
    assert not check.ok and "written by a newer arx (schema v999" in check.detail and "pull && uv sync" in check.fix


def test_the_datasets_hint_prepares_what_start_would(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_DATA_DIR", str(tmp_path / "empty"))
    check = doctor.datasets()
    assert check.ok and "none prepared yet" in check.detail and "arx-daemon prepare --dataset stdlib" in check.fix
    monkeypatch.setenv("ARX_DATA_DIR", str(data_dir))  # a first preparation is the session fixture's (same code)
    command = check.fix.split(": ", 1)[1]
    result = run_fix(command, {"ARX_DATA_DIR": str(data_dir), "ARX_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip().splitlines()[-1]).is_dir()
    assert "prepared in" in doctor.datasets().detail and "stdlib" in doctor.datasets().detail


def test_the_api_key_hint_is_what_a_shell_takes(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    hint = doctor.api_key().fix
    result = run_fix(hint.split(": ", 1)[1] + ' && test -n "$ANTHROPIC_API_KEY"')
    assert result.returncode == 0


def test_a_backup_is_taken_only_of_a_sound_ledger_and_only_the_newest_stay(tmp_path):
    state = tmp_path / "state"
    handmade.build(state)
    db = state / "experiments.db"
    taken = [backup.take(db, keep=2) for _ in range(3)]
    assert all(taken) and sorted(backup.folder(db).glob("*.db")) == sorted(taken[1:])
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"garbage" * 1000)
    assert backup.take(db, keep=2) is None and sorted(backup.folder(db).glob("*.db")) == sorted(taken[1:])
