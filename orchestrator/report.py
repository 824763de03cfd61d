"""Read-only views of the ledger for status, runs, show, export and plot.

Plain sqlite3 and SQL, the same queries a user would type: it keeps `arx-daemon status` fast on a
ledger of thousands of runs and shows that the schema is usable by hand.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from . import slots
from .programs import StatePaths
from .statuses import UNFINISHED, sql_list

PHASE = {"proposed": "proposing", "training": "training", "evaluating": "evaluating"}
STEP_LINE = re.compile(
    r"^step (?P<step>\d+) \| loss (?P<loss>[\d.naninf-]+) \| lr [\d.e-]+ \| tok/s (?P<tok>[\d,]+) \| "
    r"(?P<elapsed>[\d.]+)/"
)


def connect(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise FileNotFoundError(
            f"no ledger at {db}; start a campaign first: arx-daemon start --program model --tag NAME"
        )
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    return con


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def ago(value: str | None) -> float | None:
    t = parse_time(value)
    return (datetime.now(timezone.utc) - t).total_seconds() if t else None


def last_progress(run_dir: str | None) -> dict:
    """The last `step ...` line of a run's training log: step, loss, tok/s, elapsed seconds."""
    if not run_dir:
        return {}
    from .runner import tail  # never through a link, never a FIFO: the log is in a run directory the trainer wrote

    for line in reversed(tail(Path(run_dir) / "train.log", 200).splitlines()):
        m = STEP_LINE.match(line)
        if m:
            return {
                "step": int(m["step"]),
                "loss": float(m["loss"]),
                "tok_per_sec": float(m["tok"].replace(",", "")),
                "elapsed_s": float(m["elapsed"]),
            }
    return {}


def campaign_state(state_dir: Path, program: str, tag: str, status: str) -> str:
    """running, paused, stopped, or dead: marked running, but no process holds its lock."""
    if slots.holder(StatePaths(state_dir, program, tag).lock) is not None:
        return "running"
    return "dead" if status == "running" else status


def status(db: Path, state_dir: Path, tag: str | None = None) -> list[dict]:
    con = connect(db)
    where, params = ("WHERE c.tag = ?", (tag,)) if tag else ("", ())
    campaigns = con.execute(f"SELECT * FROM campaign c {where} ORDER BY c.id", params).fetchall()
    counts: dict[int, dict[str, int]] = {}
    for r in con.execute("SELECT campaign_id, status, COUNT(*) AS n FROM run GROUP BY campaign_id, status"):
        counts.setdefault(r["campaign_id"], {})[r["status"]] = r["n"]
    out = []
    for c in campaigns:
        cid = c["id"]
        best = (
            con.execute(
                "SELECT seq, val_bpb, test_bpb, description FROM run WHERE id = ?", (c["best_run_id"],)
            ).fetchone()
            if c["best_run_id"]
            else None
        )
        if best:  # the champion's score is the mean of its measurements
            mean = con.execute(
                'SELECT AVG(val_bpb), AVG(test_bpb) FROM run WHERE campaign_id = ? AND "commit" = (SELECT '
                "\"commit\" FROM run WHERE id = ?) AND status = 'keep' AND NOT contended",
                (cid, c["best_run_id"]),
            ).fetchone()
        baseline = con.execute(
            "SELECT AVG(val_bpb) FROM run WHERE campaign_id = ? AND kind = 'baseline' AND val_bpb IS NOT NULL", (cid,)
        ).fetchone()[0]
        cost = con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_call WHERE campaign_id = ?", (cid,)).fetchone()[
            0
        ]
        last_keep = con.execute(
            "SELECT MAX(ended_at) FROM run WHERE campaign_id = ? AND status = 'keep' AND kind = 'experiment'", (cid,)
        ).fetchone()[0]
        flight = con.execute(
            "SELECT seq, status, description, started_at, run_dir FROM run WHERE campaign_id = ? AND status IN "
            f"{sql_list(UNFINISHED)} ORDER BY id DESC LIMIT 1",
            (cid,),
        ).fetchone()
        state = campaign_state(state_dir, c["program"], c["tag"], c["status"])
        in_flight = None
        if flight and state == "running":
            progress = last_progress(flight["run_dir"]) if flight["status"] == "training" else {}
            in_flight = {
                "seq": flight["seq"],
                "phase": PHASE[flight["status"]],
                "description": flight["description"],
                "elapsed_s": progress.get("elapsed_s"),
                "budget_s": c["budget_s"],
                "since_s": ago(flight["started_at"]),
                "loss": progress.get("loss"),
                "tok_per_sec": progress.get("tok_per_sec"),
            }
        best_val = mean[0] if best else None
        out.append(
            {
                "id": cid,
                "tag": c["tag"],
                "program": c["program"],
                "state": state,
                "reason": c["stop_reason"] if state in ("paused", "stopped") else c["note"],
                "agent": c["agent"],
                "model": c["llm_model"],
                "sandbox": c["sandbox"],
                "dataset": c["dataset"],
                "branch": c["branch"],
                "pid": c["pid"],
                "heartbeat_age_s": ago(c["heartbeat_at"]),
                "runs": counts.get(cid, {}),
                "in_flight": in_flight,
                "best_val_bpb": best_val,
                "best_test_bpb": mean[1] if best else None,
                "best_run": best["seq"] if best else None,
                "best_description": best["description"] if best else None,
                "baseline_val_bpb": baseline,
                "improvement": (baseline - best_val) if baseline is not None and best_val is not None else None,
                "noise_sigma": c["noise_sigma"],
                "cost_usd": round(cost, 4),
                "since_last_keep_s": ago(last_keep),
            }
        )
    con.close()
    return out


RUN_COLUMNS = (
    "r.id, c.tag, c.program, r.seq, r.kind, r.status, r.val_bpb, r.test_bpb, r.tok_per_sec, r.peak_memory_mb, "
    'r.training_seconds, r.description, r.decision_reason, r."commit", r.started_at, r.ended_at'
)


def runs(db: Path, tag: str | None = None, program: str | None = None, status_filter: str | None = None) -> list[dict]:
    con = connect(db)
    clauses, params = [], []
    for column, value in (("c.tag", tag), ("c.program", program), ("r.status", status_filter)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = [
        dict(r)
        for r in con.execute(
            f"SELECT {RUN_COLUMNS} FROM run r JOIN campaign c ON c.id = r.campaign_id {where} ORDER BY c.id, r.seq",
            params,
        )
    ]
    con.close()
    return rows


def find_run(db: Path, ref: str) -> dict:
    """A run by ledger id (`42`) or by campaign and sequence (`mar15/7`, `data:mar15/7`)."""
    con = connect(db)
    if ref.isdigit():
        row = con.execute(
            "SELECT r.*, c.tag, c.program FROM run r JOIN campaign c ON c.id = r.campaign_id WHERE r.id = ?",
            (int(ref),),
        ).fetchone()
    else:
        m = re.fullmatch(r"(?:(model|data):)?([^/]+)/(\d+)", ref)
        if not m:
            raise ValueError(
                f"bad run reference {ref!r}: use a run id (42) or TAG/SEQ (mar15/7), optionally data:TAG/SEQ"
            )
        program, tag, seq = m.groups()
        query = (
            "SELECT r.*, c.tag, c.program FROM run r JOIN campaign c ON c.id = r.campaign_id WHERE c.tag = ? AND "
            "r.seq = ?"
        )
        params: list = [tag, int(seq)]
        if program:
            query += " AND c.program = ?"
            params.append(program)
        found = con.execute(query, params).fetchall()
        if len(found) > 1:
            raise ValueError(f"{ref} matches runs of both programs; say model:{ref} or data:{ref}")
        row = found[0] if found else None
    if row is None:
        raise ValueError(f"no run {ref}")
    run = dict(row)
    run["llm_calls"] = [
        dict(r)
        for r in con.execute(
            "SELECT model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, "
            "latency_s, status, error, created_at FROM llm_call WHERE run_id = ? ORDER BY id",
            (run["id"],),
        )
    ]
    con.close()
    return run


EXPORT_STATUS = {"keep": "keep", "discard": "discard", "crash": "crash", "timeout": "crash", "invalid": "crash"}


def results_tsv(db: Path, tag: str | None = None, program: str | None = None) -> str:
    """The original autoresearch results.tsv: commit, val_bpb, memory_gb, avg_tok_sec, status, description."""
    lines = ["commit\tval_bpb\tmemory_gb\tavg_tok_sec\tstatus\tdescription"]
    for r in runs(db, tag, program):
        if r["status"] not in EXPORT_STATUS or not r["commit"] or r["kind"] not in ("baseline", "experiment"):
            continue
        description = " ".join((r["description"] or "").split()).replace("\t", " ")
        lines.append(
            "\t".join(
                [
                    r["commit"][:7],
                    f"{r['val_bpb'] or 0:.6f}",
                    f"{(r['peak_memory_mb'] or 0) / 1024:.1f}",
                    f"{r['tok_per_sec'] or 0:.0f}",
                    EXPORT_STATUS[r["status"]],
                    description,
                ]
            )
        )
    return "\n".join(lines) + "\n"


def plot(db: Path, out: Path, tag: str | None = None, program: str | None = None) -> int:
    """val_bpb of every run in order, kept runs and the running best highlighted, test_bpb beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in runs(db, tag, program) if r["kind"] in ("baseline", "experiment")]
    if not rows:
        raise ValueError("no runs to plot yet")
    groups = sorted({(r["program"], r["tag"]) for r in rows})
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 4.2 * len(groups)), squeeze=False)
    for ax, (prog, name) in zip(axes[:, 0], groups):
        rs = [r for r in rows if (r["program"], r["tag"]) == (prog, name)]
        xs = list(range(1, len(rs) + 1))
        scored = [(x, r) for x, r in zip(xs, rs) if r["val_bpb"] is not None]
        ax.scatter(
            [x for x, r in scored if r["status"] != "keep"],
            [r["val_bpb"] for x, r in scored if r["status"] != "keep"],
            s=14,
            color="#bbbbbb",
            label="discarded",
        )
        kept = [(x, r) for x, r in scored if r["status"] == "keep"]
        ax.scatter(
            [x for x, _ in kept], [r["val_bpb"] for _, r in kept], s=36, color="#1f77b4", zorder=3, label="kept val_bpb"
        )
        ax.scatter(
            [x for x, r in kept if r["test_bpb"]],
            [r["test_bpb"] for _, r in kept if r["test_bpb"]],
            s=22,
            marker="x",
            color="#ff7f0e",
            zorder=3,
            label="kept test_bpb",
        )
        best, steps = float("inf"), []
        for x, r in kept:
            best = min(best, r["val_bpb"])
            steps.append((x, best))
        if steps:
            ax.step(
                [x for x, _ in steps] + [xs[-1]],
                [b for _, b in steps] + [steps[-1][1]],
                where="post",
                color="#1f77b4",
                linewidth=1.5,
                label="running best",
            )
        low = min(r["val_bpb"] for _, r in scored) if scored else 0
        failed = [x for x, r in zip(xs, rs) if r["status"] in ("crash", "timeout", "invalid")]
        if failed:
            ax.scatter(
                failed, [low] * len(failed), marker="v", color="#d62728", s=30, label="crash / timeout / invalid"
            )
        ax.set_title(f"{prog} program, tag {name}: {len(rs)} runs, {len(kept)} kept")
        ax.set_xlabel("run")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("bits per byte (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return len(rows)
