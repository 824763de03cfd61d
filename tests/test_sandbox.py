"""The sandbox, tried the way a hostile proposal would: real jails, real processes, no mocks.

Each test runs a small `python -c` inside `sandbox.command(...)` with `sandbox.environment(...)` and checks from
outside what it could and could not do. Linux tests run once per backend that works on this machine.
"""

from __future__ import annotations

import errno
import json
import os
import py_compile
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from inside import blas
from orchestrator.measure import runner, sandbox, sandbox_setup
from orchestrator.measure.sandbox import Jail

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")
TOOLS = {"namespaces": "unshare", "bwrap": "bwrap"}
WORKING = [name for name, tool in TOOLS.items() if LINUX and shutil.which(tool) and sandbox.probe(name) is None]
EVENT_TIMEOUT_S = 60  # an upper bound on waiting for something that should happen; never a measure of speed


@pytest.fixture(params=WORKING or [None])
def using(request) -> str:
    if request.param is None:
        pytest.skip("no Linux sandbox works on this machine")
    return request.param


@pytest.fixture
def area():
    """A fake daemon layout outside /tmp (the jail's /tmp is private, which would hide everything in it anyway)."""
    root = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="arx-sandbox-test-"))
    (root / "checkout").mkdir()
    (root / "checkout/code.py").write_text("print('daemon code')\n")
    state = root / "state"
    for sub in ("worktrees/model-x", "runs/model-x/0005", "runs/model-y/0001"):
        (state / sub).mkdir(parents=True)
    (state / "worktrees/model-x/mod.py").write_text("WHO = 'real'\n")
    (state / "runs/model-y/0001/result.json").write_text('{"val_bpb": 1.0}')
    (state / "heldout.txt").write_text("held-out document\n")
    con = sqlite3.connect(state / "experiments.db")
    con.execute("CREATE TABLE run (id INTEGER, status TEXT)")
    con.execute("INSERT INTO run VALUES (1, 'discard')")
    con.commit()
    con.close()
    (root / "secret.txt").write_text("api key\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def campaign_jail(area: Path, **kw) -> Jail:
    state = area / "state"
    return Jail(
        writable=(state / "runs/model-x/0005",),
        visible=(state / "worktrees/model-x",),
        hidden=(state, area / "secret.txt"),
        **kw,
    )


def jailed(
    using: str, code: str, jail: Jail, *args: str, extra: dict | None = None, cwd: Path | str = "/"
) -> subprocess.CompletedProcess:
    argv = sandbox.command([sys.executable, "-c", code, *args], jail, using=using)
    env = sandbox.environment(extra or {})
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=EVENT_TIMEOUT_S, check=False)


def report(using: str, code: str, jail: Jail, *args: str, **kw) -> dict:
    """Run `code`, which prints one JSON object last, and return that object."""
    done = jailed(using, code, jail, *args, **kw)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


TRY = """
import json, sys
def attempt(fn):
    try:
        return repr(fn())
    except Exception as e:
        return type(e).__name__
"""


def test_writes_outside_the_writable_paths_fail(using, area):
    code = (
        TRY
        + """
import sqlite3
root, run = sys.argv[1], sys.argv[2]
def update():
    con = sqlite3.connect(root + "/state/experiments.db")
    con.execute("UPDATE run SET status = 'keep'")
    con.commit()
print(json.dumps({
    "checkout": attempt(lambda: open(root + "/checkout/code.py", "a").write("pwned")),
    "new_file": attempt(lambda: open(root + "/checkout/new.py", "w").write("x")),
    "db": attempt(update),
    "run": attempt(lambda: open(run + "/out.txt", "w").write("ok")),
}))
"""
    )
    run = area / "state/runs/model-x/0005"
    # the ledger is not hidden here, only read-only: the write must fail on its own
    seen = report(using, code, Jail(writable=(run,)), str(area), str(run))
    assert seen["checkout"] == seen["new_file"] == "OSError"
    assert seen["db"] == "OperationalError"
    assert seen["run"] == "2" and (run / "out.txt").read_text() == "ok"
    assert (area / "checkout/code.py").read_text() == "print('daemon code')\n"
    assert not (area / "checkout/new.py").exists()
    assert sqlite3.connect(area / "state/experiments.db").execute("SELECT status FROM run").fetchone() == ("discard",)


def test_hidden_paths_look_empty_and_exposed_paths_show_through(using, area):
    code = (
        TRY
        + """
import os
root = sys.argv[1]
state = root + "/state"
print(json.dumps({
    "heldout": attempt(lambda: open(state + "/heldout.txt").read()),
    "db": attempt(lambda: open(state + "/experiments.db", "rb").read()),
    "other_run": attempt(lambda: open(state + "/runs/model-y/0001/result.json").read()),
    "secret": attempt(lambda: open(root + "/secret.txt").read()),
    "state": sorted(os.listdir(state)),
    "visible": attempt(lambda: open(state + "/worktrees/model-x/mod.py").read()),
    "visible_write": attempt(lambda: open(state + "/worktrees/model-x/mod.py", "a").write("x")),
    "writable": attempt(lambda: open(state + "/runs/model-x/0005/log", "w").write("ok")),
    "cover_write": attempt(lambda: open(state + "/planted", "w").write("x")),
}))
"""
    )
    seen = report(using, code, campaign_jail(area), str(area))
    assert seen["heldout"] == seen["db"] == seen["other_run"] == "FileNotFoundError"
    assert seen["secret"] == "''"
    assert set(seen["state"]) <= {"worktrees", "runs"}  # only the mount points of what is exposed
    assert seen["visible"] == repr("WHO = 'real'\n") and seen["visible_write"] == "OSError"
    assert seen["writable"] == "2" and (area / "state/runs/model-x/0005/log").read_text() == "ok"
    assert seen["cover_write"] == "OSError" and not (area / "state/planted").exists()


def test_a_working_directory_inside_a_hidden_folder_sees_the_cover(using, area):
    code = "import os, json; print(json.dumps(sorted(os.listdir('.'))))"
    seen = report(using, code, campaign_jail(area), cwd=area / "state")
    assert "heldout.txt" not in seen and "experiments.db" not in seen


@pytest.mark.parametrize("network", [False, True])
def test_network_is_cut_unless_asked_for(using, area, network):
    server = socket.create_server(("127.0.0.1", 0))
    try:
        code = (
            TRY
            + """
import socket
connect = lambda: socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
print(json.dumps({"connect": attempt(connect)}))
"""
        )
        seen = report(using, code, Jail(network=network), str(server.getsockname()[1]))
    finally:
        server.close()
    # namespaces leaves no interface up (unreachable); bwrap brings up a loopback of its own (refused)
    assert seen["connect"] in (("None",) if network else ("OSError", "ConnectionRefusedError"))


def test_secrets_stay_outside(using, area, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    code = """
import glob, json, os
leaks = []
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        if b"secret-value" in open(path, "rb").read():
            leaks.append(path)
    except OSError:
        pass
print(json.dumps({"env": sorted(os.environ), "leaks": leaks, "pids": len(glob.glob("/proc/[0-9]*"))}))
"""
    seen = report(using, code, campaign_jail(area), extra={"ARX_RUN_DIR": "/x", "OMP_NUM_THREADS": "1"})
    assert not [k for k in seen["env"] if "ANTHROPIC" in k or "TOKEN" in k or "AWS" in k]
    assert {"ARX_RUN_DIR", "OMP_NUM_THREADS", "HOME", "TMPDIR", "PYTHONPYCACHEPREFIX"} <= set(seen["env"])
    assert seen["leaks"] == [] and seen["pids"] <= 3  # its own PID namespace: the daemon is not in /proc


def test_environment_is_an_allowlist(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk")
    monkeypatch.setenv("ARX_FROM_PARENT", "1")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("LD_PRELOAD", "/evil.so")
    blas = "/usr/lib/libopenblas.so.0"
    env = sandbox.environment({"ARX_RUN_DIR": "/r", "LD_PRELOAD": blas, "MALLOC_TRIM_THRESHOLD_": "1"})
    assert env["ARX_RUN_DIR"] == "/r" and env[sandbox.DEFERRED_PRELOAD] == blas and env["LC_ALL"] == "C.UTF-8"
    assert "ANTHROPIC_API_KEY" not in env and "ARX_FROM_PARENT" not in env
    assert env["TMPDIR"] == "/tmp" and env["HOME"].startswith("/tmp/")
    assert env["PYTHONPYCACHEPREFIX"].startswith("/tmp/")
    assert "LD_PRELOAD" not in env and "LD_PRELOAD" not in sandbox.environment({})
    assert sandbox.environment({"TMPDIR": "/run/dir/tmp"})["TMPDIR"] == "/run/dir/tmp"
    for name in ("ANTHROPIC_API_KEY", "ARX_API_KEY", "PYTHONPATH", "HOME", "OPENAI_TOKEN"):
        with pytest.raises(ValueError, match=name):
            sandbox.environment({name: "x"})


def test_a_preloaded_blas_reaches_the_command_only(using, area):
    """OpenBLAS starts threads where it is loaded, and a process with threads cannot create a user namespace."""
    lib = blas.find_openblas()
    if lib is None:
        pytest.skip("no OpenBLAS installed")
    code = """
import json, os
print(json.dumps({"env": os.environ.get("LD_PRELOAD"), "loaded": "openblas" in open("/proc/self/maps").read(),
                  "deferred": [k for k in os.environ if k.startswith("ARX_SANDBOX")]}))
"""
    seen = report(using, code, campaign_jail(area), extra=blas.fast_env())
    assert seen == {"env": blas.fast_env()["LD_PRELOAD"], "loaded": True, "deferred": []}


ESCAPE = """
import os, sys, time
token, run, mode = sys.argv[1:4]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(run + "/ready", "w").close()
        while not os.path.exists(run + "/go"):
            time.sleep(0.02)
        open(run + "/escaped", "w").close()
    os._exit(0)
while not os.path.exists(run + "/ready"):
    time.sleep(0.02)
if mode == "hang":
    time.sleep(3600)
"""


def wait_for(predicate, what: str) -> None:
    end = time.monotonic() + EVENT_TIMEOUT_S
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def holders(token: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if token in (p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


@pytest.mark.parametrize("mode", ["exit", "hang", "unsandboxed"])
def test_nothing_outlives_the_phase(using, area, mode):
    """A double-forked, setsid'ed grandchild waits for a signal file and would then write. It must be dead first."""
    run, token = area / "state/runs/model-x/0005", f"arx-escape-{uuid.uuid4()}"
    cmd = [sys.executable, "-c", ESCAPE, token, str(run), mode]
    argv = cmd if mode == "unsandboxed" else sandbox.command(cmd, campaign_jail(area), using=using)
    proc = subprocess.Popen(argv, env=sandbox.environment({}), cwd="/", start_new_session=True)
    try:
        wait_for(lambda: (run / "ready").exists(), "the grandchild to start")
        if mode == "hang":
            os.killpg(proc.pid, signal.SIGKILL)  # what the watchdog does on a limit
        proc.wait(timeout=EVENT_TIMEOUT_S)
        # the watchdog's test of "over": no live member left in the group (the jail's PID 1 is one, and it only
        # dies once the kernel has killed everything in its namespace)
        wait_for(lambda: not runner.group_alive(proc.pid), "the process group to end")
        (run / "go").touch()
        if mode == "unsandboxed":  # the control: without the jail the grandchild does escape, so the check can fail
            wait_for(lambda: (run / "escaped").exists(), "the unsandboxed grandchild to write")
            return
        wait_for(lambda: not holders(token), "every process of the phase to end")
        assert not (run / "escaped").exists()
    finally:
        for p in holders(token):
            p.kill()


def test_the_watchdog_ends_the_whole_phase(using, area, tmp_path):
    """orchestrator.measure.runner as the integrator uses it: SIGTERM then SIGKILL to the group ends the jailed tree."""
    run, token = area / "state/runs/model-x/0005", f"arx-escape-{uuid.uuid4()}"
    argv = sandbox.command([sys.executable, "-c", ESCAPE, token, str(run), "hang"], campaign_jail(area), using=using)
    outcome = runner.run_watched(
        argv,
        Path("/"),
        sandbox.environment({}),
        tmp_path / "log",
        runner.Limits(deadline_s=3600),
        should_stop=lambda: (run / "ready").exists(),
    )
    try:
        assert outcome.reason == "stopped"
        (run / "go").touch()
        wait_for(lambda: not holders(token), "every process of the phase to end")
        assert not (run / "escaped").exists()
    finally:
        for p in holders(token):
            p.kill()


def test_kill_everything_reaches_only_the_jail(using, area):
    """kill(-1, SIGKILL) by the same uid would take the daemon with it; inside it finds only the phase itself."""
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        code = TRY + "import os, signal\nprint(json.dumps(attempt(lambda: os.kill(-1, signal.SIGKILL))))"
        assert report(using, code, campaign_jail(area)) in ("None", "ProcessLookupError")  # nothing else to kill
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_the_jail_cannot_be_undone(using, area):
    code = (
        TRY
        + """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
def call(rc):
    if rc != 0:
        raise OSError(os.strerror(ctypes.get_errno()))  # any errno counts as a failure
    return rc
state = sys.argv[1] + "/state"
run = (state + "/runs/model-x/0005").encode()
status = dict(line.split(":\\t") for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
seen = {
    "remount_root": attempt(lambda: call(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None))),
    "remount_run": attempt(lambda: call(libc.mount(None, run, None, MS_REMOUNT | MS_BIND, None))),
    "umount_cover": attempt(lambda: call(libc.umount2(state.encode(), 0))),
    "detach_cover": attempt(lambda: call(libc.umount2(state.encode(), 2))),
    "mount_tmpfs": attempt(lambda: call(libc.mount(b"tmpfs", state.encode(), b"tmpfs", 0, None))),
    "caps": [status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")],
    "no_new_privs": status["NoNewPrivs"].strip(),
}
# a nested user namespace would hold every capability again, over locked copies of the mounts
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
seen["nested"] = attempt(lambda: call(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS)))
if seen["nested"] == "0":
    seen["nested_umount"] = attempt(lambda: call(libc.umount2(state.encode(), 2)))
    seen["nested_remount"] = attempt(lambda: call(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None)))
seen["heldout"] = attempt(lambda: open(state + "/heldout.txt").read())
print(json.dumps(seen))
"""
    )
    seen = report(using, code, campaign_jail(area), str(area))
    for key in ("remount_root", "remount_run", "umount_cover", "detach_cover", "mount_tmpfs"):
        assert seen[key] == "OSError", key
    assert seen["caps"] == ["0000000000000000"] * 5 and seen["no_new_privs"] == "1"
    assert seen.get("nested_umount", "OSError") == seen.get("nested_remount", "OSError") == "OSError"
    assert seen["heldout"] == "FileNotFoundError"


def test_host_sockets_keyrings_and_sysctls_are_out_of_reach(using, area):
    """A read-only mount does not stop connect() to a unix socket (systemd, dbus, docker) nor keyctl(), and
    sched_setaffinity() would undo a Ray slot's pinning."""
    path = area / "checkout/control.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    try:
        code = (
            TRY
            + """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def session_keyring():  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create)
    if libc.syscall(int(sys.argv[2]), 0, -3, 1) < 0:
        raise OSError(os.strerror(ctypes.get_errno()))
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
print(json.dumps({"connect": attempt(connect), "pair": attempt(lambda: len(socket.socketpair())),
                  "run": os.listdir("/run"), "keyring": attempt(session_keyring),
                  "core_pattern": attempt(lambda: os.open("/proc/sys/kernel/core_pattern", os.O_WRONLY)),
                  "affinity": attempt(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))}))
"""
        )
        keyctl = sandbox_setup.REFUSED["keyctl"][list(sandbox_setup.ARCHES).index(os.uname().machine)]
        seen = report(using, code, campaign_jail(area), str(path), str(keyctl))
    finally:
        server.close()
    assert seen["connect"] == "PermissionError" and seen["pair"] == "2"
    assert seen["run"] == [] and seen["core_pattern"] == seen["keyring"] == "OSError"
    assert seen["affinity"] == "PermissionError"  # a Ray slot's CPU pinning stays as the slot set it


def test_ram_that_no_rss_shows_is_bounded(using, area):
    """tmpfs pages (in /tmp, /dev/shm, /dev, or a tmpfs mounted in a nested user namespace), a memfd, or a System V
    segment or message queue, written and unmapped, are RAM in no process's RSS: the watchdog's memory cap would not
    see a candidate fill the machine through them."""
    code = (
        TRY
        + """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def fill(path):
    written = 0
    with open(path, "wb") as f:
        while written < (4 << 30):
            written += f.write(bytes(64 << 20))
            f.flush()
def errno_of(result):  # a C call's result and errno
    return result, ctypes.get_errno()
def nested_tmpfs():  # mounting is allowed again in a user namespace of one's own
    libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
    return errno_of(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, b"size=16g"))
sizes = {p: os.statvfs(p).f_blocks * os.statvfs(p).f_frsize >> 20 for p in ("/tmp", "/dev/shm")}
print(json.dumps({"sizes": sizes, "fill": attempt(lambda: fill("/tmp/big")),
                  "dev": attempt(lambda: open("/dev/big", "wb").write(b"x")),
                  "memfd": attempt(lambda: os.memfd_create("x")),
                  "memfd_secret": errno_of(libc.syscall(447, 0)),  # the same number on x86_64 and aarch64
                  "shmget": errno_of(libc.shmget(0, 64 << 20, 0o1600)),  # IPC_PRIVATE, IPC_CREAT | 0600
                  "msgget": errno_of(libc.msgget(0, 0o1600)),
                  "nested_tmpfs": nested_tmpfs()}))
"""
    )
    seen = report(using, code, campaign_jail(area))
    assert seen["sizes"] == {"/tmp": sandbox_setup.SCRATCH_MB, "/dev/shm": sandbox_setup.SCRATCH_MB}
    assert seen["fill"] == "OSError"  # ENOSPC at the cap, far below the 4 GiB asked for
    assert seen["dev"] == "OSError" and seen["memfd"] == "PermissionError"
    refused = [-1, errno.EPERM]
    assert seen["memfd_secret"] == seen["shmget"] == seen["msgget"] == seen["nested_tmpfs"] == refused, seen


def test_devices_open_only_from_a_minimal_dev(using, area):
    """uid 0 inside owns root's device nodes when the daemon is root: a disk must not be openable anywhere."""
    code = """
import json, os
top = {}  # the mount on top at each mount point (the ones below are out of reach)
for line in open("/proc/self/mountinfo"):
    m = line.split()
    top[m[4]] = m
print(json.dumps({"dev": sorted(os.listdir("/dev")),
                  "with_devices": [(m[3], m[4]) for m in top.values() if "nodev" not in m[5].split(",")]}))
"""
    seen = report(using, code, campaign_jail(area))
    assert not [d for d in seen["dev"] if d.startswith(("vd", "sd", "nvme", "loop", "mem", "kmsg", "port"))]
    devices = {"/null", "/zero", "/full", "/random", "/urandom", "/tty"}

    # a mount that allows device nodes is /dev itself (a tmpfs without any), its ptys, or one allowlisted node
    def allowed(root, point):
        return point in ("/dev", "/dev/pts") or root in devices or "nvidia" in root

    assert [m for m in seen["with_devices"] if not allowed(*m)] == []


def test_tmp_and_home_are_private(using, area):
    outside = Path(tempfile.mkdtemp(prefix="arx-host-"))
    try:
        name = f"arx-inside-{uuid.uuid4()}"
        code = (
            TRY
            + """
import os
name, outside = sys.argv[1], sys.argv[2]
open("/tmp/" + name, "w").write("x")
open("/dev/shm/" + name, "w").write("x")
open(os.path.join(os.environ["HOME"], "dotfile"), "w").write("x")
print(json.dumps({"tmpdir": os.environ["TMPDIR"], "host_tmp": attempt(lambda: os.listdir(outside))}))
"""
        )
        seen = report(using, code, Jail(), name, str(outside))
        assert seen["tmpdir"] == "/tmp" and seen["host_tmp"] == "FileNotFoundError"
        assert not (Path("/tmp") / name).exists() and not (Path("/dev/shm") / name).exists()
    finally:
        shutil.rmtree(outside)


def forge_bytecode(folder: Path) -> None:
    """mod.py prints REAL; plant __pycache__/mod.*.pyc that prints FORGED and passes the mtime+size check."""
    src = folder / "mod.py"
    src.write_text("print('FORGED')\n")
    pyc = folder / "__pycache__" / f"mod.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(src), cfile=str(pyc), doraise=True)
    stamp = src.stat().st_mtime_ns
    src.write_text("print('REAL')\n".ljust(len("print('FORGED')\n") - 1) + "\n")
    os.utime(src, ns=(stamp, stamp))


def test_bytecode_is_private(using, area):
    checkout, run = area / "checkout", area / "state/runs/model-x/0005"
    forge_bytecode(checkout)
    (run / "local.py").write_text("X = 1\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(checkout)}
    plain = subprocess.run(
        [sys.executable, "-c", "import mod"], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    assert plain.stdout.strip() == "FORGED"  # the control: an ordinary import would run the planted bytecode
    code = """
import json, os, sys
sys.path[:0] = sys.argv[1:3]
import mod, local
print(json.dumps({"prefix": sys.pycache_prefix, "cached": [f for _, _, fs in os.walk(sys.pycache_prefix) for f in fs]}))
"""
    seen = report(using, code, campaign_jail(area), str(checkout), str(run))
    assert seen["prefix"] == "/tmp/pycache"
    assert any(f.startswith("mod.") for f in seen["cached"]) and any(f.startswith("local.") for f in seen["cached"])
    done = jailed(using, "import sys; sys.path.insert(0, sys.argv[1]); import mod", campaign_jail(area), str(checkout))
    assert done.stdout.strip() == "REAL"
    assert not (run / "__pycache__").exists()


def test_a_jail_that_cannot_be_built_runs_nothing(area):
    """Fail closed: the working directory is not inside the jail (the host /tmp), so the command never starts."""
    if "namespaces" not in WORKING:
        pytest.skip("namespaces backend unavailable")
    outside = Path(tempfile.mkdtemp(prefix="arx-cwd-"))
    try:
        done = jailed("namespaces", "print('ran')", Jail(), cwd=outside)
        assert done.returncode == 125 and "ran" not in done.stdout
        assert "arx sandbox: cannot build the jail" in done.stderr
    finally:
        shutil.rmtree(outside)


@pytest.mark.parametrize(
    ("cmd", "status"),
    [
        ([sys.executable, "-c", "import sys; sys.exit(3)"], 3),
        ([sys.executable, "-c", "import os; os.kill(os.getpid(), 15)"], 128 + 15),
        (["/nonexistent/program"], 127),
    ],
)
def test_the_exit_status_comes_through(using, cmd, status):
    """As a shell reports it: 128 + n for a command killed by signal n, 127 for one that could not be started."""
    done = subprocess.run(
        sandbox.command(cmd, Jail(), using=using),
        env=sandbox.environment({}),
        cwd="/",
        capture_output=True,
        timeout=EVENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == status


def test_paths_in_the_host_tmp_can_be_exposed(using, tmp_path):
    """pytest's tmp_path, or a state directory under /tmp: the jail's own /tmp still shows them where listed."""
    (tmp_path / "run").mkdir()
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt/code.py").write_text("x")
    code = "import sys; print(open(sys.argv[1] + '/wt/code.py').read()); open(sys.argv[1] + '/run/out', 'w')"
    done = jailed(
        using, code, Jail(writable=(tmp_path / "run",), visible=(tmp_path / "wt",)), str(tmp_path), cwd=tmp_path / "wt"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "x" and (tmp_path / "run/out").exists()


def test_the_interpreter_runs_under_a_hidden_folder(using):
    """pyenv and uv install Python under the home folder, and a checkout under /tmp sits below the private /tmp:
    every jail shows the interpreter's folders again, while the rest of a hidden folder stays hidden."""
    base = Path(sys.base_prefix).resolve()
    sibling = base.parent / "arx-not-the-interpreter"
    shown = jailed(using, "import numpy; print('ok')", Jail(hidden=(base.parent,)))
    assert shown.returncode == 0 and shown.stdout.strip() == "ok", shown.stderr
    assert set(sandbox.python_paths()) >= {base, Path(sys.prefix).resolve()}
    assert not any(sibling.is_relative_to(p) for p in sandbox.python_paths())


def test_writable_paths_must_exist(area):
    with pytest.raises(ValueError, match="does not exist"):
        sandbox.command(["true"], Jail(writable=(area / "missing",)), using="namespaces")


NON_ROOT_DRIVER = """
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from orchestrator.measure import sandbox
area = Path(sys.argv[2])
state = area / "state"
jail = sandbox.Jail(writable=(state / "runs/model-x/0005",), visible=(state / "worktrees/model-x",), hidden=(state,))
code = '''
import json, os, sys
state = sys.argv[1]
def attempt(fn):
    try:
        return repr(fn())
    except Exception as e:
        return type(e).__name__
print(json.dumps({
    "checkout": attempt(lambda: open(state + "/../checkout/new.py", "w").write("x")),
    "heldout": attempt(lambda: open(state + "/heldout.txt").read()),
    "visible": attempt(lambda: open(state + "/worktrees/model-x/mod.py").read()),
    "writable": attempt(lambda: open(state + "/runs/model-x/0005/out", "w").write("ok")),
    "caps": [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapBnd"))],
}))
'''
argv = sandbox.command([sys.executable, "-c", code, str(state)], jail, using=sys.argv[3])
done = subprocess.run(argv, env=sandbox.environment({}), capture_output=True, text=True, cwd="/")
sys.stderr.write(done.stderr)
print(done.stdout, end="")
sys.exit(done.returncode)
"""


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return subprocess.run(
        [*drop, *cmd],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=EVENT_TIMEOUT_S,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )


def test_works_for_an_unprivileged_daemon(using, area):
    """The same jail built by a user without any privilege (here: nobody), as a daemon started by a normal user."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to become an unprivileged user")
    if as_nobody("unshare", "--user", "--map-root-user", "true").returncode != 0:
        pytest.skip("this kernel forbids unprivileged user namespaces")

    def runs(python):
        return as_nobody("unshare", "--user", "--map-root-user", python, "-c", "pass").returncode == 0

    python = next((p for p in (sys.executable, "/usr/bin/python3") if runs(p)), None)
    importable = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import orchestrator.measure.sandbox"
    if python is None or as_nobody(python, "-B", "-c", importable).returncode:
        pytest.skip("no Python and checkout that the unprivileged user can read")
    area.chmod(0o755)
    run = area / "state/runs/model-x/0005"
    shutil.chown(run, "nobody", "nogroup")
    done = as_nobody(python, "-B", "-c", NON_ROOT_DRIVER, str(ROOT), str(area), using)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["checkout"] == "OSError" and seen["heldout"] == "FileNotFoundError"
    assert seen["visible"] == repr("WHO = 'real'\n") and seen["writable"] == "2" and (run / "out").read_text() == "ok"
    assert seen["caps"] == ["0000000000000000"] * 2


def test_require_names_the_fix(monkeypatch):
    """With no sandbox tool on PATH, detection finds nothing; callers then need the user's explicit consent."""
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox.backend.cache_clear()
    try:
        found = sandbox.backend()
        assert found.name == "none" and "not found" in found.detail
        with pytest.raises(sandbox.SandboxUnavailable, match="--unsafe-no-sandbox"):
            sandbox.require(allow_unsafe=False)
        assert sandbox.require(allow_unsafe=True).name == "none"
        with pytest.raises(sandbox.SandboxUnavailable):
            sandbox.command(["true"], Jail())
    finally:
        sandbox.backend.cache_clear()


def test_macos_profile_denies_then_excepts(area):
    """sandbox-exec cannot run here: check the generated SBPL text (later rules win in SBPL)."""
    state = area / "state"
    private = area / 'odd "dir"'
    text = sandbox.profile(campaign_jail(area), private)
    lines = text.splitlines()
    assert lines[:3] == ["(version 1)", "(allow default)", "(deny network*)"]
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(rule))
        for rule in (
            "(deny file-write*)",
            "(allow file-write*",
            "(deny file-read*",
            "(allow file-read* (subpath",
            "(allow file-read* file-write*",
        )
    ]
    assert order == sorted(order)
    assert f'(subpath "{state.resolve()}")' in text and f'(subpath "{(state / "worktrees/model-x").resolve()}")' in text
    assert r"odd \"dir\"" in text
    assert "(deny network*)" not in sandbox.profile(Jail(network=True), private)
