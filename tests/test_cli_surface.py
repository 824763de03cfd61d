"""status, runs, show, export, plot, doctor, service: their output on a ledger built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import HANG_S
from orchestrator import ledger, slots
from orchestrator.cli import app
from orchestrator.ledger import Campaign, LlmCall, Run
from orchestrator.programs import ROOT, StatePaths

NOW = datetime.now(timezone.utc)


def cli(*args: str) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def state(tmp_path) -> Path:
    """A ledger with a finished campaign, a running one (its lock held here) and a dead one."""
    state = tmp_path / "state"
    db = state / "experiments.db"

    def campaign(tag: str, status: str, **kw) -> Campaign:
        c = Campaign(
            tag=tag,
            program="model",
            branch=f"autoresearch/{tag}",
            worktree=str(state / "worktrees" / tag),
            base_commit="a" * 40,
            agent=kw.pop("agent", "offline"),
            dataset="stdlib",
            budget_s=60,
            status=status,
            **kw,
        )
        ledger.save(db, c)
        return c

    done = campaign(
        "done",
        "stopped",
        stop_reason="reached --max-experiments 3",
        noise_sigma=0.004,
        agent="claude",
        llm_model="claude-sonnet-4-6",
    )
    runs = [
        Run(
            campaign_id=done.id,
            seq=1,
            kind="baseline",
            status="keep",
            val_bpb=2.50,
            test_bpb=2.60,
            tok_per_sec=5000,
            peak_memory_mb=2048,
            commit="a" * 40,
            description="baseline 1/1 (unchanged code)",
            decision_reason="baseline 1/1",
        ),
        Run(
            campaign_id=done.id,
            seq=2,
            kind="experiment",
            status="keep",
            val_bpb=2.40,
            test_bpb=2.52,
            tok_per_sec=5100,
            peak_memory_mb=2100,
            commit="b" * 40,
            description="MATRIX_LR 0.04 -> 0.05",
            hypothesis="faster",
            decision_reason="improved beyond noise",
            diff="diff --git a/trainer/train.py b/trainer/train.py\n-MATRIX_LR = 0.04\n+MATRIX_LR = 0.05\n",
            ended_at=NOW - timedelta(minutes=90),
        ),
        Run(
            campaign_id=done.id,
            seq=3,
            kind="experiment",
            status="discard",
            val_bpb=2.45,
            test_bpb=2.55,
            tok_per_sec=4900,
            peak_memory_mb=2000,
            commit="c" * 40,
            description="DEPTH 2 -> 3",
            decision_reason="not better",
        ),
        Run(
            campaign_id=done.id,
            seq=4,
            kind="experiment",
            status="crash",
            commit="d" * 40,
            description="bad\tidea",
            decision_reason="training exited with code 1",
            error="Traceback\nValueError: boom",
        ),
    ]
    ledger.save(db, *runs)
    ledger.save(
        db,
        LlmCall(
            campaign_id=done.id,
            run_id=runs[1].id,
            model="claude-sonnet-4-6",
            input_tokens=1000,
            output_tokens=200,
            cache_read_tokens=9000,
            cost_usd=0.0123,
            latency_s=3.2,
        ),
    )
    done.best_run_id = runs[1].id
    ledger.save(db, done)

    live = campaign("live", "running", note=None)
    run_dir = state / "runs" / "model-live" / "0002"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text("model: ...\nstep 10 | loss 5.123 | lr 0.0400 | tok/s 4,321 | 12.5/60s\n")
    ledger.save(
        db,
        Run(
            campaign_id=live.id,
            seq=1,
            kind="baseline",
            status="keep",
            val_bpb=3.0,
            commit="a" * 40,
            description="baseline",
        ),
        Run(
            campaign_id=live.id,
            seq=2,
            kind="experiment",
            status="training",
            description="SCALAR_LR 0.5 -> 0.4",
            run_dir=str(run_dir),
        ),
    )
    campaign("dead", "running", pid=999999)
    lock = slots.try_lock(StatePaths(state, "model", "live").lock)
    yield state
    lock.close()


def test_status_table(state):
    result = cli("status", "--state-dir", str(state))
    assert result.exit_code == 0
    lines = {line.split("\t")[0]: line.split("\t") for line in result.output.splitlines()}
    assert lines["campaign"][:4] == ["campaign", "state", "agent", "now"]
    done = lines["model/done"]
    assert done[1].startswith("stopped (reached --max-experiments 3)") and done[2] == "claude (claude-sonnet-4-6)"
    assert done[5] == "2.4000" and done[6] == "-0.1000" and done[7] == "2.5200" and done[9] == "$0.01"
    hours, minutes = map(int, done[10].rstrip("m").split("h"))  # the last keep ended 90 minutes before NOW
    assert 90 <= 60 * hours + minutes <= 90 + (datetime.now(timezone.utc) - NOW).total_seconds() / 60
    assert "crash 1" in done[4] and "keep 2" in done[4]
    assert lines["model/live"][1] == "running" and lines["model/live"][3] == "#2 training 12/60s loss 5.123 4,321 tok/s"
    assert lines["model/dead"][1] == "dead"


def test_status_json_is_stable(state):
    rows = json.loads(cli("status", "--json", "--state-dir", str(state)).output)
    assert [r["tag"] for r in rows] == ["done", "live", "dead"]
    keys = {
        "id",
        "tag",
        "program",
        "state",
        "reason",
        "agent",
        "model",
        "sandbox",
        "dataset",
        "branch",
        "pid",
        "heartbeat_age_s",
        "runs",
        "in_flight",
        "best_val_bpb",
        "best_test_bpb",
        "best_run",
        "best_description",
        "baseline_val_bpb",
        "improvement",
        "noise_sigma",
        "cost_usd",
        "since_last_keep_s",
    }
    assert all(set(r) == keys for r in rows)
    assert rows[1]["in_flight"]["loss"] == 5.123 and rows[1]["in_flight"]["phase"] == "training"
    assert rows[0]["improvement"] == pytest.approx(0.1) and rows[0]["cost_usd"] == 0.0123


def test_status_with_tag_and_on_an_empty_or_missing_ledger(state, tmp_path):
    assert [
        r["tag"] for r in json.loads(cli("status", "--json", "--tag", "live", "--state-dir", str(state)).output)
    ] == ["live"]
    ledger.engine(tmp_path / "empty" / "experiments.db")
    assert "no campaigns yet" in cli("status", "--state-dir", str(tmp_path / "empty")).output
    missing = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no ledger at" in missing.output


def test_status_piped_through_the_real_cli_is_plain_text(state):
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status", "--state-dir", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and out.stdout.startswith("campaign\tstate") and "│" not in out.stdout


def test_runs_filters_and_json(state):
    out = cli("runs", "--tag", "done", "--state-dir", str(state)).output.splitlines()
    assert len(out) == 5 and out[2].split("\t")[:5] == ["model/done", "2", "experiment", "keep", "2.4000"]
    keeps = json.loads(cli("runs", "--status", "keep", "--json", "--state-dir", str(state)).output)
    assert {(r["tag"], r["seq"]) for r in keeps} == {("done", 1), ("done", 2), ("live", 1)}


def test_show_by_id_and_by_tag_and_seq(state):
    by_tag = cli("show", "done/2", "--state-dir", str(state)).output
    assert "model/done run #2" in by_tag and "MATRIX_LR 0.04 -> 0.05" in by_tag and "+MATRIX_LR = 0.05" in by_tag
    assert "improved beyond noise" in by_tag and "cache read 9000" in by_tag and "$0.0123" in by_tag
    crash = cli("show", "done/4", "--state-dir", str(state)).output
    assert "ValueError: boom" in crash
    first = json.loads(cli("runs", "--json", "--state-dir", str(state)).output)[0]["id"]
    assert "baseline 1/1" in cli("show", str(first), "--state-dir", str(state)).output


@pytest.mark.parametrize("ref", ["done/99", "nonsense", "12345"])
def test_show_bad_reference(state, ref):
    result = CliRunner().invoke(app, ["show", ref, "--state-dir", str(state)])
    assert result.exit_code == 2 and result.output.startswith("error: ")


def test_export_tsv(state, tmp_path):
    path = tmp_path / "results.tsv"
    assert "wrote 4 runs" in cli("export", "--tsv", str(path), "--tag", "done", "--state-dir", str(state)).output
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert rows[0] == ["commit", "val_bpb", "memory_gb", "avg_tok_sec", "status", "description"]
    assert rows[2] == ["bbbbbbb", "2.400000", "2.1", "5100", "keep", "MATRIX_LR 0.04 -> 0.05"]
    assert rows[4] == ["ddddddd", "0.000000", "0.0", "0", "crash", "bad idea"]
    assert all(len(r) == 6 for r in rows)


def test_plot_writes_a_png(state, tmp_path):
    out = tmp_path / "progress.png"
    assert "plotted" in cli("plot", "--tag", "done", "-o", str(out), "--state-dir", str(state)).output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    empty = CliRunner().invoke(app, ["plot", "--tag", "dead", "-o", str(out), "--state-dir", str(state)])
    assert empty.exit_code == 2 and "no runs to plot" in empty.output


def test_doctor_reports_every_check(data_dir):
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "doctor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )
    names = [line[6:].split()[0] for line in out.stdout.splitlines() if line.startswith("[")]
    assert names == ["platform", "mlx", "matmul", "git", "disk", "datasets", "sandbox", "api"]
    assert "ANTHROPIC_API_KEY is not set" in out.stdout and "stdlib" in out.stdout
    assert "GFLOP/s" in out.stdout


def test_service_install_systemd(tmp_path):
    from orchestrator import service

    path, how = service.install("model", "mar15", ["--budget", "300"], tmp_path, system="linux")
    text = path.read_text()
    assert path == tmp_path / ".config" / "systemd" / "user" / "arx-model-mar15.service"
    assert "--program model --tag mar15 --budget 300 --foreground" in text and "Restart=on-failure" in text
    assert "systemctl --user enable --now arx-model-mar15.service" in how


def test_service_install_launchd_plist_whole(tmp_path):
    """The whole plist, parsed as launchd parses it; values that need XML escaping survive."""
    import plistlib

    from orchestrator import service

    path, how = service.install("model", "mar15", ["--budget", "300", "--model", "a&b<c>"], tmp_path, system="darwin")
    assert path == tmp_path / "Library" / "LaunchAgents" / "com.arx.model-mar15.plist"
    assert how == f"launchctl load -w {path}"
    log = str(ROOT / "state" / "logs" / "model-mar15.log")
    assert plistlib.loads(path.read_bytes()) == {
        "Label": "com.arx.model-mar15",
        "WorkingDirectory": str(ROOT),
        "ProgramArguments": [
            *(sys.executable, "-m", "orchestrator.cli", "start", "--program", "model", "--tag", "mar15"),
            *("--budget", "300", "--model", "a&b<c>", "--foreground"),
        ],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    assert Path(log).parent.is_dir(), "launchd will not create the log's folder"


def test_service_install_rejects_bad_input():
    result = CliRunner().invoke(app, ["service", "install", "--program", "vision", "--tag", "x"])
    assert result.exit_code == 2 and "unknown program" in result.output


def test_status_watch_refreshes_until_interrupted(state):
    """Driven by what appears on the terminal, not by the clock: a change to the run in flight
    shows up in a later frame, and Ctrl-C ends the watch cleanly."""
    import pty
    import select
    import signal
    import time

    controller, terminal = pty.openpty()
    env = dict(os.environ, COLUMNS="200", LINES="50", TERM="xterm")
    command = [sys.executable, "-m", "orchestrator.cli", "status", "--watch", "--state-dir", str(state)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=terminal, stderr=subprocess.PIPE, text=True, env=env)
    os.close(terminal)
    shown = b""

    def wait_for(text: bytes, within: float) -> float:
        nonlocal shown
        started = time.monotonic()
        while text not in shown:
            assert proc.poll() is None, proc.stderr.read()
            left = started + within - time.monotonic()
            if left <= 0 or not select.select([controller], [], [], left)[0]:
                raise AssertionError(f"{text!r} did not appear within {within:.0f}s")
            shown += os.read(controller, 65536)
        return time.monotonic() - started

    try:
        startup = wait_for(b"5.123", HANG_S)  # the first frame: the live run's last progress line
        assert b"Ctrl-C to quit" in shown and b"model/live" in shown
        log = state / "runs" / "model-live" / "0002" / "train.log"
        log.write_text(log.read_text() + "step 20 | loss 4.321 | lr 0.0400 | tok/s 4,400 | 25.0/60s\n")
        wait_for(b"4.321", 2 * 2 + 10 * startup)  # a refresh (every 2 s) read the log again; margin scaled by load
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=HANG_S) == 0, proc.stderr.read()
    finally:
        proc.kill()
        os.close(controller)
