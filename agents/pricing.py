"""What arx knows of each Claude model that the Models API does not say: its prices, and three
thinking facts. One dated table, checked against the sources below; everything else about a model
(thinking types, effort levels, max_tokens, retirement) is read from the Models API at `start`.

Prices are USD per million tokens, each rate as the pricing page lists it (cache rates are no
longer a fixed multiple of input: cache reads are 0.1x input on most models, 0.05x on Opus 5.5
and Sonnet 5.5, 0.025x on Fable 5.1 and 5.2). Haiku 5.5 is priced by prompt length: a request whose
prompt (input + cache reads + cache writes) is over 100,000 tokens pays the `long` rates on every
token, output included. Thinking tokens are output tokens.

Thinking facts: `display` is the default of thinking.display ("omitted": thinking text comes back
empty unless the request asks for "summarized", from Opus 4.7 on); `off_effort_max` the highest
effort a request may pair with thinking turned off (`disabled` or `between_tools`), where the
docs set one; `default_effort` the effort a request without one gets.

A model missing here is refused at `start`, so a night of calls is never left unpriced: add it with
ARX_PRICING (a JSON file path or JSON text mapping model -> {input, output, cache_write_5m,
cache_write_1h, cache_read[, display, off_effort_max, default_effort]}).

Sources, read 2026-12-03 through the documentation search (pages stored 2026-09 to 2026-12):
- platform.claude.com/docs/en/about-claude/pricing (model pricing table) and each model's page,
  platform.claude.com/docs/en/models/<model>/overview: Opus 5.5 $4/$20, 5m $5, 1h $8, read $0.20;
  Opus 5 and 4.x $5/$25, read $0.50; Sonnet 5 $2/$10, read $0.20; Sonnet 4.6 $3/$15; Haiku 4.5
  $1/$5; Fable 5.1 $10/$50, read $0.25; Fable 5 $10/$50, read $1; Haiku 5.5 "$0.10 / MTok for
  prompts up to 100,000 tokens, $0.50 / MTok for prompts over 100,000 tokens" (output $0.50/$2.50,
  5m write $0.125/$0.625, 1h $0.20/$1).
- Sonnet 5.5 cache reads $0.10 (0.05x) since 2026-10-07, and Fable 5.2 $8/$40, read $0.20, writes
  $10/$16 (released 2026-11-09): the stored model pages predate them; taken from price lists that
  cite the pricing page (github.com/phuryn/claude-usage v1.5.7, "checked 2026-12-01";
  github.com/kurofune/claudit v1.9.2; github.com/TheKrush/PromptFuel v1.0.23;
  docs.laozhang.ai/en/announcements/claude-fable-5-2-2026-11).
- Thinking facts: platform.claude.com/docs/en/build-with-claude/thinking (display defaults),
  .../effort ("Claude Opus 5.5 and Claude Haiku 5.5 default to medium"), .../models/opus-5/
  migration-guide and .../models/haiku-5-5/migration-guide (disabled "at effort high or lower"),
  .../models/sonnet-5-5/whats-new-sonnet-5-5 (between_tools "at low, medium and high"). Sonnet 5's
  ceiling is not stated; arx assumes Opus 5's (high), the safe side.
- Retired, so not priced: claude-sonnet-4-5 (2026-11-30), claude-opus-4-1, claude-opus-4.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

PRICES_CHECKED = "2026-12-03"
DEFAULT_MODEL = "claude-sonnet-5-5"  # the current Sonnet
RATES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
LONG_PROMPT_TOKENS = 100_000  # Haiku 5.5: a longer prompt pays the `long` rates


def rates(i: float, o: float, w5: float, w1: float, r: float) -> dict:
    return dict(zip(RATES, (i, o, w5, w1, r), strict=True))


OPUS_4 = rates(5, 25, 6.25, 10, 0.50)
FABLE_5_1 = rates(10, 50, 12.5, 20, 0.25)
FABLE_5_2 = rates(8, 40, 10, 16, 0.20)
LATEST = {"display": "omitted"}  # from Opus 4.7 on, thinking text is omitted unless asked for

MODELS: dict[str, dict] = {
    "claude-fable-5-2": FABLE_5_2 | LATEST | {"default_effort": "high"},
    "claude-mythos-5-2": FABLE_5_2 | LATEST | {"default_effort": "high"},
    "claude-fable-5-1": FABLE_5_1 | LATEST | {"default_effort": "high"},
    "claude-mythos-5-1": FABLE_5_1 | LATEST | {"default_effort": "high"},
    "claude-fable-5": rates(10, 50, 12.5, 20, 1.0) | LATEST | {"default_effort": "high"},
    "claude-opus-5-5": rates(4, 20, 5, 8, 0.20) | LATEST | {"default_effort": "medium"},
    "claude-opus-5": OPUS_4 | LATEST | {"default_effort": "high", "off_effort_max": "high"},
    "claude-opus-4-8": OPUS_4 | LATEST | {"default_effort": "high"},
    "claude-opus-4-7": OPUS_4 | LATEST | {"default_effort": "high"},
    "claude-opus-4-6": OPUS_4 | {"display": "summarized", "default_effort": "high"},
    "claude-opus-4-5": OPUS_4 | {"display": "summarized", "default_effort": "high"},
    "claude-sonnet-5-5": rates(2, 10, 2.5, 4, 0.10) | LATEST | {"default_effort": "high", "off_effort_max": "high"},
    "claude-sonnet-5": rates(2, 10, 2.5, 4, 0.20) | LATEST | {"default_effort": "high", "off_effort_max": "high"},
    "claude-sonnet-4-6": rates(3, 15, 3.75, 6, 0.30) | {"display": "summarized", "default_effort": "high"},
    "claude-haiku-5-5": rates(0.10, 0.50, 0.125, 0.20, 0.01)
    | {"long": rates(0.50, 2.50, 0.625, 1.0, 0.05)}
    | LATEST
    | {"default_effort": "medium", "off_effort_max": "high"},
    "claude-haiku-4-5": rates(1, 5, 1.25, 2, 0.10) | {"display": "summarized"},
}
DATED = re.compile(r"-\d{8}")


def table() -> dict[str, dict]:
    override = os.environ.get("ARX_PRICING")
    if not override:
        return MODELS
    return MODELS | json.loads(Path(override).read_text() if Path(override).is_file() else override)


def facts(model: str) -> dict:
    """The row for `model` (exactly, or as the id plus a snapshot date); a one-line KeyError naming what is missing."""
    for name, entry in table().items():
        if model == name or (model.startswith(name) and DATED.fullmatch(model[len(name) :])):
            missing = [r for r in RATES if not isinstance(entry.get(r), (int, float))]
            if missing:
                raise KeyError(
                    f"ARX_PRICING's entry for {name!r} lacks {', '.join(missing)} (USD per million tokens); give all "
                    f"of {', '.join(RATES)}"
                )
            return entry
    raise KeyError(
        f"no price for model {model!r} in arx's table (checked {PRICES_CHECKED}): give its "
        f'{", ".join(RATES)} in USD per million tokens with ARX_PRICING=\'{{"{model}": {{"input": ..., '
        f'"output": ..., "cache_write_5m": ..., "cache_write_1h": ..., "cache_read": ...}}}}\''
    )


def prompt_rates(model: str, prompt_tokens: float) -> dict:
    """The rates a request with this many prompt tokens pays (Haiku 5.5's long prompts pay more)."""
    p = facts(model)
    return p["long"] if "long" in p and prompt_tokens > LONG_PROMPT_TOKENS else p


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_5m_tokens: int,
    cache_read_tokens: int,
    cache_write_1h_tokens: int = 0,
) -> float:
    p = prompt_rates(model, input_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens)
    return (
        input_tokens * p["input"]
        + output_tokens * p["output"]
        + cache_write_5m_tokens * p["cache_write_5m"]
        + cache_write_1h_tokens * p["cache_write_1h"]
        + cache_read_tokens * p["cache_read"]
    ) / 1e6


def describe(model: str) -> str:
    """Prices in words, for start's first line."""
    p = facts(model)

    def usd(x: float) -> str:
        return f"${x:.2f}" if round(x, 2) == x else f"${x:g}"

    line = (
        f"{usd(p['input'])}/{usd(p['output'])} per MTok in/out, cache read {usd(p['cache_read'])}, write "
        f"{usd(p['cache_write_5m'])} (5m) {usd(p['cache_write_1h'])} (1h)"
    )
    return line + (
        f"; prompts over {LONG_PROMPT_TOKENS:,} tokens {usd(p['long']['input'])}/{usd(p['long']['output'])}"
        if "long" in p
        else ""
    )
