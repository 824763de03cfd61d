"""Every conversation is kept: each proposal's prompt, messages, tool calls and their results, stop
reasons and usage, as one versioned JSON document per run.

The document lives outside the run directory (which the sandboxed trainer may write and which is
wiped at each measurement): `state/conversations/<program>-<tag>/<seq>.json`, referenced from the
ledger's `run.conversation`. It is rewritten after every API call and once more in a `finally`, so
a crash mid-proposal keeps what happened. A run holds one attempt per time the agent was asked
(again after a proposal without edits, after an API error). Secrets never reach it: it holds only
request bodies arx built and the API's responses, never headers, and the API key is scrubbed from
the text should it appear anywhere.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

VERSION = 1
SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
SHOWN_CHARS = 1500  # per block when not printing in full


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def scrub(text: str) -> str:
    for name in SECRET_ENV:
        secret = os.environ.get(name) or ""
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return text


class Conversation:
    """One attempt of one proposal, appended to the run's document; `messages` is the live list the agent sends."""

    def __init__(self, path: Path | None, messages: list, **meta):
        self.path = Path(path) if path else None
        self.doc = {"version": VERSION, "attempts": []}
        if self.path and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
                if loaded.get("version") == VERSION:
                    self.doc = loaded
            except (OSError, ValueError):
                pass  # a torn file from a killed daemon: start the document again
        self.attempt = {
            "started_at": now(),
            "ended_at": None,
            "outcome": "in progress",
            **meta,
            "messages": messages,
            "calls": [],
        }
        self.doc["attempts"].append(self.attempt)

    def call(self, record: dict) -> None:
        self.attempt["calls"].append(record)
        self.save()

    def end(self, outcome: str) -> None:
        self.attempt["ended_at"], self.attempt["outcome"] = now(), outcome
        self.save()

    def save(self) -> None:
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(scrub(json.dumps(self.doc, indent=1, default=str)))
        tmp.replace(self.path)  # readers never see half a document


def clip(text: str, full: bool) -> str:
    text = str(text)
    if full or len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}… ({len(text) - SHOWN_CHARS:,} more chars; --full prints everything)"


def render_block(block: dict, full: bool) -> str:
    kind = block.get("type")
    if kind == "text":
        return clip(block.get("text", ""), full)
    if kind == "thinking":
        return f"(thinking) {clip(block.get('thinking', ''), full)}"
    if kind == "redacted_thinking":
        return "(redacted thinking)"
    if kind == "tool_use":
        return f"-> {block.get('name')} {clip(json.dumps(block.get('input'), ensure_ascii=False), full)}"
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            content = "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
        return f"<- {'error' if block.get('is_error') else 'result'}: {clip(content, full)}"
    return clip(json.dumps(block, ensure_ascii=False), full)


def render_call(i: int, c: dict) -> str:
    stop = c.get("stop_reason") or c.get("status")
    line = (
        f"  call {i}: {c.get('model')} stop {stop}"
        f"  in {c.get('input_tokens', 0):,} read {c.get('cache_read_tokens', 0):,}"
        f" write 5m {c.get('cache_write_5m_tokens', 0):,} 1h {c.get('cache_write_1h_tokens', 0):,}"
        f" out {c.get('output_tokens', 0):,}  "
        f"${c.get('cost_usd', 0):.4f}  {c.get('latency_s', 0):.1f}s"
    )
    sent = [
        f"thinking {json.loads(c['thinking'])['type']}" if c.get("thinking") else "",
        f"effort {c['effort']}" if c.get("effort") else "",
    ]
    if any(sent):
        line += "  " + " ".join(filter(None, sent))
    if c.get("request_id"):
        line += f"  {c['request_id']}" + (f" {c['response_id']}" if c.get("response_id") else "")
    if c.get("error"):
        line += f"  {c['error']}"
    if c.get("stop_details"):
        line += f"  {json.dumps(c['stop_details'])}"
    return line


def render(doc: dict, full: bool = False) -> str:
    """The document as a person reads it: each attempt's settings, messages in order, then its calls."""
    lines = []
    for n, a in enumerate(doc.get("attempts", []), 1):
        settings = ", ".join(f"{k} {a[k]}" for k in ("thinking", "effort", "cache_ttl") if a.get(k))
        lines.append(
            f"attempt {n}: {a.get('model')} {a.get('started_at')} -> {a.get('ended_at') or '?'}: {a.get('outcome')}"
            + (f" ({settings})" if settings else "")
        )
        system = a.get("system") or []
        if full:
            lines += [f"[system]\n{b.get('text', '')}" for b in system]
        else:
            lines.append(
                f"[system] {len(system)} blocks, {sum(len(b.get('text', '')) for b in system):,} chars (the "
                "program prompt and trainer files)"
            )
        for m in a.get("messages", []):
            content = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            for block in content:
                lines.append(f"[{m['role']}] {render_block(block, full)}")
        lines += [render_call(i, c) for i, c in enumerate(a.get("calls", []), 1)]
        lines.append("")
    return "\n".join(lines).rstrip()
