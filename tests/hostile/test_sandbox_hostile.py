"""Hostile checks of the jail that tests/test_sandbox.py does not make: channels that bypass a network namespace,
state that could outlive one jail for the next, and held-out text readable through copies the masks miss.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from attack_kit import data_dir

from orchestrator.measure import sandbox
from orchestrator.measure.sandbox import Jail
from orchestrator.scoring import corpus
from orchestrator.scoring.shingles import SCRUB_BYTES, found_in, shingles

__all__ = ["data_dir"]  # the fixture, imported
LINUX_JAIL = sys.platform.startswith("linux") and sandbox.backend().name in ("namespaces", "bwrap")
EVENT_TIMEOUT_S = 60
pytestmark = pytest.mark.skipif(not LINUX_JAIL, reason="no Linux sandbox here")


def jailed(code: str, jail: Jail | None = None, *args: str) -> dict:
    jail = jail or Jail()
    full = Jail(
        writable=jail.writable,
        visible=(*sandbox.python_paths(), *jail.visible),
        hidden=jail.hidden,
        network=jail.network,
    )
    done = subprocess.run(
        sandbox.command([sys.executable, "-c", code, *args], full),
        env=sandbox.environment({}),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=EVENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_unix_socket_of_the_host_is_unreachable():
    """HOLE: `network=False` gives the jail its own network namespace, but a path-named unix socket is reached through
    the file system, which is mounted read-only and still lets connect() through (a socket is not written to).
    Any host service listening on one (docker, dbus, an ssh agent, a database) is in reach of candidate code."""
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="arx-hostile-sock-"))
    path = folder / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    got: list[bytes] = []

    def accept():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    code = """
import json, socket, sys
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1]); s.sendall(b"hello from the jail"); result = "connected"
except OSError as e:
    result = type(e).__name__
print(json.dumps({"connect": result}))
"""
    try:
        seen = jailed(code, Jail(), str(path))
    finally:
        server.close()
        path.unlink(missing_ok=True)
        folder.rmdir()
    assert seen["connect"] != "connected" and got == []


def test_the_kernel_keyring_carries_nothing_from_one_jail_to_the_next():
    """Two model processes of one evaluation must not talk: the session and user keyrings are a place to try."""
    put = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
ids = [libc.syscall(248, b"user", b"arx-hostile-" + name, b"probe-answers", 13, ring) for name, ring in ((b"s", -3), (b"u", -4), (b"p", -2))]
print(json.dumps({"ids": ids}))
"""
    get = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
found = [libc.syscall(250, 10, ring, b"user", b"arx-hostile-" + name, 0) for name, ring in ((b"s", -3), (b"u", -4), (b"p", -2))]
print(json.dumps({"found": found}))
"""
    jailed(put)
    assert all(k < 0 for k in jailed(get)["found"])


@pytest.mark.slow  # materializes the stdlib corpus (about 30 s) when no data root is prepared
def test_no_copy_of_a_held_out_file_is_readable_in_the_jail(data_dir):
    """HOLE where it fails: the masks cover every copy of this Python version's stdlib, but other Python versions,
    bundled interpreters (a cloud SDK's) and vendored packages (setuptools/_distutils) hold the same files."""
    c = corpus.materialize("stdlib")
    keys = json.loads((c.heldout_dir / "keys.json").read_text())
    rels = [k.removeprefix("stdlib/") for k in keys if k.startswith("stdlib/")]
    roots = [
        str(corpus.stdlib_root()),
        "/usr/lib/python3*",
        "/usr/local/lib/python3*",
        "/opt/*/lib/python3*",
        "/usr/lib/*/lib/python3*",
        "/usr/lib/*/*/*/lib/python3*",
        "/usr/lib/python3/dist-packages/setuptools/_distutils",
        "/usr/lib/*/*/*/lib/python3*/site-packages/setuptools/_distutils",
    ]
    code = """
import glob, json, os, sys
rels, roots = json.loads(sys.argv[1]), json.loads(sys.argv[2])
texts = {}
for root in (r for pattern in roots for r in glob.glob(pattern)):
    for rel in rels:
        vendored = root.endswith("_distutils") and rel.startswith("distutils/")
        for path in [os.path.join(root, rel.split("/", 1)[1] if vendored else rel)]:
            try:
                text = open(path, encoding="utf-8", errors="replace").read()
            except OSError:
                continue
            if text:
                texts[path] = text
print(json.dumps({"texts": texts}))
"""
    hidden = (
        *c.masked,
        c.heldout_dir,
        Path.home().resolve(),
    )  # as experiment.hidden_paths: a pyenv/uv Python in $HOME shows through
    texts = jailed(code, Jail(hidden=hidden), json.dumps(rels), json.dumps(roots))["texts"]
    held = np.unique(
        np.concatenate(
            [shingles(np.frombuffer(t.encode(), np.uint8), SCRUB_BYTES) for s in ("val", "test") for t in c.heldout(s)]
        )
    )
    leaks = {}
    for path, text in texts.items():
        share = (
            found_in(held, np.unique(shingles(np.frombuffer(text.encode(), np.uint8), SCRUB_BYTES))).mean()
            if text
            else 0.0
        )
        if share > 0.001:
            leaks[path] = round(float(share), 4)
    assert leaks == {}, f"held-out text readable in the jail (share of held-out shingles per file): {leaks}"


def test_socketpairs_still_work_without_network():
    """What honest code needs from unix sockets (multiprocessing pipes, asyncio's self-pipe) survives the filter."""
    code = """
import json, socket
a, b = socket.socketpair()
a.sendall(b"ok")
print(json.dumps({"got": b.recv(2).decode()}))
"""
    assert jailed(code)["got"] == "ok"


def test_a_hidden_folder_inside_a_visible_one_stays_hidden(tmp_path_factory):
    """The daemon's checkout is visible (read-only) and, by default, holds the state folder, which is hidden: the
    ledger, other runs' checkpoints. The deeper entry must win, whichever list it is in."""
    root = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="arx-hostile-nest-"))
    try:
        (root / "checkout/state/runs/other").mkdir(parents=True)
        (root / "checkout/state/experiments.db").write_text("ledger")
        (root / "checkout/state/runs/other/model.safetensors").write_text("weights")
        (root / "checkout/state/worktrees/mine").mkdir(parents=True)
        (root / "checkout/state/worktrees/mine/train.py").write_text("mine")
        (root / "checkout/code.py").write_text("daemon code")
        code = """
import json, os, sys
root = sys.argv[1]
def read(rel):
    try:
        return open(os.path.join(root, rel)).read()
    except OSError as e:
        return type(e).__name__
print(json.dumps({rel: read(rel) for rel in ("checkout/code.py", "checkout/state/experiments.db",
                                              "checkout/state/runs/other/model.safetensors", "checkout/state/worktrees/mine/train.py")}))
"""
        jail = Jail(
            visible=(root / "checkout", root / "checkout/state/worktrees/mine"), hidden=(root / "checkout/state",)
        )
        seen = jailed(code, jail, str(root))
    finally:
        shutil.rmtree(root)
    assert seen["checkout/code.py"] == "daemon code" and seen["checkout/state/worktrees/mine/train.py"] == "mine"
    assert (
        seen["checkout/state/experiments.db"] != "ledger"
        and seen["checkout/state/runs/other/model.safetensors"] != "weights"
    )
