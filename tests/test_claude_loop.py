"""The campaign loop around the Claude agent, without training: no tight loops, pauses that say why,
the API's retry-after, the expected gap between proposals, the conversation in the ledger and in
`arx-daemon show`, the CLI's thinking flags, and the ledger migration that holds the new columns."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import fake_anthropic as fa
from agents.base import Abandoned, Refused, TransientAgentError
from agents.claude import ClaudeAgent
from conftest import make_repo
from orchestrator import daemon, fingerprint
from orchestrator.campaign import campaign as campaign_module
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.facts import GAP_OVERHEAD_S, expected_gap_s
from orchestrator.campaign.policy import Policy
from orchestrator.campaign.proposing import BACKOFF_MAX_S
from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import Run
from orchestrator.measure.executor import LocalExecutor

KEY = "sk-ant-loop-test-9876543210"


class FailingAgent:
    """Fails every proposal the way it is told: refused, abandoned, or a rate limit first."""

    name = "scripted"
    model = None

    def __init__(self, failures: list[Exception]):
        self.failures = failures
        self.asked = 0

    def propose(self, ctx):
        self.asked += 1
        raise self.failures.pop(0) if len(self.failures) > 1 else self.failures[0]


@pytest.fixture
def loop_parts(tmp_path):
    """A campaign whose baseline is already in the ledger, so the loop goes straight to proposals."""
    repo = make_repo(tmp_path / "repo")
    settings = Settings(
        state_dir=repo / "state", program="model", tag="loop", budget_s=300, policy=Policy(baseline_runs=1), repo=repo
    )
    row = daemon.open_campaign(settings, "scripted", None, None)
    fp = fingerprint.current()
    baseline = Run(
        campaign_id=row.id,
        seq=1,
        kind="baseline",
        status="keep",
        val_bpb=2.5,
        commit=row.base_commit,
        total_seconds=372.0,
        description="baseline 1/1",
        seed=1,
        fingerprint=json.dumps(fp, sort_keys=True),
        fingerprint_hash=fingerprint.digest(fp),  # measured on this machine: no re-baselining
    )
    ledger.save(settings.state_dir / "experiments.db", baseline)
    row.best_run_id = baseline.id
    ledger.save(settings.state_dir / "experiments.db", row)
    return settings, row


def run_loop(settings, row, agent) -> tuple[str, list[float], CampaignLoop]:
    """Run the loop; waits asked for on the main thread are recorded and return at once (nothing sleeps)."""
    loop = CampaignLoop(settings, row, agent, LocalExecutor())
    waits: list[float] = []
    real_wait = loop.stop_requested.wait

    def wait(timeout=None):
        if threading.current_thread() is threading.main_thread():
            waits.append(timeout)
            return loop.stop_requested.is_set()
        return real_wait(timeout)

    loop.stop_requested.wait = wait
    return loop.run(), waits, loop


def query(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_refused_proposals_back_off_exponentially_then_pause(loop_parts):
    settings, row = loop_parts
    agent = FailingAgent([Refused("claude-sonnet-4-6 refused (cyber): could enable harm", "cyber")])
    reason, waits, _ = run_loop(settings, row, agent)
    n = campaign_module.MAX_FAILED_PROPOSALS
    assert agent.asked == n and "proposals in a row yielded no experiment" in reason and "refused" in reason
    start = settings.backoff_s
    assert waits == [start * 2**i for i in range(n - 1)]
    db = settings.state_dir / "experiments.db"
    assert query(db, "SELECT status, stop_reason FROM campaign")[0][0] == "paused"
    runs = query(db, "SELECT status, decision_reason FROM run WHERE kind = 'experiment'")
    assert len(runs) == n and all(s == "refused" and "could enable harm" in r for s, r in runs)
    assert len(query(db, "SELECT * FROM event WHERE kind = 'cooldown'")) == n - 1


def test_abandoned_proposals_pause_too_and_a_success_would_reset_the_count(loop_parts):
    settings, row = loop_parts
    reason, _, loop = run_loop(settings, row, FailingAgent([Abandoned("no submit_experiment within 12 tool rounds")]))
    assert "abandoned: no submit_experiment" in reason and loop.failed_proposals == campaign_module.MAX_FAILED_PROPOSALS


def test_retry_after_is_a_floor_on_the_backoff_and_capped(loop_parts):
    settings, row = loop_parts
    slow = TransientAgentError("Anthropic API HTTP 429: slow down", retry_after_s=120.0)
    agent = FailingAgent([slow, TransientAgentError("HTTP 529", retry_after_s=86_400.0), Refused("no")])
    _, waits, _ = run_loop(settings, row, agent)
    assert waits[0] == 120.0  # not the 5 s the backoff would start with
    assert waits[1] == BACKOFF_MAX_S  # a day's retry-after is not a night lost: stop can interrupt it, and it is capped


def test_an_invalid_request_pauses_the_campaign_after_one_call(loop_parts, monkeypatch):
    settings, row = loop_parts
    server = fa.FakeAnthropic(
        [fa.error(400, "invalid_request_error", "thinking.type.enabled is not supported for model claude-opus-4-7.")]
        * 3
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    try:
        reason, _, _ = run_loop(settings, row, ClaudeAgent())
    finally:
        server.close()
    assert len(server.requests) == 1 and "thinking.type.enabled is not supported" in reason  # the SDK never retries
    db = settings.state_dir / "experiments.db"
    status, stop = query(db, "SELECT status, stop_reason FROM campaign")[0]
    assert status == "paused" and "HTTP 400" in stop
    (path,) = query(db, "SELECT conversation FROM run WHERE kind = 'experiment'")[0]
    assert path.startswith(str(settings.state_dir / "conversations" / "model-loop")) and "runs" not in path
    raw = Path(path).read_text()
    assert json.loads(raw)["attempts"][0]["calls"][0]["status"] == "error" and KEY not in raw
    shown = CliRunner().invoke(app, ["show", "loop/2", "--state-dir", str(settings.state_dir)]).output
    assert "conversation" in shown and "AgentPaused" in shown and "Propose experiment #2" in shown
    assert "The trainer files as they were" not in shown  # the system prompt is summarised...
    full = CliRunner().invoke(app, ["show", "loop/2", "--full", "--state-dir", str(settings.state_dir)]).output
    assert "The trainer files as they were" in full  # ...unless asked for in full


def test_the_expected_gap_comes_from_measured_runs():
    def run(total, agent=None, bpb=2.5):
        return Run(campaign_id=1, seq=1, total_seconds=total, agent_seconds=agent, val_bpb=bpb)

    assert expected_gap_s([], 300) == 300 + GAP_OVERHEAD_S
    assert expected_gap_s([run(5, bpb=None)], 300) == 300 + GAP_OVERHEAD_S  # a rejected proposal measured nothing
    assert expected_gap_s([run(380, 20), run(400, 30), run(9000, 10)], 300) == 370  # the median, agent time excluded
    assert expected_gap_s([run(70), run(75), run(80)], 60) == 75


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thinking-tokens", "500"], "at least 1024"),
        (["--thinking-tokens", "-1"], "at least 1024"),
        (["--model", "claude-sonnet-4-6", "--effort", "xhigh"], "xhigh is not available on claude-sonnet-4-6"),
        (["--model", "claude-haiku-4-5", "--effort", "low"], "levels: none"),
        (["--effort", "max"], "--effort max needs thinking on claude-sonnet-5-5"),
        (["--fallback-model", "claude-opus-6"], "model 'claude-opus-6' was not found by the Models API"),
        (["--model", "claude-sonnet-4-5"], "is retired"),
        (["--model", "claude-opus-9-9"], "was not found"),
    ],
)
def test_start_rejects_bad_claude_flags_in_one_line(tmp_path, monkeypatch, args, message):
    server = fa.FakeAnthropic()
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    try:
        result = CliRunner().invoke(
            app, ["start", "--program", "model", "--tag", "t", "--state-dir", str(tmp_path), *args]
        )
    finally:
        server.close()
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and server.requests == []  # no Messages call made


def test_an_unpriced_model_is_refused_at_start_naming_the_prices_to_give(tmp_path, monkeypatch):
    server = fa.FakeAnthropic()
    server.families["claude-opus-6"] = fa.Family("claude-opus-6", "Claude Opus 6", "opus", ("adaptive",), True)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    try:
        args = ["start", "--program", "model", "--tag", "t", "--state-dir", str(tmp_path), "--model", "claude-opus-6"]
        result = CliRunner().invoke(app, args)
    finally:
        server.close()
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no price for model 'claude-opus-6'" in result.output and "cache_write_1h" in result.output


def test_start_help_explains_the_claude_flags():
    out = CliRunner().invoke(app, ["start", "--help"]).output
    assert "--effort" in out and "--fallback-model" in out and "adaptive" in out


def test_the_migration_adds_the_new_columns_to_an_old_ledger(tmp_path):
    db = tmp_path / "experiments.db"
    ledger.engine(db)  # created at the current version
    ledger.forget_engines()
    con = sqlite3.connect(db)
    for table, column in (
        ("run", "conversation"),
        ("llm_call", "cache_write_5m_tokens"),
        ("llm_call", "cache_write_1h_tokens"),
        ("llm_call", "stop_reason"),
    ):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    ledger.engine(db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
    assert {"cache_write_5m_tokens", "cache_write_1h_tokens", "stop_reason"} <= {
        r[1] for r in con.execute("PRAGMA table_info(llm_call)")
    }
    assert "conversation" in {r[1] for r in con.execute("PRAGMA table_info(run)")}
    con.close()
    ledger.forget_engines()


def test_an_llm_call_inserted_by_hand_needs_no_new_column(tmp_path):
    """bench.py and people's scripts INSERT llm_call rows without the cache-lifetime columns."""
    db = tmp_path / "experiments.db"
    ledger.engine(db)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO campaign (tag, program, branch, worktree, base_commit, agent, dataset, budget_s, status, "
        "created_at, settings) VALUES ('t', 'model', 'b', 'w', 'c', 'offline', 'stdlib', 60, 'stopped', "
        "'2026-11-28', '{}')"
    )
    con.execute(
        "INSERT INTO llm_call (campaign_id, model, input_tokens, output_tokens, cache_read_tokens, "
        "cache_write_tokens, cost_usd, latency_s, status, created_at) VALUES (1, 'm', 1, 1, 0, 0, 0, 0, 'ok', "
        "'2026-11-28')"
    )
    assert con.execute("SELECT cache_write_5m_tokens, cache_write_1h_tokens, stop_reason FROM llm_call").fetchone() == (
        0,
        0,
        None,
    )
    con.close()
    ledger.forget_engines()
