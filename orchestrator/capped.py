"""Reads of files a candidate wrote (run folders, prepared folders): never whole, never through a link.

A sandboxed phase owns its writable folder, and so owns what the daemon finds there afterwards: a sparse file
whose size is 6 GiB costs it no disk but would cost the daemon 6 GiB of RAM to read whole; a FIFO blocks a read
forever; a link points at a secret of the daemon's; a nested `[[[...]]]` or a 10**5-digit number in a JSON file
raises errors that no `except ValueError` expects. Every read of such a file by trusted code goes through here:
the file is opened without following links and without blocking, its type is checked on the open descriptor (it
may have been swapped a moment before), and its st_size, holes included, is checked against a cap before one
byte is read.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

JSON_CAP = 1 << 20  # a train.json, model_config.json or meta.json larger than this is not honest
LOG_TAIL = 64 << 10  # what a log tail reads at most


class Refused(ValueError):
    """The file cannot be read safely (missing, not a regular file, too large, malformed): the message says why,
    in sizes and types only, never the file's bytes."""


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file (checked on the open file, not on the path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused(f"{Path(path).name} is missing") from None
    except OSError as e:
        raise Refused(f"{Path(path).name} cannot be opened ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{Path(path).name} is not a regular file")
    return os.fdopen(fd, "rb")


def size(path: Path) -> int:
    """st_size of a regular file (a hole counts: it is what a whole read would allocate)."""
    with open_regular(path) as f:
        return os.fstat(f.fileno()).st_size


def read_capped(path: Path, cap: int) -> bytes:
    """The whole file, if it holds at most `cap` bytes."""
    with open_regular(path) as f:
        n = os.fstat(f.fileno()).st_size
        if n > cap:
            raise Refused(f"{Path(path).name} holds {n:,} bytes, over the limit of {cap:,}")
        data = f.read(cap + 1)
    if len(data) > cap:  # grew since fstat (a phase that is over cannot, but a link target could)
        raise Refused(f"{Path(path).name} grew past the limit of {cap:,} bytes while read")
    return data


def read_tail(path: Path, cap: int = LOG_TAIL) -> bytes:
    """The last `cap` bytes of a regular file (a log); b"" when there is none."""
    try:
        f = open_regular(path)
    except Refused:
        return b""
    with f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - cap))
        return f.read(cap)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, name: str):
    """JSON with nothing Python would choke on later: no NaN or Infinity, no number too long to parse, no nesting
    deep enough to exhaust the recursion limit. Refused says which, not what the file held."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise Refused(f"{name} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused(f"{name} is not valid JSON ({type(e).__name__})") from None


def read_json(path: Path, cap: int = JSON_CAP):
    return parse_json(read_capped(path, cap), Path(path).name)


def read_json_object(path: Path, cap: int = JSON_CAP) -> dict:
    found = read_json(path, cap)
    if not isinstance(found, dict):
        raise Refused(f"{Path(path).name} holds a JSON {type(found).__name__}, not an object")
    return found


def number(info: dict, key: str, name: str, low: float, high: float, integer: bool = False) -> float | int:
    """info[key] as a number in [low, high] (bools are not numbers here); Refused names the key and the type."""
    value = info.get(key)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "an integer" if integer else "a number"
        raise Refused(f"{name}: {key} is {type(value).__name__}, not {want}")
    if not low <= value <= high:  # NaN fails this too
        raise Refused(f"{name}: {key} is outside [{low:g}, {high:g}]")
    return value


def text(info: dict, key: str, name: str, cap: int = 200) -> str | None:
    """info[key] as a short string, or None when absent."""
    value = info.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > cap:
        raise Refused(f"{name}: {key} is not a string of at most {cap} characters")
    return value
