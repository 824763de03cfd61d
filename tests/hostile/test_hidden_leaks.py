"""Held-out text the leak check could not see. The leak check reads train.bin; a loader that was candidate code fed
the trainer text that never reached it (tests/hostile/test_budget_attacks.py: no data-program code runs in the
trainer any more, the loader is trusted). Held-out text can also sit in the candidate's own code, written from an
LLM's memory of a famous file, and be trained on from there. And which files are held out was readable inside the
jail: /proc/self/mountinfo listed every mask.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fake_candidate import make_worktree, measure_in_child

from orchestrator.measure import sandbox
from orchestrator.measure.sandbox import Jail

LINUX_JAIL = sys.platform.startswith("linux") and sandbox.backend().name in ("namespaces", "bwrap")
EVENT_TIMEOUT_S = 60

READ_MOUNTS = """
import glob, json
seen = {}
tables = ["/proc/self/mountinfo", "/proc/self/mounts", "/proc/self/mountstats"]
for path in tables + glob.glob("/proc/[0-9]*/cmdline") + glob.glob("/proc/[0-9]*/environ"):
    try:
        seen[path] = open(path, "rb").read().decode(errors="replace")
    except OSError:
        pass
print(json.dumps(seen))
"""


@pytest.mark.skipif(not LINUX_JAIL, reason="no Linux sandbox here")
def test_nothing_in_the_jail_names_the_held_out_files(stdlib):
    """Not the mount table (a mask per file listed each), nor the jail's first process, whose command line held the
    jail's whole spec."""
    masked = stdlib.corpus.masked
    assert masked, "the stdlib corpus masks its held-out files"
    jail = Jail(visible=sandbox.python_paths(), hidden=masked, mask_roots=stdlib.corpus.mask_roots)
    done = subprocess.run(
        sandbox.command([sys.executable, "-c", READ_MOUNTS], jail),
        env=sandbox.environment({}),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=EVENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tables = json.loads(done.stdout.strip().splitlines()[-1])
    assert any("/cmdline" in path for path in tables), sorted(tables)
    named = sorted({p.name for p in masked if any(p.name in table for table in tables.values())})
    assert named == [], f"{len(named)} held-out files named in the jail, e.g. {named[:5]}"


@pytest.mark.skipif(not LINUX_JAIL, reason="no Linux sandbox here")
def test_held_out_files_are_still_unreadable(stdlib):
    """Hiding the list must not un-hide the text: each held-out file, and its bytecode, is absent (or empty)."""
    code = """
import json, sys
def read(path):
    try:
        return open(path, "rb").read(100).decode("latin-1")
    except FileNotFoundError:
        return ""
print(json.dumps({p: read(p) for p in sys.argv[1:]}))
"""
    files = [str(p) for p in stdlib.corpus.masked]
    jail = Jail(visible=sandbox.python_paths(), hidden=stdlib.corpus.masked, mask_roots=stdlib.corpus.mask_roots)
    done = subprocess.run(
        sandbox.command([sys.executable, "-c", code, *files], jail),
        env=sandbox.environment({}),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=EVENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    read = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(read) == len(files) and set(read.values()) == {""}


@pytest.mark.parametrize("form", ["repr", "triple-quoted"])
def test_held_out_text_in_the_candidates_own_code_is_a_leak(stdlib, tmp_path, form):
    """A trainer that carries a held-out document (memorised, pasted in) to train on it: the check that reads
    train.bin never sees it, so the candidate's editable files are checked too, literal values included."""
    leaked = max(stdlib.corpus.heldout("val"), key=len)
    literal = repr(leaked) if form == "repr" else '"""' + leaked.replace("\\", "\\\\").replace('"""', '\\"""') + '"""'
    m = measure_in_child(make_worktree(tmp_path / "wt", attack=f"MEMORISED = {literal}\n"), tmp_path / "run")
    assert m["status"] == "invalid" and "leak" in m["reason"], m
