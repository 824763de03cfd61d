"""The ledger: schema, view, migrations, and readers while a writer works."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from orchestrator.ledger import ledger
from orchestrator.ledger.ledger import Campaign, Run


def new_campaign(db) -> Campaign:
    c = Campaign(
        tag="t",
        program="model",
        branch="autoresearch/t",
        worktree="/tmp/wt",
        base_commit="abc",
        agent="offline",
        dataset="stdlib",
        budget_s=60,
    )
    ledger.save(db, c)
    return c


def test_schema_and_view_are_plain_sql(tmp_path):
    db = tmp_path / "experiments.db"
    c = new_campaign(db)
    ledger.save(db, Run(campaign_id=c.id, seq=1, status="keep", val_bpb=3.5, description="baseline", commit="abc"))
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert {"campaign", "run", "llm_call", "event", "experiments"} <= tables
    row = con.execute("SELECT tag, program, seq, status, val_bpb, description FROM experiments").fetchone()
    assert row == ("t", "model", 1, "keep", 3.5, "baseline")
    cols = {r[1] for r in con.execute("PRAGMA table_info(run)")}
    for name in (
        "parent_commit",
        "commit",
        "diff",
        "decision_reason",
        "rerun_of",
        "hardware",
        "tok_per_sec",
        "peak_memory_mb",
        "exit_code",
    ):
        assert name in cols


def test_migrations_run_forward_only(tmp_path, monkeypatch):
    db = tmp_path / "experiments.db"
    new_campaign(db)
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={ledger.SCHEMA_VERSION + 1}")
    con.commit()
    ledger.forget_engines()
    with pytest.raises(RuntimeError, match="newer than this arx"):
        ledger.engine(db)
    con.execute(f"PRAGMA user_version={ledger.SCHEMA_VERSION}")
    con.commit()
    ledger.forget_engines()
    monkeypatch.setattr(
        ledger,
        "MIGRATIONS",
        [*ledger.MIGRATIONS, lambda conn: conn.exec_driver_sql("ALTER TABLE run ADD COLUMN note TEXT")],
    )
    monkeypatch.setattr(ledger, "SCHEMA_VERSION", ledger.SCHEMA_VERSION + 1)
    ledger.engine(db)
    assert "note" in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(run)")}
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM campaign").fetchone()[0] == 1  # data kept
    ledger.forget_engines()


def test_readers_work_while_a_writer_writes(tmp_path):
    db = tmp_path / "experiments.db"
    c = new_campaign(db)
    done = threading.Event()
    errors = []

    def write():
        for i in range(200):
            ledger.save(db, Run(campaign_id=c.id, seq=i, status="keep", val_bpb=float(i)))
        done.set()

    def read():
        con = sqlite3.connect(db, timeout=1)
        while not done.is_set():
            try:
                con.execute("SELECT COUNT(*), MAX(val_bpb) FROM experiments").fetchone()
            except sqlite3.Error as e:
                errors.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ledger.campaign_runs(db, c.id)) == 200


def test_a_v1_ledger_migrates_in_place(tmp_path):
    """A database as v1 wrote it (the frozen DDL, no seeds, fingerprints, CPU share or decisions) migrates in place,
    and its measurements that were not verdicts stop counting as keeps."""
    db = tmp_path / "experiments.db"
    con = sqlite3.connect(db)
    con.executescript(ledger.V1_TABLES + ";PRAGMA user_version=1;")
    con.execute(
        "INSERT INTO campaign (tag, program, branch, worktree, base_commit, agent, dataset, budget_s, status, "
        "created_at, settings) VALUES ('t', 'model', 'autoresearch/t', '/w', 'abc', 'offline', 'stdlib', 60, "
        "'stopped', '2026-11-01', '{}')"
    )
    for seq, kind, status in ((1, "baseline", "keep"), (2, "experiment", "keep"), (3, "rerun", "keep")):
        con.execute(
            "INSERT INTO run (campaign_id, seq, kind, status, val_bpb, description, started_at) "
            "VALUES (1, ?, ?, ?, 3.5, 'old run', '2026-11-01')",
            (seq, kind, status),
        )
    con.commit()
    ledger.engine(db)
    ledger.forget_engines()
    assert {"seed", "fingerprint_hash", "cpu_share", "contended", "band", "decision", "cpu_free", "node"} <= {
        r[1] for r in con.execute("PRAGMA table_info(run)")
    }
    assert {"request_id", "response_id", "thinking", "effort"} <= {
        r[1] for r in con.execute("PRAGMA table_info(llm_call)")
    }
    assert con.execute("SELECT description, seed, contended FROM experiments WHERE seq = 2").fetchone() == (
        "old run",
        None,
        0,
    )
    assert [r[0] for r in con.execute("SELECT status FROM run ORDER BY seq")] == ["measured", "keep", "measured"]
    assert con.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
