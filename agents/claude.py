"""The Claude agent: one proposal is a short tool-use conversation over the Messages API.

Claude sees the research program, the trainer files as of the campaign's base (a stable prefix
marked for prompt caching), then how the best code differs from the base and the history. It edits
through `str_replace_based_edit_tool` (executed by arx's scoped editor in the worktree) and ends
with `submit_experiment`. Every call's usage and cost goes to the ledger via `ctx.record_call`.
API failures become the exceptions the campaign loop understands: transient ones are retried
with backoff, an invalid key pauses the campaign.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from string import Template

import anthropic

from . import history, pricing
from .base import Abandoned, AgentPaused, CostLimitReached, EditorError, NoEdits, Proposal, ProposalContext, ScopedEditor, TransientAgentError

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
MAX_TOKENS = 8192
CHARS_PER_TOKEN = 3.0  # a conservative estimate, for the cost ceiling only
EDITOR_TOOL = {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
SUBMIT_TOOL = {
    "name": "submit_experiment",
    "description": "Submit the edits you made as one experiment. The daemon then trains, evaluates and decides; this ends your turn.",
    "input_schema": {
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": "what changed, one short line, e.g. 'MATRIX_LR 0.04 -> 0.06'"},
            "hypothesis": {"type": "string", "description": "why it should lower val_bpb"},
        },
        "required": ["description", "hypothesis"],
    },
}
CUT_OFF = "Your reply was cut off by the output token limit before it finished, so its tool calls were not run. Be brief: make one edit, then call submit_experiment."
NUDGE = "Use the tools: edit an editable file with str_replace_based_edit_tool, then call submit_experiment. Do not ask questions; nobody will answer."


def program_prompt(ctx: ProposalContext) -> str:
    hw = ctx.hardware
    hardware = f"{hw.get('backend') or 'unknown'} backend on {hw.get('machine')}, {hw.get('cpu_count')} CPU cores, {hw.get('memory_gb')} GB RAM" + (", optimized BLAS" if hw.get("blas") else "")
    return Template((PROMPTS / f"{ctx.program}.md").read_text()).substitute(
        budget_s=f"{ctx.budget_s:g}",
        editable=", ".join(ctx.editable),
        readable=", ".join(ctx.readable),
        hardware=hardware,
        tok_per_sec=f"{hw.get('tok_per_sec') or 0:,.0f}",
    )


def files_block(ctx: ProposalContext) -> str:
    parts = ["The trainer files as they were at the start of this campaign:"]
    for path, text in ctx.base_files.items():
        parts.append(f'<file path="{path}" editable="{str(path in ctx.editable).lower()}">\n{text}\n</file>')
    return "\n\n".join(parts)


def task_message(ctx: ProposalContext) -> str:
    parts = [history.render(ctx.history, ctx.best)]
    if ctx.last_failure_tail:
        parts.append(f"Log tail of the most recent failed run:\n```\n{ctx.last_failure_tail}\n```")
    if ctx.best_diff.strip():
        parts.append(f"The current best code differs from the campaign start by this diff (your edits apply to the current code):\n```diff\n{ctx.best_diff}\n```")
    else:
        parts.append("The current best code is the campaign-start code shown above.")
    parts.append(f"Propose experiment #{ctx.seq}: make one focused change, then call submit_experiment.")
    if ctx.retry_note:
        parts.append(ctx.retry_note)
    return "\n\n".join(parts)


def usage_record(model: str, usage, started: float, status: str = "ok", error: str | None = None) -> dict:
    input_tokens = getattr(usage, "input_tokens", 0) or 0
    output_tokens = getattr(usage, "output_tokens", 0) or 0
    write = getattr(usage, "cache_creation_input_tokens", 0) or 0
    read = getattr(usage, "cache_read_input_tokens", 0) or 0
    return {
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_write_tokens": write,
        "cache_read_tokens": read,
        "cost_usd": pricing.cost_usd(model, input_tokens, output_tokens, write, read),
        "latency_s": round(time.time() - started, 3),
        "status": status,
        "error": error,
    }


class ClaudeAgent:
    name = "claude"

    def __init__(self, model: str | None = None, thinking_tokens: int = 0, max_rounds: int = 12, max_tokens: int = MAX_TOKENS, max_retries: int = 2, timeout_s: float = 600, client: anthropic.Anthropic | None = None):
        self.model = model or pricing.DEFAULT_MODEL
        pricing.prices(self.model)  # an unknown model fails now, not after a night of unpriced calls
        self.thinking_tokens = thinking_tokens
        self.max_rounds = max_rounds
        self.max_tokens = max(max_tokens, thinking_tokens + 1024)
        # reads ANTHROPIC_API_KEY and honours ANTHROPIC_BASE_URL
        self.client = client or anthropic.Anthropic(max_retries=max_retries, timeout=timeout_s)

    def propose(self, ctx: ProposalContext) -> Proposal:
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        system = [
            {"type": "text", "text": program_prompt(ctx)},
            {"type": "text", "text": files_block(ctx), "cache_control": {"type": "ephemeral"}},
        ]
        messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": task_message(ctx)}]}]
        spent = 0.0
        for _ in range(self.max_rounds):
            self.check_budget(ctx, system, messages, spent)
            response, cost = self.call(ctx, system, messages)
            spent += cost
            messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in response.content]})
            uses = [b for b in response.content if b.type == "tool_use"]
            if response.stop_reason == "max_tokens":
                results = [{"type": "tool_result", "tool_use_id": b.id, "content": CUT_OFF, "is_error": True} for b in uses]
                messages.append({"role": "user", "content": results or [{"type": "text", "text": CUT_OFF}]})
                continue
            submit = next((b for b in uses if b.name == "submit_experiment"), None)
            results = [self.run_tool(editor, b) for b in uses if b.name != "submit_experiment"]
            if submit is not None:
                if not editor.edited:
                    raise NoEdits("submit_experiment without an edit")
                args = submit.input if isinstance(submit.input, dict) else {}
                return Proposal(description=str(args.get("description") or "(no description)"), hypothesis=str(args.get("hypothesis") or ""))
            messages.append({"role": "user", "content": results or [{"type": "text", "text": NUDGE}]})
            self.mark_cache_point(messages)
        raise Abandoned(f"no submit_experiment within {self.max_rounds} tool rounds")

    def call(self, ctx: ProposalContext, system: list, messages: list) -> tuple:
        """One Messages API call, recorded in the ledger whatever happens."""
        kwargs = {"model": self.model, "max_tokens": self.max_tokens, "system": system, "tools": [EDITOR_TOOL, SUBMIT_TOOL], "messages": messages}
        if self.thinking_tokens:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_tokens}
        started = time.time()
        try:
            response = self.client.messages.create(**kwargs)
        except anthropic.APIStatusError as e:
            ctx.record_call(usage_record(self.model, None, started, "error", f"HTTP {e.status_code}: {e.message}"[:500]))
            if e.status_code in (401, 403):
                raise AgentPaused(f"the Anthropic API refused the key (HTTP {e.status_code}); set a valid ANTHROPIC_API_KEY and start the campaign again") from e
            if e.status_code == 404:
                raise AgentPaused(f"model {self.model!r} was not found (HTTP 404); choose another with --model and start again") from e
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                raise TransientAgentError(f"Anthropic API HTTP {e.status_code}") from e
            raise Abandoned(f"the API refused the request (HTTP {e.status_code}): {e.message}"[:300]) from e
        except (anthropic.APITimeoutError, anthropic.APIConnectionError) as e:
            ctx.record_call(usage_record(self.model, None, started, "error", type(e).__name__))
            raise TransientAgentError(f"Anthropic API unreachable ({type(e).__name__})") from e
        record = usage_record(self.model, response.usage, started)
        ctx.record_call(record)
        return response, record["cost_usd"]

    def check_budget(self, ctx: ProposalContext, system: list, messages: list, spent: float) -> None:
        """Refuse a call that could take spending past --max-cost-usd (priced as if nothing were cached)."""
        if ctx.cost_left_usd is None:
            return
        p = pricing.prices(self.model)
        prompt_tokens = len(json.dumps([system, messages, SUBMIT_TOOL])) / CHARS_PER_TOKEN
        worst = (prompt_tokens * p["cache_write"] + self.max_tokens * p["output"]) / 1e6
        if spent + worst > ctx.cost_left_usd:
            raise CostLimitReached(f"the next call could cost ${worst:.3f}, more than the ${ctx.cost_left_usd - spent:.3f} left under --max-cost-usd")

    @staticmethod
    def mark_cache_point(messages: list) -> None:
        """Cache the conversation so far: the next round reads it from cache (one moving breakpoint)."""
        for message in messages:
            for block in message["content"]:
                if isinstance(block, dict):
                    block.pop("cache_control", None)
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}

    @staticmethod
    def run_tool(editor: ScopedEditor, block) -> dict:
        """Execute one editor command; refusals and mistakes go back as error tool_results."""
        args = block.input if isinstance(block.input, dict) else {}
        try:
            command = args.get("command")
            path = args.get("path", "")
            if block.name != EDITOR_TOOL["name"]:
                raise EditorError(f"unknown tool {block.name!r}")
            if command == "view":
                out = editor.view(path, args.get("view_range"))
            elif command == "str_replace":
                out = editor.str_replace(path, args["old_str"], args.get("new_str", ""))
            elif command == "create":
                out = editor.create(path, args["file_text"])
            elif command == "insert":
                out = editor.insert(path, int(args["insert_line"]), args.get("insert_text", args.get("new_str", "")))
            else:
                raise EditorError(f"unknown command {command!r}; use view, str_replace, create or insert")
            return {"type": "tool_result", "tool_use_id": block.id, "content": out}
        except (EditorError, KeyError, ValueError, TypeError, OSError) as e:
            message = str(e) if isinstance(e, EditorError) else f"malformed input: {type(e).__name__}: {e}"
            return {"type": "tool_result", "tool_use_id": block.id, "content": message, "is_error": True}
