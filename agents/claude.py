"""The Claude agent: one proposal is a short tool-use conversation over the Messages API.

Claude sees the research program, the trainer files as of the campaign's base (a stable prefix
marked for prompt caching), then how the best code differs from the base and the history. It edits
through `str_replace_based_edit_tool` (executed by arx's scoped editor in the worktree) and ends
with `submit_experiment`. Every call's usage and cost goes to the ledger via `ctx.record_call`, and
the whole conversation to a JSON document (agents/conversation.py).

What the real API demands, and how it is met here:
- The model: read from the Models API at `start` (agents/models.py), priced from arx's dated table
  (agents/pricing.py); thinking in the form each family accepts (agents/thinking.py). Requests
  carry no sampling parameters, no forced tool choice and no prefill: the newest models refuse all
  three. Thinking blocks go back exactly as they came (empty text included): the 5.5 and Fable
  models bind them to the model and to everything before them, so the conversation is append-only
  (only cache markers move) and a fallback model starts a conversation of its own.
- Responses are streamed, so a long thinking call never meets the non-streaming timeout.
- Every stop reason: `refusal` is retried once on the fallback model, else raised as `Refused`;
  `pause_turn` sends the content back to continue; `max_tokens` tells the model its tool calls
  were not run; a full context window ends the proposal.
- Failures: the SDK never retries or sleeps (max_retries=0): a wait inside it could not be
  interrupted by `stop` (a connection that broke before any response is sent again once, at once).
  Overload, rate limits, server errors, timeouts, a stream cut short or
  empty, and any other exception from the SDK or the stream become `TransientAgentError` with the
  API's retry-after (capped) as a floor: the campaign backs off interruptibly and asks again, and
  no experiment is spent. A bad key, a billing or spend limit, or a request the API rejects as
  invalid pauses the campaign with the API's message: retrying them would only spin.
- Caching: the stable prefix is cached for 1 hour when proposals are further apart than the
  5-minute lifetime can bridge (the usual case: a training budget plus evaluation), else 5 minutes.
"""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path
from string import Template

import anthropic

from . import history, models, pricing, thinking
from .base import (
    Abandoned,
    AgentPaused,
    CostLimitReached,
    EditorError,
    NoEdits,
    Proposal,
    ProposalContext,
    Refused,
    ScopedEditor,
    TransientAgentError,
)
from .conversation import Conversation

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
CHARS_PER_TOKEN = 3.0  # a conservative estimate, for the cost ceiling only
CACHE_1H_ABOVE_S = 240.0  # proposals further apart than this: a 5-minute entry would be cold at the next one
RETRY_AFTER_MAX_S = 600.0  # a longer retry-after (or a broken header) is capped: the next try will ask again
SPEND_LIMIT_CODES = (
    "enforced_spend_limit_reached",
    "contract_spend_limit_reached",
)  # error.details.error_code of spend-cap 429s
SPEND_LIMIT_MESSAGE = (
    "You have reached your specified"  # a spend limit set in the Console: HTTP 400, "... API usage limits"
)
EDITOR_TOOL = {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}
SUBMIT_TOOL = {
    "name": "submit_experiment",
    "description": (
        "Submit the edits you made as one experiment. The daemon then trains, evaluates and decides; "
        "this ends your turn."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "description": {
                "type": "string",
                "description": "what changed, one short line, e.g. 'MATRIX_LR 0.04 -> 0.06'",
            },
            "hypothesis": {"type": "string", "description": "why it should lower val_bpb"},
        },
        "required": ["description", "hypothesis"],
    },
}
CUT_OFF = (
    "Your reply was cut off by the output token limit before it finished, so its tool calls were not run. Be brief: "
    "make one edit, then call submit_experiment."
)
NUDGE = (
    "Use the tools: edit an editable file with str_replace_based_edit_tool, then call submit_experiment. Do not ask "
    "questions; nobody will answer."
)


def program_prompt(ctx: ProposalContext) -> str:
    """The research program; nothing in it changes during a campaign, so it stays cached."""
    hw = ctx.hardware
    hardware = (
        f"{hw.get('backend') or 'unknown'} backend on {hw.get('machine')}, {hw.get('cpu_count')} CPU cores, "
        f"{hw.get('memory_gb')} GB RAM" + (", optimized BLAS" if hw.get("blas") else "")
    )
    return Template((PROMPTS / f"{ctx.program}.md").read_text()).substitute(
        budget_s=f"{ctx.budget_s:g}",
        editable=", ".join(ctx.editable),
        readable=", ".join(ctx.readable),
        hardware=hardware,
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
        parts.append(
            "The current best code differs from the campaign start by this diff (your edits apply to the "
            f"current code):\n```diff\n{ctx.best_diff}\n```"
        )
    else:
        parts.append("The current best code is the campaign-start code shown above.")
    parts.append(f"Propose experiment #{ctx.seq}: make one focused change, then call submit_experiment.")
    if ctx.retry_note:
        parts.append(ctx.retry_note)
    return "\n\n".join(parts)


def cache_ttl(expected_gap_s: float | None) -> str:
    """The lifetime of the stable prefix's cache entry. A 1-hour write costs 2x input instead of
    1.25x, and pays for itself from the first proposal that would otherwise find the entry expired."""
    return "1h" if expected_gap_s is not None and expected_gap_s > CACHE_1H_ABOVE_S else "5m"


def usage_record(
    model: str,
    usage,
    started: float,
    status: str = "ok",
    error: str | None = None,
    stop_reason: str | None = None,
    request_id: str | None = None,
    response_id: str | None = None,
    thinking: str | None = None,
    effort: str | None = None,
) -> dict:
    """One llm_call row: cache writes split by lifetime (a 1-hour write costs more), the ids to quote to
    Anthropic, and the thinking (JSON) and effort actually sent."""
    input_tokens = getattr(usage, "input_tokens", 0) or 0
    output_tokens = getattr(usage, "output_tokens", 0) or 0
    write = getattr(usage, "cache_creation_input_tokens", 0) or 0
    read = getattr(usage, "cache_read_input_tokens", 0) or 0
    split = getattr(usage, "cache_creation", None)
    write_1h = (getattr(split, "ephemeral_1h_input_tokens", 0) or 0) if split else 0
    write_5m = (getattr(split, "ephemeral_5m_input_tokens", 0) or 0) if split else write
    return {
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_write_tokens": write,
        "cache_write_5m_tokens": write_5m,
        "cache_write_1h_tokens": write_1h,
        "cache_read_tokens": read,
        "cost_usd": pricing.cost_usd(model, input_tokens, output_tokens, write_5m, read, write_1h),
        "latency_s": round(time.time() - started, 3),
        "status": status,
        "stop_reason": stop_reason,
        "error": error,
        "request_id": request_id,
        "response_id": response_id,
        "thinking": thinking,
        "effort": effort,
    }


def error_body(e: anthropic.APIStatusError) -> dict:
    return (e.body.get("error") or {}) if isinstance(e.body, dict) else {}


def api_message(e: anthropic.APIStatusError) -> str:
    return str(error_body(e).get("message") or e.message)


def is_spend_limit(e: anthropic.APIStatusError) -> bool:
    """The monthly spend cap (429, fails until access resumes) or a spend limit set in the Console (400)."""
    details = error_body(e).get("details") or {}
    return (isinstance(details, dict) and details.get("error_code") in SPEND_LIMIT_CODES) or api_message(e).startswith(
        SPEND_LIMIT_MESSAGE
    )


def classify(e: anthropic.APIStatusError, model: str) -> Exception:
    """The verdict on an HTTP error: transient (back off and retry) or a pause that says what to do."""
    code, message = e.status_code, api_message(e)[:400]
    if code < 400:  # an error event in the middle of a streamed 200 (overloaded, a server error)
        return TransientAgentError(f"Anthropic API error mid-stream ({error_body(e).get('type')}): {message}"[:300])
    if code in (401, 403):
        return AgentPaused(
            f"the Anthropic API refused the key (HTTP {code}: {message}); set a valid ANTHROPIC_API_KEY and "
            "start the campaign again"
        )
    if code == 404:
        return AgentPaused(f"model {model!r} was not found (HTTP 404); choose another with --model and start again")
    if code == 402:
        return AgentPaused(
            f"billing error (HTTP 402: {message}); add credit in the Claude Console and start the campaign again"
        )
    if is_spend_limit(e):
        return AgentPaused(
            f"API spend limit reached (HTTP {code}: {message}); start the campaign again when access resumes or "
            "the limit is raised"
        )
    if code in (408, 409, 429) or code >= 500:
        return TransientAgentError(
            f"Anthropic API HTTP {code}: {message}"[:300], retry_after_s=retry_after(e.response.headers)
        )
    return AgentPaused(
        f"the API rejected the request (HTTP {code}: {message}); change the settings it names and start again"
    )


def retry_after(headers) -> float | None:
    """The API's retry-after (milliseconds, seconds or an HTTP date), capped at RETRY_AFTER_MAX_S."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(RETRY_AFTER_MAX_S, max(0.0, float(headers.get(name)) * scale))
        except (TypeError, ValueError):
            pass
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after"))
    except (TypeError, ValueError, IndexError):
        return None
    return min(RETRY_AFTER_MAX_S, max(0.0, when.timestamp() - time.time()))


class Reconnect(Exception):
    """The connection broke before any response: the request is sent once more at once."""


class FallBack(Exception):
    """The model refused and a fallback model is set: the proposal starts again there."""


class ClaudeAgent:
    name = "claude"
    keeps_conversations = True  # writes ctx.conversation_path

    def __init__(
        self,
        model: str | None = None,
        thinking_tokens: int = 0,
        effort: str | None = None,
        fallback_model: str | None = None,
        max_rounds: int = 12,
        timeout_s: float = 600,
        client: anthropic.Anthropic | None = None,
        state_dir: Path | None = None,
    ):
        """The models are looked up in the Models API now (its answer kept in `state_dir`): an
        unknown, retired or unpriced model, or a thinking/effort pair it refuses, fails here rather
        than after a night of failed calls."""
        # reads ANTHROPIC_API_KEY and honours ANTHROPIC_BASE_URL; never retries, so never sleeps (see above)
        self.client = client or anthropic.Anthropic(max_retries=0, timeout=timeout_s)
        names = [n for n in (model or pricing.DEFAULT_MODEL, fallback_model) if n]
        cards = models.discover(names, state_dir, self.client)
        self.cards = list({cards[n].id: cards[n] for n in names}.values())  # a fallback that is the model is none
        for card in self.cards:
            pricing.facts(card.id)  # an unpriced model fails now
        self.plans = {
            card.id: thinking.plan(card, pricing.facts(card.id), thinking_tokens, effort, strict_effort=i == 0)
            for i, card in enumerate(self.cards)
        }
        self.model = self.cards[0].id
        self.fallback_model = self.cards[1].id if len(self.cards) > 1 else None
        self.max_rounds = max_rounds

    def describe(self) -> str:
        """start's first line: the model, what --thinking-tokens and --effort mean on it, its prices."""
        plan = self.plans[self.model]
        line = f"claude: {self.model}, {plan.summary}, max_tokens {plan.max_tokens:,}; {pricing.describe(self.model)}"
        if self.fallback_model:
            line += f"; on refusal {self.fallback_model} ({self.plans[self.fallback_model].summary})"
        return line

    def warnings(self) -> list[str]:
        return [w for card in self.cards if (w := card.retirement_warning())]

    def propose(self, ctx: ProposalContext) -> Proposal:
        ttl = cache_ttl(ctx.expected_gap_s)
        system = [
            {"type": "text", "text": program_prompt(ctx)},
            {"type": "text", "text": files_block(ctx), "cache_control": {"type": "ephemeral", "ttl": ttl}},
        ]
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        before = {path: editor.read(path) for path in ctx.editable}
        try:
            return self.attempt(ctx, editor, system, self.model)
        except FallBack:
            # the fallback model starts a conversation of its own: another model's thinking blocks would be
            # refused, and its edits are undone so the new conversation matches the files it sees
            for path, text in before.items():
                (ctx.worktree / path).write_text(text)
            editor.edited.clear()
            return self.attempt(ctx, editor, system, self.fallback_model)

    def attempt(self, ctx: ProposalContext, editor: ScopedEditor, system: list, model: str) -> Proposal:
        """One conversation with one model, kept as one attempt in the run's conversation document."""
        messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": task_message(ctx)}]}]
        self.mark_cache_point(messages)  # the task is written once and read by the proposal's later rounds
        plan = self.plans[model]
        log = Conversation(
            ctx.conversation_path,
            messages,
            seq=ctx.seq,
            model=model,
            fallback_model=self.fallback_model if model == self.model else None,
            max_tokens=plan.max_tokens,
            thinking=json.dumps(plan.thinking) if plan.thinking else None,
            effort=plan.effort,
            cache_ttl=system[-1]["cache_control"]["ttl"],
            system=system,
            tools=[EDITOR_TOOL, SUBMIT_TOOL],
        )
        outcome = "interrupted"
        try:
            proposal = self.converse(ctx, editor, system, messages, log, model)
            outcome = f"submitted: {proposal.description}"
            return proposal
        except FallBack as e:
            outcome = f"{e}; asking {self.fallback_model} in a conversation of its own"
            raise
        except Exception as e:
            outcome = f"{type(e).__name__}: {e}"
            raise
        finally:
            log.end(outcome)

    def converse(
        self, ctx: ProposalContext, editor: ScopedEditor, system: list, messages: list, log: Conversation, model: str
    ) -> Proposal:
        for _ in range(self.max_rounds):
            self.check_budget(ctx, model, system, messages)
            response, cost = self.call(ctx, log, model, system, messages)
            if ctx.cost_left_usd is not None:
                ctx.cost_left_usd -= cost  # what is left for this proposal's next call, on either model
            stop = response.stop_reason
            if stop == "refusal":
                details = response.stop_details
                why = (
                    f"{model} refused ({getattr(details, 'category', None) or 'no category'}): "
                    f"{getattr(details, 'explanation', None) or 'no explanation'}"
                )
                if self.fallback_model and model != self.fallback_model:
                    raise FallBack(why)  # the refused turn is never sent back
                raise Refused(why, getattr(details, "category", None))
            if stop == "model_context_window_exceeded":
                raise Abandoned("the conversation filled the model's context window before submit_experiment")
            content = [block.model_dump(exclude_none=True) for block in response.content]
            content = [
                b for b in content if b["type"] != "thinking" or b.get("signature")
            ]  # a cut-off thought has no signature; an omitted one (empty text) has one and goes back as it is
            if content and messages[-1]["role"] == "assistant":
                messages[-1]["content"].extend(content)  # the rest of a paused turn
            elif content:
                messages.append({"role": "assistant", "content": content})
            if stop == "pause_turn":
                continue  # the API paused a long turn: sending its content back lets it continue
            uses = [b for b in response.content if b.type == "tool_use"]
            if stop == "max_tokens":
                add_user(
                    messages,
                    [{"type": "tool_result", "tool_use_id": b.id, "content": CUT_OFF, "is_error": True} for b in uses]
                    or [{"type": "text", "text": CUT_OFF}],
                )
                self.mark_cache_point(messages)
                continue
            submit = next((b for b in uses if b.name == "submit_experiment"), None)
            results = [self.run_tool(editor, b) for b in uses if b.name != "submit_experiment"]
            if submit is not None:
                if not editor.edited:
                    raise NoEdits("submit_experiment without an edit")
                args = submit.input if isinstance(submit.input, dict) else {}
                return Proposal(
                    description=str(args.get("description") or "(no description)"),
                    hypothesis=str(args.get("hypothesis") or ""),
                )
            add_user(messages, results or [{"type": "text", "text": NUDGE}])
            self.mark_cache_point(messages)
        raise Abandoned(f"no submit_experiment within {self.max_rounds} tool rounds")

    def call(self, ctx: ProposalContext, log: Conversation, model: str, system: list, messages: list) -> tuple:
        """One streamed Messages API call. A connection that broke before any response came (a pooled
        one the other end had closed) is tried once more at once, with no sleep, as the SDK would have."""
        try:
            return self.call_once(ctx, log, model, system, messages, reconnect=True)
        except Reconnect:
            return self.call_once(ctx, log, model, system, messages, reconnect=False)

    def call_once(
        self, ctx: ProposalContext, log: Conversation, model: str, system: list, messages: list, reconnect: bool
    ) -> tuple:
        """One request, recorded in the ledger and the conversation whatever happens. Any failure of the
        SDK or the stream is a TransientAgentError (or a pause), never anything else."""
        plan = self.plans[model]
        kwargs = {
            "model": model,
            "system": system,
            "tools": [EDITOR_TOOL, SUBMIT_TOOL],
            "messages": messages,
        } | plan.params()
        sent = {"thinking": json.dumps(plan.thinking) if plan.thinking else None, "effort": plan.effort}
        started, stream = time.time(), None

        def record(usage=None, status="ok", error=None, stop=None, **ids) -> dict:
            row = usage_record(model, usage, started, status, error, stop, **sent, **ids)
            ctx.record_call(row)
            return row

        try:
            with self.client.messages.stream(**kwargs) as stream:
                for _ in stream:
                    pass
                response = stream.get_final_message()
        except anthropic.APIStatusError as e:
            log.call(record(None, "error", f"HTTP {e.status_code}: {api_message(e)}"[:500], request_id=e.request_id))
            raise classify(e, model) from e
        except Exception as e:  # noqa: BLE001 - a timeout, a dropped connection, an empty or garbled stream: all transient
            partial = snapshot(stream)
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            log.call(
                record(
                    getattr(partial, "usage", None),
                    "error",
                    why[:500],
                    request_id=request_id(stream),
                    response_id=getattr(partial, "id", None),
                )
            )
            if reconnect and stream is None and type(e) is anthropic.APIConnectionError:  # not a timeout
                raise Reconnect from e
            raise TransientAgentError(f"Anthropic API call failed ({why})"[:300]) from e
        if response.stop_reason is None:  # the stream ended after message_start but before message_stop
            log.call(
                record(
                    response.usage,
                    "error",
                    "the stream ended before message_stop",
                    None,
                    request_id=request_id(stream),
                    response_id=response.id,
                )
            )
            raise TransientAgentError("Anthropic API stream ended before its message_stop event")
        row = record(response.usage, stop=response.stop_reason, request_id=request_id(stream), response_id=response.id)
        details = response.stop_details.model_dump(exclude_none=True) if response.stop_details else None
        log.call(row | {"stop_details": details})
        return response, row["cost_usd"]

    def check_budget(self, ctx: ProposalContext, model: str, system: list, messages: list) -> None:
        """Refuse a call that could take spending past --max-cost-usd.

        Priced as if all input were a 1-hour cache write and all of max_tokens were spent, at the
        model's own rates (the long-prompt rates where the prompt could be long enough for them).
        """
        if ctx.cost_left_usd is None:
            return
        prompt_tokens = len(json.dumps([system, messages, EDITOR_TOOL, SUBMIT_TOOL])) / CHARS_PER_TOKEN
        p = pricing.prompt_rates(model, prompt_tokens)
        worst = (prompt_tokens * p["cache_write_1h"] + self.plans[model].max_tokens * p["output"]) / 1e6
        if worst > ctx.cost_left_usd:
            raise CostLimitReached(
                f"the next call could cost ${worst:.3f}, more than the ${ctx.cost_left_usd:.3f} left "
                "under --max-cost-usd"
            )

    @staticmethod
    def mark_cache_point(messages: list) -> None:
        """Cache the conversation so far: the next round reads it from cache (one moving 5-minute
        breakpoint, after the stable prefix's, as the API wants longer lifetimes first)."""
        for message in messages:
            for block in message["content"]:
                if isinstance(block, dict):
                    block.pop("cache_control", None)
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "5m"}

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


def snapshot(stream):
    """What a stream had accumulated before it failed (None before message_start)."""
    try:
        return stream.current_message_snapshot if stream is not None else None
    except Exception:  # noqa: BLE001 - the SDK asserts when there is none
        return None


def request_id(stream) -> str | None:
    try:
        return stream.request_id if stream is not None else None
    except Exception:  # noqa: BLE001 - no response to read it from
        return None


def add_user(messages: list, blocks: list) -> None:
    """Add blocks to the conversation's user side, joining the last user message if the assistant
    had nothing to say (an empty assistant message is rejected by the API)."""
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": "user", "content": blocks})
