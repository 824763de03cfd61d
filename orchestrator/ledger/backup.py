"""Keeping the ledger recoverable: the daemon's own backups, and what to tell a person whose ledger is damaged.

Every daemon start copies `state/experiments.db` (SQLite's online backup, so a copy taken while
another daemon writes is consistent) to `state/backups/`, after `PRAGMA quick_check` says the
ledger is sound: a damaged ledger never pushes a good backup out. The newest KEEP copies stay.

When reading the ledger fails, every command (and the dashboard, as a page) says in one line that
the ledger is damaged, where it is, and the ways back: the newest backup, or every row SQLite can
still read, dumped (`sqlite3 .dump`, which every build has; `.recover` needs one built with the
dbpage table, which Debian's is not) into a fresh ledger, the damaged file kept beside it.
"""

from __future__ import annotations

import shlex
import sqlite3
import time
from pathlib import Path

from .. import formatting

FOLDER = "backups"
KEEP = 3
NOT_THE_FILE = ("database is locked", "database table is locked")  # busy, not damaged


def folder(db: Path) -> Path:
    return db.parent / FOLDER


def latest(db: Path) -> Path | None:
    found = sorted(folder(db).glob("experiments-*.db"))
    return found[-1] if found else None


def soundness(db: Path) -> str | None:
    """What is wrong with the ledger file (None: it reads as an arx ledger and SQLite's quick check passes)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        return str(e)
    try:
        result = con.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            return f"quick_check: {result}"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"campaign", "run"} - tables
        if missing and tables:
            return f"not an arx ledger: no table {', '.join(sorted(missing))}"
        return None
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        con.close()


def take(db: Path, keep: int = KEEP) -> Path | None:
    """Copy a sound ledger to state/backups/ and keep the newest `keep` copies; None if there was nothing to copy or
    the ledger is damaged (its good backups then stay as they are)."""
    if not db.exists() or soundness(db) is not None:
        return None
    where = folder(db)
    where.mkdir(parents=True, exist_ok=True)
    dest = where / f"experiments-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.db"
    tmp = dest.with_suffix(".tmp")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    out = sqlite3.connect(tmp)
    try:
        src.backup(out)
    finally:
        out.close()
        src.close()
    tmp.rename(dest)
    for old in sorted(where.glob("experiments-*.db"))[:-keep]:
        old.unlink()
    return dest


def fixes(db: Path) -> list[str]:
    """The commands that bring a damaged ledger back, best first (each runs as printed, in a shell)."""
    q = shlex.quote
    out = []
    newest = latest(db)
    if newest is not None:
        when = formatting.timestamp(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(newest.stat().st_mtime)))
        out.append(
            f"restore the daemon's backup of {when}: cp {q(str(newest))} {q(str(db))} && "
            f"rm -f {q(f'{db}-wal')} {q(f'{db}-shm')}"
        )
    version = header_version(db)
    if version is not None:  # the file still reads as SQLite: dump every row it can read into a fresh ledger
        dump, recovered = f"{db}.sql", f"{db}.recovered"
        out.append(
            f"salvage what is readable: sqlite3 {q(str(db))} .dump | sed '$d' > {q(dump)} && "
            f"echo 'PRAGMA user_version={version}; COMMIT;' >> {q(dump)} && sqlite3 {q(recovered)} < {q(dump)} && "
            f"mv {q(str(db))} {q(f'{db}.damaged')} && mv {q(recovered)} {q(str(db))} && "
            f"rm -f {q(f'{db}-wal')} {q(f'{db}-shm')}"
        )
    return out


def header_version(db: Path) -> int | None:
    """The schema version in the file's header, if SQLite can still read the header (None: not a database)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def damaged(db: Path, why: str) -> str:
    """The one line every command prints for a damaged ledger."""
    backups = "" if latest(db) else f" (no backup yet: the daemon takes one at each start, in {folder(db)})"
    ways = fixes(db)
    if not ways:
        return f"the ledger {db} is damaged ({why}) and holds nothing SQLite can read; nothing was changed{backups}"
    return f"the ledger {db} is damaged ({why}); nothing was changed{backups}. To repair it, " + "; or ".join(ways)


def explain(db: Path, e: BaseException) -> str | None:
    """The one line for an exception raised while reading or writing the ledger (sqlite3's, or SQLAlchemy's around
    one); None if it is not about the ledger's file."""
    orig = getattr(e, "orig", None)
    err = orig if isinstance(orig, sqlite3.Error) else e
    if not isinstance(err, sqlite3.DatabaseError):
        return None
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if any(s in text for s in NOT_THE_FILE):
        return f"the ledger {db} is busy ({text}): another process holds it; try again in a moment"
    if "unable to open" in text:
        return f"cannot open the ledger {db} ({text}): check that its folder exists and is readable"
    return damaged(db, text)
