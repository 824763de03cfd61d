"""Benchmark of the dashboard on a ledger of 10,000 runs, printed as JSON (never a timed test).

    uv run python -m bench dashboard [--runs 10000] [--repeat 20]

Times full HTTP responses (a real uvicorn server on loopback, a fresh connection per request) for
the overview, a campaign page holding every run, the chart JSON, a run page, and the change
stream's first event; then the same pages again while another process writes to the ledger as a
daemon does (a run, an event and an LLM call every 20 ms), to show reads are not blocked by writes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import click

from bench.daemon import build_ledger
from orchestrator import report
from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import Event, LlmCall, Run
from orchestrator.web.app import create_app, running

DIFF = "".join(f"-CONSTANT_{i} = {i}\n+CONSTANT_{i} = {i + 1}  # a comment of realistic length\n" for i in range(25))
WRITE_EVERY_S = 0.02


def realistic(db: Path) -> int:
    """Give every run what a real one carries (a ~2 KB diff, a hypothesis); returns the campaign with the most runs."""
    con = sqlite3.connect(db)
    con.execute(
        "UPDATE run SET diff = ?, hypothesis = 'a longer schedule lets the model settle', parent_commit = \"commit\"",
        (DIFF,),
    )
    con.commit()
    cid = con.execute("SELECT campaign_id FROM run GROUP BY campaign_id ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0]
    con.close()
    return cid


def write_like_a_daemon(db: Path, campaign_id: int, stop) -> None:
    """Append runs, events and LLM calls through the real ledger module until told to stop."""
    seq = 1_000_000
    while not stop.is_set():
        seq += 1
        run = Run(
            campaign_id=campaign_id,
            seq=seq,
            status="discard",
            val_bpb=3.0,
            description=f"written while reading {seq}",
            diff=DIFF,
        )
        ledger.save(db, run)
        ledger.save(
            db,
            Event(campaign_id=campaign_id, run_id=run.id, kind="discard", message="not better"),
            LlmCall(
                campaign_id=campaign_id, run_id=run.id, model="claude-sonnet-4-6", input_tokens=2000, cost_usd=0.01
            ),
        )
        time.sleep(WRITE_EVERY_S)


def timed_get(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url) as r:
        size = len(r.read())
    return (time.perf_counter() - t) * 1000, size


def first_event_ms(url: str) -> float:
    """Time until the change stream delivers its first event (`hello`)."""
    t = time.perf_counter()
    with urllib.request.urlopen(url) as r:
        r.readline()
    return (time.perf_counter() - t) * 1000


def measure(base: str, pages: dict[str, str], repeat: int) -> dict:
    out = {}
    for name, path in pages.items():
        timings = [timed_get(base + path) for _ in range(repeat)]
        ms = [t for t, _ in timings]
        out[name] = {"median_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1), "bytes": timings[-1][1]}
    stream = [first_event_ms(base + "/events") for _ in range(5)]
    out["events_first_message"] = {"median_ms": round(statistics.median(stream), 1), "max_ms": round(max(stream), 1)}
    return out


@click.command()
@click.option("--runs", default=10_000, show_default=True, help="runs in the benchmark ledger (one campaign)")
@click.option("--repeat", default=20, show_default=True, help="requests per page")
def main(runs: int, repeat: int) -> None:
    """Time the dashboard's pages on a large ledger, idle and under concurrent writes."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        db = build_ledger(state, runs, campaigns=1)
        cid = realistic(db)
        some_run = (
            sqlite3.connect(db)
            .execute("SELECT id FROM run WHERE campaign_id = ? ORDER BY seq DESC LIMIT 1", (cid,))
            .fetchone()[0]
        )
        pages = {
            "overview": "/",
            "campaign_page": f"/campaign/{cid}",
            "campaign_page_sorted_by_val_bpb": f"/campaign/{cid}?sort=val_bpb&dir=asc",
            "progress_chart_json": f"/api/campaign/{cid}/chart",
            "cost_chart_json": f"/api/campaign/{cid}/cost",
            "run_page": f"/run/{some_run}",
        }
        status = []
        for _ in range(repeat):  # the CLI's own queries on the same ledger: a yardstick for this machine's speed
            t = time.perf_counter()
            report.status(db, state)
            status.append((time.perf_counter() - t) * 1000)
        result: dict = {
            "runs_in_ledger": runs,
            "load_average": os.getloadavg(),
            "status_queries_median_ms": round(statistics.median(status), 1),
        }
        with running(create_app(state)) as base:
            timed_get(base + "/")  # warm imports and template compilation
            result["idle"] = measure(base, pages, repeat)
            stop = multiprocessing.Event()
            writer = multiprocessing.Process(target=write_like_a_daemon, args=(db, cid, stop))
            writer.start()
            try:
                result["while_a_daemon_writes"] = measure(base, pages, repeat)
            finally:
                stop.set()
                writer.join()
            result["rows_written_meanwhile"] = (
                sqlite3.connect(db).execute("SELECT COUNT(*) FROM run").fetchone()[0] - runs
            )
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
