"""What the dashboard shows, read from the ledger without ever writing to it.

Plain sqlite3 opened with `mode=ro` (as `report` does) and `SELECT *` into dicts rather than the
sqlmodel classes: a column another part of arx adds later (seed, fingerprint, sandbox, noise band)
shows up on the run page without a change here, and a database one migration behind or ahead of
this code still reads, because nothing is selected by a model class and nothing is migrated.

Files named by the ledger (a run's logs) were written inside a sandbox by candidate code, so they
are read only below the state directory, never through a symbolic link, and only their tail.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from .. import report
from ..policy import Noise, from_dict, keep_band
from ..statuses import UNFINISHED, Status, sql_list

FAILED = ("crash", "timeout", "invalid")  # trained (or tried to) and produced no usable score
STATUSES = tuple(Status)
PAGE_SIZE = 100
SORTS = ("seq", "status", "val_bpb", "test_bpb", "tok_per_sec", "training_seconds", "started_at")  # runs table columns
LOG_NAMES = ("train.log", "prepare.log", "eval.log")
LOG_TAIL_BYTES = 16 * 1024
LOG_TAIL_LINES = 60
LOSS_LOG_BYTES = 8 * 2**20  # a loss curve reads at most this much of a training log
LOSS_POINTS = 2000  # and keeps at most this many points
DIFF_LINES = 4000
CHART_DESCRIPTION_CHARS = 80
CONVERSATION_BYTES = 8 * 2**20
# Columns the run page lays out itself; any other column (added by a later migration) is listed as is.
# fmt: off
SHOWN_RUN_COLUMNS = {
    "id", "campaign_id", "seq", "kind", "parent_commit", "commit", "description", "hypothesis", "diff", "status",
    "val_bpb", "test_bpb", "training_seconds", "eval_seconds", "agent_seconds", "total_seconds", "steps",
    "tokens", "tok_per_sec", "peak_memory_mb", "num_params", "exit_code", "error", "decision_reason", "rerun_of",
    "pid", "run_dir", "started_at", "ended_at", "tag", "program", "train_wall_s", "conversation",
}
SHOWN_CAMPAIGN_COLUMNS = {
    "id", "tag", "program", "branch", "base_commit", "agent", "llm_model", "dataset", "budget_s", "status",
    "created_at", "best_run_id", "noise_sigma", "stop_reason", "note", "sandbox",
}
# fmt: on


def connect(db: Path) -> sqlite3.Connection:
    return report.connect(db)


def rows(con: sqlite3.Connection, sql: str, params: tuple | list = ()) -> list[dict]:
    return [dict(r) for r in con.execute(sql, params)]


def one(con: sqlite3.Connection, sql: str, params: tuple | list = ()) -> dict | None:
    r = con.execute(sql, params).fetchone()
    return dict(r) if r else None


def has_column(con: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether this ledger has a column a later migration adds (the dashboard reads older ledgers as they are)."""
    return any(r[1] == column for r in con.execute(f"PRAGMA table_info({table})"))


def json_or_none(value) -> object | None:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def noise_band(campaign: dict) -> float | None:
    """The band a change must beat: a stored band if this ledger has one, else the policy's rule on sigma."""
    for key in ("noise_band", "band"):
        stored = json_or_none(campaign.get(key))
        if isinstance(stored, dict):
            stored = stored.get("band")
        if isinstance(stored, (int, float)):
            return float(stored)
    sigma = campaign.get("noise_sigma")
    if sigma is None:
        return None
    settings = json_or_none(campaign.get("settings")) or {}
    policy = settings.get("policy", {}) if isinstance(settings, dict) else {}
    policy = from_dict(policy if isinstance(policy, dict) else {})
    return keep_band(policy, Noise(sigma, campaign.get("noise_dof") or 0))


# ---------------------------------------------------------------------------------------------
# Files the ledger points at
# ---------------------------------------------------------------------------------------------
def run_file(state_dir: Path, run_dir: str | None, name: str) -> Path | None:
    """A file of a run, only if the run directory lies inside this state directory."""
    if not run_dir:
        return None
    directory = Path(run_dir).resolve()
    if not directory.is_relative_to(state_dir.resolve()):
        return None
    return directory / name


def read_tail(path: Path | None, limit: int) -> str | None:
    """The last `limit` bytes of a regular file, never following a link the sandbox could have planted."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        f.seek(max(0, info.st_size - limit))
        return f.read(limit).decode(errors="replace")


def conversation(state_dir: Path, run: dict) -> str | None:
    """The agent's conversation for this run as `arx-daemon show` prints it (long blocks clipped)."""
    path = run.get("conversation")
    if not path or not Path(path).resolve().is_relative_to(state_dir.resolve()):
        return None
    text = read_tail(Path(path), CONVERSATION_BYTES + 1)
    if text is None:
        return None
    if len(text) > CONVERSATION_BYTES:
        return f"(too large to show here: arx-daemon show --full prints it; {path})"
    from agents import conversation as conversations

    try:
        return conversations.render(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        return f"(unreadable conversation file {path}: {e})"


def log_tails(state_dir: Path, run: dict) -> dict[str, str]:
    out = {}
    for name in LOG_NAMES:
        text = read_tail(run_file(state_dir, run.get("run_dir"), name), LOG_TAIL_BYTES)
        if text:
            out[name] = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
    return out


def step_point(line: str) -> tuple[int, float | None, float, float] | None:
    """A trainer's `step N | loss L | lr .. | tok/s T | E/Bs` line as (step, loss or None, tok/s, elapsed)."""
    m = report.STEP_LINE.match(line)
    if not m:
        return None
    loss = float(m["loss"])
    return int(m["step"]), loss if math.isfinite(loss) else None, float(m["tok"].replace(",", "")), float(m["elapsed"])


def train_log(state_dir: Path, run: dict, limit: int) -> str:
    return read_tail(run_file(state_dir, run.get("run_dir"), "train.log"), limit) or ""


def loss_curve(state_dir: Path, run: dict) -> dict:
    """Every step line of a run's training log, thinned to at most LOSS_POINTS."""
    points = [p for line in train_log(state_dir, run, LOSS_LOG_BYTES).splitlines() if (p := step_point(line))]
    stride = max(1, -(-len(points) // LOSS_POINTS))
    kept = points[::stride]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return {"step": [p[0] for p in kept], "loss": [p[1] for p in kept], "tok_per_sec": [p[2] for p in kept]}


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------
TABLE_FIELDS = (
    "id, seq, kind, status, val_bpb, test_bpb, tok_per_sec, training_seconds, description, decision_reason, started_at"
)
# Every figure of a campaign's summary in one pass over its runs (grouped by status, combined below);
# the same definitions as `report.status`, which asks one query per figure.
SUMMARY_SQL = f"""
SELECT status, COUNT(*) AS n,
       COUNT(CASE WHEN kind = 'baseline' THEN val_bpb END) AS base_n,
       SUM(CASE WHEN kind = 'baseline' THEN val_bpb END) AS base_sum,
       COUNT(CASE WHEN "commit" = :best AND status = 'keep' THEN val_bpb END) AS best_n,
       SUM(CASE WHEN "commit" = :best AND status = 'keep' THEN val_bpb END) AS best_sum,
       COUNT(CASE WHEN "commit" = :best AND status = 'keep' THEN test_bpb END) AS best_test_n,
       SUM(CASE WHEN "commit" = :best AND status = 'keep' THEN test_bpb END) AS best_test_sum,
       MAX(CASE WHEN status = 'keep' AND kind = 'experiment' THEN ended_at END) AS last_keep,
       GROUP_CONCAT(CASE WHEN status IN {sql_list(UNFINISHED)} THEN id END) AS active,
       GROUP_CONCAT(CASE WHEN status = 'keep' AND val_bpb IS NOT NULL THEN seq || ':' || val_bpb END) AS kept,
       MAX(seq) AS last_seq,
       MAX(CASE WHEN {{band}} IS NOT NULL THEN id END) AS band_run
FROM run WHERE campaign_id = :campaign GROUP BY status
"""


def flight(state_dir: Path, run: dict, budget_s: float) -> dict:
    """A run in flight: phase, elapsed/budget and the live loss and tok/s from the last step line of its log."""
    lines = train_log(state_dir, run, LOG_TAIL_BYTES).splitlines() if run["status"] == "training" else []
    step, loss, tok_per_sec, elapsed = next((p for line in reversed(lines) if (p := step_point(line))), (None,) * 4)
    where = " ".join(str(run[k]) for k in ("executor", "node", "sandbox") if run.get(k))
    return {
        "id": run["id"],
        "seq": run["seq"],
        "kind": run["kind"],
        "phase": report.PHASE.get(run["status"], run["status"]),
        "description": run["description"],
        "since_s": report.ago(run["started_at"]),
        "budget_s": budget_s,
        "elapsed_s": elapsed,
        "loss": loss,
        "tok_per_sec": tok_per_sec,
        "step": step,
        "where": where or None,
    }


SPARK_W, SPARK_H = 240, 44


def sparkline(kept: list[tuple[int, float]], last_seq: int) -> str | None:
    """An SVG path (numbers only) of the running best over the runs: the overview's one-glance progress."""
    if not kept:
        return None
    kept.sort()
    best, steps = float("inf"), []
    for seq, value in kept:
        if value < best:
            best = value
            steps.append((seq, best))
    first = steps[0][0]
    lo, hi = steps[-1][1], steps[0][1]

    def x(seq: int) -> float:
        return (seq - first) / max(1, last_seq - first) * SPARK_W

    def y(value: float) -> float:
        return 4 + (hi - value) / (hi - lo) * (SPARK_H - 8) if hi > lo else SPARK_H / 2

    path, last_x = f"M0,{y(steps[0][1]):.1f}", None
    for seq, value in steps[1:]:
        if round(x(seq)) == last_x:  # several improvements within one pixel: draw the last
            path = path[: path.rindex(" V")]
        else:
            path += f" H{x(seq):.1f}"
            last_x = round(x(seq))
        path += f" V{y(value):.1f}"
    return path + f" H{SPARK_W}"


def ratio(total: float | None, count: int) -> float | None:
    return total / count if count else None


def summary(con: sqlite3.Connection, state_dir: Path, campaign: dict) -> dict:
    """One campaign as `arx-daemon status` shows it, plus its band, gain in sigmas and every run in flight.

    `report.status` asks SQLite one question per figure, each a scan of the campaign's runs; on a
    ledger of 10,000 runs with their diffs that is too slow for a live page, so SUMMARY_SQL asks
    them all in one pass, and a test checks that both agree.
    """
    best = (
        one(con, 'SELECT seq, "commit", description FROM run WHERE id = ?', (campaign["best_run_id"],))
        if campaign["best_run_id"]
        else None
    )
    band = "band" if has_column(con, "run", "band") else "NULL"  # the band each decision used (ledger v4 on)
    groups = rows(
        con, SUMMARY_SQL.format(band=band), {"campaign": campaign["id"], "best": best["commit"] if best else None}
    )
    band_run = max((g["band_run"] for g in groups if g["band_run"]), default=None)
    latest_band = con.execute("SELECT band FROM run WHERE id = ?", (band_run,)).fetchone()[0] if band_run else None
    total = {
        k: sum(g[k] or 0 for g in groups)
        for k in ("base_n", "base_sum", "best_n", "best_sum", "best_test_n", "best_test_sum")
    }
    baseline = ratio(total["base_sum"], total["base_n"])
    best_val = ratio(total["best_sum"], total["best_n"]) if best else None
    improvement = baseline - best_val if baseline is not None and best_val is not None else None
    last_keep = max((g["last_keep"] for g in groups if g["last_keep"]), default=None)
    state = report.campaign_state(state_dir, campaign["program"], campaign["tag"], campaign["status"])
    active = [int(i) for g in groups if g["active"] for i in g["active"].split(",")]
    flights = (
        [
            flight(state_dir, r, campaign["budget_s"])
            for r in rows(con, f"SELECT * FROM run WHERE id IN ({','.join('?' * len(active))}) ORDER BY id", active)
        ]
        if state == "running" and active
        else []
    )
    kept = [
        (int(seq), float(v)) for g in groups if g["kept"] for seq, v in (p.split(":") for p in g["kept"].split(","))
    ]
    sigma = campaign["noise_sigma"]
    cost = con.execute(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM llm_call WHERE campaign_id = ?", (campaign["id"],)
    ).fetchone()[0]
    return {
        "id": campaign["id"],
        "tag": campaign["tag"],
        "program": campaign["program"],
        "state": state,
        "reason": campaign["stop_reason"] if state in ("paused", "stopped") else campaign["note"],
        "agent": campaign["agent"],
        "model": campaign["llm_model"],
        "dataset": campaign["dataset"],
        "sandbox": campaign.get("sandbox"),  # how candidate code is confined (ledgers before v2 do not say)
        "runs": {g["status"]: g["n"] for g in groups},
        "total_runs": sum(g["n"] for g in groups),
        "flights": flights,
        "best_val_bpb": best_val,
        "best_test_bpb": ratio(total["best_test_sum"], total["best_test_n"]) if best else None,
        "best_run": best["seq"] if best else None,
        "best_description": best["description"] if best else None,
        "baseline_val_bpb": baseline,
        "improvement": improvement,
        "noise_sigma": sigma,
        "noise_dof": campaign.get("noise_dof"),
        "band": latest_band or noise_band(campaign),
        "gain_sigma": improvement / sigma if improvement is not None and sigma else None,
        "cost_usd": round(cost, 4),
        "since_last_keep_s": report.ago(last_keep),
        "spark": sparkline(kept, max((g["last_seq"] for g in groups), default=0)),
    }


def overview(db: Path, state_dir: Path) -> dict:
    """Every campaign's summary and the latest events of all of them."""
    con = connect(db)
    try:
        campaigns = [summary(con, state_dir, c) for c in rows(con, "SELECT * FROM campaign ORDER BY id")]
        events = rows(
            con,
            "SELECT e.*, c.program, c.tag FROM event e LEFT JOIN campaign c ON c.id = e.campaign_id "
            "ORDER BY e.id DESC LIMIT 15",
        )
    finally:
        con.close()
    return {"campaigns": campaigns, "events": events}


@dataclass(frozen=True)
class RunQuery:
    """One page of the runs table: sort column, direction, status filter, page number (from 1)."""

    sort: str = "seq"
    desc: bool = True
    status: str | None = None
    page: int = 1

    @classmethod
    def parse(cls, params) -> RunQuery:
        sort = params.get("sort", "seq")
        status = params.get("status") or None
        try:
            page = max(1, int(params.get("page", 1)))
        except ValueError:
            page = 1
        return cls(
            sort if sort in SORTS else "seq",
            params.get("dir", "desc") != "asc",
            status if status in STATUSES else None,
            page,
        )

    def link(self, **change) -> str:
        """The query string of this page with some fields changed (sorting or filtering returns to page 1)."""
        q = {
            "sort": self.sort,
            "dir": "desc" if self.desc else "asc",
            "status": self.status or "",
            "page": self.page,
        } | change
        if "page" not in change:
            q["page"] = 1
        return "?" + "&".join(f"{k}={v}" for k, v in q.items() if v not in ("", None))


def runs_table(con: sqlite3.Connection, campaign_id: int, counts: dict[str, int], q: RunQuery) -> dict:
    """One page of a campaign's runs, filtered and sorted in SQL (missing values last either way)."""
    where, params = "WHERE campaign_id = ?", [campaign_id]
    if q.status:
        where += " AND status = ?"
        params.append(q.status)
    total = counts.get(q.status, 0) if q.status else sum(counts.values())
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(q.page, pages)
    direction = "DESC" if q.desc else "ASC"
    # q.sort is one of SORTS; seq is never null, so its order can walk the (campaign_id, seq) index
    order = f"seq {direction}" if q.sort == "seq" else f"{q.sort} IS NULL, {q.sort} {direction}, seq DESC"
    found = rows(
        con,
        f"SELECT {TABLE_FIELDS}, {'contended' if has_column(con, 'run', 'contended') else '0 AS contended'} "
        f"FROM run {where} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE],
    )
    return {
        "rows": found,
        "total": total,
        "page": page,
        "pages": pages,
        "counts": counts,
        "query": RunQuery(q.sort, q.desc, q.status, page),
    }


def campaign_page(db: Path, state_dir: Path, campaign_id: int, q: RunQuery) -> dict | None:
    """A campaign's summary and one page of its runs table."""
    con = connect(db)
    try:
        row = one(con, "SELECT * FROM campaign WHERE id = ?", (campaign_id,))
        if row is None:
            return None
        head = summary(con, state_dir, row)
        table = runs_table(con, campaign_id, head["runs"], q)
    finally:
        con.close()
    return {"c": head | {"row": row, "extra": extra_fields(row, SHOWN_CAMPAIGN_COLUMNS)}, "table": table}


def progress_chart(db: Path, campaign_id: int) -> dict:
    """Series for the progress chart: one point per run at x = seq, in exactly one of the point series.

    Scored runs are `kept` or `other` (their val_bpb); runs without a score are `failed` (crash,
    timeout, invalid) or `unscored` (rejected, interrupted, in flight), drawn on the chart's floor.
    `best` is the running best of kept runs (a step line), `test` the test_bpb of kept runs.
    """
    con = connect(db)
    try:
        band_column = "band" if has_column(con, "run", "band") else "NULL"  # the band each decision used (v4)
        found = con.execute(
            f"SELECT seq, id, status, kind, substr(description, 1, {CHART_DESCRIPTION_CHARS}), val_bpb, test_bpb, "
            f"{band_column} FROM run WHERE campaign_id = ? ORDER BY seq, id",
            (campaign_id,),
        ).fetchall()
        camp = one(con, "SELECT * FROM campaign WHERE id = ?", (campaign_id,)) or {}
    finally:
        con.close()
    seq, ids, status, kind, description, val, test, used = (
        (list(column) for column in zip(*found)) if found else ([] for _ in range(8))
    )
    series = {"seq": seq, "id": ids, "status": status, "kind": kind, "description": [d or "" for d in description]}
    kept, other, kept_test, failed, unscored, running_best, bands = [], [], [], [], [], [], []
    best, fallback = None, noise_band(camp)
    band = None
    val = [v if v is None or math.isfinite(v) else None for v in val]  # JSON has no inf; a diverged run shows unscored
    test = [t if t is None or math.isfinite(t) else None for t in test]
    for s, v, t, b in zip(status, val, test, used):
        band = b if b is not None else band  # the band of the latest decision, from then on
        bands.append(band if band is not None else fallback)
        scored = v is not None and s not in FAILED
        if scored and s == "keep":
            best = v if best is None else min(best, v)
        kept.append(v if scored and s == "keep" else None)
        other.append(v if scored and s != "keep" else None)
        kept_test.append(t if scored and s == "keep" else None)
        failed.append(0 if s in FAILED else None)
        unscored.append(0 if not scored and s not in FAILED else None)
        running_best.append(best)
    return series | {
        "kept": kept,
        "other": other,
        "test": kept_test,
        "failed": failed,
        "unscored": unscored,
        "best": running_best,
        "band": bands,
    }


def cost_chart(db: Path, campaign_id: int) -> dict:
    """Cumulative LLM dollars and tokens over time (unix seconds), one point per call."""
    con = connect(db)
    try:
        calls = con.execute(
            """SELECT (julianday(created_at) - 2440587.5) * 86400.0,
                                      SUM(cost_usd) OVER (ORDER BY id),
                                      SUM(input_tokens + cache_read_tokens + cache_write_tokens + output_tokens)
                                          OVER (ORDER BY id)
                               FROM llm_call WHERE campaign_id = ? ORDER BY id""",
            (campaign_id,),
        ).fetchall()
    finally:
        con.close()
    t, cost, tokens = (list(column) for column in zip(*calls)) if calls else ([], [], [])
    return {"t": t, "cost": [round(c, 6) for c in cost], "tokens": tokens}


def diff_lines(diff: str | None) -> tuple[list[tuple[str, str]], int]:
    """A unified diff as (css class, line) pairs for highlighting, and how many lines were left out."""
    lines = (diff or "").splitlines()
    out = []
    for line in lines[:DIFF_LINES]:
        if line.startswith(("diff --git", "index ", "+++", "---", "new file", "deleted file")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out, max(0, len(lines) - DIFF_LINES)


def extra_fields(row: dict, shown: set[str]) -> list[tuple[str, str]]:
    """Columns a page does not lay out itself (hardware, settings, and whatever later migrations add)."""
    out = []
    for key, value in row.items():
        if key in shown or value is None or value == "":
            continue
        parsed = json_or_none(value) if isinstance(value, str) and value[:1] in "[{" else None
        out.append((key, json.dumps(parsed, indent=1, sort_keys=True) if parsed is not None else str(value)))
    return out


def run_detail(db: Path, state_dir: Path, run_id: int) -> dict | None:
    con = connect(db)
    try:
        run = one(
            con,
            "SELECT r.*, c.tag, c.program FROM run r JOIN campaign c ON c.id = r.campaign_id WHERE r.id = ?",
            (run_id,),
        )
        if run is None:
            return None
        campaign = one(con, "SELECT * FROM campaign WHERE id = ?", (run["campaign_id"],))
        calls = rows(con, "SELECT * FROM llm_call WHERE run_id = ? ORDER BY id", (run_id,))
        events = rows(con, "SELECT * FROM event WHERE run_id = ? ORDER BY id", (run_id,))
        # the champion this run was judged against: the kept run of its parent commit
        parent = (
            one(
                con,
                "SELECT id, seq FROM run WHERE campaign_id = ? AND \"commit\" = ? AND status = 'keep' AND id != ? "
                "ORDER BY id DESC LIMIT 1",
                (run["campaign_id"], run["parent_commit"], run_id),
            )
            if run["parent_commit"]
            else None
        )
        neighbours = rows(
            con,
            "SELECT id, seq FROM run WHERE campaign_id = ? AND seq IN (?, ?)",
            (run["campaign_id"], run["seq"] - 1, run["seq"] + 1),
        )
    finally:
        con.close()
    lines, hidden = diff_lines(run["diff"])
    return {
        "run": run,
        "campaign": campaign,
        "calls": calls,
        "events": events,
        "parent": parent,
        "prev": next((n for n in neighbours if n["seq"] < run["seq"]), None),
        "next": next((n for n in neighbours if n["seq"] > run["seq"]), None),
        "diff": lines,
        "diff_hidden": hidden,
        "logs": log_tails(state_dir, run),
        "conversation": conversation(state_dir, run),
        "extra": extra_fields(run, SHOWN_RUN_COLUMNS),
        "active": run["status"] in UNFINISHED,
        "cost": sum(c.get("cost_usd") or 0.0 for c in calls),
    }


def find_run_id(db: Path, campaign_id: int, seq: int) -> int | None:
    con = connect(db)
    try:
        r = con.execute(
            "SELECT id FROM run WHERE campaign_id = ? AND seq = ? ORDER BY id DESC LIMIT 1", (campaign_id, seq)
        ).fetchone()
    finally:
        con.close()
    return r[0] if r else None


# ---------------------------------------------------------------------------------------------
# Change detection for live pages
# ---------------------------------------------------------------------------------------------
RECENT_RUNS = 256  # runs that can still change (in flight, just decided) are among the newest rows
VOLATILE_CAMPAIGN_COLUMNS = ("heartbeat_at", "pid")  # written every few seconds; no page shows them


class Watcher:
    """Tells open pages what changed: the ledger (a run, a decision, an event, a call) or a trainer's log.

    `PRAGMA data_version` on a connection kept open changes exactly when another connection commits,
    so an idle ledger costs one pragma per poll. A commit is then compared with a snapshot of what
    pages show (the newest runs, the campaigns without their heartbeat, the last event and call
    ids), all read by primary key: a daemon's heartbeat every few seconds does not make every open
    page fetch its charts again. Logs of runs in training are stat()ed for progress.
    """

    def __init__(self, db: Path, state_dir: Path):
        self.con = connect(db)
        self.state_dir = state_dir
        self.version = self._data_version()
        self.snapshot, self.logs = self._snapshot()
        self.log_stamp = self._log_stamp()

    def _data_version(self) -> int:
        return self.con.execute("PRAGMA data_version").fetchone()[0]

    def _snapshot(self) -> tuple[tuple, list[Path]]:
        runs = self.con.execute(
            f"SELECT id, status, val_bpb, test_bpb, description, run_dir FROM run ORDER BY id DESC LIMIT {RECENT_RUNS}"
        ).fetchall()
        campaigns = [
            tuple(v for k, v in dict(r).items() if k not in VOLATILE_CAMPAIGN_COLUMNS)
            for r in self.con.execute("SELECT * FROM campaign ORDER BY id")
        ]
        last = tuple(self.con.execute("SELECT (SELECT MAX(id) FROM event), (SELECT MAX(id) FROM llm_call)").fetchone())
        logs = [p for r in runs if r[1] == "training" and (p := run_file(self.state_dir, r[5], "train.log"))]
        return (tuple(map(tuple, runs)), tuple(campaigns), last), logs

    def _log_stamp(self) -> tuple:
        stamp = []
        for p in self.logs:
            try:
                s = os.stat(p, follow_symlinks=False)
                stamp.append((s.st_size, s.st_mtime_ns))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def poll(self) -> str | None:
        """'ledger' if what pages show changed, 'progress' if only a training log grew, else None."""
        version = self._data_version()
        if version != self.version:
            self.version = version
            snapshot, self.logs = self._snapshot()
            if snapshot != self.snapshot:
                self.snapshot = snapshot
                self.log_stamp = self._log_stamp()
                return "ledger"
        stamp = self._log_stamp()
        if stamp != self.log_stamp:
            self.log_stamp = stamp
            return "progress"
        return None

    def close(self) -> None:
        self.con.close()
