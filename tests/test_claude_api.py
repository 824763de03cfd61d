"""The Claude agent against a fake Messages API as strict as the real one: thinking per model, every
stop reason, errors that pause instead of spinning, cache lifetimes on a clock, kept conversations."""

from __future__ import annotations

import json

import anthropic
import pytest

import fake_anthropic as fa
from agents import conversation, history, pricing
from agents.base import Abandoned, AgentPaused, Refused, TransientAgentError
from agents.claude import ClaudeAgent, cache_ttl, files_block, program_prompt
from orchestrator.facts import expected_gap_s
from test_claude import TRAIN, context

KEY = "sk-ant-test-0123456789-secret"
VIEW = {"content": [fa.tool_use("str_replace_based_edit_tool", command="view", path=TRAIN)], "stop_reason": "tool_use"}


@pytest.fixture
def server():
    s = fa.FakeAnthropic()
    yield s
    s.close()


def agent(server, monkeypatch, **kw) -> ClaudeAgent:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    return ClaudeAgent(**({"max_retries": 0, "timeout_s": 10} | kw))


def raw_call(server, **kw):
    """A request straight through the SDK, to show what the fake (like the real API) refuses."""
    client = anthropic.Anthropic(api_key=KEY, base_url=server.url, max_retries=0)
    body = {"model": "claude-sonnet-4-6", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]} | kw
    return client.messages.create(**body)


# ------------------------------------------------------------------ 1. thinking


def test_the_fake_rejects_what_the_real_api_rejects(server):
    server.script = [fa.submit("x")] * 8
    with pytest.raises(anthropic.BadRequestError, match="adaptive"):
        raw_call(server, model="claude-opus-4-7", thinking={"type": "enabled", "budget_tokens": 2048})
    with pytest.raises(anthropic.BadRequestError, match="1024"):
        raw_call(server, thinking={"type": "enabled", "budget_tokens": 512})
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        raw_call(server, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048})
    with pytest.raises(anthropic.BadRequestError, match="non-empty content"):
        raw_call(
            server,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": []},
                {"role": "user", "content": "go on"},
            ],
        )
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        raw_call(
            server,
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [{"type": "thinking", "thinking": "hm", "signature": "forged"}, fa.text("ok")],
                },
                {"role": "user", "content": "go on"},
            ],
        )
    with pytest.raises(anthropic.BadRequestError, match="effort"):
        raw_call(server, model="claude-haiku-4-5", output_config={"effort": "low"})
    with pytest.raises(anthropic.BadRequestError, match="effort"):
        raw_call(server, output_config={"effort": "xhigh"})
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        raw_call(
            server,
            system=[
                {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ],
        )


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-sonnet-5"])
def test_adaptive_thinking_where_the_model_requires_it(server, worktree, monkeypatch, model):
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model=model, thinking_tokens=4096, effort="medium").propose(context(worktree))
    body = server.requests[0]["body"]
    assert body["thinking"] == {"type": "adaptive"} and body["output_config"] == {"effort": "medium"}
    assert body["stream"] is True and server.rejected == []


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-6", "claude-opus-4-6", "claude-sonnet-4-5", "claude-haiku-4-5-20251001"]
)
def test_budget_thinking_where_it_is_still_accepted(server, worktree, monkeypatch, model):
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model=model, thinking_tokens=2048).propose(context(worktree))
    body = server.requests[0]["body"]
    assert (
        body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        and body["max_tokens"] > 2048
        and server.rejected == []
    )


def test_effort_levels_follow_the_model(server, worktree, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(ValueError, match="xhigh is not available on claude-sonnet-4-6"):
        ClaudeAgent(effort="xhigh")
    with pytest.raises(ValueError, match="levels: none"):
        ClaudeAgent(model="claude-haiku-4-5", effort="low")
    server.script = [fa.refusal(), fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model="claude-opus-4-7", effort="xhigh", fallback_model="claude-sonnet-4-6").propose(
        context(worktree)
    )
    assert server.requests[0]["body"]["output_config"] == {"effort": "xhigh"}
    assert "output_config" not in server.requests[1]["body"] and server.rejected == []  # the fallback lacks xhigh


@pytest.mark.parametrize("tokens", [1, 1023, -5])
def test_a_thinking_budget_below_the_minimum_is_refused_at_once(monkeypatch, tokens):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(ValueError, match="1024"):
        ClaudeAgent(thinking_tokens=tokens)


def test_thinking_blocks_go_back_unchanged_with_their_signatures(server, worktree, monkeypatch):
    first = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    first["content"].insert(0, fa.thinking("The LR looks low for this width; try 0.05."))
    server.script = [first, {"content": [fa.thinking("Now submit."), *fa.submit("x")["content"]]}]
    agent(server, monkeypatch, model="claude-opus-4-7", thinking_tokens=2048).propose(context(worktree))
    sent = server.requests[1]["body"]["messages"][1]["content"][0]
    assert sent == {
        "type": "thinking",
        "thinking": "The LR looks low for this width; try 0.05.",
        "signature": server.signature("The LR looks low for this width; try 0.05."),
    }
    assert server.rejected == []


def test_models_are_matched_exactly_or_with_a_date(monkeypatch):
    assert pricing.facts("claude-sonnet-4-5-20250929")["input"] == 3.0
    for unknown in ("claude-opus-5-5", "claude-sonnet-4-6-beta", "claude-opus-4-61"):
        with pytest.raises(KeyError, match="ARX_PRICING"):
            pricing.facts(unknown)
    p = pricing.facts("claude-sonnet-4-6")
    assert (p["cache_write"], p["cache_write_1h"], p["cache_read"]) == pytest.approx((3.75, 6.0, 0.3))


# ------------------------------------------------------------------ 2. stop reasons


def test_refusal_without_a_fallback_is_refused_and_nothing_empty_is_sent(server, worktree, monkeypatch, tmp_path):
    server.script = [fa.refusal("frontier_llm", "Could assist a competing model.")]
    path = tmp_path / "conv.json"
    with pytest.raises(Refused, match="Could assist a competing model") as e:
        agent(server, monkeypatch).propose(context(worktree, conversation_path=path))
    assert e.value.category == "frontier_llm" and len(server.requests) == 1
    attempt = json.loads(path.read_text())["attempts"][0]
    assert (
        attempt["calls"][0]["stop_reason"] == "refusal"
        and attempt["calls"][0]["stop_details"]["category"] == "frontier_llm"
    )
    assert attempt["outcome"].startswith("Refused") and all(m["content"] for m in attempt["messages"])


def test_refusal_is_retried_once_on_the_fallback_model(server, worktree, monkeypatch):
    server.script = [
        fa.refusal(),
        fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
        fa.submit("MATRIX_LR 0.04 -> 0.05"),
    ]
    calls = []
    proposal = agent(server, monkeypatch, fallback_model="claude-opus-4-6").propose(context(worktree, calls))
    assert proposal.description == "MATRIX_LR 0.04 -> 0.05"
    models = [r["body"]["model"] for r in server.requests]
    assert models == ["claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-6"]
    assert (
        server.requests[1]["body"]["messages"] == server.requests[0]["body"]["messages"]
    )  # the refused turn is not sent back
    assert [c["stop_reason"] for c in calls] == ["refusal", "tool_use", "tool_use"] and server.rejected == []


def test_refusal_on_the_fallback_too_is_refused(server, worktree, monkeypatch):
    server.script = [fa.refusal(), fa.refusal("bio")]
    with pytest.raises(Refused, match="claude-opus-4-6 refused"):
        agent(server, monkeypatch, fallback_model="claude-opus-4-6").propose(context(worktree))
    assert len(server.requests) == 2


def test_pause_turn_sends_the_content_back_to_continue(server, worktree, monkeypatch):
    server.script = [
        {"content": [fa.text("Looking at the optimizer first.")], "stop_reason": "pause_turn"},
        fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
        fa.submit("x"),
    ]
    agent(server, monkeypatch).propose(context(worktree))
    resumed = server.requests[1]["body"]["messages"]
    assert resumed[-1] == {"role": "assistant", "content": [fa.text("Looking at the optimizer first.")]}
    third = server.requests[2]["body"]["messages"]
    assert [m["role"] for m in third] == [
        "user",
        "assistant",
        "user",
    ] and server.rejected == []  # the continuation joins its turn


def test_empty_replies_never_become_empty_messages(server, worktree, monkeypatch):
    server.script = [
        {"content": [], "stop_reason": "end_turn"},
        {"content": [], "stop_reason": "max_tokens"},
        fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
        fa.submit("x"),
    ]
    agent(server, monkeypatch).propose(context(worktree))
    assert server.rejected == [] and all(m["content"] for r in server.requests for m in r["body"]["messages"])
    texts = [b.get("text", "") for b in server.requests[2]["body"]["messages"][0]["content"]]
    assert any("Use the tools" in t for t in texts) and any("cut off" in t for t in texts)


def test_a_full_context_window_ends_the_proposal(server, worktree, monkeypatch):
    server.script = [VIEW, {"content": [fa.text("Let me")], "stop_reason": "model_context_window_exceeded"}]
    with pytest.raises(Abandoned, match="context window"):
        agent(server, monkeypatch).propose(context(worktree))


def test_refused_proposals_are_their_own_group_in_the_history():
    items = [
        {
            "seq": i,
            "kind": "experiment",
            "status": "refused" if i == 1 else "discard",
            "val_bpb": None,
            "delta": None,
            "description": f"idea {i}",
        }
        for i in range(1, 15)
    ]
    assert "- refused (1): idea 1" in history.render(items, None)


# ------------------------------------------------------------------ 3. errors: pause, never spin


@pytest.mark.parametrize(
    ("step", "says"),
    [
        (
            fa.error(400, "invalid_request_error", "thinking.type.enabled is not supported for model claude-opus-4-7."),
            "thinking.type.enabled is not supported",
        ),
        (fa.error(402, "billing_error", "Your credit balance is too low."), "credit balance is too low"),
        (
            fa.error(
                400,
                "invalid_request_error",
                "You have reached your specified API usage limits. You will regain access on 2026-12-01.",
            ),
            "spend limit",
        ),
        (
            fa.error(
                429,
                "rate_limit_error",
                "Monthly spend cap reached.",
                headers={},
                details={"error_code": "enforced_spend_limit_reached"},
            ),
            "spend limit",
        ),
    ],
)
def test_invalid_billing_and_spend_limit_errors_pause_with_the_api_message(server, worktree, monkeypatch, step, says):
    server.script = [step, step, step]
    with pytest.raises(AgentPaused, match=says):
        agent(server, monkeypatch, max_retries=2).propose(context(worktree))
    assert len(server.requests) == 1  # not retried by the SDK either: it would fail the same way


def test_an_error_in_the_middle_of_a_stream_is_transient(server, worktree, monkeypatch):
    server.script = [fa.submit("x") | {"stream_error": {"type": "overloaded_error", "message": "Overloaded"}}]
    with pytest.raises(TransientAgentError, match="overloaded_error"):
        agent(server, monkeypatch).propose(context(worktree))


def test_a_long_retry_after_is_the_daemons_to_wait(server, worktree, monkeypatch):
    server.script = [fa.error(429, "rate_limit_error", "slow down", headers={"retry-after": "120"})]
    with pytest.raises(TransientAgentError) as e:
        agent(server, monkeypatch, max_retries=2).propose(context(worktree))
    assert e.value.retry_after_s == 120 and len(server.requests) == 1  # the SDK did not sleep two minutes


def test_a_short_retry_after_is_retried_by_the_sdk(server, worktree, monkeypatch):
    server.script = [
        fa.error(429, "rate_limit_error", "slow down", headers={"retry-after-ms": "10"}),
        fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
        fa.submit("x"),
    ]
    agent(server, monkeypatch, max_retries=2).propose(context(worktree))
    assert len(server.requests) == 3


# ------------------------------------------------------------------ 4. caching at real spacing


@pytest.mark.parametrize(
    ("gap", "ttl"), [(None, "5m"), (60, "5m"), (239, "5m"), (241, "1h"), (360, "1h"), (3000, "1h")]
)
def test_the_cache_lifetime_follows_the_expected_gap(gap, ttl):
    assert cache_ttl(gap) == ttl


def test_nothing_that_changes_between_proposals_is_in_the_cached_prefix(worktree):
    early = context(
        worktree,
        best={"seq": 1, "val_bpb": 2.5, "tok_per_sec": 1000.0, "description": "baseline"},
        hardware={"backend": "cpu", "cpu_count": 2, "tok_per_sec": 1000.0},
    )
    late = context(
        worktree,
        best={"seq": 40, "val_bpb": 2.1, "tok_per_sec": 5000.0, "description": "deeper"},
        hardware={"backend": "cpu", "cpu_count": 2, "tok_per_sec": 5000.0},
        seq=41,
        best_diff="- A\n+ B",
    )
    assert program_prompt(early) == program_prompt(late) and files_block(early) == files_block(late)


def proposal_script(i: int) -> list[dict]:
    return [
        VIEW,
        fa.edit(TRAIN, "MATRIX_LR = 0.04", f"MATRIX_LR = 0.0{i % 9 + 1}"),
        fa.submit(f"MATRIX_LR 0.04 -> 0.0{i % 9 + 1}"),
    ]


def simulate(server, monkeypatch, worktree, proposals: int, gap_s: float, expected_gap_s: float | None) -> list[dict]:
    """A campaign as the API sees it: `proposals` proposals of three calls, `gap_s` apart on the fake's clock."""
    from test_claude import fake_history

    a = agent(server, monkeypatch)
    original = (worktree / TRAIN).read_text()
    calls: list[dict] = []
    for i in range(proposals):
        server.script = proposal_script(i)
        a.propose(
            context(worktree, calls, history_items=fake_history(10 + i), expected_gap_s=expected_gap_s, seq=11 + i)
        )
        (worktree / TRAIN).write_text(original)  # the daemon resets the worktree between proposals
        server.advance(gap_s)
    return calls


def campaign_cost(calls: list[dict], model: str, per: int) -> tuple[float, float]:
    """Cached share of input, and input dollars per `per` proposals priced as `model`."""
    inputs = sum(c["input_tokens"] + c["cache_read_tokens"] + c["cache_write_tokens"] for c in calls)
    share = sum(c["cache_read_tokens"] for c in calls) / inputs
    dollars = sum(
        pricing.cost_usd(
            model, c["input_tokens"], 0, c["cache_write_5m_tokens"], c["cache_read_tokens"], c["cache_write_1h_tokens"]
        )
        for c in calls
    )
    return share, dollars * per / (len(calls) / 3)


def test_a_campaign_with_300s_between_proposals_reads_most_input_from_cache(server, worktree, monkeypatch):
    """Proposals 300 s apart (the default budget; evaluation only adds to it): a 5-minute entry is
    cold at each one; the 1-hour entry, chosen for the gap the campaign expects before it has measured
    a run (budget + overhead), stays warm."""
    n, gap = 12, 300.0
    now = simulate(server, monkeypatch, worktree, n, gap, expected_gap_s=expected_gap_s([], gap))
    server.cache.clear()
    before = simulate(
        server, monkeypatch, worktree, n, gap, expected_gap_s=None
    )  # what the agent did before: 5 minutes
    assert server.rejected == []
    lines = []
    for model in ("claude-sonnet-4-6", "claude-opus-4-7"):
        share, dollars = campaign_cost(now, model, 100)
        old_share, old_dollars = campaign_cost(before, model, 100)
        lines.append(
            f"{model}: cached share {share:.0%} (5-minute cache {old_share:.0%}); input $ per 100 proposals "
            f"{dollars:.2f} (5-minute cache {old_dollars:.2f})"
        )
        assert share >= 0.70 and dollars < 0.6 * old_dollars
    print("\n" + "\n".join(lines))
    assert sum(c["cache_write_1h_tokens"] for c in now) > 0 and sum(c["cache_write_1h_tokens"] for c in before) == 0


def test_usage_splits_cache_writes_by_lifetime_and_prices_them(server, worktree, monkeypatch):
    server.script = proposal_script(0)
    calls = []
    agent(server, monkeypatch).propose(context(worktree, calls, expected_gap_s=600))
    first = calls[0]
    assert first["cache_write_1h_tokens"] > 1000 and first["cache_write_5m_tokens"] > 0
    assert first["cache_write_tokens"] == first["cache_write_1h_tokens"] + first["cache_write_5m_tokens"]
    p = pricing.facts("claude-sonnet-4-6")
    expected = (
        first["input_tokens"] * p["input"]
        + first["output_tokens"] * p["output"]
        + first["cache_write_5m_tokens"] * p["cache_write"]
        + first["cache_write_1h_tokens"] * 2 * p["input"]
    ) / 1e6
    assert first["cost_usd"] == pytest.approx(expected)


# ------------------------------------------------------------------ 6. every conversation is kept


def test_the_conversation_is_kept_without_secrets(server, worktree, monkeypatch, tmp_path):
    leak = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    leak["content"][0] = fa.text(f"I found the key {KEY} in the environment.")
    server.script = [VIEW, leak, fa.submit("MATRIX_LR 0.04 -> 0.05")]
    path = tmp_path / "conversations" / "model-t" / "0003.json"
    agent(server, monkeypatch).propose(context(worktree, conversation_path=path))
    raw = path.read_text()
    assert KEY not in raw and "[redacted]" in raw
    doc = json.loads(raw)
    assert doc["version"] == conversation.VERSION and len(doc["attempts"]) == 1
    a = doc["attempts"][0]
    assert a["outcome"] == "submitted: MATRIX_LR 0.04 -> 0.05" and a["model"] == "claude-sonnet-4-6"
    kinds = [(m["role"], b["type"]) for m in a["messages"] for b in m["content"]]
    assert kinds == [
        ("user", "text"),
        ("assistant", "tool_use"),
        ("user", "tool_result"),
        ("assistant", "text"),
        ("assistant", "tool_use"),
        ("user", "tool_result"),
        ("assistant", "tool_use"),
    ]
    assert [c["stop_reason"] for c in a["calls"]] == ["tool_use"] * 3 and all(
        c["input_tokens"] + c["cache_read_tokens"] + c["cache_write_tokens"] > 0 for c in a["calls"]
    )
    assert "MATRIX_LR = 0.04" in a["system"][1]["text"]
    shown = conversation.render(doc)
    assert (
        "-> str_replace_based_edit_tool" in shown
        and "<- result: edited trainer/train.py" in shown
        and "stop tool_use" in shown
    )


def test_a_crash_mid_proposal_keeps_what_happened_and_attempts_accumulate(server, worktree, monkeypatch, tmp_path):
    path = tmp_path / "0003.json"
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.error(503)]
    with pytest.raises(TransientAgentError):
        agent(server, monkeypatch).propose(context(worktree, conversation_path=path))
    server.script = [fa.edit(TRAIN, "SCALAR_LR = 0.5", "SCALAR_LR = 0.4"), fa.submit("SCALAR_LR 0.5 -> 0.4")]
    agent(server, monkeypatch).propose(context(worktree, conversation_path=path))
    first, second = json.loads(path.read_text())["attempts"]
    assert first["outcome"].startswith("TransientAgentError") and [c["status"] for c in first["calls"]] == [
        "ok",
        "error",
    ]
    assert first["messages"][-1]["content"][0]["type"] == "tool_result"  # the edit it made is on record
    assert second["outcome"].startswith("submitted")
