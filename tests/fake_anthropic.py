"""A fake Anthropic Messages API on 127.0.0.1 for the real SDK to talk to over HTTP.

It plays a script: each POST /v1/messages takes the next step, which is a message (content
blocks and a stop_reason), an error status, or a delay before either. Usage is computed from the
request like the real API's prompt caching: every block marked `cache_control` ends a prefix;
a prefix seen before is a cache read, the newest unseen one is a cache write, the rest is input.
Token counts are characters / 4.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import threading
import time


def tokens(obj) -> int:
    return max(1, len(json.dumps(obj, sort_keys=True)) // 4)


def text(t: str) -> dict:
    return {"type": "text", "text": t}


_ids = itertools.count(1)


def tool_use(name: str, **args) -> dict:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):04d}", "name": name, "input": args}


def edit(path: str, old: str, new: str) -> dict:
    return {"content": [text("Trying a change."), tool_use("str_replace_based_edit_tool", command="str_replace", path=path, old_str=old, new_str=new)], "stop_reason": "tool_use"}


def submit(description: str, hypothesis: str = "it should help") -> dict:
    return {"content": [tool_use("submit_experiment", description=description, hypothesis=hypothesis)], "stop_reason": "tool_use"}


def error(status: int, kind: str = "api_error", message: str = "scripted failure") -> dict:
    return {"status": status, "error": {"type": kind, "message": message}}


class FakeAnthropic:
    def __init__(self, script: list[dict] | None = None):
        self.script = list(script or [])
        self.requests: list[dict] = []
        self.usages: list[dict] = []
        self.cached: set[str] = set()
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
                    payload = {"type": "error", "error": step["error"]}
                    self.reply(step["status"], payload, {"retry-after-ms": "5"})
                    return
                usage = fake.usage(body)
                fake.usages.append(usage)
                message = {
                    "id": f"msg_{len(fake.requests):04d}",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": step["content"],
                    "stop_reason": step.get("stop_reason", "end_turn"),
                    "stop_sequence": None,
                    "usage": usage,
                }
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

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def usage(self, body: dict) -> dict:
        """Prompt-caching arithmetic over the request's blocks, in the API's order."""
        blocks = [("tools", t) for t in body.get("tools", [])]
        system = body.get("system", [])
        blocks += [("system", b) for b in (system if isinstance(system, list) else [text(system)])]
        for m in body["messages"]:
            content = m["content"] if isinstance(m["content"], list) else [text(m["content"])]
            blocks += [(m["role"], b) for b in content]
        h = hashlib.sha256()
        total, read, marks = 0, 0, []
        for role, block in blocks:
            h.update(json.dumps([role, {k: v for k, v in block.items() if k != "cache_control"}], sort_keys=True).encode())
            total += tokens(block)
            if isinstance(block, dict) and block.get("cache_control"):
                marks.append((h.hexdigest(), total))
        write = 0
        for key, upto in marks:
            if key in self.cached:
                read = upto
        if marks and marks[-1][0] not in self.cached:
            write = marks[-1][1] - read
        self.cached.update(key for key, _ in marks)
        return {"input_tokens": total - read - write, "output_tokens": 60, "cache_creation_input_tokens": write, "cache_read_input_tokens": read}

    def close(self):
        self.server.shutdown()
