"""The Claude agent against a fake Messages API as strict as the real one: thinking per model, every
stop reason, errors that pause instead of spinning, cache lifetimes on a clock, kept conversations."""

from __future__ import annotations

import json

import anthropic
import pytest

import fake_anthropic as fa
from agents import conversation, history, pricing
from agents.base import Abandoned, AgentPaused, Refused, TransientAgentError
from agents.claude import SUBMIT_TOOL, ClaudeAgent, cache_ttl, files_block, program_prompt
from agents.thinking import ThinkingError
from orchestrator.campaign.facts import expected_gap_s
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
    return ClaudeAgent(**({"timeout_s": 10} | kw))


def raw_call(server, **kw):
    """A request straight through the SDK, to show what the fake (like the real API) refuses. Sampling
    parameters go in extra_body: the pinned SDK (2.14.0) no longer has arguments for them."""
    client = anthropic.Anthropic(api_key=KEY, base_url=server.url, max_retries=0, timeout=30)
    body = {"model": "claude-sonnet-4-6", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]} | kw
    sampling = {k: body.pop(k) for k in ("temperature", "top_p", "top_k") if k in body}
    return client.messages.create(**body, extra_body=sampling or None)


# ------------------------------------------------------------------ 1. thinking, per model family


def test_the_fake_rejects_what_the_real_api_rejects(server):
    server.script = [fa.submit("x")] * 24
    refused = [
        ({"model": "claude-opus-4-7", "thinking": {"type": "enabled", "budget_tokens": 2048}}, "adaptive"),
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "1024"),
        ({"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "max_tokens"),
        ({"model": "claude-haiku-4-5", "output_config": {"effort": "low"}}, "effort"),
        ({"output_config": {"effort": "xhigh"}}, "effort"),
        ({"model": "claude-opus-5-5", "thinking": {"type": "disabled"}}, "thinking.type.disabled"),
        ({"model": "claude-fable-5-2", "thinking": {"type": "disabled"}}, "thinking.type.disabled"),
        ({"model": "claude-sonnet-5-5", "thinking": {"type": "disabled"}}, "between_tools"),
        ({"model": "claude-opus-5", "thinking": {"type": "between_tools"}}, "between_tools"),
        (
            {"model": "claude-sonnet-5-5", "thinking": {"type": "between_tools"}, "output_config": {"effort": "max"}},
            "effort high or lower",
        ),
        ({"model": "claude-opus-5", "thinking": {"type": "disabled"}, "output_config": {"effort": "xhigh"}}, "effort"),
        ({"model": "claude-sonnet-5", "thinking": {"type": "disabled", "display": "summarized"}}, "display"),
        ({"model": "claude-haiku-5-5", "temperature": 0.2}, "sampling"),
        ({"model": "claude-sonnet-5", "top_p": 0.9}, "sampling"),
        ({"model": "claude-sonnet-5-5", "tool_choice": {"type": "any"}, "tools": [SUBMIT_TOOL]}, "forced tool use"),
        (
            {"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "hi"}, fa.assistant("Sure:")]},
            "prefill",
        ),
        ({"model": "claude-sonnet-5-5", "max_tokens": 200_000}, "maximum allowed"),
        (
            {"messages": [{"role": "user", "content": "hi"}, fa.assistant(), {"role": "user", "content": "go"}]},
            "non-empty",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    fa.assistant({"type": "thinking", "thinking": "hm", "signature": "forged"}, fa.text("ok")),
                    {"role": "user", "content": "go on"},
                ]
            },
            "signature",
        ),
        (
            {
                "system": [
                    {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                ]
            },
            "ttl",
        ),
    ]
    for kw, says in refused:
        with pytest.raises(anthropic.BadRequestError, match=says):
            raw_call(server, **kw)
    with pytest.raises(anthropic.NotFoundError), pytest.warns(DeprecationWarning, match="November 30th, 2026"):
        raw_call(server, model="claude-sonnet-4-5")  # retired on 2026-11-30 (the SDK still only warns)
    # what the older models still take
    raw_call(server, model="claude-haiku-4-5", temperature=0.2)
    raw_call(server, model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}, fa.assistant("Sure:")])
    raw_call(server, model="claude-haiku-5-5", tool_choice={"type": "any"}, tools=[SUBMIT_TOOL])


LEAST = {  # --thinking-tokens 0: what each family is sent (the thinking pages of the API docs)
    "claude-sonnet-5-5": ({"type": "between_tools"}, None),
    "claude-opus-5-5": ({"type": "adaptive", "display": "summarized"}, "low"),
    "claude-fable-5-2": ({"type": "adaptive", "display": "summarized"}, "low"),
    "claude-haiku-5-5": ({"type": "disabled"}, None),
    "claude-opus-5": ({"type": "disabled"}, None),
    "claude-sonnet-5": ({"type": "disabled"}, None),
    "claude-opus-4-8": ({"type": "disabled"}, None),
    "claude-sonnet-4-6": ({"type": "disabled"}, None),
    "claude-haiku-4-5": ({"type": "disabled"}, None),
}


@pytest.mark.parametrize("model", LEAST)
def test_thinking_tokens_0_is_the_least_thinking_the_model_allows(server, worktree, monkeypatch, model):
    first = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    first["content"].insert(0, fa.thinking("A short note."))
    server.script = [first, fa.submit("x")]
    a = agent(server, monkeypatch, model=model)
    a.propose(context(worktree))
    thinking, effort = LEAST[model]
    for r in server.requests:
        assert r["body"]["thinking"] == thinking and r["body"].get("output_config", {}).get("effort") == effort
    assert server.rejected == []
    assert ("cannot turn off" in a.describe()) == (thinking["type"] == "adaptive")


@pytest.mark.parametrize(
    "model",
    ["claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-sonnet-5", *fa.CURRENT],
)
def test_adaptive_thinking_shown_where_the_model_omits_its_text(server, worktree, monkeypatch, model):
    first = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    first["content"].insert(0, fa.thinking("The LR looks low for this width."))
    server.script = [first, fa.submit("x")]
    agent(server, monkeypatch, model=model, thinking_tokens=4096, effort="medium").propose(context(worktree))
    body = server.requests[0]["body"]
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"] == {"effort": "medium"} and body["stream"] is True and server.rejected == []
    kept = server.requests[1]["body"]["messages"][1]["content"][0]
    assert kept["thinking"] == "The LR looks low for this width."  # not the empty text of the default display


def test_without_display_the_newest_models_return_empty_thinking(server):
    server.script = [{"content": [fa.thinking("secret reasoning"), fa.text("ok")]}]
    reply = raw_call(server, model="claude-opus-5-5")
    assert reply.content[0].type == "thinking" and reply.content[0].thinking == ""


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-6"])
def test_adaptive_thinking_where_both_modes_exist(server, worktree, monkeypatch, model):
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model=model, thinking_tokens=2048).propose(context(worktree))
    body = server.requests[0]["body"]
    assert body["thinking"] == {"type": "adaptive"} and body["max_tokens"] >= 2048 + 8192 and server.rejected == []


@pytest.mark.filterwarnings("ignore:The model 'claude-opus-4-5-20251101' is deprecated:DeprecationWarning")
@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-opus-4-5-20251101"])
def test_budget_thinking_where_it_is_the_only_mode(server, worktree, monkeypatch, model):
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model=model, thinking_tokens=2048).propose(context(worktree))
    body = server.requests[0]["body"]
    assert (
        body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        and body["max_tokens"] > 2048
        and server.rejected == []
    )


def test_max_tokens_leaves_room_for_the_tool_call_after_thinking(server, worktree, monkeypatch):
    """Opus 5.5 thinks whatever arx asks; at its default effort a long thought would take all of an 8,192-token
    max_tokens and cut the tool call off (the fake stops at max_tokens when thinking leaves no room)."""
    think = 9000  # tokens the model thinks before its edit
    first = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05") | {"thinks": think}
    first["content"].insert(0, fa.thinking("Long deliberation."))
    server.script = [first, fa.submit("x")]
    agent(server, monkeypatch, model="claude-opus-5-5", effort="medium").propose(context(worktree))
    assert server.requests[0]["body"]["max_tokens"] > think + 1000 and server.usages[0]["output_tokens"] > think
    assert "MATRIX_LR = 0.05" in (worktree / TRAIN).read_text() and server.rejected == []
    server.script = [first]  # the same reply under an 8,192-token max_tokens: the fake cuts it
    cut = raw_call(server, model="claude-opus-5-5", max_tokens=8192)
    assert cut.stop_reason == "max_tokens" and all(b.type == "thinking" for b in cut.content)


def test_effort_levels_follow_the_model(server, worktree, monkeypatch):
    with pytest.raises(ThinkingError, match="xhigh is not available on claude-sonnet-4-6"):
        agent(server, monkeypatch, model="claude-sonnet-4-6", effort="xhigh")
    with pytest.raises(ThinkingError, match="levels: none"):
        agent(server, monkeypatch, model="claude-haiku-4-5", effort="low")
    for model in ("claude-sonnet-5-5", "claude-opus-5", "claude-haiku-5-5"):  # thinking off only up to high
        with pytest.raises(ThinkingError, match="needs thinking on"):
            agent(server, monkeypatch, model=model, effort="xhigh")
    server.script = [fa.refusal(), fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    agent(server, monkeypatch, model="claude-opus-4-7", effort="xhigh", fallback_model="claude-sonnet-4-6").propose(
        context(worktree)
    )
    assert server.requests[0]["body"]["output_config"] == {"effort": "xhigh"}
    assert "output_config" not in server.requests[1]["body"] and server.rejected == []  # the fallback lacks xhigh


@pytest.mark.parametrize("tokens", [1, 1023, -5])
def test_a_thinking_budget_below_the_minimum_is_refused_at_once(server, monkeypatch, tokens):
    with pytest.raises(ValueError, match="1024"):
        agent(server, monkeypatch, thinking_tokens=tokens)


@pytest.mark.parametrize("model", ["claude-opus-4-7", "claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-2"])
def test_thinking_blocks_go_back_unchanged_with_their_signatures(server, worktree, monkeypatch, model):
    """Over several rounds, on the models that check each block's prefix too: only cache markers move."""
    first = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    first["content"].insert(0, fa.thinking("The LR looks low for this width; try 0.05."))
    server.script = [
        VIEW | {"content": [fa.thinking("Look first."), *VIEW["content"]]},
        first,
        {"content": [fa.thinking("Now submit."), *fa.submit("x")["content"]]},
    ]
    agent(server, monkeypatch, model=model, thinking_tokens=2048).propose(context(worktree))
    sent = server.requests[2]["body"]["messages"][3]["content"][0]
    assert sent["type"] == "thinking" and sent["thinking"] == "The LR looks low for this width; try 0.05."
    assert server.rejected == []


def test_the_prefix_check_refuses_an_edited_history(server):
    server.script = [{"content": [fa.thinking("Plan."), fa.text("Done.")]}] + [
        fa.submit("x")
    ] * 3  # each request takes a step
    history = [{"role": "user", "content": "Change the learning rate."}]
    reply = raw_call(server, model="claude-sonnet-5-5", messages=history).model_dump(exclude_none=True)["content"]
    after = [fa.assistant(*reply), {"role": "user", "content": "Go on."}]
    raw_call(server, model="claude-sonnet-5-5", messages=history + after)  # unchanged: accepted
    edited = [{"role": "user", "content": "Change the batch size."}]
    with pytest.raises(anthropic.BadRequestError, match="bound to a different conversation"):
        raw_call(server, model="claude-sonnet-5-5", messages=edited + after)
    with pytest.raises(anthropic.BadRequestError, match="another model"):
        raw_call(server, model="claude-opus-5-5", messages=history + after)


def test_models_are_matched_exactly_or_with_a_date():
    assert pricing.facts("claude-haiku-4-5-20251001")["input"] == 1.0
    for unknown in ("claude-opus-6", "claude-sonnet-5-5-beta", "claude-opus-4-61", "claude-sonnet-4-5"):
        with pytest.raises(KeyError, match="ARX_PRICING"):
            pricing.facts(unknown)


@pytest.mark.parametrize("model", sorted(set(fa.FAMILIES) - {"claude-sonnet-4-5-20250929"}))
def test_arx_prices_every_model_as_the_documentation_does(model):
    """Each rate of arx's table against the fake's, both typed from the pricing page (kept apart on purpose)."""
    f = fa.FAMILIES[model]
    p = pricing.facts(model)
    assert tuple(p[r] for r in pricing.RATES) == pytest.approx(f.prices)
    assert tuple(p["long"][r] for r in pricing.RATES) == pytest.approx(f.long_prices) if f.long_prices else True
    assert p.get("display", "summarized") == f.display and p.get("off_effort_max") == f.off_max


def test_haiku_5_5_long_prompts_pay_the_higher_rates():
    short = pricing.cost_usd("claude-haiku-5-5", 50_000, 1_000, 0, 50_000)
    long = pricing.cost_usd("claude-haiku-5-5", 50_001, 1_000, 0, 50_000)
    assert short == pytest.approx((50_000 * 0.10 + 1_000 * 0.50 + 50_000 * 0.01) / 1e6)
    assert long == pytest.approx((50_001 * 0.50 + 1_000 * 2.50 + 50_000 * 0.05) / 1e6)


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
    assert models == ["claude-sonnet-5-5", "claude-opus-4-6", "claude-opus-4-6"]
    assert (
        server.requests[1]["body"]["messages"] == server.requests[0]["body"]["messages"]
    )  # the refused turn is not sent back
    assert [c["stop_reason"] for c in calls] == ["refusal", "tool_use", "tool_use"] and server.rejected == []


def test_a_fallback_model_starts_a_conversation_of_its_own(server, worktree, monkeypatch, tmp_path):
    """Opus 5.5 edits, thinks, then refuses: Sonnet 5.5 gets the task afresh, the files as they were, and none of
    Opus 5.5's thinking blocks (which it could not read: the fake, like the API, would refuse them)."""
    first = fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    first["content"].insert(0, fa.thinking("Raise the LR."))
    server.script = [
        first,
        fa.refusal(),
        fa.edit(TRAIN, "SCALAR_LR = 0.5", "SCALAR_LR = 0.4"),
        fa.submit("SCALAR_LR 0.5 -> 0.4"),
    ]
    path = tmp_path / "conv.json"
    proposal = agent(server, monkeypatch, model="claude-opus-5-5", fallback_model="claude-sonnet-5-5").propose(
        context(worktree, conversation_path=path)
    )
    assert proposal.description == "SCALAR_LR 0.5 -> 0.4" and server.rejected == []
    fresh = server.requests[2]["body"]
    assert fresh["model"] == "claude-sonnet-5-5" and fresh["messages"] == server.requests[0]["body"]["messages"]
    assert all(
        b["type"] != "thinking" for r in server.requests[2:] for m in r["body"]["messages"] for b in m["content"]
    )
    code = (worktree / TRAIN).read_text()
    assert "MATRIX_LR = 0.04" in code and "SCALAR_LR = 0.4" in code  # the refused model's edit was undone
    first_attempt, second = json.loads(path.read_text())["attempts"]
    assert first_attempt["model"] == "claude-opus-5-5" and "asking claude-sonnet-5-5" in first_attempt["outcome"]
    assert second["model"] == "claude-sonnet-5-5" and second["outcome"].startswith("submitted")
    server.script = [fa.submit("x")]
    with pytest.raises(anthropic.BadRequestError, match="another model"):  # what carrying them over would meet
        raw_call(server, model="claude-sonnet-5-5", messages=server.requests[1]["body"]["messages"][:3])


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
        agent(server, monkeypatch).propose(context(worktree))
    assert len(server.requests) == 1  # not retried by the SDK either: it would fail the same way


def test_an_error_in_the_middle_of_a_stream_is_transient(server, worktree, monkeypatch):
    server.script = [fa.submit("x") | {"stream_error": {"type": "overloaded_error", "message": "Overloaded"}}]
    with pytest.raises(TransientAgentError, match="overloaded_error"):
        agent(server, monkeypatch).propose(context(worktree))


@pytest.mark.parametrize(
    ("cut_after", "says"),
    [(0, "AssertionError"), (1, "ended before its message_stop"), (4, "ended before its message_stop")],
)
def test_a_stream_cut_short_or_empty_is_a_transient_failure(server, worktree, monkeypatch, tmp_path, cut_after, says):
    """An empty stream made the SDK assert, a cut one came back as a message without a stop reason: both are
    failed calls (recorded, with what they used) and transient, never a bug that costs an experiment."""
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05") | {"cut_after": cut_after}]
    calls, path = [], tmp_path / "conv.json"
    with pytest.raises(TransientAgentError, match=says):
        agent(server, monkeypatch).propose(context(worktree, calls, conversation_path=path))
    kept = json.loads(path.read_text())["attempts"][0]["calls"][0]
    assert calls[0]["status"] == "error" and calls[0]["request_id"] == kept["request_id"] == "req_fake_0001"
    assert calls[0]["thinking"] == kept["thinking"] == json.dumps({"type": "between_tools"})
    if cut_after:  # message_start came: its id and its input usage are on record, and priced
        assert calls[0]["response_id"] == "msg_0001" and calls[0]["cost_usd"] > 0 and calls[0]["cache_write_tokens"] > 0


def test_a_connection_dropped_before_any_response_is_tried_again_at_once(server, worktree, monkeypatch):
    server.script = [{"drop": True}, fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), {"drop": True}]
    server.script += [{"drop": True}]
    calls = []
    with pytest.raises(TransientAgentError, match="APIConnectionError"):  # twice in a row: the daemon backs off
        agent(server, monkeypatch).propose(context(worktree, calls))
    assert [c["status"] for c in calls] == ["error", "ok", "error", "error"] and len(server.requests) == 4
    assert all(c["error"].startswith("APIConnectionError") for c in calls if c["status"] == "error")


def calls_sent(calls: list[dict]) -> list[dict]:
    return [{k: c[k] for k in ("request_id", "response_id", "thinking", "effort")} for c in calls]


def test_every_call_record_keeps_the_ids_and_the_thinking_sent(server, worktree, monkeypatch, tmp_path):
    server.script = [fa.edit(TRAIN, "MATRIX_LR = 0.04", "MATRIX_LR = 0.05"), fa.submit("x")]
    path, calls = tmp_path / "conv.json", []
    agent(server, monkeypatch, model="claude-opus-5-5").propose(context(worktree, calls, conversation_path=path))
    kept = json.loads(path.read_text())["attempts"][0]["calls"]
    assert [{k: c[k] for k in ("request_id", "response_id", "thinking", "effort")} for c in kept] == calls_sent(calls)
    assert [(c["request_id"], c["response_id"], c["effort"]) for c in kept] == [
        ("req_fake_0001", "msg_0001", "low"),
        ("req_fake_0002", "msg_0002", "low"),
    ]
    assert all(json.loads(c["thinking"]) == {"type": "adaptive", "display": "summarized"} for c in kept)
    shown = conversation.render(json.loads(path.read_text()))
    assert "req_fake_0002" in shown and "effort low" in shown


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "120"}, 120),
        ({"retry-after-ms": "10"}, 0.01),
        ({"retry-after": "86400"}, 600),  # a day: capped, the next try asks again
        ({"retry-after": "Thu, 01 Jan 2099 00:00:00 GMT"}, 600),  # an HTTP date, far off
        ({}, None),
    ],
)
@pytest.mark.parametrize("status", [429, 503, 529])
def test_the_retry_after_is_the_daemons_to_wait_and_capped(server, worktree, monkeypatch, status, headers, wait):
    server.script = [fa.error(status, "rate_limit_error", "slow down", headers=headers)] * 3
    with pytest.raises(TransientAgentError) as e:
        agent(server, monkeypatch).propose(context(worktree))
    assert e.value.retry_after_s == wait and len(server.requests) == 1  # the SDK slept nowhere


def test_a_model_lookup_that_fails_uses_the_last_answer(server, monkeypatch, tmp_path, capsys):
    from agents import models

    agent(server, monkeypatch, state_dir=tmp_path)  # asks the Models API and keeps its answer
    assert server.lookups == ["claude-sonnet-5-5"] and (tmp_path / models.CACHE_FILE).exists()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    offline = ClaudeAgent(timeout_s=2, state_dir=tmp_path)
    assert offline.cards[0].thinking_types == {"adaptive", "between_tools"}
    assert "could not be reached" in capsys.readouterr().out
    with pytest.raises(models.ModelError, match="holds no earlier answer"):
        ClaudeAgent(model="claude-opus-5-5", timeout_s=2, state_dir=tmp_path)


def test_a_retiring_model_is_announced(server, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from agents import models

    soon = (datetime.now(UTC) + timedelta(days=12)).isoformat()
    server.retire("claude-opus-5", soon)
    warned = agent(server, monkeypatch, model="claude-opus-5").warnings()
    assert len(warned) == 1 and "retires on" in warned[0] and "--model" in warned[0]
    assert agent(server, monkeypatch).warnings() == []  # Sonnet 5.5: active, no retirement scheduled
    assert "deprecated" in agent(server, monkeypatch, model="claude-opus-4-5").warnings()[0]  # 2027-01-22
    server.retire("claude-opus-5", soon, lifecycle="retired")
    with pytest.raises(models.ModelError, match="retired"):
        agent(server, monkeypatch, model="claude-opus-5")


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
    for model in fa.CURRENT:
        share, dollars = campaign_cost(now, model, 100)
        old_share, old_dollars = campaign_cost(before, model, 100)
        lines.append(
            f"{model}: cached share {share:.0%} (5-minute cache {old_share:.0%}); input $ per 100 proposals "
            f"{dollars:.2f} (5-minute cache {old_dollars:.2f})"
        )
        assert share >= 0.70 and dollars < 0.6 * old_dollars
    print("\n" + "\n".join(lines))
    assert sum(c["cache_write_1h_tokens"] for c in now) > 0 and sum(c["cache_write_1h_tokens"] for c in before) == 0


@pytest.mark.parametrize("model", fa.CURRENT)
def test_usage_splits_cache_writes_by_lifetime_and_each_model_prices_them(server, worktree, monkeypatch, model):
    """Every call priced to the cent by the documented rates of its own model (the fake's table, not arx's)."""
    server.script = proposal_script(0)
    calls = []
    agent(server, monkeypatch, model=model).propose(context(worktree, calls, expected_gap_s=600))
    first = calls[0]
    assert first["cache_write_1h_tokens"] > 1000 and first["cache_write_5m_tokens"] > 0
    assert first["cache_write_tokens"] == first["cache_write_1h_tokens"] + first["cache_write_5m_tokens"]
    assert sum(c["cache_read_tokens"] for c in calls[1:]) > 0
    for call, usage in zip(calls, server.usages, strict=True):
        assert call["cost_usd"] == pytest.approx(fa.cost(model, usage), abs=1e-9)


def test_a_prefix_shorter_than_the_models_minimum_is_not_cached(server):
    """About 2,000 tokens: cacheable on Sonnet 5.5 (512 minimum), not on Haiku 4.5 (4,096)."""
    system = [{"type": "text", "text": "x " * 4000, "cache_control": {"type": "ephemeral"}}]
    server.script = [fa.submit("x")] * 2
    assert raw_call(server, model="claude-sonnet-5-5", system=system).usage.cache_creation_input_tokens > 1500
    assert raw_call(server, model="claude-haiku-4-5", system=system).usage.cache_creation_input_tokens == 0


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
    assert a["outcome"] == "submitted: MATRIX_LR 0.04 -> 0.05" and a["model"] == "claude-sonnet-5-5"
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
