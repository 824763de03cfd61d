"""Read-only views of the ledger for status, runs, show, export and plot (the dashboard reads through them too).

Plain sqlite3 and SQL, the same queries a user would type: it keeps `arx-daemon status` fast on a
ledger of thousands of runs and shows that the schema is usable by hand. Every figure a person reads
comes from `figures`, computed from the campaign's runs, so the terminal and the browser agree.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

from . import figures, formatting
from .campaign import facts
from .figures import Row
from .ledger.statuses import FAILED, UNFINISHED, VERDICT_KINDS, Status, sql_list
from .measure import slots
from .programs import StatePaths

PHASE = {"proposed": "proposing", "training": "training", "evaluating": "scoring"}
STEP_LINE = re.compile(
    r"^step (?P<step>\d+) \| loss (?P<loss>[\d.naninf-]+) \| lr [\d.e-]+ \| tok/s (?P<tok>[\d,]+) \| "
    r"(?P<elapsed>[\d.]+)/"
)
# columns a summary or a table never needs, and which make a row large (a diff is kilobytes)
BULKY = {"diff", "error", "scoring", "fingerprint", "hardware", "hypothesis", "conversation"}
# what `figures.summary` and the progress chart read of each run
SUMMARY_COLUMNS = (
    "id", "seq", "kind", "status", "commit", "parent_commit", "fingerprint_hash", "seed", "val_bpb", "test_bpb",
    "contended", "rerun_of", "started_at", "ended_at", "description", "run_dir", "node", "band", "decision",
)  # fmt: skip


class Unknown(LookupError):
    """A campaign or run the ledger does not hold; the message says what it does hold."""


class NoLedger(FileNotFoundError):
    """No ledger yet in this state directory; the message says how to make one."""


def connect(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise NoLedger(f"no ledger at {db}; start a campaign first: arx-daemon start --program model --tag NAME")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    return con


def rows(con: sqlite3.Connection, sql: str, params: tuple | list | dict = ()) -> list[Row]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [Row(zip(names, r)) for r in cur]


def columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]


# ---------------------------------------------------------------------------------------------
# Campaigns and their runs
# ---------------------------------------------------------------------------------------------
def name(c: Row) -> str:
    return f"{c['program']}/{c['tag']}"


def campaigns(con: sqlite3.Connection, tag: str | None = None, program: str | None = None) -> list[Row]:
    """The campaigns matching `tag` and `program` (all without them); Unknown, listing them all, if none match."""
    found = rows(con, "SELECT * FROM campaign ORDER BY id")
    chosen = [c for c in found if (tag is None or c["tag"] == tag) and (program is None or c["program"] == program)]
    if not chosen and (tag or program):
        wanted = f"{program or '*'}/{tag or '*'}"
        have = ", ".join(name(c) for c in found) or "none yet"
        raise Unknown(f"no campaign {wanted} in this ledger; its campaigns: {have}")
    return chosen


def one_campaign(con: sqlite3.Connection, tag: str | None, program: str | None) -> Row:
    """The one campaign `tag` and `program` name; Unknown if none or several match."""
    found = campaigns(con, tag, program)
    if not found:
        raise Unknown("no campaigns yet; start one: arx-daemon start --program model --tag NAME")
    if len(found) > 1:
        raise Unknown(
            f"{len(found)} campaigns match ({', '.join(name(c) for c in found)}); name one with --tag (and --program)"
        )
    return found[0]


def campaign_runs(con: sqlite3.Connection, campaign_id: int, decisions: str = "keep", wide: bool = False) -> list[Row]:
    """A campaign's runs in seq order: the columns every summary figure needs (`wide`: every column but the bulky
    ones); `decisions`: whose decision JSON to read ("keep": kept candidates' only, enough for every summary figure;
    "all"). A column an older ledger lacks reads as NULL."""
    have = columns(con, "run")
    names = [c for c in have if c not in BULKY] if wide else [*SUMMARY_COLUMNS]
    if "decision" not in names:
        names.append("decision")
    picked = []
    for c in names:
        if c not in have:
            picked.append(f'NULL AS "{c}"')
        elif c == "decision" and decisions != "all":
            picked.append("CASE WHEN status = 'keep' THEN decision END AS decision")
        else:
            picked.append(f'"{c}"')
    return rows(con, f"SELECT {', '.join(picked)} FROM run WHERE campaign_id = ? ORDER BY seq, id", (campaign_id,))


def related(con: sqlite3.Connection, run: Row) -> list[Row]:
    """The runs that name `run` or that it names (its verdict row, its re-runs): what its notes speak of."""
    return rows(
        con,
        "SELECT id, seq, kind, status, val_bpb, rerun_of FROM run WHERE id = ? OR rerun_of = ?",
        (run.get("rerun_of") or -1, run["id"]),
    )


def summary_runs(con: sqlite3.Connection, campaign_id: int, head: str) -> tuple[list[Row], dict[str, int]]:
    """What a summary reads, in one pass over the campaign's runs: the runs it needs (baselines, keeps, unfinished
    runs, the champion `head`'s measurements: on a long campaign a few of its thousands) and every run's status
    counted. One pass, because a run's status lies past its diff in the row: each scan reads the whole table."""
    have = set(columns(con, "run"))
    wanted = f"(kind = 'baseline' OR status IN {sql_list((Status.KEEP, *UNFINISHED))} OR \"commit\" = :head)"
    picked = []
    for c in SUMMARY_COLUMNS:
        value = f'"{c}"' if c in have else "NULL"
        if c == "decision" and c in have:
            value = "CASE WHEN status = 'keep' THEN decision END"
        picked.append(f'CASE WHEN {wanted} THEN {value} END AS "{c}"')
    cur = con.execute(
        f"SELECT status AS status_, {', '.join(picked)} FROM run WHERE campaign_id = :c ORDER BY seq, id",
        {"c": campaign_id, "head": head},
    )
    names = [d[0] for d in cur.description][1:]
    found, counts = [], {}
    for status, *values in cur:
        counts[status] = counts.get(status, 0) + 1
        if values[0] is not None:  # the id: a run the summary reads
            found.append(Row(zip(names, values)))
    return found, counts


def gains_lookup(con: sqlite3.Connection) -> Callable[[str, str], list[float]]:
    """`similar_gains` by (program, dataset), read from the ledger the first time it is asked, then remembered."""
    memo: dict = {}

    def lookup(program: str, dataset: str) -> list[float]:
        if "all" not in memo:
            memo["all"] = similar_gains(con)
        return memo["all"].get((program, dataset), [])

    return lookup


def similar_gains(con: sqlite3.Connection) -> dict[tuple[str, str], list[float]]:
    """The paired gain of every kept candidate, by (program, dataset): what campaigns like one have achieved."""
    if "decision" not in columns(con, "run"):
        return {}
    out: dict[tuple[str, str], list[float]] = {}
    for r in rows(
        con,
        "SELECT c.program, c.dataset, r.decision FROM run r JOIN campaign c ON c.id = r.campaign_id "
        f"WHERE r.status = 'keep' AND r.kind IN {sql_list(VERDICT_KINDS)} AND r.decision IS NOT NULL",
    ):
        if j := facts.judged(r):
            out.setdefault((r["program"], r["dataset"]), []).append(j.gain)
    return out


def campaign_state(state_dir: Path, program: str, tag: str, status: str) -> str:
    """running, paused, stopped, or dead: marked running, but no process holds its lock."""
    if slots.holder(StatePaths(state_dir, program, tag).lock) is not None:
        return "running"
    return "dead" if status == "running" else status


def last_progress(state_dir: Path, run_dir: str | None) -> dict:
    """The last `step ...` line of a run's training log (step, loss, tok/s, elapsed seconds); only a log inside the
    state directory is read (the ledger names the folder; a copied or edited ledger could name any)."""
    if not run_dir or not Path(run_dir).resolve().is_relative_to(state_dir.resolve()):
        return {}
    from .measure.runner import (
        tail,  # never through a link, never a FIFO: the log is in a run directory the trainer wrote
    )

    for line in reversed(tail(Path(run_dir) / "train.log", 200).splitlines()):
        m = STEP_LINE.match(line)
        if m:
            loss = float(m["loss"])
            return {
                "step": int(m["step"]),
                "loss": loss if math.isfinite(loss) else None,
                "tok_per_sec": float(m["tok"].replace(",", "")),
                "elapsed_s": float(m["elapsed"]),
            }
    return {}


def flight(state_dir: Path, run: Row, budget_s: float) -> dict:
    """A run training or being scored: its phase, and for training the live loss and tok/s from its log."""
    progress = last_progress(state_dir, run["run_dir"]) if run["status"] == Status.TRAINING else {}
    return {
        "id": run["id"],
        "seq": run["seq"],
        "kind": run["kind"],
        "phase": PHASE.get(run["status"], run["status"]),
        "description": run["description"],
        "since_s": formatting.ago(run["started_at"]),
        "budget_s": budget_s,
        "elapsed_s": progress.get("elapsed_s"),
        "step": progress.get("step"),
        "loss": progress.get("loss"),
        "tok_per_sec": progress.get("tok_per_sec"),
        "where": " ".join(str(run[k]) for k in ("node",) if run.get(k)) or None,
    }


def brief(r: Row) -> dict:
    return {"id": r["id"], "seq": r["seq"], "kind": r["kind"], "description": r["description"]}


def summary(
    con: sqlite3.Connection, state_dir: Path, c: Row, gains: Callable[[str, str], list[float]] | None = None
) -> dict:
    """One campaign as `status` and the dashboard show it: its state and every figure of `figures.summary`."""
    champ = con.execute('SELECT "commit" FROM run WHERE id = ?', (c["best_run_id"],)).fetchone()
    runs, counts = summary_runs(con, c["id"], (champ[0] if champ else None) or c["base_commit"])
    gains = gains or gains_lookup(con)
    f = figures.summary(c, runs, lambda: gains(c["program"], c["dataset"]), counts)
    state = campaign_state(state_dir, c["program"], c["tag"], c["status"])
    live = state == "running"
    cost = con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_call WHERE campaign_id = ?", (c["id"],)).fetchone()
    return {
        "id": c["id"],
        "tag": c["tag"],
        "program": c["program"],
        "state": state,
        "reason": c["stop_reason"] if state in ("paused", "stopped") else c["note"],
        "agent": c["agent"],
        "model": c["llm_model"],
        "sandbox": c.get("sandbox"),  # how candidate code is confined (ledgers before v2 do not say)
        "dataset": c["dataset"],
        "budget_s": c["budget_s"],
        "branch": c["branch"],
        "pid": c["pid"],
        "heartbeat_age_s": formatting.ago(c["heartbeat_at"]),
        "runs": f["runs"],
        "total_runs": f["total_runs"],
        "kept": f["kept"],
        "in_flight": [flight(state_dir, r, c["budget_s"]) for r in f["in_flight"]] if live else [],
        "proposing": [brief(r) for r in f["proposing"]] if live else [],
        "waiting": [brief(r) for r in f["waiting"]],
        "best_val_bpb": f["best_val_bpb"],
        "best_seeds": f["best_seeds"],
        "best_test_bpb": f["best_test_bpb"],
        "best_run": f["best_run"],
        "best_kind": f["best_kind"],
        "best_description": f["best_description"],
        "best_when_kept": f["best_when_kept"],
        "drift": f["drift"],
        "baseline_val_bpb": f["baseline_val_bpb"],
        "baseline_seeds": f["baseline_seeds"],
        "improvement": f["improvement"],
        "steps": f["steps"],
        "noise_sigma": f["noise_sigma"],
        "noise_dof": f["noise_dof"],
        "band": f["band"],
        "warning": f["warning"],
        "cost_usd": round(cost[0], 4),
        "last_keep_at": formatting.iso(f["last_keep_at"]),
        "since_last_keep_s": formatting.ago(f["last_keep_at"]),
    }


def status(db: Path, state_dir: Path, tag: str | None = None, program: str | None = None) -> list[dict]:
    con = connect(db)
    try:
        gains = gains_lookup(con)
        return [summary(con, state_dir, c, gains) for c in campaigns(con, tag, program)]
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
def run_view(r: Row, c: Row, all_runs: list[Row]) -> dict:
    """One row of `runs`: the ledger's columns, the value its verdict judged, and a note where the status misleads."""
    j = facts.judged(r) if r.kind in VERDICT_KINDS else None
    return {
        "id": r["id"],
        "tag": c["tag"],
        "program": c["program"],
        "seq": r["seq"],
        "kind": r["kind"],
        "status": r["status"],
        "val_bpb": r["val_bpb"],
        "test_bpb": r["test_bpb"],
        "judged_val_bpb": j.value if j else None,
        "pairs": j.pairs if j else None,
        "mean_gain": j.gain if j else None,
        "contended": bool(r.get("contended")),
        "seed": r.get("seed"),
        "tok_per_sec": r["tok_per_sec"],
        "peak_memory_mb": r["peak_memory_mb"],
        "training_seconds": r["training_seconds"],
        "train_wall_s": r.get("train_wall_s"),
        "commit": r["commit"],
        "rerun_of": r["rerun_of"],
        "description": r["description"],
        "decision_reason": r["decision_reason"],
        "note": figures.run_note(r, all_runs),
        "started_at": formatting.iso(r["started_at"]),
        "ended_at": formatting.iso(r["ended_at"]),
    }


def runs(db: Path, tag: str | None = None, program: str | None = None, status_filter: str | None = None) -> list[dict]:
    """Every run of the matching campaigns in order (Unknown for a tag, program or status the ledger lacks)."""
    if status_filter is not None and status_filter not in tuple(Status):
        raise Unknown(f"no status {status_filter!r}; statuses: {', '.join(Status)}")
    con = connect(db)
    try:
        out = []
        for c in campaigns(con, tag, program):
            found = campaign_runs(con, c["id"], decisions="all", wide=True)
            out += [run_view(r, c, found) for r in found if status_filter in (None, r["status"])]
        return out
    finally:
        con.close()


def find_run(db: Path, ref: str) -> dict:
    """A run by ledger id (`42`) or by campaign and sequence (`mar15/7`, `data:mar15/7`), with what it was judged on."""
    con = connect(db)
    try:
        if ref.isdigit():
            row = con.execute("SELECT * FROM run WHERE id = ?", (int(ref),)).fetchone()
            if row is None:
                last = con.execute("SELECT MAX(id) FROM run").fetchone()[0]
                raise Unknown(f"no run with id {ref}; ids here go from 1 to {last}" if last else "no runs yet")
        else:
            m = re.fullmatch(r"(?:(model|data):)?([^/]+)/(\d+)", ref)
            if not m:
                raise Unknown(
                    f"bad run reference {ref!r}: use a run id (42) or TAG/SEQ (mar15/7), optionally data:TAG/SEQ"
                )
            program, tag, seq = m.groups()
            found = campaigns(con, tag, program)
            if len(found) > 1:
                raise Unknown(f"{ref} matches runs of both programs; say model:{ref} or data:{ref}")
            c = found[0]
            row = con.execute(
                "SELECT * FROM run WHERE campaign_id = ? AND seq = ? ORDER BY id DESC LIMIT 1", (c["id"], int(seq))
            ).fetchone()
            if row is None:
                last = con.execute("SELECT MAX(seq) FROM run WHERE campaign_id = ?", (c["id"],)).fetchone()[0]
                raise Unknown(f"no run {ref}; {name(c)} has runs 1 to {last}" if last else f"{name(c)} has no runs yet")
        run = Row(row)
        c = Row(con.execute("SELECT * FROM campaign WHERE id = ?", (run["campaign_id"],)).fetchone())
        run |= {"tag": c["tag"], "program": c["program"]}
        run["llm_calls"] = rows(con, "SELECT * FROM llm_call WHERE run_id = ? ORDER BY id", (run["id"],))
        around = related(con, run)
        run["judged"] = judgement(run, around)
        run["note"] = figures.run_note(run, around)
        return run
    finally:
        con.close()


def judgement(run: Row, around: list[Row]) -> dict | None:
    """What a verdict row's decision used, by run: each pair (champion run, candidate run, values, gain), the runs set
    aside, the test's numbers; for a re-run or re-measure, the verdict it served (`around`: `related` runs)."""
    by_id = {r["id"]: r for r in around}
    record = None
    if run.get("decision"):
        try:
            record = json.loads(run["decision"])
        except ValueError:
            record = None
    if record:
        j = facts.judged(run)
        return {
            "rule": record.get("rule"),
            "assessment": record.get("assessment"),
            "noise": record.get("noise"),
            "pairs": record.get("pairs") or [],
            "set_aside": record.get("set_aside") or [],
            "value": j.value if j else None,
            "gain": j.gain if j else None,
            "verdict_of": None,
        }
    served = by_id.get(run.get("rerun_of")) if run.get("rerun_of") else None
    if served is None:
        return None
    return {"verdict_of": {"id": served["id"], "seq": served["seq"], "status": served["status"]}, "pairs": []}


# ---------------------------------------------------------------------------------------------
# results.tsv
# ---------------------------------------------------------------------------------------------
AUTORESEARCH_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
ARX_COLUMNS = ("tag", "seq", "kind", "pairs", "mean_gain", "test_bpb", "tok_sec", "ended_at")
EXPORT_STATUS = {Status.KEEP: "keep", Status.DISCARD: "discard"} | {s: "crash" for s in FAILED}


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def results(db: Path, tag: str | None = None, program: str | None = None) -> list[dict]:
    """One row per judged candidate of one campaign, with the value it was judged on (its mean over the pairs its
    verdict used), after a first row for the baseline (the unchanged code's mean over its seeds), as autoresearch's
    results.tsv has; crashed candidates as `crash` with zeros, as there."""
    con = connect(db)
    try:
        c = one_campaign(con, tag, program)
        found = campaign_runs(con, c["id"], decisions="all", wide=True)
    finally:
        con.close()
    by_id = {r["id"]: r for r in found}
    out = []
    base, n = figures.baseline(found)
    if base is not None:
        first = [r for r in found if r["kind"] == "baseline" and facts.usable(r)]
        memory = max((r["peak_memory_mb"] or 0 for r in first), default=0)
        out.append(
            {
                "commit": c["base_commit"][:7],
                "val_bpb": base,
                "memory_gb": memory / 1024,
                "status": "keep",
                "description": f"baseline: the unchanged code (mean of {n} seeds)",
                "tag": c["tag"],
                "seq": first[0]["seq"],
                "kind": "baseline",
                "pairs": None,
                "mean_gain": None,
                "test_bpb": figures.mean([r["test_bpb"] for r in first]),
                "tok_sec": figures.mean([r["tok_per_sec"] for r in first]),
                "ended_at": formatting.iso(first[-1]["ended_at"]),
            }
        )
    for r in found:
        if r["kind"] not in VERDICT_KINDS or r["status"] not in EXPORT_STATUS or not r["commit"]:
            continue
        status = EXPORT_STATUS[r["status"]]
        j = facts.judged(r)
        crashed = status == "crash"
        if j:
            tests = [
                by_id[p["candidate_run"]]["test_bpb"]
                for p in json.loads(r["decision"])["pairs"]
                if p.get("candidate_run") in by_id
            ]
        else:
            tests = [r["test_bpb"]]
        out.append(
            {
                "commit": r["commit"][:7],
                "val_bpb": 0.0 if crashed else (j.value if j else r["val_bpb"] or 0.0),
                "memory_gb": 0.0 if crashed else (r["peak_memory_mb"] or 0) / 1024,
                "status": status,
                "description": one_line(r["description"]),
                "tag": c["tag"],
                "seq": r["seq"],
                "kind": r["kind"],
                "pairs": j.pairs if j else (0 if crashed or r["val_bpb"] is None else 1),
                "mean_gain": j.gain if j else None,
                "test_bpb": None if crashed else figures.mean(tests),
                "tok_sec": r["tok_per_sec"],
                "ended_at": formatting.iso(r["ended_at"]),
            }
        )
    if not out:
        raise Unknown(f"nothing to export: {name(c)} has no baseline and no judged candidate yet")
    return out


def results_tsv(found: list[dict], extra: bool = False) -> str:
    """autoresearch's results.tsv (commit, val_bpb, memory_gb, status, description); `extra` adds arx's columns."""
    header = [*AUTORESEARCH_COLUMNS, *(ARX_COLUMNS if extra else ())]

    def cell(key: str, value) -> str:
        if value is None:
            return ""
        if key == "val_bpb":
            return f"{value:.6f}"
        if key == "memory_gb":
            return f"{value:.1f}"
        if key in ("mean_gain", "test_bpb"):
            return f"{value:.6f}"
        if key == "tok_sec":
            return f"{value:.0f}"
        return one_line(str(value))

    lines = ["\t".join(header)] + ["\t".join(cell(k, r[k]) for k in header) for r in found]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------
STYLE = {  # how each kind of point is drawn: matplotlib scatter keywords
    "kept": dict(s=40, color="#1f77b4", zorder=4, label="kept experiment"),
    "discarded": dict(s=16, color="#9a9a9a", zorder=3, label="discarded experiment"),
    "champion": dict(
        s=22, facecolors="none", edgecolors="#1f77b4", zorder=3, label="champion measured (baseline, re-measure)"
    ),
    "candidate": dict(
        s=12, facecolors="none", edgecolors="#9a9a9a", zorder=2, label="paired re-run, or waiting for its verdict"
    ),
    "set aside": dict(s=18, marker="x", color="#c7a600", zorder=2, label="set aside (unfair conditions)"),
}


def plot(db: Path, out: Path, tag: str | None = None, program: str | None = None) -> int:
    """Write the progress plot of the matching campaigns (one panel each) to `out`; returns how many runs it drew."""
    con = connect(db)
    try:
        chosen = campaigns(con, tag, program)
        data = [(c, campaign_runs(con, c["id"])) for c in chosen]
    finally:
        con.close()
    data = [(c, found) for c, found in data if found]
    if not data:
        raise Unknown("no runs to plot yet" + (f" in {', '.join(name(c) for c in chosen)}" if chosen else ""))
    import matplotlib.pyplot as plt

    fig = figure(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return sum(len(found) for _, found in data)


def figure(data: list[tuple[Row, list[Row]]]):
    """Every measured run at its run number, by what it was (`figures.category`), the running best (it steps at keeps
    only), the test_bpb of kept runs and the failures on the floor; the legend below the axes, clear of every point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(data), 1, figsize=(11, 4.8 * len(data)), squeeze=False)
    for ax, (c, found) in zip(axes[:, 0], data):
        groups: dict[str, list[Row]] = {}
        for r in found:
            groups.setdefault(figures.category(r), []).append(r)
        for what, style in STYLE.items():
            if groups.get(what):
                ax.scatter([r["seq"] for r in groups[what]], [r["val_bpb"] for r in groups[what]], **style)
        kept = [r for r in groups.get("kept", []) if r["test_bpb"] is not None]
        if kept:
            ax.scatter(
                [r["seq"] for r in kept],
                [r["test_bpb"] for r in kept],
                s=22,
                marker="x",
                color="#ff7f0e",
                zorder=4,
                label="test_bpb of kept",
            )
        line = figures.steps(found)
        if line:
            last = max(r["seq"] for r in found)
            ax.step(
                [s for s, _ in line] + [last],
                [v for _, v in line] + [line[-1][1]],
                where="post",
                color="#1f77b4",
                linewidth=1.5,
                zorder=5,
                label="running best (steps at keeps)",
            )
        scored = [r["val_bpb"] for r in found if figures.category(r) not in ("failed", "unscored")]
        failed = groups.get("failed", [])
        if failed:
            ax.scatter(
                [r["seq"] for r in failed],
                [min(scored) if scored else 0] * len(failed),
                marker="v",
                color="#d62728",
                s=30,
                label="crash / timeout / invalid",
            )
        n_kept = len(figures.kept(found))
        ax.set_title(f"{name(c)}: {len(found)} runs, {n_kept} kept experiment{'s' if n_kept != 1 else ''}")
        ax.set_xlabel("run number")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("val_bpb (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
