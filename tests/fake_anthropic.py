"""A fake Anthropic API on 127.0.0.1 for the real SDK to talk to over HTTP: the Messages API, as
strict as the real one where arx could go wrong, and the Models API that describes each model.

The rules are per model family, typed here from the API documentation (read 2026-12-03; the same
sources as agents/pricing.py, but kept apart from arx's own table so a wrong row there fails a
test here). A test that passes against this fake sends no request the real API would refuse:

- Thinking: which `thinking.type` each family accepts (400 otherwise, with the API's wording);
  thinking on by default (`thinking` omitted) on Opus 5, Sonnet 5 and every 5.5 and Fable model;
  `disabled`/`between_tools` refused above the family's effort ceiling; budget_tokens >= 1024 and
  < max_tokens; `display` only with adaptive or enabled thinking; the effort levels each takes;
  max_tokens at most the model's.
- Sampling parameters (non-default temperature, top_p, top_k), forced tool choice (`any`, `tool`)
  and prefill (a final assistant message that does not continue a paused turn) on the families that
  refuse them.
- Thinking blocks: one whose signature this server did not issue, or whose text was changed, is
  refused; on the families with preserved thinking (the 5.5 models, Fable 5.1 and 5.2) a block is
  also bound to the model that wrote it and to everything before it (tools, system, earlier
  messages and blocks; cache markers aside): the prefix check.
- Responses honour the thinking the request asked for: scripted thinking blocks are dropped when
  thinking is off, and come back with empty text when `display` is omitted (the default from Opus
  4.7 on). A step may say how many tokens the model thinks (`thinks`): they are billed as output,
  and if they leave no room within max_tokens the reply stops at `max_tokens` before its tool calls.
- Prompt caching on a clock that tests advance (`advance(seconds)`; nothing sleeps), per model: a
  block marked `cache_control` ends a prefix; a prefix shorter than the model's minimum cacheable
  length is never cached; the longest live prefix is read, the rest up to the last mark written
  with the mark's lifetime; a hit is also found up to 20 blocks before a mark; a read or write
  renews the entry. Usage splits writes by lifetime in `cache_creation`, as the real API does.
- Streaming as server-sent events in the real order, or an error event mid-stream
  (`stream_error`), or a stream cut after `cut_after` events (0: a 200 with no event at all).
  Every response carries a `request-id` header. Token counts are characters / 4.
- A step is a message (content blocks, a stop_reason, stop_details), an error (status, body,
  headers), a connection closed with no response (`drop`), or a delay before any of these.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field

TTL_S = {"5m": 300.0, "1h": 3600.0}
MAX_CACHE_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20  # how far before a breakpoint the API looks for an earlier cache hit
EFFORTS = ("low", "medium", "high", "xhigh", "max")
NO_XHIGH = ("low", "medium", "high", "max")
THINKING_TYPES = ("adaptive", "between_tools", "disabled", "enabled")
LONG_PROMPT_TOKENS = 100_000


@dataclass(frozen=True)
class Family:
    """What the documentation says one model accepts, defaults to, and costs (USD per million tokens)."""

    id: str
    name: str
    line: str
    types: tuple[str, ...]  # thinking.type values accepted
    default_on: bool  # thinks when `thinking` is omitted
    efforts: tuple[str, ...] = ()
    default_effort: str = "high"  # what a request without output_config.effort gets
    off_max: str | None = None  # the highest effort accepted with thinking disabled / between_tools
    display: str = "omitted"  # thinking.display default
    sampling: bool = False  # accepts non-default temperature / top_p / top_k
    prefill: bool = False  # accepts a final assistant message
    forced_tool: bool = True  # accepts tool_choice any / tool
    bound: bool = False  # preserved thinking: blocks bound to the model and their prefix
    min_cache: int = 1024  # minimum cacheable prompt length, tokens
    max_tokens: int = 128_000
    prices: tuple[float, ...] = ()  # input, output, 5m write, 1h write, cache read
    long_prices: tuple[float, ...] = ()  # for prompts over LONG_PROMPT_TOKENS
    lifecycle: str = "active"
    retires_at: str | None = None


FIVE_FIVE = dict(default_on=True, efforts=EFFORTS, forced_tool=False, bound=True, min_cache=512)
FAMILIES = {
    f.id: f
    for f in [
        Family("claude-fable-5-2", "Claude Fable 5.2", "fable", ("adaptive",), default_on=True, efforts=EFFORTS,
               forced_tool=False, bound=True, min_cache=512, prices=(8, 40, 10, 16, 0.20)),
        Family("claude-fable-5-1", "Claude Fable 5.1", "fable", ("adaptive",), default_on=True, efforts=EFFORTS,
               forced_tool=False, bound=True, min_cache=512, prices=(10, 50, 12.5, 20, 0.25)),
        Family("claude-fable-5", "Claude Fable 5", "fable", ("adaptive",), default_on=True, efforts=EFFORTS,
               min_cache=512, prices=(10, 50, 12.5, 20, 1.0)),
        Family("claude-opus-5-5", "Claude Opus 5.5", "opus", ("adaptive",), **FIVE_FIVE, default_effort="medium",
               prices=(4, 20, 5, 8, 0.20)),
        Family("claude-sonnet-5-5", "Claude Sonnet 5.5", "sonnet", ("adaptive", "between_tools"), **FIVE_FIVE,
               off_max="high", prices=(2, 10, 2.5, 4, 0.10)),
        Family("claude-haiku-5-5", "Claude Haiku 5.5", "haiku", ("adaptive", "disabled"),
               **(FIVE_FIVE | {"forced_tool": True}), default_effort="medium", off_max="high",
               prices=(0.10, 0.50, 0.125, 0.20, 0.01), long_prices=(0.50, 2.50, 0.625, 1.0, 0.05)),
        Family("claude-opus-5", "Claude Opus 5", "opus", ("adaptive", "disabled"), default_on=True, efforts=EFFORTS,
               off_max="high", min_cache=512, prices=(5, 25, 6.25, 10, 0.50)),
        Family("claude-sonnet-5", "Claude Sonnet 5", "sonnet", ("adaptive", "disabled"), default_on=True,
               efforts=EFFORTS, off_max="high", prices=(2, 10, 2.5, 4, 0.20)),
        Family("claude-opus-4-8", "Claude Opus 4.8", "opus", ("adaptive", "disabled"), default_on=False,
               efforts=EFFORTS, prices=(5, 25, 6.25, 10, 0.50)),
        Family("claude-opus-4-7", "Claude Opus 4.7", "opus", ("adaptive", "disabled"), default_on=False,
               efforts=EFFORTS, min_cache=2048, prices=(5, 25, 6.25, 10, 0.50)),
        Family("claude-opus-4-6", "Claude Opus 4.6", "opus", ("adaptive", "disabled", "enabled"), default_on=False,
               efforts=NO_XHIGH, display="summarized", sampling=True, min_cache=4096, prices=(5, 25, 6.25, 10, 0.50)),
        Family("claude-sonnet-4-6", "Claude Sonnet 4.6", "sonnet", ("adaptive", "disabled", "enabled"),
               default_on=False, efforts=NO_XHIGH, display="summarized", sampling=True, max_tokens=64_000,
               prices=(3, 15, 3.75, 6, 0.30)),
        Family("claude-opus-4-5-20251101", "Claude Opus 4.5", "opus", ("disabled", "enabled"), default_on=False,
               efforts=("low", "medium", "high"), display="summarized", sampling=True, prefill=True, min_cache=4096,
               max_tokens=64_000, prices=(5, 25, 6.25, 10, 0.50), lifecycle="deprecated",
               retires_at="2027-01-22T00:00:00Z"),
        Family("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "haiku", ("disabled", "enabled"), default_on=False,
               display="summarized", sampling=True, prefill=True, min_cache=4096, max_tokens=64_000,
               prices=(1, 5, 1.25, 2, 0.10)),
        Family("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "sonnet", ("disabled", "enabled"), default_on=False,
               display="summarized", sampling=True, prefill=True, max_tokens=64_000, prices=(3, 15, 3.75, 6, 0.30),
               lifecycle="retired", retires_at="2026-11-30T00:00:00Z"),
    ]
}  # fmt: skip
ALIASES = {"claude-opus-4-5": "claude-opus-4-5-20251101", "claude-haiku-4-5": "claude-haiku-4-5-20251001",
           "claude-sonnet-4-5": "claude-sonnet-4-5-20250929"}  # fmt: skip
CURRENT = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "claude-fable-5-2")  # the lineup of today


def family(model: str) -> Family | None:
    return FAMILIES.get(ALIASES.get(model, model))


def cost(model: str, usage: dict) -> float:
    """What the documented prices make of one response's usage, in dollars."""
    f = family(model)
    write_5m = usage["cache_creation"]["ephemeral_5m_input_tokens"]
    write_1h = usage["cache_creation"]["ephemeral_1h_input_tokens"]
    prompt = usage["input_tokens"] + usage["cache_read_input_tokens"] + write_5m + write_1h
    i, o, w5, w1, r = f.long_prices if f.long_prices and prompt > LONG_PROMPT_TOKENS else f.prices
    return (
        usage["input_tokens"] * i
        + usage["output_tokens"] * o
        + write_5m * w5
        + write_1h * w1
        + usage["cache_read_input_tokens"] * r
    ) / 1e6


def model_info(f: Family) -> dict:
    """The Models API's description of a family (GET /v1/models/{id})."""
    yes = lambda ok: {"supported": bool(ok)}  # noqa: E731
    thinks = any(t in f.types for t in ("adaptive", "enabled"))
    return {
        "type": "model",
        "id": f.id,
        "display_name": f.name,
        "created_at": "2026-01-01T00:00:00Z",
        "line": f.line,
        "lifecycle": f.lifecycle,
        "deprecated_at": "2026-06-01T00:00:00Z" if f.lifecycle != "active" else None,
        "retires_at": f.retires_at,
        "max_input_tokens": 1_000_000,
        "max_tokens": f.max_tokens,
        "capabilities": {
            "thinking": {
                "supported": thinks,
                "types": {t: yes(t in f.types or (t == "disabled" and not thinks)) for t in THINKING_TYPES},
            },
            "effort": {"supported": bool(f.efforts), **{e: yes(e in f.efforts) for e in EFFORTS}},
            **{
                k: yes(True)
                for k in ("batch", "citations", "code_execution", "image_input", "pdf_input", "structured_outputs")
            },
            "context_management": {"supported": True},
            "server_tools": {"supported": True},
        },
    }


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


def assistant(*content) -> dict:
    """An assistant message of these blocks (text given as a string becomes a text block)."""
    return {"role": "assistant", "content": [text(b) if isinstance(b, str) else b for b in content]}


def plain(block: dict) -> dict:
    return {k: v for k, v in block.items() if k != "cache_control"}


@dataclass
class Issued:
    """A thinking block this server sent: who wrote it, after what, with which text."""

    model: str
    prefix: str
    text: str


@dataclass
class FakeAnthropic:
    script: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.script = list(self.script)
        self.requests: list[dict] = []  # every POST /v1/messages: body and headers
        self.lookups: list[str] = []  # every model the Models API was asked about
        self.usages: list[dict] = []
        self.rejected: list[str] = []  # the 400 messages sent, for tests to read
        self.now = 0.0  # the fake's clock in seconds: cache lifetimes run on it, tests advance it
        self.cache: dict[str, float] = {}  # prefix hash -> expiry on the clock
        self.ttl: dict[str, str] = {}  # prefix hash -> its lifetime
        self.issued: dict[str, Issued] = {}  # signature -> the thinking block it was issued for
        self.paused: list[list[dict]] = []  # content of each pause_turn reply (may be continued)
        self.families = dict(FAMILIES)  # tests may change a model's lifecycle here
        self.key = os.urandom(16)
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.split("?")[0].removeprefix("/v1/models").strip("/")
                fake.lookups.append(name)
                f = fake.families.get(ALIASES.get(name, name))
                if f is None:
                    self.reply(
                        404, {"type": "error", "error": {"type": "not_found_error", "message": f"model: {name}"}}
                    )
                else:
                    self.reply(200, model_info(f))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
                    n = len(fake.requests)
                    step = fake.script.pop(0) if fake.script else error(500, message="fake server: script exhausted")
                time.sleep(step.get("delay", 0))
                if step.get("drop"):  # the connection closes with no response at all
                    self.close_connection = True
                    return
                if "status" in step:
                    self.reply(step["status"], {"type": "error", "error": step["error"]}, step.get("headers"))
                    return
                f = fake.families.get(ALIASES.get(body.get("model"), body.get("model")))
                if f is None or f.lifecycle == "retired":
                    message = f"model: {body.get('model')}"
                    self.reply(404, {"type": "error", "error": {"type": "not_found_error", "message": message}})
                    return
                problem = fake.invalid(body, f)
                if problem:
                    fake.rejected.append(problem)
                    self.reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": problem}})
                    return
                with fake.lock:
                    message = fake.respond(body, f, step, n)
                if body.get("stream"):
                    self.stream(message, step.get("stream_error"), step.get("cut_after"))
                else:
                    self.reply(200, message)

            def reply(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("request-id", f"req_fake_{len(fake.requests):04d}")
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def stream(self, message: dict, failure: dict | None = None, cut_after: int | None = None):
                """The message as the API streams it; or, given a `failure`, an error event after the start,
                as an overloaded server sends it; or only the first `cut_after` events, then the connection
                closes (a proxy or a network that drops a long stream)."""
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.send_header("request-id", f"req_fake_{len(fake.requests):04d}")
                    self.end_headers()
                    sent = events(message)
                    if failure is not None:
                        sent = [sent[0], {"type": "error", "error": failure}]
                    if cut_after is not None:
                        sent = sent[:cut_after]
                    for event in sent:
                        self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a client that resets its connection between the server's select and its accept leaves a blocking accept
        # waiting for the next client forever (Linux drops the aborted connection): never wait there
        self.server.socket.settimeout(1.0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds

    def retire(self, model: str, on: str, lifecycle: str = "deprecated") -> None:
        """Schedule a model's retirement (as the Models API will say it)."""
        f = self.families[ALIASES.get(model, model)]
        self.families[f.id] = Family(**(f.__dict__ | {"retires_at": on, "lifecycle": lifecycle}))

    # ------------------------------------------------------------------ what the API refuses
    def invalid(self, body: dict, f: Family) -> str | None:
        """Why the real API would reject this request with HTTP 400, or None."""
        return (
            self.invalid_settings(body, f)
            or self.invalid_messages(body, f)
            or self.invalid_thinking_blocks(body, f)
            or self.invalid_cache_marks(body)
        )

    def invalid_settings(self, body: dict, f: Family) -> str | None:
        model, max_tokens = body["model"], body["max_tokens"]
        if max_tokens > f.max_tokens:
            return (
                f"max_tokens: {max_tokens} > {f.max_tokens}, which is the maximum allowed number of output tokens "
                f"for {model}"
            )
        t = body.get("thinking") or {}
        kind = t.get("type")
        if kind and kind not in f.types:
            if kind == "disabled" and "between_tools" in f.types:
                return (
                    '"thinking.type.disabled" is not supported for this model. Send "thinking.type.between_tools" '
                    "to turn off up-front thinking."
                )
            return (
                f'"thinking.type.{kind}" is not supported for this model. Use "thinking.type.adaptive" and '
                '"output_config.effort" to control thinking behavior.'
            )
        if "display" in t and (kind not in ("adaptive", "enabled") or t["display"] not in ("summarized", "omitted")):
            return f"thinking.display: {t['display']!r} is not valid with thinking.type {kind!r}"
        if kind == "enabled":
            if t.get("budget_tokens", 0) < 1024:
                return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            if t["budget_tokens"] >= max_tokens:
                return "`max_tokens` must be greater than `thinking.budget_tokens`."
        effort = (body.get("output_config") or {}).get("effort")
        if effort is not None and effort not in f.efforts:
            return f"output_config.effort: {effort!r} is not supported by model {model}"
        if kind in ("disabled", "between_tools") and f.off_max and f.default_on:
            level = effort or f.default_effort
            if EFFORTS.index(level) > EFFORTS.index(f.off_max):
                return (
                    f"output_config.effort {level!r} is not supported with thinking.type.{kind} on {model}; use "
                    f"effort {f.off_max} or lower, or adaptive thinking"
                )
        if not f.sampling:
            for name in ("temperature", "top_p", "top_k"):
                if name in body and not (name == "temperature" and body[name] == 1.0):
                    return f"{name}: sampling parameters other than the default are not supported for {model}"
        choice = (body.get("tool_choice") or {}).get("type")
        if not f.forced_tool and choice in ("any", "tool"):
            return f"tool_choice.type {choice!r}: forced tool use is not supported for {model}; use auto or none"
        return None

    def invalid_messages(self, body: dict, f: Family) -> str | None:
        messages = body["messages"]
        for i, m in enumerate(messages):
            if not m["content"]:
                return (
                    f"messages.{i}: all messages must have non-empty content except for the optional final assistant "
                    "message"
                )
            blocks = m["content"] if isinstance(m["content"], list) else []
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
        last = messages[-1]
        if last["role"] == "assistant" and not f.prefill:
            content = [plain(b) for b in last["content"]] if isinstance(last["content"], list) else []
            continues = any(p and content[-len(p) :] == p for p in self.paused)
            if not continues:
                return (
                    "This model does not support assistant message prefill. The conversation must end with a user "
                    "message."
                )
        return None

    def invalid_thinking_blocks(self, body: dict, f: Family) -> str | None:
        for i, m in enumerate(body["messages"]):
            blocks = m["content"] if isinstance(m["content"], list) else []
            for j, b in enumerate(blocks):
                if b.get("type") != "thinking":
                    continue
                issued = self.issued.get(str(b.get("signature")))
                where = f"messages.{i}.content.{j}"
                if issued is None or issued.text != b.get("thinking"):
                    return f"{where}: Invalid `signature` in `thinking` block"
                if f.bound and issued.model != f.id:
                    return (
                        f"{where}: Invalid `signature` in `thinking` block. The block was written by another model; "
                        "only the model that wrote it can read it."
                    )
                if f.bound and issued.prefix != self.prefix(body, i, j):
                    return (
                        f"{where}: Invalid `signature` in `thinking` block. The block is bound to a different "
                        "conversation. Remove the block, or set `thinking.block_binding.prefix_mismatch_behavior` "
                        'to "drop_block".'
                    )
        return None

    def invalid_cache_marks(self, body: dict) -> str | None:
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
    def prefix(body: dict, message: int, block: int) -> str:
        """The hash of everything before messages[message].content[block], cache markers aside."""
        system = body.get("system", [])
        before = [
            [plain(t) for t in body.get("tools", [])],
            [plain(b) for b in system] if isinstance(system, list) else system,
        ]
        for m in body["messages"][:message]:
            before.append([m["role"], [plain(b) for b in m["content"]] if isinstance(m["content"], list) else m])
        current = body["messages"][message]["content"]
        before.append([plain(b) for b in current[:block]])
        return hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ the reply
    def respond(self, body: dict, f: Family, step: dict, n: int) -> dict:
        """The model's message for this step, shaped by the thinking the request asked for."""
        t = body.get("thinking") or {}
        kind = t.get("type") or ("adaptive" if f.default_on else None)
        content = [dict(b) for b in step["content"]]
        if kind in (None, "disabled"):
            content = [b for b in content if b["type"] != "thinking"]
        thinks = step.get("thinks", 0) if kind in ("adaptive", "enabled") else 0
        visible = [b for b in content if b["type"] != "thinking"]
        stop = step.get("stop_reason", "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn")
        if thinks and thinks + tokens(visible) > body["max_tokens"]:  # thinking ate max_tokens: no tool call
            content, stop = [b for b in content if b["type"] == "thinking"], "max_tokens"
        omitted = kind in ("adaptive", "enabled") and t.get("display", f.display) == "omitted"
        # the reply joins the turn it answers: a new assistant message, or the paused one it continues
        history, head = body["messages"], []
        if history[-1]["role"] == "assistant":
            history, head = history[:-1], list(history[-1]["content"])
        out = []
        probe = body | {"messages": [*history, {"role": "assistant", "content": head + out}]}
        for b in content:
            if b["type"] == "thinking":
                b["thinking"] = "" if omitted else b["thinking"]
                b["signature"] = hashlib.sha256(self.key + os.urandom(8)).hexdigest()
                where = self.prefix(probe, len(history), len(head) + len(out))
                self.issued[b["signature"]] = Issued(f.id, where, b["thinking"])
            out.append(b)
            probe["messages"][-1]["content"] = head + out
        usage = self.usage(body, f)
        usage["output_tokens"] = min(body["max_tokens"], tokens(out) + thinks)
        self.usages.append(usage)
        if stop == "pause_turn":
            self.paused.append([plain(b) for b in out])
        return {
            "id": f"msg_{n:04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": out,
            "stop_reason": stop,
            "stop_sequence": None,
            "stop_details": step.get("stop_details"),
            "usage": usage,
        }

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

    def usage(self, body: dict, f: Family) -> dict:
        """Prompt-caching arithmetic over the request's blocks, on the fake's clock, per model."""
        h = hashlib.sha256(f.id.encode())
        total, marks, bounds = 0, [], []  # bounds: (prefix hash, tokens so far) after every block
        for role, block in self.blocks(body):
            h.update(json.dumps([role, plain(block)], sort_keys=True).encode())
            total += tokens(plain(block))
            bounds.append((h.hexdigest(), total))
            if block.get("cache_control") and total >= f.min_cache:  # a shorter prefix is never cached
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
            if block["thinking"]:  # an omitted thought sends no thinking_delta, only its signature
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
