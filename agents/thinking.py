"""How much Claude thinks on each call, in the form each model accepts.

`--thinking-tokens 0` asks for the least thinking the model allows, which differs per family
(the thinking pages of the API docs, read 2026-12-03):
- a model that accepts `{"type": "disabled"}` gets it (Claude 4.x, Opus 5, Sonnet 5, Haiku 5.5);
  on the models that think by default it is refused above some effort (Opus 5 and Haiku 5.5:
  "high or lower"), so a higher --effort needs thinking on;
- Sonnet 5.5 refuses `disabled`; its least is `{"type": "between_tools"}` (no up-front thinking,
  short notes between tool calls), accepted at effort low, medium and high only;
- Opus 5.5 and the Fable models cannot stop thinking: adaptive it is, at the lowest effort.
`--thinking-tokens N` turns thinking on: adaptive where the model takes it (the docs advise it
wherever both modes exist), else `{"type": "enabled", "budget_tokens": N}`.

Which types and efforts a model accepts comes from the Models API (agents/models.py); what the
API does not publish (the effort ceiling with thinking off, whether thinking text is omitted by
default, the default effort) comes from arx's dated table (agents/pricing.py).

Thinking counts toward max_tokens, so max_tokens is the visible answer's room plus an allowance
for thinking: N when given, else one sized by effort for a model that thinks anyway. Without it a
model at high effort could spend all of max_tokens thinking and be cut off before its tool call.
"""

from __future__ import annotations

from dataclasses import dataclass

EFFORTS = ("low", "medium", "high", "xhigh", "max")  # output_config.effort, lowest first, as the SDK types it
MIN_THINKING_TOKENS = 1024  # the API's floor for budget_tokens
ANSWER_TOKENS = 8192  # room for the visible answer: a few edits and the submit call
NOTES_TOKENS = 2048  # between_tools: the short progress notes between tool calls are thinking tokens
# arx's allowance for adaptive thinking nobody sized (thinking that cannot be turned off, or --thinking-tokens 0
# with an effort that needs it): generous, since an allowance too small cuts the tool call off; the cost ceiling
# prices it at the output rate, the bill only counts what was spent
EFFORT_ALLOWANCE = {"low": 4096, "medium": 8192, "high": 16384, "xhigh": 32768, "max": 65536}


class ThinkingError(ValueError):
    """A --thinking-tokens / --effort pair the model refuses; one line that says what to change."""


@dataclass(frozen=True)
class Plan:
    model: str
    thinking: dict | None  # the request's `thinking` field; None: not sent
    effort: str | None  # output_config.effort to send; None: the model's default
    max_tokens: int
    summary: str  # what it means, in words, for start's first line

    def params(self) -> dict:
        out: dict = {"max_tokens": self.max_tokens}
        if self.thinking:
            out["thinking"] = self.thinking
        if self.effort:
            out["output_config"] = {"effort": self.effort}
        return out


def rank(effort: str) -> int:
    return EFFORTS.index(effort)


def plan(card, facts: dict, thinking_tokens: int, effort: str | None, strict_effort: bool = True) -> Plan:
    """The thinking fields for one model. `card` is its ModelCard, `facts` its row in arx's table.
    With strict_effort False (a fallback model) an effort the model lacks is dropped, not refused."""
    model = card.id
    if thinking_tokens < 0 or 0 < thinking_tokens < MIN_THINKING_TOKENS:
        raise ThinkingError(
            f"--thinking-tokens must be 0 (the least thinking the model allows) or at least {MIN_THINKING_TOKENS}, "
            f"got {thinking_tokens}"
        )
    note = ""
    if effort and effort not in card.efforts:
        if strict_effort:
            raise ThinkingError(
                f"--effort {effort} is not available on {model} (its levels: {', '.join(card.efforts) or 'none'})"
            )
        note, effort = f"; --effort {effort} not available, so its default", None
    default = facts.get("default_effort")
    shown = f"effort {effort}" if effort else (f"effort {default} (its default)" if default else "no effort levels")
    omitted = facts.get("display") == "omitted"  # the thinking text comes back empty unless display asks for it
    adaptive = {"type": "adaptive"} | ({"display": "summarized"} if omitted else {})
    cap = card.max_tokens or ANSWER_TOKENS + max(EFFORT_ALLOWANCE.values())

    if thinking_tokens:
        if "adaptive" in card.thinking_types:
            thinking, what = adaptive, f"adaptive thinking up to about {thinking_tokens:,} tokens"
        elif "enabled" in card.thinking_types:
            thinking = {"type": "enabled", "budget_tokens": thinking_tokens}
            what = f"thinking with a budget of {thinking_tokens:,} tokens"
        else:
            raise ThinkingError(f"{model} does not think; use --thinking-tokens 0")
        max_tokens = min(cap, ANSWER_TOKENS + thinking_tokens)
        if thinking["type"] == "enabled" and thinking_tokens >= max_tokens:
            raise ThinkingError(
                f"--thinking-tokens {thinking_tokens} leaves no room for the answer within {model}'s max_tokens "
                f"{cap}; use at most {cap - ANSWER_TOKENS}"
            )
        return Plan(model, thinking, effort, max_tokens, f"{what}, {shown}{note}")

    off = next((t for t in ("disabled", "between_tools") if t in card.thinking_types), None)
    ceiling = facts.get("off_effort_max")
    if off and not (effort and ceiling and rank(effort) > rank(ceiling)):
        allowance = NOTES_TOKENS if off == "between_tools" else 0
        what = (
            "thinking off"
            if off == "disabled"
            else "thinking between_tools (no up-front thinking, short notes between tool calls: the least it allows)"
        )
        return Plan(model, {"type": off}, effort, min(cap, ANSWER_TOKENS + allowance), f"{what}, {shown}{note}")
    if off:  # thinking can be turned off, but not at this effort
        raise ThinkingError(
            f"--effort {effort} needs thinking on {model} (with thinking off it takes at most {ceiling}); "
            f"pass --thinking-tokens {MIN_THINKING_TOKENS} or more, or a lower --effort"
        )
    if "adaptive" not in card.thinking_types:
        raise ThinkingError(f"{model} accepts no thinking setting arx knows ({', '.join(card.thinking_types)})")
    if not effort and card.efforts:
        effort, shown = card.efforts[0], f"effort {card.efforts[0]} (the least it allows)"
    allowance = EFFORT_ALLOWANCE[effort or default or "high"]
    return Plan(
        model,
        adaptive,
        effort,
        min(cap, ANSWER_TOKENS + allowance),
        f"adaptive thinking, which {model} cannot turn off, {shown}{note}",
    )
