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
from dataclasses import dataclass
from pathlib import Path

from .. import capped, figures, report
from ..campaign.policy import keep_band
from ..ledger.statuses import UNFINISHED, Status

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
    "pid", "run_dir", "started_at", "ended_at", "tag", "program", "train_wall_s", "conversation", "decision",
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
    noise = figures.noise_of(campaign)
    return keep_band(figures.policy_of(campaign), noise) if noise else None


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
        f = capped.open_regular(path)
    except capped.Refused:
        return None
    with f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
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
SPARK_W, SPARK_H = 240, 44


def sparkline(steps: list[tuple[int, float]], last_seq: int) -> str | None:
    """An SVG path (numbers only) of the running best over the runs (`figures.steps`: it steps at keeps only)."""
    if not steps:
        return None
    first = steps[0][0]
    levels = [v for _, v in steps]
    lo, hi = min(levels), max(levels)

    def x(seq: int) -> float:
        return (seq - first) / max(1, last_seq - first) * SPARK_W

    def y(value: float) -> float:
        return 4 + (hi - value) / (hi - lo) * (SPARK_H - 8) if hi > lo else SPARK_H / 2

    path, last_x = f"M0,{y(steps[0][1]):.1f}", None
    for seq, value in steps[1:]:
        if round(x(seq)) == last_x:  # several keeps within one pixel: draw the last
            path = path[: path.rindex(" V")]
        else:
            path += f" H{x(seq):.1f}"
            last_x = round(x(seq))
        path += f" V{y(value):.1f}"
    return path + f" H{SPARK_W}"


def summary(con: sqlite3.Connection, state_dir: Path, campaign: dict, gains=None) -> dict:
    """One campaign as `arx-daemon status` shows it (the same function), plus its sparkline."""
    head = report.summary(con, state_dir, report.Row(campaign), gains)
    last_seq = con.execute("SELECT MAX(seq) FROM run WHERE campaign_id = ?", (campaign["id"],)).fetchone()[0] or 0
    return head | {
        "gain_sigma": head["improvement"] / head["noise_sigma"]
        if head["improvement"] is not None and head["noise_sigma"]
        else None,
        "spark": sparkline(head["steps"], last_seq),
    }


def overview(db: Path, state_dir: Path) -> dict:
    """Every campaign's summary and the latest events of all of them."""
    con = connect(db)
    try:
        gains = report.gains_lookup(con)
        campaigns = [summary(con, state_dir, c, gains) for c in rows(con, "SELECT * FROM campaign ORDER BY id")]
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

    The point series are `figures.CATEGORIES` (keys below): kept and discarded experiments, measurements of the
    champion (baselines, re-measures: never kept experiments), a candidate's other measurements (paired re-runs,
    a verdict row still waiting), measurements set aside, and on the chart's floor the failed runs and those
    without a score. `best` is the running best (`figures.steps`: it steps at keeps only), `test` the test_bpb of
    kept experiments, `band` the keep band of the latest decision so far (the policy's band on the seed noise
    before the first).
    """
    con = connect(db)
    try:
        camp = one(con, "SELECT * FROM campaign WHERE id = ?", (campaign_id,)) or {}
        found = report.campaign_runs(con, campaign_id)
    finally:
        con.close()
    line = figures.steps(found)
    out: dict[str, list] = {key: [] for key in (*SERIES.values(), "band", "test")}
    out["best"] = figures.levels(line, [r["seq"] for r in found])
    series = {
        "seq": [r["seq"] for r in found],
        "id": [r["id"] for r in found],
        "status": [r["status"] for r in found],
        "kind": [r["kind"] for r in found],
        "description": [(r["description"] or "")[:CHART_DESCRIPTION_CHARS] for r in found],
        "aside": [bool(r.get("contended")) for r in found],
    }
    band, fallback = None, noise_band(camp)
    for r in found:
        what = figures.category(r)
        value = r["val_bpb"] if what not in ("failed", "unscored") else 0  # the floor: placed by the chart
        for cat, key in SERIES.items():
            out[key].append(value if cat == what else None)
        out["test"].append(r["test_bpb"] if what == "kept" and finite(r["test_bpb"]) else None)
        band = r.get("band") if r.get("band") is not None else band  # the band of the latest decision, from then on
        out["band"].append(band if band is not None else fallback)
    return series | out


SERIES = {c: c.replace(" ", "_") for c in figures.CATEGORIES}  # figures.category -> the chart's series


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


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
        around = report.related(con, report.Row(run))
        judged = report.judgement(report.Row(run), around)
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
        "judged": judged,
        "note": figures.run_note(report.Row(run), around),
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
