"""The dashboard's web app: server-rendered pages, JSON for the charts, and a change stream.

Every page is rendered by Jinja2 with autoescaping on, and the fragments that live pages swap in
come from the same templates, so text written by an LLM or a trainer (descriptions, hypotheses,
diffs, logs, errors) reaches the browser only as escaped text. The Content-Security-Policy allows
scripts from this server's /static only, so even a missed escape could not run an inline script.
With a token set, every request must carry it (header, cookie, or `?token=` once, which sets the
cookie); bound to loopback, only loopback Host headers are answered (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import formatting as fmt
from ..ledger import backup
from . import data

HERE = Path(__file__).parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_COOKIE = "arx_token"
POLL_S = 0.5  # how often a live page's stream looks for a change
KEEPALIVE_S = 15.0
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        (
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


class TokenGate:
    """Refuses (401) any request that does not carry the token; a valid `?token=` sets a cookie and redirects."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token.encode()

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        header = request.headers.get("authorization", "")
        from_query = parse_qs(scope.get("query_string", b"").decode()).get("token", [None])[0]
        if self._matches(header.removeprefix("Bearer ")) or self._matches(request.cookies.get(TOKEN_COOKIE)):
            return await self.app(scope, receive, send)
        if not self._matches(from_query):
            return await PlainTextResponse(
                "401: this dashboard needs its token (open the URL that `serve` printed)", 401
            )(scope, receive, send)
        # the token moves into a cookie and out of the address bar (and so out of history and screenshots)
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        path = "/" + request.url.path.lstrip("/")  # never `//host`, which a browser would read as another site
        response = RedirectResponse(path + (f"?{urlencode(rest)}" if rest else ""), 303)
        response.set_cookie(TOKEN_COOKIE, self.token.decode(), httponly=True, samesite="strict")
        await response(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def add_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, add_headers)


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters.update(
        {
            "bpb": fmt.bpb,
            "signed": fmt.signed,
            "duration": fmt.duration,
            "ago": lambda value: fmt.duration(fmt.ago(value)) if value else fmt.DASH,
            "num": fmt.number,
            "short": lambda value: (value or "")[:10] or fmt.DASH,
            "clock": fmt.clock,
            "timestamp": fmt.timestamp,
        }
    )
    env.globals.update({"statuses": data.STATUSES})
    return Jinja2Templates(env=env)


def create_app(state_dir: Path, token: str | None = None, host: str = "127.0.0.1") -> Starlette:
    """The dashboard over `state_dir/experiments.db`; `host` is where it will listen (for the Host check)."""
    state_dir = Path(state_dir).resolve()
    db = state_dir / "experiments.db"
    views = templates()

    def page(request: Request, name: str, **context) -> Response:
        return views.TemplateResponse(request, name, {"state_dir": str(state_dir)} | context)

    def found(value, what: str):
        if value is None:
            raise HTTPException(404, f"no {what}")
        return value

    def overview(request: Request) -> Response:
        return page(request, "overview.html", **data.overview(db, state_dir))

    def overview_fragment(request: Request) -> Response:
        return page(request, "_overview.html", **data.overview(db, state_dir))

    def campaign_context(request: Request) -> dict:
        cid = request.path_params["cid"]
        return found(
            data.campaign_page(db, state_dir, cid, data.RunQuery.parse(request.query_params)), f"campaign {cid}"
        )

    def campaign(request: Request) -> Response:
        return page(request, "campaign.html", **campaign_context(request))

    def campaign_head(request: Request) -> Response:
        return page(request, "_campaign_head.html", **campaign_context(request))

    def campaign_runs(request: Request) -> Response:
        return page(request, "_runs.html", **campaign_context(request))

    def chart(request: Request) -> Response:
        return JSONResponse(data.progress_chart(db, request.path_params["cid"]))

    def cost(request: Request) -> Response:
        return JSONResponse(data.cost_chart(db, request.path_params["cid"]))

    def run(request: Request) -> Response:
        rid = request.path_params["rid"]
        return page(request, "run.html", **found(data.run_detail(db, state_dir, rid), f"run {rid}"))

    def run_live(request: Request) -> Response:
        rid = request.path_params["rid"]
        return page(request, "_run_live.html", **found(data.run_detail(db, state_dir, rid), f"run {rid}"))

    def run_more(request: Request) -> Response:
        rid = request.path_params["rid"]
        return page(request, "_run_more.html", **found(data.run_detail(db, state_dir, rid), f"run {rid}"))

    def loss(request: Request) -> Response:
        detail = found(data.run_detail(db, state_dir, request.path_params["rid"]), "run")
        return JSONResponse(data.loss_curve(state_dir, detail["run"]))

    def compare(request: Request) -> Response:
        """Two runs side by side: `?a=ID&b=ID` (run ids), or `?a=ID&seq=N` for run #N of a's campaign."""
        q = request.query_params
        try:
            a = int(q.get("a", ""))
            left = found(data.run_detail(db, state_dir, a), f"run {a}")
            if "seq" in q:
                seq = int(q["seq"].strip().lstrip("#"))
                b = found(data.find_run_id(db, left["run"]["campaign_id"], seq), f"run #{seq} in this campaign")
            else:
                b = int(q.get("b", ""))
        except ValueError:
            raise HTTPException(400, "compare needs ?a=RUN_ID&b=RUN_ID or ?a=RUN_ID&seq=N")
        right = found(data.run_detail(db, state_dir, b), f"run {b}")
        return page(request, "compare.html", left=left, right=right)

    async def events(request: Request) -> Response:
        """Server-sent events: `hello` once the stream watches, then `ledger` or `progress` on each change."""
        watcher = data.Watcher(db, state_dir)

        async def stream():
            try:
                yield "event: hello\ndata: {}\n\n"
                quiet = 0.0
                while not request.app.state.stopping:  # end with the server, so Ctrl-C is prompt
                    await asyncio.sleep(POLL_S)
                    change = watcher.poll()
                    if change:
                        quiet = 0.0
                        yield f"event: {change}\ndata: {{}}\n\n"
                    else:
                        quiet += POLL_S
                        if quiet >= KEEPALIVE_S:
                            quiet = 0.0
                            yield ": keep-alive\n\n"
            finally:
                watcher.close()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    def notice(heading: str, message: str) -> Response:
        page = views.get_template("empty.html").render(heading=heading, message=message, state_dir=str(state_dir))
        return HTMLResponse(page, 503)

    async def no_ledger(request: Request, exc: FileNotFoundError) -> Response:
        return notice("No ledger yet", str(exc))

    async def unreadable(request: Request, exc: sqlite3.Error) -> Response:
        """A damaged (or busy) ledger: the same line `arx-daemon status` prints, as a page."""
        return notice("The ledger cannot be read", backup.explain(db, exc) or f"reading {db} failed: {exc}")

    routes = [
        Route("/", overview),
        Route("/fragment/overview", overview_fragment),
        Route("/campaign/{cid:int}", campaign),
        Route("/fragment/campaign/{cid:int}/head", campaign_head),
        Route("/fragment/campaign/{cid:int}/runs", campaign_runs),
        Route("/api/campaign/{cid:int}/chart", chart),
        Route("/api/campaign/{cid:int}/cost", cost),
        Route("/run/{rid:int}", run),
        Route("/fragment/run/{rid:int}", run_live),
        Route("/fragment/run/{rid:int}/more", run_more),
        Route("/api/run/{rid:int}/loss", loss),
        Route("/compare", compare),
        Route("/events", events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    if is_loopback(host):
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"]))
    handlers = {FileNotFoundError: no_ledger, sqlite3.Error: unreadable}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.stopping = False
    return app


class Server(uvicorn.Server):
    """uvicorn's server that first tells the app's change streams to end, so shutdown does not wait on them."""

    def handle_exit(self, sig, frame) -> None:
        self.config.app.state.stopping = True
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed, so a busy port is a one-line error (OSError)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(state_dir: Path, sock: socket.socket, token: str | None) -> None:
    """Run the dashboard on a bound socket until Ctrl-C."""
    host, port = sock.getsockname()[:2]
    app = create_app(state_dir, token, host)
    shown = f"[{host}]" if ":" in host else host
    print(f"arx dashboard on http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)).run(sockets=[sock])


@contextmanager
def running(app: Starlette, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free port in a background thread and yield its base URL (tests, bench, screenshots)."""
    sock = bind(host, 0)
    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # set once the socket accepts connections
        if not thread.is_alive():
            raise RuntimeError("the dashboard server failed to start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        app.state.stopping = True
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
