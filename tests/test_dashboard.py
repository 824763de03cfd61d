"""`arx-daemon serve`: the dashboard in a real browser (headless Chromium via Playwright) on a ledger built here.

The ledger is written with the real ledger module (real SQLite) and holds hostile text in every
place an LLM or a trainer can write: descriptions, hypotheses, diffs, logs, errors, decisions,
events, LLM errors. Waits are on events (a selector or a condition in the page), never on time.
Screenshots land in $ARX_ARTIFACTS_DIR/dashboard (default: test-artifacts/dashboard).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.campaign.policy import Noise, Policy, keep_band
from orchestrator.cli import app as cli_app
from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import Campaign, Event, LlmCall, Run
from orchestrator.measure import slots
from orchestrator.programs import ROOT, StatePaths
from orchestrator.web import data
from orchestrator.web.app import create_app, running
from orchestrator.web.screenshot import VIEWPORT, chromium, launch

NOW = datetime.now(UTC)
TOKEN = "s3cret-token"
ARTIFACTS = Path(os.environ.get("ARX_ARTIFACTS_DIR") or ROOT / "test-artifacts") / "dashboard"
SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 1">'
SVG = '<svg onload="window.__pwned = 1"></svg>'
HOSTILE = f"{SCRIPT} {IMG}"
DIFF = """diff --git a/trainer/train.py b/trainer/train.py
index 1111111..2222222 100644
--- a/trainer/train.py
+++ b/trainer/train.py
@@ -10,3 +10,3 @@ DEPTH = 2
-MATRIX_LR = 0.04
+MATRIX_LR = 0.05
 WARMUP = 0
"""
HOSTILE_DIFF = DIFF + f"+# </pre>{SCRIPT}{IMG}\n"


def hostile_js() -> str:
    """Script for page.evaluate: what a successful injection would have left behind."""
    return """() => ({
        pwned: window.__pwned === 1,
        injected: document.querySelectorAll('img, svg:not(.spark), iframe, [onerror], [onload], script:not([src])')
            .length,
        foreign: [...document.scripts].filter(s => !s.src.startsWith(location.origin + '/static/')).length,
    })"""


def experiment(cid: int, seq: int, status: str, val: float | None, **kw) -> Run:
    return Run(
        campaign_id=cid,
        seq=seq,
        kind=kw.pop("kind", "experiment"),
        status=status,
        val_bpb=val,
        test_bpb=kw.pop("test", (val + 0.1) if val else None),
        commit=f"{seq:040x}",
        parent_commit=f"{seq - 1:040x}",
        started_at=NOW - timedelta(minutes=60 - seq),
        ended_at=NOW - timedelta(minutes=59 - seq),
        **kw,
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    """Two campaigns: a finished Claude one full of hostile text, and a running one with a run training now."""
    state = tmp_path_factory.mktemp("dash") / "state"
    db = state / "experiments.db"
    done = Campaign(
        tag="nightly",
        program="model",
        branch="autoresearch/nightly",
        worktree=str(state / "wt"),
        base_commit="a" * 40,
        agent="claude",
        llm_model="claude-sonnet-4-6",
        dataset="stdlib",
        budget_s=60,
        status="stopped",
        stop_reason="reached --max-experiments 8",
        noise_sigma=0.004,
        noise_dof=6,
        sandbox="namespaces",
    )
    ledger.save(db, done)
    runs = [
        experiment(
            done.id,
            1,
            "measured",
            2.500,
            kind="baseline",
            description="baseline 1/2 (unchanged code)",
            decision_reason="baseline 1/2",
        ),
        experiment(
            done.id,
            2,
            "measured",
            2.508,
            kind="baseline",
            description="baseline 2/2 (unchanged code)",
            decision_reason="baseline 2/2",
        ),
        experiment(
            done.id,
            3,
            "keep",
            2.420,
            description="MATRIX_LR 0.04 -> 0.05",
            hypothesis="a larger LR converges faster in 60 s",
            diff=DIFF,
            decision_reason="improved beyond noise",
            tok_per_sec=5100,
            steps=120,
            band=0.01,
        ),
        experiment(
            done.id,
            4,
            "discard",
            2.450,
            description=f"{HOSTILE} deeper",
            hypothesis=f"{SVG} hypothesis",
            diff=HOSTILE_DIFF,
            decision_reason=f"not better {IMG}",
            band=0.012,
            contended=True,
        ),
        experiment(
            done.id,
            5,
            "crash",
            None,
            description="bf16 everywhere",
            error=f"Traceback\nValueError: {SCRIPT}{SVG}",
            exit_code=1,
        ),
        experiment(
            done.id,
            6,
            "rejected",
            None,
            description="edited evaluate.py",
            decision_reason="out of scope: inside/evaluate.py",
        ),
        experiment(done.id, 7, "keep", 2.380, description="WARMDOWN 0.5 -> 0.6", diff=DIFF.replace("0.05", "0.06")),
        experiment(done.id, 8, "timeout", None, description="DEPTH 2 -> 12"),
    ]
    ledger.save(db, *runs)
    log_dir = state / "runs" / "model-nightly" / "0004"
    log_dir.mkdir(parents=True)
    (log_dir / "train.log").write_text(
        "".join(f"step {i} | loss {6 - i / 10:.3f} | lr 0.0400 | tok/s 5,000 | {i}.0/60s\n" for i in range(1, 11))
        + f"oops {HOSTILE}\n"
    )
    runs[3].run_dir = str(log_dir)
    talk = state / "conversations" / "model-nightly" / "0004.json"  # as agents/conversation.py writes it
    talk.parent.mkdir(parents=True)
    talk.write_text(
        json.dumps(
            {
                "version": 1,
                "attempts": [
                    {
                        "model": "claude-sonnet-4-6",
                        "outcome": "submitted",
                        "messages": [
                            {"role": "user", "content": "Propose one change."},
                            {"role": "assistant", "content": [{"type": "text", "text": f"Sure. {HOSTILE}"}]},
                        ],
                    }
                ],
            }
        )
    )
    runs[3].conversation = str(talk)
    ledger.save(db, runs[3])
    ledger.save(
        db,
        LlmCall(
            campaign_id=done.id,
            run_id=runs[2].id,
            model="claude-sonnet-4-6",
            input_tokens=1200,
            output_tokens=300,
            cache_read_tokens=9000,
            cost_usd=0.0123,
            latency_s=3.1,
        ),
        LlmCall(
            campaign_id=done.id,
            run_id=runs[3].id,
            model="claude-sonnet-4-6",
            input_tokens=1300,
            output_tokens=200,
            cost_usd=0.0101,
            latency_s=2.2,
            status="error",
            error=f"overloaded {IMG}",
        ),
        Event(campaign_id=done.id, run_id=runs[3].id, kind="discard", message=f"#4 {HOSTILE}"),
    )
    done.best_run_id = runs[6].id
    ledger.save(db, done)

    live = Campaign(
        tag="nightly",
        program="data",
        branch="autoresearch-data/nightly",
        worktree=str(state / "wt2"),
        base_commit="b" * 40,
        agent="offline",
        dataset="stdlib",
        budget_s=60,
        status="running",
    )
    ledger.save(db, live)
    run_dir = state / "runs" / "data-nightly" / "0002"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text("model: ...\nstep 10 | loss 5.123 | lr 0.0400 | tok/s 4,321 | 12.5/60s\n")
    ledger.save(
        db,
        experiment(live.id, 1, "measured", 3.0, kind="baseline", description="baseline"),
        Run(campaign_id=live.id, seq=2, status="training", description="VOCAB_SIZE 2048 -> 4096", run_dir=str(run_dir)),
    )
    lock = slots.try_lock(
        StatePaths(state, "data", "nightly").lock
    )  # held by "its daemon": the campaign shows as running
    yield state
    lock.close()


@pytest.fixture(scope="module")
def server(state):
    with running(create_app(state)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if chromium() is None:
        if os.environ.get("ARX_REQUIRE_BROWSER"):  # set by .ci/run: there a missing browser is a failure, not a skip
            pytest.fail("ARX_REQUIRE_BROWSER is set but no Chromium was found")
        pytest.skip("no Chromium on this machine: apt-get install chromium (or set ARX_CHROMIUM); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def live(page, url: str) -> None:
    """Open a page and wait until its change stream is connected."""
    page.goto(url)
    page.wait_for_selector("body[data-live=on]")


def campaign_id(state: Path, program: str) -> int:
    return ledger.find_campaign(state / "experiments.db", program, "nightly").id


def run_id(state: Path, program: str, seq: int) -> int:
    return next(
        r.id for r in ledger.campaign_runs(state / "experiments.db", campaign_id(state, program)) if r.seq == seq
    )


def test_overview_lists_campaigns_and_the_run_in_flight(page, server, state):
    live(page, server + "/")
    names = page.locator(".campaign .name").all_inner_texts()
    assert names == ["model/nightly", "data/nightly"]
    model = page.locator(f'.campaign[data-campaign-id="{campaign_id(state, "model")}"]')
    assert "2.3800" in model.inner_text()  # best val_bpb: run 7
    assert "0.1240" in model.inner_text()  # gain over the baseline mean 2.504
    assert "$0.02" in model.inner_text()
    assert "sandbox namespaces" in model.inner_text()
    assert f"band {keep_band(Policy(), Noise(0.004, 6)):.4f}" in model.inner_text()  # the band on today's noise
    assert "1 kept" not in model.inner_text() and "2 kept" in model.inner_text()  # baselines are not keeps
    flight = page.locator(".flight.in-flight")
    assert flight.count() == 1
    text = flight.inner_text()
    assert "#2" in text and "training" in text and "loss 5.123" in text and "4,321 tok/s" in text and "12/60s" in text
    shot(page, "overview")


def test_progress_chart_has_one_point_per_run(page, server, state):
    cid = campaign_id(state, "model")
    live(page, f"{server}/campaign/{cid}")
    page.wait_for_function("() => window.arxCharts && window.arxCharts.progress")
    chart = page.evaluate("() => window.arxCharts.progress.data")
    runs = ledger.campaign_runs(state / "experiments.db", cid)
    assert chart[0] == [r.seq for r in runs]
    # discarded, kept, champion measured, re-run/waiting, set aside, failed, unscored
    point_series = [4, 5, 7, 8, 9, 10, 11]
    where = {1: 7, 2: 7, 3: 5, 4: 9, 5: 10, 6: 11, 7: 5, 8: 10}  # run 4 was set aside (contended)
    for i, r in enumerate(runs):
        drawn = [s for s in point_series if chart[s][i] is not None]
        assert drawn == [where[r.seq]], f"run {r.seq} ({r.kind} {r.status}) drawn in series {drawn}"
    assert [v for v in chart[5] if v is not None] == [r.val_bpb for r in runs if r.status == "keep"]
    assert chart[3][-1] == 2.38  # the running best
    bands = page.evaluate(
        "() => fetch(location.pathname.replace('/campaign/', '/api/campaign/') + '/chart')"
        ".then(r => r.json()).then(d => d.band)"
    )
    rule = keep_band(Policy(), Noise(0.004, 6))  # the policy's band on sigma until a decision stores its band
    assert bands[:4] == [pytest.approx(rule), pytest.approx(rule), 0.01, 0.012]
    assert chart[1][2] == pytest.approx(2.42 + 0.01) and chart[2][3] == pytest.approx(2.42 - 0.012)
    assert page.locator("table.runs tbody tr[data-run-id]").count() == len(runs)
    shot(page, "campaign")


def test_runs_table_sorts_and_filters(page, server, state):
    cid = campaign_id(state, "model")
    page.goto(f"{server}/campaign/{cid}")
    page.click("table.runs th a:text('val_bpb')")  # descending first
    page.wait_for_url("**sort=val_bpb**")
    seqs = page.locator("table.runs tbody td:first-child").all_inner_texts()
    assert seqs[:5] == ["2", "1", "4", "3", "7"]  # scored runs worst first, unscored last
    page.click(".filters a:has-text('keep')")
    page.wait_for_url("**status=keep**")
    assert page.locator("table.runs tbody tr .badge").all_inner_texts() == ["keep"] * 2


def test_run_page_shows_diff_log_loss_and_llm_calls(page, server, state):
    rid = run_id(state, "model", 4)
    live(page, f"{server}/run/{rid}")
    assert page.locator("pre.diff .d-add").first.inner_text() == "+MATRIX_LR = 0.05"
    assert page.locator("pre.diff .d-del").first.inner_text() == "-MATRIX_LR = 0.04"
    assert "step 10 | loss 5.000" in page.locator("pre.log[data-log='train.log']").inner_text()
    page.wait_for_function("() => window.arxCharts && window.arxCharts.loss")
    assert page.evaluate("() => window.arxCharts.loss.data[0]") == list(range(1, 11))
    assert "overloaded" in page.locator("table.calls").inner_text()
    page.click("text=show")
    assert f"[assistant] Sure. {HOSTILE}" in page.locator("pre.log[data-log='conversation']").inner_text()
    shot(page, "run")


def test_compare_two_runs(page, server, state):
    a, b = run_id(state, "model", 3), run_id(state, "model", 7)
    page.goto(f"{server}/run/{a}")
    page.fill("form.compare input[name=seq]", "7")
    page.click("form.compare button")
    page.wait_for_url("**/compare**")
    text = page.locator("table.compare-metrics").inner_text()
    assert "-0.0400" in text  # val_bpb 2.42 -> 2.38
    assert page.locator("pre.diff").count() == 2
    assert f"/run/{b}" in page.content()
    shot(page, "compare")


def test_hostile_text_stays_text(page, server, state):
    cid, rid = campaign_id(state, "model"), run_id(state, "model", 4)
    for url in (
        "/",
        f"/campaign/{cid}",
        f"/run/{rid}",
        f"/run/{run_id(state, 'model', 5)}",
        f"/compare?a={rid}&b={rid}",
    ):
        live(page, server + url)
        assert page.evaluate(hostile_js()) == {"pwned": False, "injected": 0, "foreign": 0}, url
    # ... and shows as the text it is
    body = page.locator("body").inner_text()
    assert IMG in body and SCRIPT in body
    page.goto(f"{server}/run/{rid}")
    assert SVG in page.locator("p.hypothesis").inner_text()
    assert f"oops {HOSTILE}" in page.locator("pre.log[data-log='train.log']").inner_text()
    shot(page, "hostile")


def test_a_run_added_while_the_page_is_open_appears_without_a_reload(page, server, state):
    db = state / "experiments.db"
    cid = campaign_id(state, "model")
    live(page, f"{server}/campaign/{cid}")
    page.wait_for_function("() => window.arxCharts && window.arxCharts.progress")
    before = page.evaluate("() => window.arxCharts.progress.data[0].length")
    page.evaluate("() => { window.__sameDocument = true; }")
    run = experiment(cid, 9, "keep", 2.350, description=f"new keep {HOSTILE}", decision_reason="improved beyond noise")
    ledger.save(db, run)
    page.wait_for_selector(f'table.runs tr[data-run-id="{run.id}"]')
    page.wait_for_function(f"() => window.arxCharts.progress.data[0].length === {before + 1}")
    champion = ledger.find_campaign(db, "model", "nightly")
    champion.best_run_id = run.id  # as the daemon does after a keep: the summary follows
    ledger.save(db, champion)
    page.wait_for_selector(".tile.primary .value:text('2.3500')")
    assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
    assert page.evaluate(hostile_js()) == {"pwned": False, "injected": 0, "foreign": 0}
    shot(page, "live-update")


def test_overview_follows_the_trainer_log(page, server, state):
    live(page, server + "/")
    log = state / "runs" / "data-nightly" / "0002" / "train.log"
    with open(log, "a") as f:
        f.write("step 20 | loss 4.777 | lr 0.0400 | tok/s 4,400 | 25.0/60s\n")
    page.wait_for_selector(".flight:has-text('loss 4.777')")


def test_token_is_required_on_every_request(browser, state):
    with running(create_app(state, token=TOKEN)) as base:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        for path in ("/", "/static/dashboard.js", "/events", "/api/campaign/1/chart", f"/?token={TOKEN}x"):
            response = page.request.get(base + path)
            assert response.status == 401, path
        assert page.request.get(base + "/", headers={"authorization": f"Bearer {TOKEN}"}).status == 200
        live(page, f"{base}/?token={TOKEN}")  # sets the cookie: scripts, the stream and links then work
        assert TOKEN not in page.url  # and leaves the address bar
        page.click(".campaign .name >> nth=0")
        page.wait_for_function("() => window.arxCharts && window.arxCharts.progress")
        context.close()


def test_loopback_server_refuses_foreign_host_headers(server):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the ledger."""
    request = urllib.request.Request(server + "/", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request)
    assert e.value.code == 400
    assert urllib.request.urlopen(server + "/").status == 200


def test_serve_refuses_a_public_address_without_a_token():
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--token" in result.output


def test_serve_says_so_when_the_port_is_taken():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = CliRunner().invoke(cli_app, ["serve", "--port", str(taken.getsockname()[1])])
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1" in result.output


def test_pages_leave_the_ledger_untouched(tmp_path, state):
    """Read-only: no migration, no write, even on a ledger whose schema is older than this arx."""
    db = tmp_path / "experiments.db"
    src = sqlite3.connect(state / "experiments.db")
    src.backup(dst := sqlite3.connect(db))
    src.close()
    dst.execute(
        "PRAGMA user_version = 0"
    )  # as if written by an older arx: the daemon would migrate it, the dashboard must not
    dst.commit()
    dst.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    cid = 1
    with running(create_app(tmp_path)) as base:
        for path in (
            "/",
            f"/campaign/{cid}",
            f"/api/campaign/{cid}/chart",
            f"/api/campaign/{cid}/cost",
            "/run/4",
            "/fragment/overview",
        ):
            assert urllib.request.urlopen(base + path).status == 200, path
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_logs_are_read_only_inside_the_state_dir_and_never_through_links(tmp_path):
    """A candidate can plant train.log as a link to a secret; the dashboard must not show the secret."""
    state = tmp_path / "state"
    secret = tmp_path / "secret.txt"
    secret.write_text("step 1 | loss 1.000 | lr 0.1 | tok/s 1 | 1.0/1s\nAPI_KEY=sk-live\n")
    linked = state / "runs" / "model-x" / "0001"
    linked.mkdir(parents=True)
    (linked / "train.log").symlink_to(secret)
    assert data.log_tails(state, {"run_dir": str(linked)}) == {}
    assert data.loss_curve(state, {"run_dir": str(linked)})["step"] == []
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "train.log").write_text("API_KEY=sk-live\n")
    assert data.log_tails(state, {"run_dir": str(outside)}) == {}
    (linked / "train.log").unlink()
    os.mkfifo(linked / "train.log")  # a FIFO would hang a plain open() forever
    assert data.log_tails(state, {"run_dir": str(linked)}) == {}
    from orchestrator import report

    training = report.Row(
        id=1, seq=1, kind="experiment", status="training", run_dir=str(linked), description=None, started_at=None
    )
    assert report.flight(state, training, 60)["loss"] is None
    (linked / "train.log").unlink()
    (linked / "train.log").symlink_to(secret)
    assert report.flight(state, training, 60)["loss"] is None, "never through a link"
    outside_run = report.Row(training, run_dir=str(outside))
    (outside / "train.log").write_text("step 1 | loss 1.000 | lr 0.1 | tok/s 1 | 1.0/1s\n")
    assert report.flight(state, outside_run, 60)["loss"] is None, "never outside the state directory"
    (linked / "train.log").unlink()
    (linked / "train.log").write_text("fine\n")
    assert data.log_tails(state, {"run_dir": str(linked)}) == {"train.log": "fine"}


def test_no_ledger_yet_is_a_clear_page(tmp_path):
    with running(create_app(tmp_path / "nothing")) as base, pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/")
    assert e.value.code == 503
    assert "start a campaign" in e.value.read().decode()


def test_noise_band_prefers_a_stored_band_and_else_follows_the_policy():
    assert data.noise_band(
        {"noise_sigma": 0.01, "noise_dof": 4, "settings": '{"policy": {"min_delta": 0.001, "sigma_multiple": 2.0}}'}
    ) == pytest.approx(keep_band(Policy(), Noise(0.01, 4)))  # a field of an older rule is ignored
    assert data.noise_band({"noise_sigma": 0.00001, "noise_dof": 9, "settings": "{}"}) == pytest.approx(0.001)
    assert data.noise_band({"noise_sigma": 0.01, "noise_dof": 0}) is None  # no seed noise measured yet
    assert data.noise_band({"noise_sigma": 0.01, "noise_band": '{"band": 0.05, "how": "2 sigma widened"}'}) == 0.05
    assert data.noise_band({"noise_sigma": None}) is None


def test_summaries_are_the_ones_arx_daemon_status_prints(state):
    """One function computes a campaign's figures for both: the dashboard adds only its sparkline."""
    from orchestrator import report

    db = state / "experiments.db"
    ours = {c["id"]: c for c in data.overview(db, state)["campaigns"]}
    theirs = report.status(db, state)
    assert len(theirs) == len(ours) == 2
    for expected in theirs:
        got = ours[expected["id"]]
        volatile = ("heartbeat_age_s", "since_last_keep_s", "in_flight")  # clocks, read a moment apart
        assert {k: v for k, v in got.items() if k in expected and k not in volatile} == {
            k: v for k, v in expected.items() if k not in volatile
        }


def test_watcher_reports_changes_pages_show_and_not_heartbeats(tmp_path):
    state = tmp_path / "state"
    db = state / "experiments.db"
    c = Campaign(
        tag="w",
        program="model",
        branch="autoresearch/w",
        worktree="w",
        base_commit="a" * 40,
        agent="offline",
        dataset="stdlib",
        budget_s=60,
        status="running",
    )
    ledger.save(db, c)
    run_dir = state / "runs" / "model-w" / "0001"
    run_dir.mkdir(parents=True)
    (run_dir / "train.log").write_text("step 1 | loss 5.000 | lr 0.0400 | tok/s 1,000 | 1.0/60s\n")
    run = Run(campaign_id=c.id, seq=1, status="proposed", run_dir=str(run_dir))
    ledger.save(db, run)
    watcher = data.Watcher(db, state)
    try:
        assert watcher.poll() is None
        c.heartbeat_at = datetime.now(UTC)
        c.pid = 4242
        ledger.save(db, c)
        assert watcher.poll() is None  # a heartbeat changes nothing a page shows
        run.status = "training"
        ledger.save(db, run)
        assert watcher.poll() == "ledger"
        with open(run_dir / "train.log", "a") as f:
            f.write("step 2 | loss 4.900 | lr 0.0400 | tok/s 1,000 | 2.0/60s\n")
        assert watcher.poll() == "progress"
        assert watcher.poll() is None
        ledger.log_event(db, c.id, "note", "something happened")
        assert watcher.poll() == "ledger"
    finally:
        watcher.close()


def test_token_redirect_stays_on_this_site(state):
    with running(create_app(state, token=TOKEN)) as base:
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(f"{base}//evil.example/?token={TOKEN}")
    assert e.value.code == 303
    assert e.value.headers["location"] == "/evil.example/"
    assert "HttpOnly" in e.value.headers["set-cookie"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_sparkline_follows_the_running_best_and_stays_small():
    assert data.sparkline([], 10) is None
    path = data.sparkline([(1, 3.0), (5, 2.9), (12, 2.8)], 20)  # figures.steps: the baseline, then one step a keep
    assert path == "M0,4.0 H50.5 V22.0 H138.9 V40.0 H240"
    many = data.sparkline([(i, 3 - i * 1e-4) for i in range(1, 10_001)], 10_000)
    assert many.count("V") <= data.SPARK_W + 1


def test_chart_data_is_valid_json_when_a_score_is_infinite(tmp_path):
    import json

    db = tmp_path / "experiments.db"
    c = Campaign(
        tag="inf",
        program="model",
        branch="b",
        worktree="w",
        base_commit="a" * 40,
        agent="offline",
        dataset="stdlib",
        budget_s=60,
    )
    ledger.save(db, c)
    ledger.save(db, experiment(c.id, 1, "keep", 2.5, kind="baseline"), experiment(c.id, 2, "discard", float("inf")))
    chart = data.progress_chart(db, c.id)
    json.dumps(chart, allow_nan=False)  # what the JSON response does: no inf, no NaN
    assert chart["discarded"] == [None, None] and chart["unscored"] == [None, 0]


# ---------------------------------------------------------------------------------------------
# The numbers (issue 16, item 6) on a ledger built by hand, and the chart as runs arrive
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truth(tmp_path_factory) -> Path:
    import handmade

    state = tmp_path_factory.mktemp("truth") / "state"
    handmade.build(state)
    return state


def test_the_dashboard_shows_the_handmade_figures(page, truth):
    from handmade import EXPECTED

    db = truth / "experiments.db"
    cid = campaign_id_of(db, "truth")
    with running(create_app(truth)) as base:
        live(page, base + "/")
        tiles = {
            page.locator(f".tile:has(.label:text-is('{label}')) .value").inner_text(): label
            for label in ("best val_bpb", "vs baseline", "drift")
        }
        assert tiles == {
            f"{EXPECTED['best']:.4f}": "best val_bpb",
            f"{-EXPECTED['gain']:+.4f}": "vs baseline",
            f"{EXPECTED['best'] - EXPECTED['when_kept']:+.4f}": "drift",
        }
        card = page.locator(".campaign").inner_text()
        assert "champion #4 · mean of 3 seeds" in card and "1 kept" in card
        assert page.locator(".flight.in-flight").count() == 0  # stopped: nothing is training or being scored
        assert "waiting" in page.locator(".flight.waiting").inner_text()  # #9 waits for its verdict
        assert "evaluating" not in card
        live(page, f"{base}/campaign/{cid}")
        page.wait_for_function("() => window.arxCharts && window.arxCharts.progress")
        chart = page.evaluate("() => window.arxCharts.progress.data")
        seqs = chart[0]
        assert [s for s, v in zip(seqs, chart[5]) if v is not None] == [4]  # kept: the verdict row only
        assert [s for s, v in zip(seqs, chart[7]) if v is not None] == [1, 2, 3, 8]  # the champion, measured
        assert chart[3] == [pytest.approx(EXPECTED["steps"][0][1])] * 3 + [pytest.approx(EXPECTED["steps"][1][1])] * 9
        shot(page, "truth-campaign")
        rid = run_id_of(db, "truth", 4)
        live(page, f"{base}/run/{rid}")
        rows = page.locator("table.pairs tbody tr").all_inner_texts()
        assert [r.split() for r in rows] == [
            ["1", "#1", "2.5000", "#4", "2.4700", "+0.0300"],
            ["2", "#2", "2.5400", "#5", "2.5000", "+0.0400"],
        ]
        links = page.locator("table.pairs a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert links == [f"/run/{run_id_of(db, 'truth', s)}" for s in (1, 4, 2, 5)]
        assert f"/compare?a={rid}&b={run_id_of(db, 'truth', 1)}" in page.locator("a.paired").get_attribute("href")
        live(page, f"{base}/run/{run_id_of(db, 'truth', 6)}")
        assert "set aside (never used): #6" in page.locator(".judged").inner_text()
        shot(page, "truth-run")


def campaign_id_of(db: Path, tag: str) -> int:
    return ledger.find_campaign(db, "model", tag).id


def run_id_of(db: Path, tag: str, seq: int) -> int:
    return next(r.id for r in ledger.campaign_runs(db, campaign_id_of(db, tag)) if r.seq == seq)


def y_range(page) -> list[float]:
    return page.evaluate("() => [window.arxCharts.progress.scales.y.min, window.arxCharts.progress.scales.y.max]")


def test_the_live_chart_rescales_as_runs_arrive(page, tmp_path):
    """A page opened before any run fills in as they come; one left open draws a new best below its first floor.
    Waits are on the chart's own state (its data and its y scale), never on time; the page is never reloaded."""
    state = tmp_path / "state"
    db = state / "experiments.db"
    c = Campaign(
        tag="rescale",
        program="model",
        branch="autoresearch/rescale",
        worktree="w",
        base_commit="a" * 40,
        agent="offline",
        dataset="stdlib",
        budget_s=60,
        status="stopped",
    )
    ledger.save(db, c)
    with running(create_app(state)) as base:
        live(page, f"{base}/campaign/{c.id}")
        page.wait_for_selector("#progress-chart p:text('no runs yet')")
        page.evaluate("() => { window.__sameDocument = true; }")
        ledger.save(db, Run(campaign_id=c.id, seq=1, kind="baseline", status="training", description="baseline 1/2"))
        page.wait_for_function("() => window.arxCharts.progress && window.arxCharts.progress.data[0].length === 1")
        baselines = [
            Run(campaign_id=c.id, seq=2, kind="baseline", status="measured", val_bpb=3.10, commit="a" * 40),
            Run(campaign_id=c.id, seq=3, kind="baseline", status="measured", val_bpb=3.14, commit="a" * 40),
        ]
        ledger.save(db, *baselines)
        page.wait_for_function("() => window.arxCharts.progress.data[0].length === 3")
        low, high = y_range(page)
        assert low < 3.10 and 3.14 < high, "the first scores fill the chart opened before them"
        keep = Run(campaign_id=c.id, seq=4, kind="experiment", status="keep", val_bpb=2.20, commit="b" * 40)
        ledger.save(db, keep)
        page.wait_for_function("() => window.arxCharts.progress.data[0].length === 4")
        low, high = y_range(page)
        assert low < 2.20 < 3.14 < high, "a new best far below the first floor is drawn"
        assert page.evaluate("() => window.__sameDocument") is True
        shot(page, "rescaled")


def test_serve_shows_a_damaged_ledger_as_a_page(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "experiments.db").write_bytes(b"not a database, whatever it was" * 100)
    with running(create_app(state)) as base, pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/")
    page = e.value.read().decode()
    assert e.value.code == 503 and "The ledger cannot be read" in page
    assert f"the ledger {state / 'experiments.db'} is damaged" in page and "nothing SQLite can read" in page


def test_the_dashboard_and_the_cli_do_not_import_each_other():
    """Formatting lives below both (orchestrator/formatting.py): the web app never imports the command line."""
    import ast

    bad = []
    for path in sorted((ROOT / "orchestrator" / "web").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names]
                if any(n == "cli" or n.endswith(".cli") or n.startswith("cli.") for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == "orchestrator.cli" for a in node.names):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad
