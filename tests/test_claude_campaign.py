"""Claude driving real campaigns: the daemon, the real trainer, the real SDK, a fake API server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import fake_anthropic as fa
from agents.claude import ClaudeAgent
from conftest import make_repo
from orchestrator import daemon
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.policy import Policy
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.ledger import ledger
from orchestrator.measure.executor import LocalExecutor

pytestmark = pytest.mark.slow
TRAIN = "trainer/train.py"
KEY = "sk-ant-campaign-test-key-0001"


def experiment(old: str, new: str) -> list[dict]:
    return [fa.edit(TRAIN, old, new), fa.submit(f"{old} -> {new}")]


def query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_cli_campaign_of_three_scripted_experiments(tmp_path, data_dir):
    repo = make_repo(tmp_path / "repo")
    server = fa.FakeAnthropic(
        experiment("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
        + experiment("SCALAR_LR = 0.5", "SCALAR_LR = 0.4")
        + experiment("WARMDOWN_FRAC = 0.5", "WARMDOWN_FRAC = 0.6")
    )
    env = dict(os.environ, ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "start",
                "--program",
                "model",
                "--tag",
                "claude3",
                "--budget",
                "2",
                "--max-experiments",
                "3",
                "--baseline-runs",
                "1",
                "--max-pairs",
                "1",  # this test is about the API; re-runs are tests/test_decisions.py's
                "--foreground",
            ],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.close()
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]  # what --thinking-tokens 0 means on the default model, and its prices
    assert first.startswith("claude: claude-sonnet-5-5, thinking between_tools") and "$0.10" in first, first
    db = repo / "state" / "experiments.db"
    runs = query(db, "SELECT seq, status, description, val_bpb FROM run WHERE kind = 'experiment' ORDER BY seq")
    assert [r[2] for r in runs] == [
        "MATRIX_LR = 0.04 -> MATRIX_LR = 0.05",
        "SCALAR_LR = 0.5 -> SCALAR_LR = 0.4",
        "WARMDOWN_FRAC = 0.5 -> WARMDOWN_FRAC = 0.6",
    ]
    assert all(r[1] in ("keep", "discard") and r[3] for r in runs)
    calls = query(
        db, "SELECT run_id, model, input_tokens, cache_read_tokens, cache_write_tokens, cost_usd, status FROM llm_call"
    )
    assert len(calls) == 6 and all(c[6] == "ok" and c[5] > 0 and c[0] for c in calls)
    assert query(db, "SELECT agent, llm_model FROM campaign")[0] == ("claude", "claude-sonnet-5-5")
    assert server.rejected == [] and (repo / "state" / "models.json").exists()
    assert sum(c[3] for c in calls[1:]) > 0  # later calls read the cached prefix
    assert [c[0] for c in query(db, "SELECT stop_reason FROM llm_call")] == ["tool_use"] * 6
    kept = query(db, "SELECT seq, conversation FROM run WHERE kind = 'experiment' ORDER BY seq")
    for seq, path in kept:
        raw = Path(path).read_text()
        assert KEY not in raw and str(repo / "state" / "runs") not in path
        attempt = json.loads(raw)["attempts"][-1]
        assert attempt["outcome"].startswith("submitted") and [c["stop_reason"] for c in attempt["calls"]] == [
            "tool_use",
            "tool_use",
        ]
    shown = CliRunner().invoke(app, ["show", f"claude3/{kept[0][0]}", "--state-dir", str(repo / "state")]).output
    assert "-> str_replace_based_edit_tool" in shown and "-> submit_experiment" in shown


@pytest.fixture(scope="module")
def phases(tmp_path_factory, data_dir):
    """One campaign through API trouble: overload, no edits, a bad key, resume, a cost ceiling."""
    repo = make_repo(tmp_path_factory.mktemp("claude") / "repo")
    server = fa.FakeAnthropic()
    old_env = {k: os.environ.get(k) for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
    os.environ.update(ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)
    out = {"repo": repo, "db": repo / "state" / "experiments.db"}
    try:
        settings = Settings(
            state_dir=repo / "state",
            program="model",
            tag="trouble",
            budget_s=2,
            policy=Policy(baseline_runs=1, max_pairs=1),
            repo=repo,
            backoff_s=0.2,
        )
        row = daemon.open_campaign(settings, "claude", "claude-sonnet-5-5", None)
        server.script = (
            experiment("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
            + [fa.error(529, "overloaded_error"), fa.error(503)]
            + experiment("SCALAR_LR = 0.5", "SCALAR_LR = 0.4")
            + [fa.submit("did nothing"), fa.submit("did nothing again")]
            + [fa.error(401, "authentication_error", "invalid x-api-key")]
        )
        out["paused"] = CampaignLoop(settings, row, ClaudeAgent(), LocalExecutor()).run()
        out["after_pause"] = ledger.find_campaign(out["db"], "model", "trouble")

        server.script = experiment("WARMDOWN_FRAC = 0.5", "WARMDOWN_FRAC = 0.6")
        settings.max_experiments = 4  # 3 so far: the proposal the bad key cut off was never committed, so not counted
        out["resumed"] = CampaignLoop(settings, out["after_pause"], ClaudeAgent(), LocalExecutor()).run()

        settings.max_experiments = None
        settings.max_cost_usd = ledger.campaign_cost(out["db"], row.id) + 0.01
        out["capped"] = CampaignLoop(
            settings, ledger.find_campaign(out["db"], "model", "trouble"), ClaudeAgent(), LocalExecutor()
        ).run()
        out["requests"] = len(server.requests)
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.close()
    out["runs"] = query(out["db"], "SELECT seq, kind, status, description, decision_reason FROM run ORDER BY seq")
    return out


def test_overload_backs_off_and_the_loop_goes_on(phases):
    """The two scripted failures back off in order. With the SDK's retries off, a loopback connection that a
    loaded machine drops is one more backoff of its own (seen once in CI): it is not one of these."""
    events = query(phases["db"], "SELECT kind, message FROM event WHERE kind = 'backoff' AND message LIKE '%HTTP%'")
    assert len(events) == 2 and "529" in events[0][1] and "503" in events[1][1]
    assert any(r[3] == "SCALAR_LR = 0.5 -> SCALAR_LR = 0.4" and r[2] in ("keep", "discard") for r in phases["runs"])
    errors = query(phases["db"], "SELECT status, error FROM llm_call WHERE status = 'error'")
    assert any("529" in e[1] for e in errors) and any("503" in e[1] for e in errors)


def test_no_edits_is_asked_again_then_recorded_and_skipped(phases):
    rejected = [r for r in phases["runs"] if r[2] == "rejected"]
    assert len(rejected) == 1 and "no edits" in rejected[0][4]


def test_bad_key_pauses_with_a_reason(phases):
    assert "ANTHROPIC_API_KEY" in phases["paused"]
    assert phases["after_pause"].status == "paused" and "401" in phases["after_pause"].stop_reason


def test_restart_with_a_working_key_resumes(phases):
    assert phases["resumed"] == "reached --max-experiments 4"
    assert any(
        r[3] == "WARMDOWN_FRAC = 0.5 -> WARMDOWN_FRAC = 0.6" and r[2] in ("keep", "discard") for r in phases["runs"]
    )
    seqs = [r[0] for r in phases["runs"]]
    assert seqs == list(range(1, len(seqs) + 1))


def test_cost_ceiling_ends_the_campaign_cleanly(phases):
    assert "--max-cost-usd" in phases["capped"]
    status = query(phases["db"], "SELECT status, stop_reason FROM campaign")[0]
    assert status[0] == "stopped" and "--max-cost-usd" in status[1]
    assert phases["runs"][-1][2] == "interrupted"
