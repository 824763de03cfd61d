"""A campaign on each model family of today's lineup (the default, Sonnet 5.5, among them): the real Claude
agent and SDK against the strict fake API, in the real campaign loop with scripted scores (tests/scripted.py,
so no training). No request the real API would refuse; every call priced to the cent by the documented
rates, in the ledger and in `arx-daemon show`; a stream cut short, an empty stream and an overload spend no
experiment; thinking kept readable in the conversation."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from click.testing import CliRunner

import fake_anthropic as fa
from agents.claude import ClaudeAgent
from conftest import make_repo
from orchestrator.campaign.policy import Policy
from orchestrator.cli import app
from scripted import Setup

KEY = "sk-ant-families-test-0042"
TRAIN = "trainer/train.py"


def proposal(old: str, gain: float) -> list[dict]:
    """Three calls, each thinking first: view the file, edit it (writing the gain the scripted score reads), submit."""
    view = fa.tool_use("str_replace_based_edit_tool", command="view", path=TRAIN)
    change = fa.edit(TRAIN, old, f"{old}  # gain {gain}")
    return [
        {"content": [fa.thinking("Read the optimizer settings first."), view]},
        {"content": [fa.thinking(f"{old} looks off; change it."), *change["content"]], "thinks": 3000},
        {"content": [fa.thinking("Submit it."), *fa.submit(f"{old}, gain {gain}")["content"]]},
    ]


TROUBLE = [
    {"content": [fa.text("Let me look.")], "cut_after": 1},  # the stream stops after message_start
    {"content": [fa.text("Let me look.")], "cut_after": 0},  # a 200 that carries no event at all
    fa.error(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "20"}),
]


@pytest.mark.parametrize("model", fa.CURRENT)
def test_a_campaign_on_each_current_family(tmp_path, monkeypatch, model):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    server = fa.FakeAnthropic(TROUBLE + proposal("MATRIX_LR = 0.04", 0.05) + proposal("SCALAR_LR = 0.5", 0.01))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    try:
        setup = Setup(make_repo(tmp_path / "repo"), tag="fam", policy=Policy(baseline_runs=1, max_pairs=1))
        agent = ClaudeAgent(model=model, timeout_s=10)
        loop = setup.loop(agent, max_experiments=2, backoff_s=0.01)  # the backoff is real; its length is not the point
        assert loop.run() == "reached --max-experiments 2"
    finally:
        server.close()
    assert server.rejected == [] and server.script == []

    db = loop.db
    con = sqlite3.connect(db)
    runs = con.execute("SELECT seq, kind, status, description, id FROM run ORDER BY seq").fetchall()
    calls = con.execute(
        "SELECT run_id, model, status, error, cost_usd, request_id, response_id, thinking, effort FROM llm_call "
        "ORDER BY id"
    ).fetchall()
    backoffs = con.execute("SELECT message FROM event WHERE kind = 'backoff'").fetchall()
    con.close()
    experiments = [r for r in runs if r[1] == "experiment"]
    assert [r[3] for r in experiments] == ["MATRIX_LR = 0.04, gain 0.05", "SCALAR_LR = 0.5, gain 0.01"]
    assert all(r[2] in ("keep", "discard") for r in experiments)  # the trouble cost no experiment, only backoffs
    plan = agent.plans[model]
    # a loaded machine may drop a pooled loopback connection before any response: the agent tries it again at
    # once (no id, no usage, no cost); every call the API answered has its id
    answered = [c for c in calls if not (c[3] or "").startswith("APIConnectionError")]
    assert [c[5] for c in answered] == [f"req_fake_{i:04d}" for i in range(1, len(answered) + 1)]
    assert all(c[7] == json.dumps(plan.thinking) and c[8] == plan.effort for c in calls)  # and what it sent
    assert len(backoffs) == 3 and "message_stop" in backoffs[0][0] and "AssertionError" in backoffs[1][0]

    # every call priced by its model's documented rates: the ledger to the cent, and `show` as it prints it
    priced = [c for c in answered if not (c[3] or "").startswith("HTTP")]  # an HTTP error had no usage at all
    assert len(priced) == len(server.usages) == 8 and all(c[1] == model for c in calls)
    for (_, _, status, _, cost, *_), usage in zip(priced, server.usages, strict=True):
        if status == "ok":
            assert cost == pytest.approx(fa.cost(model, usage), abs=1e-9)
        else:  # a broken stream is priced for what its events said (message_start's input), at most the whole
            assert 0 <= cost < fa.cost(model, usage)
    assert priced[0][4] > 0 and priced[1][4] == 0  # cut after message_start: its input is on record; empty: nothing
    shown = CliRunner().invoke(app, ["show", f"fam/{experiments[0][0]}", "--state-dir", str(tmp_path / "repo/state")])
    dollars = [float(d) for d in re.findall(r"^llm .*?\$(\d+\.\d{4})", shown.output, re.M)]
    assert dollars == [round(c[4], 4) for c in calls if c[0] == experiments[0][4]] and len(dollars) >= 6

    # the conversation keeps what Claude thought, in readable form, and what was sent
    doc = json.loads(next((tmp_path / "repo/state/conversations").rglob("*.json")).read_text())
    thoughts = [
        b["thinking"] for a in doc["attempts"] for m in a["messages"] for b in m["content"] if b["type"] == "thinking"
    ]
    if plan.thinking["type"] == "disabled":  # Haiku 5.5 at --thinking-tokens 0 does not think
        assert thoughts == []
    else:  # summaries (adaptive, display asked for) or between_tools' notes, never the empty text of `omitted`
        assert "Read the optimizer settings first." in thoughts and all(thoughts)
