"""The Claude agent through the real anthropic SDK, over HTTP, against a fake Messages API."""

from __future__ import annotations

import pytest

import fake_anthropic as fa
from agents import history, pricing
from agents.base import (
    Abandoned,
    AgentPaused,
    CostLimitReached,
    NoEdits,
    ProposalContext,
    Refused,
    TransientAgentError,
)
from agents.claude import ClaudeAgent, task_message
from agents.models import ModelError

TRAIN = "trainer/train.py"
READABLE = ["trainer/prepare.py", "trainer/data_sources.py", "inside/evaluate.py"]


@pytest.fixture
def server():
    s = fa.FakeAnthropic()
    yield s
    s.close()


def agent(server, monkeypatch, **kw) -> ClaudeAgent:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    return ClaudeAgent(**({"timeout_s": 10} | kw))


def context(worktree, calls=None, history_items=(), **over) -> ProposalContext:
    files = {p: (worktree / p).read_text() for p in [TRAIN, *READABLE]}
    ctx = ProposalContext(
        program="model",
        worktree=worktree,
        editable=[TRAIN],
        readable=READABLE,
        history=list(history_items),
        best=None,
        last_failure_tail=None,
        budget_s=60,
        hardware={"backend": "cpu", "cpu_count": 2},
        seq=3,
        base_files=files,
        record_call=(calls.append if calls is not None else (lambda c: None)),
    )
    for k, v in over.items():
        setattr(ctx, k, v)
    return ctx


def test_a_proposal_is_edits_then_submit(server, worktree, monkeypatch):
    server.script = [
        fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
        fa.submit("MATRIX_LR 0.04 -> 0.05", "faster progress"),
    ]
    calls = []
    proposal = agent(server, monkeypatch).propose(
        context(worktree, calls, last_failure_tail="ValueError: shapes (4,) and (5,)")
    )
    assert proposal.description == "MATRIX_LR 0.04 -> 0.05" and proposal.hypothesis == "faster progress"
    assert "MATRIX_LR = 0.05" in (worktree / TRAIN).read_text()
    assert len(calls) == 2 and all(c["status"] == "ok" and c["cost_usd"] > 0 for c in calls)
    first = server.requests[0]["body"]
    assert first["model"] == pricing.DEFAULT_MODEL
    assert [t.get("type", "custom") for t in first["tools"]] == ["text_editor_20250728", "custom"]
    assert (
        first["tools"][0]["name"] == "str_replace_based_edit_tool" and first["tools"][1]["name"] == "submit_experiment"
    )
    assert (
        first["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
        and "MATRIX_LR = 0.04" in first["system"][-1]["text"]
    )
    assert (
        "ValueError: shapes (4,) and (5,)" in first["messages"][0]["content"][0]["text"]
    )  # the last failure's log tail
    headers = server.requests[0]["headers"]
    assert headers.get("x-api-key") == "sk-test" or headers.get("authorization") == "Bearer sk-test"
    tool_result = server.requests[1]["body"]["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result" and not tool_result.get("is_error")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"command": "str_replace", "path": TRAIN, "old_str": "NOT THERE", "new_str": "x"}, "not found"),
        ({"command": "str_replace", "path": TRAIN, "old_str": "import", "new_str": "x"}, "occurs"),
        (
            {"command": "str_replace", "path": "inside/evaluate.py", "old_str": "import", "new_str": "x"},
            "may not edit",
        ),
        ({"command": "view", "path": "/etc/passwd"}, "may not view"),
        ({"command": "str_replace", "path": TRAIN}, "malformed input"),
        ({"command": "delete", "path": TRAIN}, "unknown command"),
    ],
)
def test_tool_errors_go_back_to_the_model(server, worktree, monkeypatch, args, message):
    bad = {"content": [fa.tool_use("str_replace_based_edit_tool", **args)], "stop_reason": "tool_use"}
    server.script = [bad, fa.edit(TRAIN, "SCALAR_LR = 0.5", "SCALAR_LR = 0.4"), fa.submit("SCALAR_LR 0.5 -> 0.4")]
    assert agent(server, monkeypatch).propose(context(worktree)).description == "SCALAR_LR 0.5 -> 0.4"
    result = server.requests[1]["body"]["messages"][-1]["content"][0]
    assert result["is_error"] is True and message in result["content"]
    assert "import" in (worktree / "inside/evaluate.py").read_text()


@pytest.mark.parametrize("status", [429, 500, 529])
def test_overload_and_server_errors_are_transient(server, worktree, monkeypatch, status):
    server.script = [fa.error(status)]
    calls = []
    with pytest.raises(TransientAgentError, match=str(status)):
        agent(server, monkeypatch).propose(context(worktree, calls))
    assert calls[0]["status"] == "error" and str(status) in calls[0]["error"]


def test_the_sdk_never_retries_the_daemon_backs_off(server, worktree, monkeypatch):
    """A retry inside the SDK sleeps where `stop` cannot interrupt it; the campaign's backoff can be."""
    server.script = [fa.error(529, "overloaded_error", headers={"retry-after": "7"}), fa.submit("never asked")]
    with pytest.raises(TransientAgentError, match="529") as e:
        agent(server, monkeypatch).propose(context(worktree))
    assert len(server.requests) == 1 and e.value.retry_after_s == 7


def test_timeout_is_transient(server, worktree, monkeypatch):
    server.script = [{"delay": 3, **fa.submit("late")}]
    with pytest.raises(TransientAgentError, match="Timeout"):
        agent(server, monkeypatch, timeout_s=0.5).propose(context(worktree))


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_pauses(server, worktree, monkeypatch, status):
    server.script = [fa.error(status, "authentication_error", "invalid x-api-key")]
    with pytest.raises(AgentPaused, match="ANTHROPIC_API_KEY"):
        agent(server, monkeypatch).propose(context(worktree))


def test_submit_without_edits(server, worktree, monkeypatch):
    server.script = [fa.submit("nothing")]
    with pytest.raises(NoEdits):
        agent(server, monkeypatch).propose(context(worktree))


def test_no_submit_within_the_round_limit(server, worktree, monkeypatch):
    view = {
        "content": [fa.tool_use("str_replace_based_edit_tool", command="view", path=TRAIN)],
        "stop_reason": "tool_use",
    }
    chat = {"content": [fa.text("Should I change the learning rate?")], "stop_reason": "end_turn"}
    server.script = [view, chat]
    with pytest.raises(Abandoned, match="2 tool rounds"):
        agent(server, monkeypatch, max_rounds=2).propose(context(worktree))
    assert server.requests[1]["body"]["messages"][-1]["content"][0]["type"] == "tool_result"


def test_max_tokens_cut_off_is_handled(server, worktree, monkeypatch):
    cut = {
        "content": [
            fa.text("Let me"),
            fa.tool_use("str_replace_based_edit_tool", command="str_replace", path=TRAIN, old_str="MATRIX_LR = 0.0"),
        ],
        "stop_reason": "max_tokens",
    }
    server.script = [cut, fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.03"), fa.submit("MATRIX_LR 0.04 -> 0.03")]
    assert agent(server, monkeypatch).propose(context(worktree)).description == "MATRIX_LR 0.04 -> 0.03"
    result = server.requests[1]["body"]["messages"][-1]["content"][0]
    assert result["is_error"] and "cut off" in result["content"]
    assert "MATRIX_LR = 0.03" in (worktree / TRAIN).read_text()  # the cut-off call was not executed


def test_cost_ceiling_stops_before_the_call(server, worktree, monkeypatch):
    with pytest.raises(CostLimitReached):
        agent(server, monkeypatch).propose(context(worktree, cost_left_usd=0.001))
    assert server.requests == []


def worst_first_call(server, worktree, monkeypatch, model) -> float:
    """What the cost ceiling prices a first call on `model` at (it says so when it refuses one)."""
    with pytest.raises(CostLimitReached) as e:
        agent(server, monkeypatch, model=model).propose(context(worktree, cost_left_usd=1e-9))
    return float(str(e.value).split("$")[1].split(",")[0])


def test_the_cost_ceiling_counts_what_the_refusing_model_spent(server, worktree, monkeypatch):
    """A fallback asked after a refusal has only what is left: the refused call's cost is not forgotten."""
    worst = worst_first_call(server, worktree, monkeypatch, "claude-opus-5-5")
    server.script = [fa.refusal()]
    calls = []
    with pytest.raises(Refused):
        agent(server, monkeypatch).propose(context(worktree, calls))
    refused = calls[0]["cost_usd"]
    server.script, server.requests = [fa.refusal(), fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")], []
    server.cache.clear()  # the refusal costs the same again
    budget = worst + refused / 2  # enough for the fallback's first call alone, not after the refusal
    with pytest.raises(CostLimitReached, match="could cost"):
        agent(server, monkeypatch, fallback_model="claude-opus-5-5").propose(context(worktree, cost_left_usd=budget))
    assert [r["body"]["model"] for r in server.requests] == ["claude-sonnet-5-5"]


def test_unknown_or_unpriced_models_fail_at_once(server, monkeypatch):
    with pytest.raises(ModelError, match="not found by the Models API"):
        agent(server, monkeypatch, model="claude-imaginary-9")
    server.families["claude-imaginary-9"] = fa.Family(
        "claude-imaginary-9", "Claude Imaginary 9", "opus", ("adaptive",), default_on=True, efforts=fa.EFFORTS
    )  # the Models API knows it; arx's price table does not
    with pytest.raises(KeyError, match="cache_write_5m, cache_write_1h, cache_read in USD per million tokens"):
        agent(server, monkeypatch, model="claude-imaginary-9")
    monkeypatch.setenv("ARX_PRICING", '{"claude-imaginary-9": {"input": 1, "output": 2, "cache_read": 0.1}}')
    with pytest.raises(KeyError, match="lacks cache_write_5m, cache_write_1h"):
        agent(server, monkeypatch, model="claude-imaginary-9")
    monkeypatch.setenv(
        "ARX_PRICING",
        '{"claude-imaginary-9": {"input": 1, "output": 2, "cache_write_5m": 1.25, "cache_write_1h": 2, '
        '"cache_read": 0.1}}',
    )
    assert agent(server, monkeypatch, model="claude-imaginary-9").model == "claude-imaginary-9"


def test_extended_thinking_is_requested(server, worktree, monkeypatch):
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model="claude-haiku-4-5", thinking_tokens=2048).propose(context(worktree))
    body = server.requests[0]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["max_tokens"] > 2048
    assert body["model"] == "claude-haiku-4-5-20251001" and server.rejected == []  # the alias, resolved


def fake_history(n: int) -> list[dict]:
    ideas = [
        "raise MATRIX_LR",
        "deeper model with narrower MLP",
        "add a warmup of 5% of the budget",
        "QK-norm gain as a learned scalar",
        "halve TOTAL_BATCH_TOKENS",
    ]
    statuses = ["discard", "discard", "keep", "crash", "discard", "rejected"]
    return [
        {
            "seq": i,
            "kind": "experiment",
            "status": statuses[i % len(statuses)],
            "val_bpb": 2.5 - i * 1e-4,
            "delta": 0.01,
            "description": f"{ideas[i % len(ideas)]} (variant {i}) with a longer explanation of the reasoning",
            "decision_reason": "not better: val_bpb 2.51 vs best 2.50 (delta +0.0100, noise band 0.0050)",
        }
        for i in range(1, n + 1)
    ]


def prompt_chars(worktree, n: int) -> int:
    from agents.claude import files_block, program_prompt

    ctx = context(worktree, history_items=fake_history(n))
    return len(program_prompt(ctx)) + len(files_block(ctx)) + len(task_message(ctx))


def test_prompt_stays_bounded_over_a_long_campaign(worktree):
    at10, at200, at1000 = prompt_chars(worktree, 10), prompt_chars(worktree, 200), prompt_chars(worktree, 1000)
    print(
        f"\nprompt chars: experiment 10 {at10:,}, 200 {at200:,} ({at200 / at10:.2f}x), 1000 {at1000:,} "
        f"({at1000 / at10:.2f}x)"
    )
    assert at200 <= 1.5 * at10 and at1000 <= 1.5 * at10
    rendered = history.render(fake_history(200), None)
    assert "- kept (32)" in rendered and "(variant 2)" in rendered  # kept ideas are always listed


def test_prompt_cache_covers_most_input_from_the_second_call(server, worktree, monkeypatch):
    script = []
    for i in range(3):
        script += [
            fa.edit(TRAIN, "MATRIX_LR = 0.04", f"MATRIX_LR = 0.0{i + 5}"),
            fa.submit(f"MATRIX_LR 0.04 -> 0.0{i + 5}"),
        ]
    server.script = script
    a = agent(server, monkeypatch)
    original = (worktree / TRAIN).read_text()
    for i in range(3):
        (worktree / TRAIN).write_text(original)
        a.propose(context(worktree, history_items=fake_history(10 + i)))
    fractions = [
        u["cache_read_input_tokens"]
        / (u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"])
        for u in server.usages
    ]
    print("\ncached fraction of input per call:", " ".join(f"{f:.0%}" for f in fractions))
    assert fractions[0] == 0 and min(fractions[1:]) >= 0.70
