"""status, runs, show, export, plot, stop, start's early refusals, service: their output on a ledger built by hand.

Every figure is checked against `handmade.EXPECTED`, worked out by hand from the runs written there.
Terminal output is checked at 80 columns (COLUMNS=80, rendered as for a terminal): no line is longer.
Speed claims ("answers at once") are checked by what happened, not by a clock: which modules were
imported (`python -X importtime`) and whether any wait loop ran.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import handmade
from conftest import HANG_S, PROJECT_FILES
from handmade import EXPECTED, NOW
from orchestrator.cli import app
from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import LlmCall, Run
from orchestrator.measure import slots
from orchestrator.programs import ROOT, StatePaths

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TERMINAL = {"COLUMNS": "80", "LINES": "50", "TTY_COMPATIBLE": "1", "NO_COLOR": "1", "TERM": "xterm"}
HEAVY = ("sqlmodel", "orchestrator.daemon", "orchestrator.campaign.campaign", "git")  # a quick answer loads none


def cli(*args: str, terminal: bool = False) -> "click.testing.Result":  # noqa: F821
    """The real command in this process (output captured, as when piped; `terminal`: as on an 80-column one)."""
    return CliRunner().invoke(app, list(args), env=TERMINAL if terminal else {"COLUMNS": "80"}, catch_exceptions=False)


def arx(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command in its own process, with `-X importtime` so a test can see what it loaded."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}, "COLUMNS": "80", **(env or {})},
        timeout=HANG_S,
    )


def imported(result: subprocess.CompletedProcess) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def said(result: subprocess.CompletedProcess) -> str:
    """stderr without the import-time lines."""
    return "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))


def fits(text: str, width: int = 80) -> list[str]:
    """The lines of `text` (escape codes removed) longer than `width`."""
    return [line for line in ANSI.sub("", text).splitlines() if len(line) > width]


@pytest.fixture
def state(tmp_path) -> Path:
    """`truth` (handmade), a running campaign (its lock held here, a run training), a dead one, a noisy one."""
    state = tmp_path / "state"
    db = state / "experiments.db"
    runs = handmade.build(state)
    ledger.save(
        db,
        LlmCall(
            campaign_id=runs[4].campaign_id,
            run_id=runs[4].id,
            model="claude-sonnet-4-6",
            input_tokens=1000,
            output_tokens=200,
            cache_read_tokens=9000,
            cost_usd=0.0123,
            latency_s=3.2,
        ),
    )
    runs[4].diff = "diff --git a/trainer/train.py b/trainer/train.py\n-MATRIX_LR = 0.04\n+MATRIX_LR = 0.05\n"
    runs[4].hypothesis = "a larger learning rate converges faster in a short budget " * 3
    runs[4].train_wall_s, runs[4].eval_seconds, runs[4].total_seconds = 260.297065, 7.31, 301.5
    ledger.save(db, runs[4])

    live = handmade.campaign(db, "live", status="running")
    run_dir = state / "runs" / "model-live" / "0002"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text("model: ...\nstep 10 | loss 5.123 | lr 0.0400 | tok/s 4,321 | 12.5/60s\n")
    ledger.save(
        db,
        Run(
            campaign_id=live.id,
            seq=1,
            kind="baseline",
            status="measured",
            val_bpb=3.0,
            commit=handmade.BASE,
            seed=1,
            fingerprint_hash=handmade.FP,
            description="baseline 1/1",
        ),
        Run(
            campaign_id=live.id,
            seq=2,
            kind="experiment",
            status="training",
            description="SCALAR_LR 0.5 -> 0.4",
            run_dir=str(run_dir),
        ),
        Run(campaign_id=live.id, seq=3, kind="experiment", status="proposed", description="(proposing)"),
    )
    handmade.campaign(db, "dead", status="running", pid=999999)
    noisy = handmade.campaign(db, "noisy", noise_sigma=0.5, noise_dof=4)
    base = Run(
        campaign_id=noisy.id,
        seq=1,
        kind="baseline",
        status="measured",
        val_bpb=3.1,
        commit=handmade.BASE,
        seed=1,
        fingerprint_hash=handmade.FP,
        description="baseline 1/1",
    )
    ledger.save(db, base)
    noisy.best_run_id = base.id
    ledger.save(db, noisy)
    lock = slots.try_lock(StatePaths(state, "model", "live").lock)
    yield state
    lock.close()


# ---------------------------------------------------------------------------------------------
# The numbers (issue 16, item 6)
# ---------------------------------------------------------------------------------------------
def test_status_json_holds_the_champion_and_its_gain(state):
    rows = {r["tag"]: r for r in json.loads(cli("status", "--json", "--state-dir", str(state)).output)}
    assert list(rows) == ["truth", "live", "dead", "noisy"]
    t = rows["truth"]
    assert t["best_val_bpb"] == pytest.approx(EXPECTED["best"]) and t["best_seeds"] == EXPECTED["best_seeds"]
    assert t["best_test_bpb"] == pytest.approx(EXPECTED["best_test"])
    assert t["baseline_val_bpb"] == pytest.approx(EXPECTED["baseline"])
    assert t["improvement"] == pytest.approx(EXPECTED["gain"])  # the paired gain of the keep, not best - baseline
    assert t["best_when_kept"] == pytest.approx(EXPECTED["when_kept"])
    assert t["drift"] == pytest.approx(EXPECTED["best"] - EXPECTED["when_kept"])  # the re-measure #8 moved it
    assert t["kept"] == EXPECTED["kept"] and t["runs"]["keep"] == 1  # baselines and re-measures are not keeps
    assert [tuple(s) for s in t["steps"]] == [pytest.approx(s) for s in EXPECTED["steps"]]
    assert t["in_flight"] == [] and [w["seq"] for w in t["waiting"]] == [9]  # stopped: nothing in flight
    assert t["last_keep_at"].endswith("+00:00")
    live = rows["live"]
    assert [(f["seq"], f["phase"], f["loss"]) for f in live["in_flight"]] == [(2, "training", 5.123)]
    assert [p["seq"] for p in live["proposing"]] == [3]  # proposing is not in flight
    assert rows["dead"]["state"] == "dead"


def test_vs_baseline_moves_only_at_a_keep_and_drift_shows_the_remeasures(state):
    db = state / "experiments.db"
    before = json.loads(cli("status", "--json", "--tag", "truth", "--state-dir", str(state)).output)[0]
    c = ledger.find_campaign(db, "model", "truth")
    ledger.save(
        db,
        Run(
            campaign_id=c.id,
            seq=13,
            kind="remeasure",
            status="measured",
            commit=handmade.C1,
            seed=5,
            val_bpb=2.62,
            test_bpb=2.7,
            fingerprint_hash=handmade.FP,
            description="re-measure",
        ),
    )
    after = json.loads(cli("status", "--json", "--tag", "truth", "--state-dir", str(state)).output)[0]
    assert after["improvement"] == before["improvement"] and after["steps"] == before["steps"]
    assert after["best_val_bpb"] == pytest.approx((2.47 + 2.50 + 2.55 + 2.62) / 4)
    assert after["drift"] == pytest.approx(after["best_val_bpb"] - EXPECTED["when_kept"])


def test_no_keep_means_no_gain_whatever_the_remeasures(tmp_path):
    """The issue's case: +0.1349 "vs baseline" with zero keeps, from re-measuring the champion."""
    state = tmp_path / "state"
    db = state / "experiments.db"
    c = handmade.campaign(db, "zero", noise_sigma=0.04, noise_dof=2)
    rows = [
        Run(
            campaign_id=c.id,
            seq=i,
            kind=kind,
            status="measured",
            commit=handmade.BASE,
            seed=i,
            val_bpb=v,
            fingerprint_hash=handmade.FP,
            description=kind,
        )
        for i, (kind, v) in enumerate([("baseline", 2.5), ("baseline", 2.6), ("remeasure", 2.2), ("remeasure", 2.3)], 1)
    ]
    ledger.save(db, *rows)
    c.best_run_id = rows[0].id
    ledger.save(db, c)
    z = json.loads(cli("status", "--json", "--state-dir", str(state)).output)[0]
    assert z["improvement"] == 0 and z["kept"] == 0 and z["steps"] == [[1, pytest.approx(2.55)]]
    assert z["best_val_bpb"] == pytest.approx(2.4) and z["drift"] == pytest.approx(2.4 - 2.55)
    line = next(x for x in cli("status", "--tsv", "--state-dir", str(state)).output.splitlines() if "zero" in x)
    assert line.split("\t")[2:4] == ["2.4000", "0.0000"]


def test_status_table_piped_is_tsv_with_the_same_figures(state):
    result = cli("status", "--state-dir", str(state))
    out = result.stdout.splitlines()
    assert "model/noisy: the seed noise" in result.stderr, "the warning goes to a person, not into the rows"
    header, rows = out[0].split("\t"), {line.split("\t")[0]: line.split("\t") for line in out[1:] if "\t" in line}
    t = dict(zip(header, rows["model/truth"]))
    assert (t["best"], t["vs base"], t["drift"], t["kept/runs"]) == ("2.5067", "-0.0350", "+0.0217", "1/12")
    assert t["now"] == "#9 waiting for a verdict" and t["cost"] == "$0.01"
    assert t["state"] == "stopped" and t["last keep"].endswith(" ago")
    live = dict(zip(header, rows["model/live"]))
    assert live["now"] == "#2 training 12/60s loss 5.123 4,321 tok/s; #3 proposing"


def test_runs_says_what_each_run_is_and_what_a_verdict_judged(state):
    rows = {r["seq"]: r for r in json.loads(cli("runs", "--tag", "truth", "--json", "--state-dir", str(state)).output)}
    assert rows[4]["judged_val_bpb"] == pytest.approx(EXPECTED["when_kept"]) and rows[4]["pairs"] == 2
    assert rows[6]["judged_val_bpb"] == pytest.approx(EXPECTED["discard_judged"]) and rows[6]["contended"]
    assert rows[9]["status"] == "waiting" and "waiting for its verdict" in rows[9]["note"]
    assert "not a kept experiment" in rows[8]["note"] and rows[5]["note"] == "a paired re-run of #4"
    assert rows[4]["ended_at"].endswith("+00:00")
    tsv = cli("runs", "--tag", "truth", "--state-dir", str(state)).output.splitlines()
    assert tsv[0].split("\t") == [
        "#",
        "kind",
        "status",
        "val_bpb",
        "judged",
        "test_bpb",
        "tok/s",
        "description",
        "decision",
    ]
    assert tsv[4].split("\t")[:6] == ["4", "experiment", "keep", "2.4700", "2.4850/2", "2.5700"]
    assert tsv[6].split("\t")[-1].startswith("[set aside] not better")
    assert len(tsv) == 1 + 12


def test_show_names_exactly_the_runs_a_decision_was_judged_on(state):
    out = cli("show", "truth/4", "--state-dir", str(state)).output
    assert "judged on 2 pairs: this candidate's mean 2.4850, mean paired gain +0.0350" in out
    pairs = [line.split() for line in out.splitlines() if re.match(r"\s+\d\s+#\d", line)]
    assert pairs == [["1", "#1", "2.5000", "#4", "2.4700", "+0.0300"], ["2", "#2", "2.5400", "#5", "2.5000", "+0.0400"]]
    discarded = cli("show", "truth/6", "--state-dir", str(state)).output
    assert "#4" in discarded and "#7" in discarded and "set aside (never used): #6" in discarded
    rerun = cli("show", "truth/5", "--state-dir", str(state)).output
    assert "measured for the verdict on #4 (keep)" in rerun


def test_show_rounds_times_and_gives_timestamps_their_zone(state):
    out = cli("show", "truth/4", "--state-dir", str(state)).output
    assert "training 4m20s by the daemon's clock, scoring 7.3s" in out and "260.29" not in out
    stamps = re.findall(r"(?:started|ended) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)", out)
    assert len(stamps) == 2 and all(zone for _, zone in stamps)
    zoned = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "show", "truth/4", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TZ="Asia/Kolkata"),
        cwd=ROOT,
    ).stdout
    started = (NOW - timedelta(minutes=56)).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
    assert f"started {started:%Y-%m-%d %H:%M:%S} IST" in zoned


def test_export_is_one_row_per_judged_candidate_with_the_value_it_was_judged_on(state, tmp_path):
    path = tmp_path / "results.tsv"
    result = cli("export", str(path), "--tag", "truth", "--state-dir", str(state))
    assert result.output.strip() == f"wrote 4 rows to {path}: the baseline and 3 judged candidates"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert rows[0] == ["commit", "val_bpb", "memory_gb", "status", "description"]  # autoresearch's five columns
    assert rows[1:] == EXPECTED["export"]
    wide = [
        line.split("\t")
        for line in cli("export", "--tag", "truth", "--arx-columns", "--state-dir", str(state)).output.splitlines()
    ]
    assert wide[0][5:] == ["tag", "seq", "kind", "pairs", "mean_gain", "test_bpb", "tok_sec", "ended_at"]
    assert wide[2][5:10] == ["truth", "4", "experiment", "2", "0.035000"]
    as_json = json.loads(cli("export", "--tag", "truth", "--json", "--state-dir", str(state)).output)
    assert [r["val_bpb"] for r in as_json] == pytest.approx([2.5, 2.485, 2.48, 0.0])


def test_plot_draws_by_run_number_and_keeps_its_legend_off_the_points(state, tmp_path):
    from orchestrator import report

    con = report.connect(state / "experiments.db")
    found = report.campaign_runs(con, report.campaigns(con, "truth")[0]["id"])
    con.close()
    fig = report.figure([(report.Row(program="model", tag="truth"), found)])
    ax = fig.axes[0]
    by_label = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert [tuple(p) for p in by_label["kept experiment"]] == [(4, 2.47)]  # x is the run number
    assert sorted(x for x, _ in by_label["champion measured (baseline, re-measure)"]) == [1, 2, 3, 8]
    assert [x for x, _ in by_label["set aside (unfair conditions)"]] == [6]
    step = next(line for line in ax.get_lines() if line.get_label().startswith("running best"))
    assert list(step.get_xdata()) == [1, 4, 12] and list(step.get_ydata()) == pytest.approx([2.5, 2.465, 2.465])
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 <= axes.y0, "the legend sits below the axes: it can hide no point"
    out = tmp_path / "progress.png"
    assert "plotted" in cli("plot", "--tag", "truth", "-o", str(out), "--state-dir", str(state)).output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# Bad input: one line, what exists, exit 2 (issue 19)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["status", "--tag", "nope"],
        ["runs", "--tag", "nope"],
        ["export", "--tag", "nope"],
        ["plot", "--tag", "nope"],
        ["stop", "--tag", "nope"],
        ["show", "nope/3"],
    ],
)
def test_an_unknown_tag_lists_the_campaigns(state, args):
    result = CliRunner().invoke(app, [*args, "--state-dir", str(state)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no campaign" in result.output and "model/truth, model/live, model/dead, model/noisy" in result.output


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("truth/99", "model/truth has runs 1 to 12"),
        ("9999", "ids here go from 1 to"),
        ("nonsense", "bad run reference"),
    ],
)
def test_an_unknown_run_says_which_exist(state, ref, says):
    result = CliRunner().invoke(app, ["show", ref, "--state-dir", str(state)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and says in result.output


def test_export_of_nothing_is_an_error(state, tmp_path):
    path = tmp_path / "results.tsv"
    result = CliRunner().invoke(app, ["export", str(path), "--tag", "dead", "--state-dir", str(state)])
    assert result.exit_code == 2 and "nothing to export: model/dead has no baseline" in result.output
    assert not path.exists()
    several = CliRunner().invoke(app, ["export", "--state-dir", str(state)])
    assert several.exit_code == 2 and "4 campaigns match" in several.output and "--tag" in several.output


def test_an_unknown_status_lists_the_statuses(state):
    result = CliRunner().invoke(app, ["runs", "--status", "kept", "--state-dir", str(state)])
    assert result.exit_code == 2 and "no status 'kept'" in result.output and "keep" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--bogus"],
        ["start", "--tag", "x"],
        ["start", "--program", "model", "--tag", "x", "--executor", "cloud"],
        ["runs", "--tag"],
        ["frobnicate"],
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    where = "arx-daemon" if args[0] not in app.commands else f"arx-daemon {args[0]}"
    assert result.output.startswith("error: ") and result.output.strip().endswith(f"(see {where} --help)")


def test_a_group_named_alone_prints_its_help():
    for args in ([], ["service"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and result.output.startswith("Usage: ") and "error" not in result.output


# ---------------------------------------------------------------------------------------------
# A damaged ledger is named as such, with the way back; never a traceback
# ---------------------------------------------------------------------------------------------
def damage(db: Path) -> None:
    """Overwrite two pages past the header: they no longer parse (the header still does)."""
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file, none left in the WAL
    con.close()
    data = bytearray(db.read_bytes())
    data[4096 : 4096 * 3] = b"\xde\xad\xbe\xef" * (4096 * 2 // 4)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["runs"],
        ["show", "truth/4"],
        ["export", "--tag", "truth"],
        ["plot", "-o", "PNG"],
        ["stop"],
        ["start", "--program", "model", "--tag", "truth", "--foreground"],
    ],
)
@pytest.mark.parametrize("how", ["garbage", "pages"])
def test_a_damaged_ledger_is_one_line_naming_it_and_the_way_back(state, tmp_path, args, how):
    db = state / "experiments.db"
    if how == "garbage":
        db.write_bytes(b"this is not a database at all" * 200)
    else:
        damage(db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    result = arx(*(str(tmp_path / "p.png") if a == "PNG" else a for a in args), "--state-dir", str(state))
    message = said(result)
    assert result.returncode == 2 and "Traceback" not in message + result.stdout, message
    assert len(message.splitlines()) == 1 and message.startswith(f"error: the ledger {db} is damaged")
    assert ("sqlite3 " in message and ".dump" in message) if how == "pages" else "nothing SQLite can read" in message


# ---------------------------------------------------------------------------------------------
# 80 columns, plain text when piped
# ---------------------------------------------------------------------------------------------
def test_every_command_fits_80_columns(state, tmp_path):
    invocations = [
        ["status"],
        ["status", "--tag", "live"],
        ["runs"],
        ["runs", "--tag", "truth"],
        *(["show", f"truth/{seq}"] for seq in range(1, 13)),
        ["export", "--tag", "truth", str(tmp_path / "r.tsv")],  # (to stdout it is the file's format, not a view)
        ["export", "--tag", "truth", "--arx-columns", str(tmp_path / "r.tsv")],
        ["plot", "--tag", "truth", "-o", str(tmp_path / "p.png")],
        ["stop", "--tag", "truth"],
    ]
    for args in invocations:
        result = cli(*args, "--state-dir", str(state), terminal=True)
        assert result.exit_code == 0, (args, result.output)
        assert not fits(result.output), (args, fits(result.output))
    for command in [[], *([c] for c in app.commands), ["service", "install"]]:
        result = cli(*command, "--help", terminal=True)
        assert result.exit_code == 0 and not fits(result.output), (command, fits(result.output))


def test_status_and_runs_piped_through_the_real_cli_are_plain_tsv(state):
    for command in ("status", "runs"):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", command, "--state-dir", str(state)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=dict(os.environ, COLUMNS="80"),
        )
        lines = out.stdout.splitlines()
        assert out.returncode == 0 and "│" not in out.stdout and "─" not in out.stdout
        assert len({len(line.split("\t")) for line in lines}) == 1, "every row has every column, whole"
    noisy = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status", "--state-dir", str(state)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "model/noisy: the seed noise" in noisy.stderr, "the warning goes to a person, not into the rows"


def test_the_noise_warning_is_one_sentence_with_the_fix(state):
    rows = {r["tag"]: r for r in json.loads(cli("status", "--json", "--state-dir", str(state)).output)}
    warning = rows["noisy"]["warning"]
    assert warning.count(". ") == 0 and warning.endswith(".")
    assert "--budget" in warning and "load" in warning and "--max-pairs" in warning
    assert rows["truth"]["warning"] is None and rows["live"]["warning"] is None
    table = cli("status", "--state-dir", str(state), terminal=True).output
    assert "model/noisy: the seed noise" in table and not fits(table)


def test_status_watch_refreshes_until_interrupted(state):
    """Driven by what appears on the terminal, not by the clock: a change to the run in flight
    shows up in a later frame, and Ctrl-C ends the watch cleanly."""
    import pty
    import select
    import signal
    import time

    controller, terminal = pty.openpty()
    env = dict(os.environ, COLUMNS="80", LINES="50", TERM="xterm")
    command = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "status",
        "--watch",
        "--tag",
        "live",
        "--state-dir",
        str(state),
    ]
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
        assert not fits(shown.decode(errors="replace").replace("\r", "\n"))
        log = state / "runs" / "model-live" / "0002" / "train.log"
        log.write_text(log.read_text() + "step 20 | loss 4.321 | lr 0.0400 | tok/s 4,400 | 25.0/60s\n")
        wait_for(b"4.321", 2 * 2 + 10 * startup)  # a refresh (every 2 s) read the log again; margin scaled by load
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=HANG_S) == 0, proc.stderr.read()
    finally:
        proc.kill()
        os.close(controller)


# ---------------------------------------------------------------------------------------------
# Answers at once: start refusing a running campaign, stop with nothing to stop
# ---------------------------------------------------------------------------------------------
def test_start_refuses_a_running_campaign_before_loading_the_daemon(state):
    result = arx("start", "--program", "model", "--tag", "live", "--state-dir", str(state))
    assert result.returncode == 2 and said(result).startswith("error: campaign model-live is already running (pid ")
    assert "arx-daemon stop --program model --tag live" in said(result)
    assert not imported(result) & set(HEAVY), "refused before loading the daemon, git or sqlmodel"


def test_stop_of_nothing_answers_without_waiting(state, tmp_path):
    result = arx("stop", "--tag", "truth", "--state-dir", str(state))
    assert result.returncode == 0 and result.stdout.strip() == "nothing to stop: no campaign of those is running"
    assert not imported(result) & set(HEAVY), "no daemon to signal: nothing loaded, nothing waited for"
    empty = arx("stop", "--state-dir", str(tmp_path / "none"))
    assert empty.returncode == 0 and "nothing to stop: no ledger at" in empty.stdout
    assert not (tmp_path / "none").exists(), "asking creates nothing"


def test_start_outside_a_git_repository_fails_before_creating_state(tmp_path):
    """arx unpacked from an archive: not a repository. start says so with the fix, and creates nothing."""
    copy = tmp_path / "arx"
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, copy / name)
    env = {"ARX_STATE_DIR": ""}
    result = arx("start", "--program", "model", "--tag", "x", "--foreground", cwd=copy, env=env)
    message = said(result)
    assert result.returncode == 2 and len(message.splitlines()) == 1, message
    assert f"{copy} is not a git repository" in message and f"git -C {copy} init" in message
    assert not (copy / "state").exists()
    fix = message.split("make this folder its own repository: ", 1)[1]
    git_id = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    subprocess.run(fix, shell=True, check=True, env=dict(os.environ, **git_id))
    again = arx("start", "--program", "model", "--tag", "x", "--dataset", "nope", "--foreground", cwd=copy, env=env)
    assert "not a git repository" not in said(again) and "unknown dataset 'nope'" in said(again)


def test_start_says_when_the_noise_is_larger_than_any_plausible_gain(state):
    result = arx(
        "start", "--program", "model", "--tag", "noisy", "--dataset", "nope", "--foreground", "--state-dir", str(state)
    )
    assert result.stdout.startswith("model/noisy: the seed noise (sigma 0.5000) needs a gain of ")
    assert "unknown dataset 'nope'" in said(result) and result.returncode == 2


# ---------------------------------------------------------------------------------------------
# service
# ---------------------------------------------------------------------------------------------
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


def test_status_of_an_empty_or_missing_ledger(tmp_path):
    ledger.engine(tmp_path / "empty" / "experiments.db")
    assert "no campaigns yet" in cli("status", "--state-dir", str(tmp_path / "empty")).output
    missing = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no ledger at" in missing.output


def test_plausible_is_five_percent_of_the_champion_or_the_largest_gain_kept_in_campaigns_like_it():
    from orchestrator import figures
    from orchestrator.campaign.policy import Noise, Policy, keep_band

    policy, noise = Policy(), Noise(0.09, 2)
    band = keep_band(policy, noise, policy.max_pairs)
    assert 0.15 < band < 0.2  # above 5% of 3.0, below a gain of 0.2 kept before
    assert figures.plausible_gain(3.0, []) == (pytest.approx(0.15), "5% of the champion's 3.0000")
    assert figures.plausible_gain(3.0, [0.2, 0.01])[0] == 0.2
    warned = figures.noise_warning("model/x", policy, noise, 3.0)
    assert warned and f"needs a gain of {band:.4f} bpb even after 8 pairs" in warned
    assert figures.noise_warning("model/x", policy, noise, 3.0, lambda: [0.2]) is None, "such a gain was kept before"
    assert figures.noise_warning("model/x", Policy(max_pairs=40), noise, 3.0) is None, "more pairs narrow it"
    assert figures.noise_warning("model/x", policy, Noise(0.09, 0), 3.0) is None, "no seed noise measured yet"
