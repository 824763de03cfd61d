"""What the Models API says of a model, read at `start` and kept in the state folder.

A model's accepted thinking types, its effort levels, its largest `max_tokens` and its lifecycle
change with each release and are published by the API itself (GET /v1/models/{id}); arx reads
them instead of keeping its own copy, so a new model works the day it ships and a retiring one is
announced before its requests start failing. The answer is cached in `state/models.json`: when the
API cannot be reached at `start`, the last answer is used (and said to be), so a network blip does
not stop a campaign that has run before. Prices are not in the Models API; see agents/pricing.py.

Source: the `ModelInfo` type of the pinned SDK (anthropic 2.14.0, src/anthropic/types/model_info.py
and model_capabilities.py): `capabilities.thinking.types.{adaptive, between_tools, disabled,
enabled}.supported`, `capabilities.effort.{low, medium, high, xhigh, max}.supported`, `max_tokens`,
`lifecycle` (active, deprecated, retired) and `retires_at`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic

from .thinking import EFFORTS

CACHE_FILE = "models.json"
RETIRING_WITHIN = timedelta(days=30)  # warn at `start` when the model retires sooner than this
THINKING_TYPES = ("adaptive", "between_tools", "disabled", "enabled")
LOOKUP_TIMEOUT_S = 30.0


class ModelError(Exception):
    """A model that cannot be used (unknown, retired) or a Models API that cannot be asked; one line, the fix."""


@dataclass(frozen=True)
class ModelCard:
    id: str  # the id the API resolved the name to (an alias resolves to a dated id)
    display_name: str
    lifecycle: str  # active, deprecated, retired
    retires_at: datetime | None
    max_tokens: int | None  # the largest max_tokens the model takes
    thinking: bool  # whether it thinks at all
    thinking_types: frozenset[str]  # the `thinking.type` values a request may send
    efforts: tuple[str, ...]  # the output_config.effort levels it takes, lowest first
    fetched_at: str = ""  # when the Models API said so (UTC, ISO 8601)

    @classmethod
    def from_info(cls, info: dict, fetched_at: str = "") -> ModelCard:
        """From a ModelInfo as JSON; capabilities missing from an old answer count as unsupported."""
        caps = info.get("capabilities") or {}
        thinking = caps.get("thinking") or {}
        types = thinking.get("types") or {}
        effort = caps.get("effort") or {}
        retires = info.get("retires_at")
        return cls(
            id=info["id"],
            display_name=info.get("display_name") or info["id"],
            lifecycle=info.get("lifecycle") or "active",
            retires_at=datetime.fromisoformat(retires.replace("Z", "+00:00")) if retires else None,
            max_tokens=info.get("max_tokens"),
            thinking=bool(thinking.get("supported")),
            thinking_types=frozenset(t for t in THINKING_TYPES if (types.get(t) or {}).get("supported")),
            efforts=tuple(e for e in EFFORTS if effort.get("supported") and (effort.get(e) or {}).get("supported")),
            fetched_at=fetched_at,
        )

    def retirement_warning(self, now: datetime | None = None) -> str | None:
        """A line for `start` when the model is deprecated or retires within RETIRING_WITHIN."""
        now = now or datetime.now(UTC)
        when = f" on {self.retires_at:%Y-%m-%d}" if self.retires_at else ""
        if self.retires_at and self.retires_at - now <= RETIRING_WITHIN:
            days = max(0, (self.retires_at - now).days)
            return (
                f"warning: {self.id} retires{when} (in {days} days); its requests fail after that, so move to a "
                "current model with --model"
            )
        if self.lifecycle == "deprecated":
            return f"warning: {self.id} is deprecated (retirement{when or ' not yet scheduled'}); consider --model"
        return None


def discover(names: list[str], state_dir: Path | None, client: anthropic.Anthropic | None = None) -> dict:
    """{name: ModelCard} for each name, from the Models API, or from the state folder's last answer when
    the API cannot be reached. Raises ModelError for an unknown or retired model, or no answer at all."""
    cache = Path(state_dir) / CACHE_FILE if state_dir else None
    stored = load(cache)
    client = client or anthropic.Anthropic(max_retries=0, timeout=LOOKUP_TIMEOUT_S)
    cards, fresh = {}, {}
    for name in dict.fromkeys(names):
        try:
            info = client.models.retrieve(name, timeout=LOOKUP_TIMEOUT_S).model_dump(mode="json")
        except anthropic.APIStatusError as e:
            if e.status_code >= 500 or e.status_code in (408, 409, 429):
                cards[name] = cached(stored, name, f"HTTP {e.status_code}")
                continue
            raise ModelError(refusal(name, e)) from e
        except anthropic.APIError as e:  # no connection, a timeout
            cards[name] = cached(stored, name, type(e).__name__)
            continue
        fresh[name] = {"fetched_at": now(), "info": info}
        cards[name] = ModelCard.from_info(info, fresh[name]["fetched_at"])
    if cache and fresh:
        save(cache, stored | fresh)
    for card in cards.values():
        if card.lifecycle == "retired":
            raise ModelError(f"model {card.id} is retired: its requests fail; choose a current model with --model")
    return cards


def refusal(name: str, e: anthropic.APIStatusError) -> str:
    if e.status_code == 404:
        return f"model {name!r} was not found by the Models API (HTTP 404); choose another with --model"
    if e.status_code in (401, 403):
        return f"the Anthropic API refused the key (HTTP {e.status_code}); set a valid ANTHROPIC_API_KEY"
    return f"the Models API refused to describe {name!r} (HTTP {e.status_code}: {e.message})"


def cached(stored: dict, name: str, why: str) -> ModelCard:
    entry = stored.get(name)
    if not entry:
        raise ModelError(
            f"the Models API could not be reached ({why}) and state/{CACHE_FILE} holds no earlier answer for "
            f"{name!r}; check the network and ANTHROPIC_BASE_URL, then start again"
        )
    print(
        f"note: the Models API could not be reached ({why}); using what it said of {name} at {entry['fetched_at']}",
        flush=True,
    )
    return ModelCard.from_info(entry["info"], entry["fetched_at"])


def load(cache: Path | None) -> dict:
    try:
        return json.loads(cache.read_text()) if cache else {}
    except (OSError, ValueError):
        return {}  # absent or torn: the API's answer will rewrite it


def save(cache: Path, entries: dict) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    tmp.replace(cache)  # two campaigns starting at once never leave a torn file


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
