"""The ledger: every campaign, run, LLM call and event in SQLite (`state/experiments.db`).

Users query this file by hand, so table and column names are plain and stable; schema changes
are forward migrations keyed on `PRAGMA user_version`, never a deleted database. WAL mode and a
busy timeout let any number of readers (status, sqlite3, notebooks) work while daemons write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

from .statuses import Kind, Status

BUSY_TIMEOUT_MS = 30_000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    tag: str = Field(index=True)
    program: str
    branch: str
    worktree: str
    base_commit: str
    agent: str
    llm_model: str | None = None
    dataset: str
    budget_s: float
    status: str = "created"  # created, running, paused, stopped, finished
    pid: int | None = None
    heartbeat_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    best_run_id: int | None = None
    val_sha256: str | None = None
    test_sha256: str | None = None
    noise_sigma: float | None = None
    stop_reason: str | None = None
    tokenizer_sha256: str | None = None  # the scoring tokenizer pinned at campaign start (model program)
    sandbox: str | None = None  # how candidate code is confined: namespaces, bwrap, sandbox-exec, none (unsafe)
    note: str | None = None  # what the campaign is doing or waiting for right now (backoff, pause)
    settings: str = "{}"  # JSON: the policy and limits the campaign was started with
    noise_dof: int | None = None  # degrees of freedom of noise_sigma (pooled over commits measured on several seeds)
    sibling_commit: str | None = None  # the sibling program's (same tag) kept commit last merged into this branch


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    seq: int
    kind: str = Kind.EXPERIMENT  # see `Kind`
    parent_commit: str | None = None
    commit: str | None = None
    description: str | None = None
    hypothesis: str | None = None
    diff: str | None = None
    status: str = Status.PROPOSED  # see `Status`
    val_bpb: float | None = None
    test_bpb: float | None = None
    training_seconds: float | None = None  # as the trainer reports it (its word; see train_wall_s)
    train_wall_s: float | None = None  # the training phase by the daemon's clock, start-up and saving included
    eval_seconds: float | None = None
    agent_seconds: float | None = None  # time the agent took to propose
    total_seconds: float | None = None
    steps: int | None = None
    tokens: int | None = None
    tok_per_sec: float | None = None
    peak_memory_mb: float | None = None
    num_params: int | None = None
    exit_code: int | None = None
    error: str | None = None
    decision_reason: str | None = None
    rerun_of: int | None = None
    hardware: str | None = None
    pid: int | None = None  # the trainer's process group while it runs, to reap it after a crash
    run_dir: str | None = None
    scoring: str | None = (
        None  # JSON from the trusted scorer: tokens, bytes, probes, largest causal diff, transfer time
    )
    conversation: str | None = None  # the agent's conversation for this run (JSON, see agents/conversation.py)
    seed: int | None = None  # ARX_SEED of the run; a candidate is paired with the champion's run on the same seed
    fingerprint: str | None = None  # JSON: backend, MLX, BLAS, CPU, cores, OS, Python, arx version at measurement
    fingerprint_hash: str | None = None  # short hash of `fingerprint`; runs are compared only within one hash
    cpu_share: float | None = None  # trainer tree CPU seconds / (wall seconds x cores), measured by the daemon
    cpu_free: float | None = None  # share of the machine's CPU time other processes left free while it trained
    contended: bool = Field(  # got clearly less of the machine than its partner: measured again, never used
        default=False, sa_column_kwargs={"server_default": "0"}
    )  # raw INSERTs (bench/daemon.py) may leave it out
    band: float | None = None  # the smallest mean paired gain the decision would have kept (see `decision`)
    decision: str | None = None  # JSON on a verdict row: the test, its numbers and every pair of runs it used
    sibling_commit: str | None = None  # the sibling program's commit merged into this run's code, if any
    node: str | None = None  # the machine that trained it (hostname; on Ray, hostname:node id)
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None


class LlmCall(SQLModel, table=True):
    __tablename__ = "llm_call"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="run.id")
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # all cache writes; split by lifetime below (a 1-hour write costs more)
    cache_write_5m_tokens: int = Field(
        default=0, sa_column_kwargs={"server_default": "0"}
    )  # raw INSERTs may leave them out
    cache_write_1h_tokens: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    cost_usd: float = 0.0
    latency_s: float = 0.0
    status: str = "ok"
    stop_reason: str | None = None  # end_turn, tool_use, max_tokens, pause_turn, refusal, ...
    error: str | None = None
    request_id: str | None = None  # the API's request-id header: what Anthropic support asks for
    response_id: str | None = None  # the message id (msg_...)
    thinking: str | None = None  # JSON: the thinking configuration actually sent
    effort: str | None = None  # the effort level actually sent, if any
    created_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    run_id: int | None = None
    at: datetime = Field(default_factory=utcnow)
    kind: str
    message: str


V1_TABLES = """
CREATE TABLE campaign (
    id INTEGER NOT NULL, tag VARCHAR NOT NULL, program VARCHAR NOT NULL, branch VARCHAR NOT NULL,
    worktree VARCHAR NOT NULL, base_commit VARCHAR NOT NULL, agent VARCHAR NOT NULL, llm_model VARCHAR,
    dataset VARCHAR NOT NULL, budget_s FLOAT NOT NULL, status VARCHAR NOT NULL, pid INTEGER,
    heartbeat_at DATETIME, created_at DATETIME NOT NULL, best_run_id INTEGER, val_sha256 VARCHAR,
    test_sha256 VARCHAR, noise_sigma FLOAT, stop_reason VARCHAR, note VARCHAR, settings VARCHAR NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_campaign_tag ON campaign (tag);
CREATE TABLE run (
    id INTEGER NOT NULL, campaign_id INTEGER NOT NULL, seq INTEGER NOT NULL, kind VARCHAR NOT NULL,
    parent_commit VARCHAR, "commit" VARCHAR, description VARCHAR, hypothesis VARCHAR, diff VARCHAR,
    status VARCHAR NOT NULL, val_bpb FLOAT, test_bpb FLOAT, training_seconds FLOAT, eval_seconds FLOAT,
    agent_seconds FLOAT, total_seconds FLOAT, steps INTEGER, tokens INTEGER, tok_per_sec FLOAT,
    peak_memory_mb FLOAT, num_params INTEGER, exit_code INTEGER, error VARCHAR, decision_reason VARCHAR,
    rerun_of INTEGER, hardware VARCHAR, pid INTEGER, run_dir VARCHAR, started_at DATETIME NOT NULL,
    ended_at DATETIME,
    PRIMARY KEY (id), FOREIGN KEY(campaign_id) REFERENCES campaign (id)
);
CREATE INDEX ix_run_campaign_id ON run (campaign_id);
CREATE INDEX ix_run_campaign_seq ON run (campaign_id, seq);
CREATE TABLE event (
    id INTEGER NOT NULL, campaign_id INTEGER, run_id INTEGER, at DATETIME NOT NULL, kind VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(campaign_id) REFERENCES campaign (id)
);
CREATE INDEX ix_event_campaign_id ON event (campaign_id);
CREATE TABLE llm_call (
    id INTEGER NOT NULL, campaign_id INTEGER NOT NULL, run_id INTEGER, model VARCHAR NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL, cost_usd FLOAT NOT NULL, latency_s FLOAT NOT NULL, status VARCHAR NOT NULL,
    error VARCHAR, created_at DATETIME NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(campaign_id) REFERENCES campaign (id), FOREIGN KEY(run_id) REFERENCES run (id)
);
CREATE INDEX ix_llm_call_campaign_id ON llm_call (campaign_id);
CREATE VIEW experiments AS
SELECT r.id AS run_id, c.tag, c.program, r.seq, r.kind, r.status, r.val_bpb, r.test_bpb,
       r.tok_per_sec, r.peak_memory_mb, r.training_seconds, r.num_params, r.description,
       r.decision_reason, r."commit", r.rerun_of, r.error, r.started_at, r.ended_at,
       c.agent, c.llm_model, c.dataset, c.branch, r.campaign_id
FROM run r JOIN campaign c ON c.id = r.campaign_id
"""


def _v1(conn: Connection) -> None:
    """The schema as first released, written out (frozen: later models never change what it creates)."""
    for statement in V1_TABLES.split(";"):
        conn.execute(text(statement))


def add_columns(conn: Connection, table: str, columns: dict[str, str]) -> None:
    """ALTER in the columns a table lacks (databases made before v1 was frozen may have some already)."""
    have = {row[1] for row in conn.execute(text(f"PRAGMA table_info({table})"))}
    for name, decl in columns.items():
        if name not in have:
            conn.execute(text(f'ALTER TABLE {table} ADD COLUMN "{name}" {decl}'))


def _v2_sealed(conn: Connection) -> None:
    """The sandbox and the trusted scorer: daemon-measured training time, scorer details, pins."""
    add_columns(conn, "run", {"train_wall_s": "FLOAT", "scoring": "VARCHAR"})
    add_columns(conn, "campaign", {"tokenizer_sha256": "VARCHAR", "sandbox": "VARCHAR"})


def _v3_conversations_and_cache_lifetimes(conn: Connection) -> None:
    """run.conversation; llm_call's cache writes split by lifetime, and its stop reason."""
    add_columns(conn, "run", {"conversation": "VARCHAR"})
    add_columns(
        conn,
        "llm_call",
        {
            "cache_write_5m_tokens": "INTEGER NOT NULL DEFAULT 0",
            "cache_write_1h_tokens": "INTEGER NOT NULL DEFAULT 0",
            "stop_reason": "VARCHAR",
        },
    )


EXPERIMENTS_VIEW_V4 = """
CREATE VIEW experiments AS
SELECT r.id AS run_id, c.tag, c.program, r.seq, r.kind, r.status, r.val_bpb, r.test_bpb,
       r.tok_per_sec, r.peak_memory_mb, r.training_seconds, r.num_params, r.description,
       r.decision_reason, r."commit", r.rerun_of, r.error, r.started_at, r.ended_at,
       c.agent, c.llm_model, c.dataset, c.branch, r.campaign_id,
       r.seed, r.band, r.cpu_share, r.contended, r.fingerprint_hash, r.sibling_commit, r.train_wall_s
FROM run r JOIN campaign c ON c.id = r.campaign_id
"""


VERDICT_COLUMNS = {
    "run": {
        "seed": "INTEGER",
        "fingerprint": "VARCHAR",
        "fingerprint_hash": "VARCHAR",
        "cpu_share": "FLOAT",
        "contended": "BOOLEAN NOT NULL DEFAULT 0",
        "band": "FLOAT",
        "sibling_commit": "VARCHAR",
    },
    "campaign": {"noise_dof": "INTEGER", "sibling_commit": "VARCHAR"},
}


def _v4_verdicts(conn: Connection) -> None:
    """Seeds, machine fingerprints, CPU share, decision bands and sibling merges (issue 9)."""
    for table, columns in VERDICT_COLUMNS.items():
        add_columns(conn, table, columns)
    conn.execute(text("DROP VIEW IF EXISTS experiments"))
    conn.execute(text(EXPERIMENTS_VIEW_V4))


EXPERIMENTS_VIEW_V5 = EXPERIMENTS_VIEW_V4.replace("r.train_wall_s\n", "r.train_wall_s, r.node\n")


def _v5_nodes(conn: Connection) -> None:
    """The machine each run trained on (executors, issue 12)."""
    add_columns(conn, "run", {"node": "VARCHAR"})
    conn.execute(text("DROP VIEW IF EXISTS experiments"))
    conn.execute(text(EXPERIMENTS_VIEW_V5))


EXPERIMENTS_VIEW_V6 = EXPERIMENTS_VIEW_V5.replace("r.node\n", "r.node, r.cpu_free, r.decision\n")


def _v6_judgements(conn: Connection) -> None:
    """Verdicts with power (issue 16): each verdict row's decision as JSON, the CPU the machine left free during a
    run; what each LLM call sent (issue 18). Measurements that are not verdicts (baselines, re-measures of the
    champion, a candidate's re-runs) had the verdict's status; they are now `measured`, so that `keep` counts kept
    candidates only."""
    add_columns(conn, "run", {"cpu_free": "FLOAT", "decision": "VARCHAR"})
    add_columns(
        conn,
        "llm_call",
        {"request_id": "VARCHAR", "response_id": "VARCHAR", "thinking": "VARCHAR", "effort": "VARCHAR"},
    )
    conn.execute(
        text(
            "UPDATE run SET status = 'measured' WHERE kind IN ('baseline', 'rebaseline', 'remeasure', 'rerun') "
            "AND status IN ('keep', 'discard')"
        )
    )
    conn.execute(text("DROP VIEW IF EXISTS experiments"))
    conn.execute(text(EXPERIMENTS_VIEW_V6))


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1,
    _v2_sealed,
    _v3_conversations_and_cache_lifetimes,
    _v4_verdicts,
    _v5_nodes,
    _v6_judgements,
]  # append; never edit a released step
SCHEMA_VERSION = len(MIGRATIONS)


def _pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


_engines: dict[str, Engine] = {}


def engine(db_path: Path) -> Engine:
    """The engine of one database file, migrated to the current schema."""
    key = str(Path(db_path).resolve())
    if key not in _engines:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(
            f"sqlite:///{key}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        sa_event.listen(eng, "connect", _pragmas)
        migrate(eng)
        _engines[key] = eng
    return _engines[key]


def forget_engines() -> None:
    """Drop every cached engine, so the next use opens (and migrates) the file afresh: after a database was
    replaced or rewritten on disk by something other than this process."""
    for eng in _engines.values():
        eng.dispose()
    _engines.clear()


def migrate(eng: Engine) -> int:
    with eng.begin() as conn:
        version = conn.execute(text("PRAGMA user_version")).scalar() or 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema v{version} is newer than this arx (v{SCHEMA_VERSION}); upgrade arx")
        for step in range(version, SCHEMA_VERSION):
            MIGRATIONS[step](conn)
            conn.execute(text(f"PRAGMA user_version={step + 1}"))
    return SCHEMA_VERSION


def session(db_path: Path) -> Session:
    return Session(engine(db_path), expire_on_commit=False)


def save(db_path: Path, *rows: SQLModel) -> None:
    """Commit rows now: every transition is durable before the next step starts."""
    with session(db_path) as s:
        for row in rows:
            s.add(row)
        s.commit()
        for row in rows:
            s.refresh(row)


def log_event(db_path: Path, campaign_id: int | None, kind: str, message: str, run_id: int | None = None) -> None:
    save(db_path, Event(campaign_id=campaign_id, run_id=run_id, kind=kind, message=message))


def find_campaign(db_path: Path, program: str, tag: str) -> Campaign | None:
    with session(db_path) as s:
        return s.exec(select(Campaign).where(Campaign.program == program, Campaign.tag == tag)).first()


def campaign_runs(db_path: Path, campaign_id: int) -> list[Run]:
    with session(db_path) as s:
        return list(s.exec(select(Run).where(Run.campaign_id == campaign_id).order_by(Run.seq, Run.id)))


def campaign_cost(db_path: Path, campaign_id: int) -> float:
    with session(db_path) as s:
        return float(
            s.exec(
                text("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_call WHERE campaign_id = :c").bindparams(c=campaign_id)
            ).scalar()
        )
