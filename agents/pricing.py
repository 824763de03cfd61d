"""Dollar prices of Claude models, in one place. Override with ARX_PRICING (a JSON file path or
JSON text mapping model -> {input, output, cache_write, cache_read}, USD per million tokens).

Sources: the Anthropic pricing page (platform.claude.com/docs/en/about-claude/pricing) as stored
on 2026-11-26, except claude-sonnet-5, taken from a secondary listing. Cache writes are the
5-minute rate. Check them before trusting a cost ceiling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_MODEL = "claude-sonnet-4-6"

PRICES: dict[str, dict[str, float]] = {
    "claude-opus-5": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.50},
    "claude-opus-4-8": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.50},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.50},
    "claude-opus-4-6": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.50},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0, "cache_write": 6.25, "cache_read": 0.50},
    "claude-sonnet-5": {"input": 2.0, "output": 10.0, "cache_write": 2.50, "cache_read": 0.20},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_read": 0.10},
}


def prices(model: str) -> dict[str, float]:
    """Prices of `model` (a dated id like claude-sonnet-4-5-20250929 matches its family)."""
    table = dict(PRICES)
    override = os.environ.get("ARX_PRICING")
    if override:
        table |= json.loads(Path(override).read_text() if Path(override).is_file() else override)
    for name in sorted(table, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return table[name]
    raise KeyError(f"no price for model {model!r}; add it with ARX_PRICING='{{\"{model}\": {{\"input\": ..., \"output\": ..., \"cache_write\": ..., \"cache_read\": ...}}}}'")


def cost_usd(model: str, input_tokens: int, output_tokens: int, cache_write_tokens: int, cache_read_tokens: int) -> float:
    p = prices(model)
    return (input_tokens * p["input"] + output_tokens * p["output"] + cache_write_tokens * p["cache_write"] + cache_read_tokens * p["cache_read"]) / 1e6
