"""What arx knows about each Claude model, in one table: dollar prices and how it takes thinking.

Prices are USD per million tokens. Only `input` and `output` are per model; the cache rates are
fixed multiples of the input price, as the pricing page states them: a 5-minute cache write costs
1.25x input, a 1-hour write 2x, a cache read 0.1x. Override or add models with ARX_PRICING (a JSON
file path or JSON text mapping model -> {input, output[, cache_write, cache_write_1h, cache_read,
thinking, efforts]}); a model not in the table is refused, so a night of calls is never left unpriced.

Sources: the Anthropic pricing page (platform.claude.com/docs/en/about-claude/pricing) as stored on
2026-11-26, except claude-sonnet-5, taken from a secondary listing. The thinking modes follow the
extended- and adaptive-thinking pages: from Claude Opus 4.7 on, `{"type": "enabled",
"budget_tokens": N}` is rejected with HTTP 400 and only adaptive thinking is accepted; the 4.6
models accept both (budget tokens deprecated); older ones take budget tokens only. The effort
levels follow the effort page (platform.claude.com/docs/en/build-with-claude/effort). Check them
before trusting a cost ceiling.

Model ids match exactly, or as the id plus a snapshot date (`claude-sonnet-4-5-20250929`): a newer
model whose id merely starts with a known one (`claude-opus-5-5`) is not priced as that one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

DEFAULT_MODEL = "claude-sonnet-4-6"
CACHE_WRITE_5M, CACHE_WRITE_1H, CACHE_READ = 1.25, 2.0, 0.1  # multiples of the input price
MIN_THINKING_TOKENS = 1024  # the API's floor for budget_tokens
EFFORTS = ("low", "medium", "high", "xhigh", "max")  # output_config.effort, as the SDK types it

# thinking: "adaptive" = only {"type": "adaptive"} (budget_tokens gets HTTP 400);
#           "budget" = {"type": "enabled", "budget_tokens": N} still accepted (deprecated on 4.6).
# efforts: the output_config.effort levels the model takes (the effort page: max from 4.6, xhigh from 4.7).
MODELS: dict[str, dict] = {
    "claude-opus-5": {"input": 5.0, "output": 25.0, "thinking": "adaptive", "efforts": EFFORTS},
    "claude-opus-4-8": {"input": 5.0, "output": 25.0, "thinking": "adaptive", "efforts": EFFORTS},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0, "thinking": "adaptive", "efforts": EFFORTS},
    "claude-opus-4-6": {
        "input": 5.0,
        "output": 25.0,
        "thinking": "budget",
        "efforts": ("low", "medium", "high", "max"),
    },
    "claude-opus-4-5": {"input": 5.0, "output": 25.0, "thinking": "budget", "efforts": ("low", "medium", "high")},
    "claude-sonnet-5": {"input": 2.0, "output": 10.0, "thinking": "adaptive", "efforts": EFFORTS},
    "claude-sonnet-4-6": {
        "input": 3.0,
        "output": 15.0,
        "thinking": "budget",
        "efforts": ("low", "medium", "high", "max"),
    },
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "thinking": "budget", "efforts": ()},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "thinking": "budget", "efforts": ()},
}
DATED = re.compile(r"-\d{8}")


def facts(model: str) -> dict:
    """Everything known of `model`: input, output, cache_write (5m), cache_write_1h, cache_read, thinking, efforts."""
    table = dict(MODELS)
    override = os.environ.get("ARX_PRICING")
    if override:
        table |= json.loads(Path(override).read_text() if Path(override).is_file() else override)
    for name, entry in table.items():
        if model == name or (model.startswith(name) and DATED.fullmatch(model[len(name) :])):
            base = entry["input"]
            return {
                "cache_write": base * CACHE_WRITE_5M,
                "cache_write_1h": base * CACHE_WRITE_1H,
                "cache_read": base * CACHE_READ,
                "thinking": "adaptive",
                "efforts": EFFORTS,  # what new models take; a table entry says otherwise
            } | entry
    raise KeyError(
        f'no price for model {model!r}; add it with ARX_PRICING=\'{{"{model}": {{"input": ..., "output": '
        f"...}}}}' (USD per million tokens)"
    )


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_5m_tokens: int,
    cache_read_tokens: int,
    cache_write_1h_tokens: int = 0,
) -> float:
    p = facts(model)
    return (
        input_tokens * p["input"]
        + output_tokens * p["output"]
        + cache_write_5m_tokens * p["cache_write"]
        + cache_write_1h_tokens * p["cache_write_1h"]
        + cache_read_tokens * p["cache_read"]
    ) / 1e6
