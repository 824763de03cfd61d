"""A fake Anthropic Messages API on 127.0.0.1 for the real SDK to talk to over HTTP.

It plays a script: each POST /v1/messages takes the next step, which is a message (content blocks,
a stop_reason, stop_details), an error (status, body, headers), or a delay before either. It is
as strict as the real API where arx could go wrong, so a test that passes here means a request
the real API would take:

- 400 invalid_request_error for: `thinking.type: enabled` on models from 4.7 on (adaptive only),
  adaptive thinking on models before 4.6, budget_tokens < 1024 or >= max_tokens, an effort level
  the model does not take, a message with empty content, a tool_use without its tool_result in the next message
  (or a stray tool_result), a thinking block whose signature is not the one issued, more than
  four cache breakpoints, a 1-hour breakpoint after a 5-minute one.
- Prompt caching on a clock that tests advance (`advance(seconds)`; nothing sleeps): every block
  marked `cache_control` ends a prefix; the longest live prefix is read, the rest up to the last
  mark is written with the mark's lifetime (5 minutes by default, or `ttl: "1h"`); a hit is
  also found up to 20 blocks before a mark, as the API looks back; a read or write renews the
  entry's lifetime from that request. Usage splits writes by lifetime in
  `cache_creation`, as the real API does.
- Streaming (`"stream": true`) as server-sent events in the real order, thinking signatures
  included, or an error event mid-stream (`stream_error`); non-streaming JSON otherwise. Token
  counts are characters / 4.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import itertools
import json
import os
import re
import threading
import time

TTL_S = {"5m": 300.0, "1h": 3600.0}
MAX_CACHE_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20  # how far before a breakpoint the API looks for an earlier cache hit
EFFORTS = ("low", "medium", "high", "xhigh", "max")
FAMILY = re.compile(r"claude-([a-z]+)-(\d+)(?:-(\d))?(?:-\d{8})?$")


def tokens(obj) -> int:
    return max(1, len(json.dumps(obj, sort_keys=True)) // 4)


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def thinking(t: str) -> dict:
    """A thinking block; the server signs it when it sends it."""
    return {"type": "thinking", "thinking": t}


_ids = itertools.count(1)


def tool_use(name: str, **args) -> dict:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):04d}", "name": name, "input": args}


def edit(path: str, old: str, new: str) -> dict:
    return {
        "content": [
            text("Trying a change."),
            tool_use("str_replace_based_edit_tool", command="str_replace", path=path, old_str=old, new_str=new),
        ],
        "stop_reason": "tool_use",
    }


def submit(description: str, hypothesis: str = "it should help") -> dict:
    return {
        "content": [tool_use("submit_experiment", description=description, hypothesis=hypothesis)],
        "stop_reason": "tool_use",
    }


def refusal(category: str | None = "cyber", explanation: str | None = "This request could enable harm.") -> dict:
    return {
        "content": [],
        "stop_reason": "refusal",
        "stop_details": {"type": "refusal", "category": category, "explanation": explanation},
    }


def error(
    status: int,
    kind: str = "api_error",
    message: str = "scripted failure",
    headers: dict | None = None,
    details: dict | None = None,
) -> dict:
    body = {"type": kind, "message": message} | ({"details": details} if details else {})
    return {"status": status, "error": body, "headers": {"retry-after-ms": "5"} if headers is None else headers}


def version(model: str) -> tuple[int, int] | None:
    """(4, 7) for claude-opus-4-7, (5, 0) for claude-sonnet-5, None for an id of another shape."""
    m = FAMILY.match(model)
    return (int(m.group(2)), int(m.group(3) or 0)) if m else None


def effort_levels(model: str) -> tuple[str, ...]:
    """The documented effort levels: Opus from 4.5, Sonnet from 4.6, max from 4.6, xhigh from 4.7."""
    m, v = FAMILY.match(model), version(model)
    if not m or v >= (5, 0):
        return EFFORTS
    if m.group(1) == "haiku" or v < ((4, 5) if m.group(1) == "opus" else (4, 6)):
        return ()
    return tuple(e for e in EFFORTS if (e != "max" or v >= (4, 6)) and (e != "xhigh" or v >= (4, 7)))


class FakeAnthropic:
    def __init__(self, script: list[dict] | None = None):
        self.script = list(script or [])
        self.requests: list[dict] = []
        self.usages: list[dict] = []
        self.rejected: list[str] = []  # the 400 messages sent, for tests to read
        self.now = 0.0  # the fake's clock in seconds: cache lifetimes run on it, tests advance it
        self.cache: dict[str, float] = {}  # prefix hash -> expiry on the clock
        self.ttl: dict[str, str] = {}  # prefix hash -> its lifetime
        self.key = os.urandom(16)  # signs thinking blocks
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
                    step = fake.script.pop(0) if fake.script else error(500, message="fake server: script exhausted")
                time.sleep(step.get("delay", 0))
                if "status" in step:
                    self.reply(step["status"], {"type": "error", "error": step["error"]}, step.get("headers"))
                    return
                problem = fake.invalid(body)
                if problem:
                    fake.rejected.append(problem)
                    self.reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": problem}})
                    return
                with fake.lock:
                    usage = fake.usage(body)
                content = [fake.sign(b) for b in step["content"]]
                usage["output_tokens"] = tokens(content)
                fake.usages.append(usage)
                uses = any(b["type"] == "tool_use" for b in content)
                message = {
                    "id": f"msg_{len(fake.requests):04d}",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": content,
                    "stop_reason": step.get("stop_reason", "tool_use" if uses else "end_turn"),
                    "stop_sequence": None,
                    "stop_details": step.get("stop_details"),
                    "usage": usage,
                }
                if body.get("stream"):
                    self.stream(message, step.get("stream_error"))
                else:
                    self.reply(200, message)

            def reply(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def stream(self, message: dict, failure: dict | None = None):
                """The message as the API streams it: start, each block's start/deltas/stop, delta, stop;
                or, given a `failure`, an error event after the start, as an overloaded server sends it."""
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    sent = (
                        events(message)
                        if failure is None
                        else [events(message)[0], {"type": "error", "error": failure}]
                    )
                    for event in sent:
                        self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds

    def signature(self, thought: str) -> str:
        return hmac.new(self.key, thought.encode(), hashlib.sha256).hexdigest()

    def sign(self, block: dict) -> dict:
        return block | {"signature": self.signature(block["thinking"])} if block["type"] == "thinking" else block

    def invalid(self, body: dict) -> str | None:
        """Why the real API would reject this request with HTTP 400, or None."""
        model, v = body["model"], version(body["model"])
        t = body.get("thinking") or {}
        if t.get("type") == "enabled":
            if v and v >= (4, 7):
                return (
                    f"thinking.type.enabled is not supported for model {model}. Use thinking.type.adaptive and "
                    "output_config.effort to control thinking behavior."
                )
            if t.get("budget_tokens", 0) < 1024:
                return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            if t["budget_tokens"] >= body["max_tokens"]:
                return "`max_tokens` must be greater than `thinking.budget_tokens`."
        if t.get("type") == "adaptive" and v and v < (4, 6):
            return f"thinking.type.adaptive is not supported for model {model}."
        effort = (body.get("output_config") or {}).get("effort")
        if effort is not None and effort not in effort_levels(model):
            return f"output_config.effort: {effort!r} is not supported by model {model}"
        messages = body["messages"]
        for i, m in enumerate(messages):
            if not m["content"]:
                return (
                    f"messages.{i}: all messages must have non-empty content except for the optional final assistant "
                    "message"
                )
            blocks = m["content"] if isinstance(m["content"], list) else []
            for j, b in enumerate(blocks):
                if b.get("type") == "thinking" and not hmac.compare_digest(
                    str(b.get("signature")), self.signature(b.get("thinking", ""))
                ):
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            asked = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            following = (
                messages[i + 1]["content"]
                if i + 1 < len(messages) and isinstance(messages[i + 1]["content"], list)
                else []
            )
            answered = {b["tool_use_id"] for b in following if b.get("type") == "tool_result"}
            if m["role"] == "assistant" and i + 1 < len(messages) and asked - answered:
                return (
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(sorted(asked - answered))}"
                )
            if m["role"] == "assistant" and answered - asked:
                return (
                    f"messages.{i + 1}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{', '.join(sorted(answered - asked))}"
                )
        marks = [b["cache_control"] for _, b in self.blocks(body) if isinstance(b, dict) and b.get("cache_control")]
        if len(marks) > MAX_CACHE_BREAKPOINTS:
            return (
                f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}."
            )
        ttls = [m.get("ttl", "5m") for m in marks]
        if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
            return "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"
        return None

    @staticmethod
    def blocks(body: dict) -> list[tuple[str, dict]]:
        """The request's blocks in the order the API caches them: tools, system, messages."""
        out = [("tools", t) for t in body.get("tools", [])]
        system = body.get("system", [])
        out += [("system", b) for b in (system if isinstance(system, list) else [text(system)])]
        for m in body["messages"]:
            content = m["content"] if isinstance(m["content"], list) else [text(m["content"])]
            out += [(m["role"], b) for b in content]
        return out

    def usage(self, body: dict) -> dict:
        """Prompt-caching arithmetic over the request's blocks, on the fake's clock."""
        h = hashlib.sha256()
        total, marks, bounds = 0, [], []  # bounds: (prefix hash, tokens so far) after every block
        for role, block in self.blocks(body):
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            h.update(json.dumps([role, plain], sort_keys=True).encode())
            total += tokens(plain)
            bounds.append((h.hexdigest(), total))
            if block.get("cache_control"):
                marks.append((h.hexdigest(), total, block["cache_control"].get("ttl", "5m"), len(bounds) - 1))
        live = {key for key, expiry in self.cache.items() if expiry > self.now}
        read, read_at = 0, -1  # a hit is looked for at each mark and up to LOOKBACK_BLOCKS boundaries before it
        for i, (_, _, _, at) in enumerate(marks):
            for key, upto in bounds[max(0, at - LOOKBACK_BLOCKS) : at + 1]:
                if key in live and upto > read:
                    read, read_at, hit = upto, i, key
        if read_at >= 0:
            self.cache[hit] = max(self.cache[hit], self.now + TTL_S[self.ttl[hit]])
        read_at = max((i for i, m in enumerate(marks) if m[1] <= read), default=-1)
        written = {"5m": 0, "1h": 0}
        upto = read
        for _, end, ttl, _ in marks[read_at + 1 :]:
            written[ttl] += end - upto
            upto = end
        for key, _, ttl, _ in marks:  # what was read or written lives on from this request
            self.cache[key] = max(self.cache.get(key, 0.0), self.now + TTL_S[ttl])
            self.ttl[key] = ttl
        return {
            "input_tokens": total - upto,
            "output_tokens": 0,
            "cache_creation_input_tokens": written["5m"] + written["1h"],
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": written["5m"], "ephemeral_1h_input_tokens": written["1h"]},
        }

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def events(message: dict) -> list[dict]:
    """The server-sent events of one message, in the Messages API's order."""
    start = message | {
        "content": [],
        "stop_reason": None,
        "stop_details": None,
        "usage": message["usage"] | {"output_tokens": 1},
    }
    out = [{"type": "message_start", "message": start}]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            out.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            half = len(block["text"]) // 2
            out += [
                {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": part}}
                for part in (block["text"][:half], block["text"][half:])
            ]
        elif block["type"] == "thinking":
            out.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            out.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                }
            )
            out.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                }
            )
        elif block["type"] == "tool_use":
            out.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                }
            )
            raw = json.dumps(block["input"])
            out += [
                {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}}
                for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :])
            ]
        out.append({"type": "content_block_stop", "index": i})
    out.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": None,
                "stop_details": message["stop_details"],
            },
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }
    )
    out.append({"type": "message_stop"})
    return out
