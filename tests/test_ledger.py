"""The ledger: schema, view, migrations, and readers while a writer works."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from orchestrator import ledger
from orchestrator.ledger import Campaign, Run


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
    ledger._engines.clear()
    with pytest.raises(RuntimeError, match="newer than this arx"):
        ledger.engine(db)
    con.execute(f"PRAGMA user_version={ledger.SCHEMA_VERSION}")
    con.commit()
    ledger._engines.clear()
    monkeypatch.setattr(
        ledger,
        "MIGRATIONS",
        [*ledger.MIGRATIONS, lambda conn: conn.exec_driver_sql("ALTER TABLE run ADD COLUMN note TEXT")],
    )
    monkeypatch.setattr(ledger, "SCHEMA_VERSION", ledger.SCHEMA_VERSION + 1)
    ledger.engine(db)
    assert "note" in {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(run)")}
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM campaign").fetchone()[0] == 1  # data kept
    ledger._engines.clear()


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


def test_v1_ledger_gains_the_v2_columns_and_view(tmp_path):
    """A database written by v1 (no seeds, fingerprints, CPU share, bands) migrates in place."""
    db = tmp_path / "experiments.db"
    c = new_campaign(db)
    ledger.save(db, Run(campaign_id=c.id, seq=1, status="keep", val_bpb=3.5, description="old run"))
    ledger._engines.clear()
    con = sqlite3.connect(db)
    con.execute("DROP VIEW experiments")
    for table, columns in ledger.VERDICT_COLUMNS.items():
        for name in columns:
            con.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
    con.execute(ledger.EXPERIMENTS_VIEW)
    con.execute("PRAGMA user_version=1")
    con.commit()
    ledger.engine(db)
    ledger._engines.clear()
    assert {"seed", "fingerprint_hash", "cpu_share", "contended", "band", "sibling_commit"} <= {
        r[1] for r in con.execute("PRAGMA table_info(run)")
    }
    assert con.execute("SELECT description, seed, contended FROM experiments").fetchone() == ("old run", None, 0)
    assert con.execute("PRAGMA user_version").fetchone()[0] == ledger.SCHEMA_VERSION
