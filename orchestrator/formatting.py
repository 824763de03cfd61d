"""How numbers and times read to a person: the same in the terminal (cli.py) and in the browser (web/).

Below both, so neither imports the other. Times are rounded to what a person can use ("4m20s", not
"260.297065s"), and every timestamp carries its zone: the ledger stores UTC, a person reads local time
with the zone's name beside it.
"""

from __future__ import annotations

from datetime import datetime, timezone

DASH = "-"  # what a missing value prints as


def parse_time(value: str | datetime | None) -> datetime | None:
    """A ledger timestamp (SQLite text, naive UTC as sqlmodel writes it) as an aware datetime."""
    if not value:
        return None
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def ago(value: str | datetime | None) -> float | None:
    """Seconds since a ledger timestamp."""
    t = parse_time(value)
    return (datetime.now(timezone.utc) - t).total_seconds() if t else None


def duration(seconds: float | None) -> str:
    """A span for people: 7.3s, 42s, 4m20s, 2h05m, 3d04h."""
    if seconds is None:
        return DASH
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def zone(t: datetime) -> str:
    """The zone's name (CET, UTC), or its offset (+0530) where the system gives no name."""
    name = t.tzname() or ""
    return name if name.isalpha() else t.strftime("%z")


def timestamp(value: str | datetime | None) -> str:
    """A ledger timestamp in local time with its zone: 2026-03-15 02:14:07 CET."""
    t = parse_time(value)
    if t is None:
        return DASH
    local = t.astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} {zone(local)}"


def clock(value: str | datetime | None) -> str:
    """A short local timestamp with its zone, for tables and events: Mar 15 02:14:07 CET."""
    t = parse_time(value)
    if t is None:
        return DASH
    local = t.astimezone()
    return f"{local:%b %d %H:%M:%S} {zone(local)}"


def iso(value: str | datetime | None) -> str | None:
    """A ledger timestamp as ISO 8601 with its offset, for JSON (scripts parse it; people read `timestamp`)."""
    t = parse_time(value)
    return t.isoformat() if t else None


def bpb(value: float | None) -> str:
    """Bits per byte: four decimals, the resolution the keep rule's gains are read at."""
    return f"{value:.4f}" if value is not None else DASH


def signed(value: float | None) -> str:
    """A change in bits per byte with its sign (negative is better); a zero prints without one."""
    if value is None:
        return DASH
    return "0.0000" if abs(value) < 0.00005 else f"{value:+.4f}"


def number(value: float | None, digits: int = 0) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def dollars(value: float | None) -> str:
    return f"${value or 0:.2f}"
