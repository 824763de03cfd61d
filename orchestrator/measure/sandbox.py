"""The sandbox every process that runs candidate code runs in (prepare, train, the model side of evaluation).

    jail = Jail(writable=(run_dir,), visible=(worktree, data_dir), hidden=(state_dir, heldout_dir))
    env = sandbox.environment({"ARX_RUN_DIR": str(run_dir)} | blas.fast_env())
    subprocess.Popen(sandbox.command([python, "-m", "trainer.train"], jail), cwd=worktree, env=env,
                     start_new_session=True)

Threat model. The command is hostile: it was written to lower a number by any path it can reach. When the daemon
runs as root, uid 0 inside is the owner of root's files, devices, sysctls and sockets: read-only mounts alone are
not enough, hence the rest of the list.

Prevented (Linux `namespaces` and `bwrap` backends):
- writes outside `Jail.writable`, a private /tmp and a private /dev/shm: the daemon's checkout and venv, the ledger,
  other runs, bytecode caches (every mount is read-only inside, /proc included);
- filling RAM unseen: /tmp and /dev/shm hold SCRATCH_MB each (tmpfs pages are in no process's RSS, so the
  watchdog's memory cap, RSS plus swap of the tree, would not see them);
- reads of `Jail.hidden` paths (held-out documents, the ledger, other runs) unless re-exposed by `visible`/`writable`;
- network: its own network namespace with no interface up (`network=False`);
- secrets: the environment is rebuilt from an allowlist (`environment()`), and the daemon's /proc/<pid>/environ is
  out of sight in a new PID namespace; /run (runtime secrets, control FIFOs) is hidden in every jail;
- lingering processes: a new PID namespace whose first process is ours; when the command exits or the watchdog
  kills `unshare`/`bwrap`, the kernel kills everything left inside, setsid'ed or double-forked or not;
- shared bytecode: PYTHONPYCACHEPREFIX points into the private /tmp, so no .pyc is read from or written next to
  a source;
- IPC with the host: new IPC and network namespaces (System V IPC, abstract sockets), and a seccomp filter that
  refuses every unix socket (a path-named socket such as systemd's, dbus's or docker's connects through a
  read-only mount), io_uring (which bypasses seccomp) and the kernel keyrings (the daemon's session keyring);
- channels through the page cache between jails that read the same files (the model processes of an evaluation):
  mincore, cachestat, posix_fadvise, madvise(MADV_PAGEOUT/MADV_COLD), process_madvise and preadv2(RWF_NOWAIT) are
  refused (timing a read is not prevented);
- naming what is hidden: files hidden under `Jail.mask_roots` vanish behind one overlay per root (whiteouts in a
  layer nobody can reach), so the mount table names the roots only, and the jail's spec is in the environment of
  its undumpable PID 1, not its command line (`namespaces` backend; `bwrap` still binds /dev/null over each file
  and shows them all in its command line);
- undoing the jail: no capability survives (bounding set emptied, securebits locked, no_new_privs), so remount,
  umount and mount fail, including as uid 0 of the user namespace; nested user namespaces are refused, and would
  find the mounts locked anyway; device nodes open only from a minimal /dev (null, zero, random, tty, GPU).

Not prevented: CPU, memory, cache and timing side channels; kernel exploits; reads of files that are not hidden
and that the daemon's user can read (hide what matters: as root, that is every file); writes to FIFOs outside
/run that the daemon's user may write; sharing the GPU with other processes; exhausting CPU, processes, disk
space in the writable paths, or kernel memory in socket and pipe buffers (no cgroup, no RLIMIT_NOFILE: the
watchdog's children are the OOM killer's first choice, see runner.child_setup); symlinks and hard links the
command leaves in its writable paths (the daemon must not follow them).
With `sandbox-exec` (macOS) there is no PID namespace, so a process that leaves the process group can outlive
the phase, /tmp is a per-call folder rather than a private mount, and there is no system call filter. With
`none`, nothing at all: callers refuse Claude campaigns unless the user passes `--unsafe-no-sandbox` (`require`).

Backends, tried in this order: `namespaces` (util-linux `unshare` plus our own trusted set-up step,
`sandbox_setup.py`; no root and no extra package needed), `bwrap` (bubblewrap, where unprivileged user namespaces
need its AppArmor profile, as on Ubuntu 24.04), `sandbox-exec` (macOS), `none`.

    python -m orchestrator.measure.sandbox            # which backend is active, and why
    python -m orchestrator.measure.sandbox --bench    # median seconds of `python -c pass` inside vs outside
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .sandbox_setup import DEFERRED_PRELOAD, FILTER_ONLY, GPU_DEVICES, HOME, JAIL_SPEC, PYCACHE, SCRATCH_MB, TMP

SETUP = Path(__file__).with_name("sandbox_setup.py")
PROBE_TIMEOUT_S = 30
FROM_PARENT = {"PATH", "LANG", "TERM", "TZ", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES"}
FROM_PARENT_PREFIXES = ("LC_",)
FROM_CALLER = FROM_PARENT | {"LD_PRELOAD", "TMPDIR"}
FROM_CALLER_PREFIXES = (*FROM_PARENT_PREFIXES, "ARX_", "MLX_", "OPENBLAS_", "OMP_", "MALLOC_")
ALWAYS_HIDDEN = (Path("/run"),)
RESOLVER = (Path("/run/systemd/resolve"), Path("/run/resolvconf"), Path("/run/NetworkManager"))
SECRET = re.compile(r"ANTHROPIC|AWS|KEY|TOKEN|SECRET|PASSW|CREDENTIAL|COOKIE|AUTH", re.IGNORECASE)
FIX = (
    "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu "
    "kernel.apparmor_restrict_unprivileged_userns=0) or install bubblewrap (apt-get install bubblewrap)"
)


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Jail:
    """What one sandboxed phase may see and touch. Everything not listed is read-only.

    command() resolves symlinks in these paths: never list a path below a folder that a candidate could write
    (it could have made it a symlink to anywhere). The interpreter's folders (`python_paths`) are always visible.
    """

    writable: tuple[Path, ...] = ()  # bound read-write at the same path (must exist)
    visible: tuple[Path, ...] = ()  # re-exposed read-only at the same path, even inside a hidden path
    hidden: tuple[Path, ...] = ()  # files or folders that look empty (or absent) inside
    network: bool = False  # False: own network namespace with no interfaces up
    # folders whose hidden files are hidden by one overlay per folder (namespaces backend), not one mount per file:
    # the jail's mount table then names the folders only, never which of their files are hidden
    mask_roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Backend:
    name: str  # "namespaces" | "bwrap" | "sandbox-exec" | "none"
    detail: str  # what it found, or why not


def environment(extra: dict[str, str]) -> dict[str, str]:
    """The whole environment of a sandboxed process: allowlisted names of os.environ, then `extra`, then the jail's.

    A name in `extra` outside the allowlist, or one that looks like a secret, is a programming error (ValueError),
    not something to drop quietly. LD_PRELOAD is carried as DEFERRED_PRELOAD and set for the command alone.

    TMPDIR is /tmp, a tmpfs private to the phase, unless `extra` names a folder inside a writable path: MLX's CPU
    backend compiles its fused kernels with a C++ compiler and caches them under $TMPDIR/mlx, which takes seconds
    to a minute each phase. Share such a folder between the phases of ONE experiment only (its train and its
    evaluation): any later process that loads a cached kernel runs what the phase that wrote it put there.
    """
    for name in extra:
        allowed = name in FROM_CALLER or name.startswith(FROM_CALLER_PREFIXES)
        if not allowed or SECRET.search(name):
            raise ValueError(f"environment: {name} may not be passed into the sandbox")
    env = {k: v for k, v in os.environ.items() if (k in FROM_PARENT or k.startswith(FROM_PARENT_PREFIXES))}
    env = {k: v for k, v in env.items() if not SECRET.search(k)}
    env.setdefault("PATH", os.defpath)
    env |= {(DEFERRED_PRELOAD if k == "LD_PRELOAD" else k): v for k, v in extra.items()}
    return {"TMPDIR": TMP} | env | {"HOME": HOME, "PYTHONPYCACHEPREFIX": PYCACHE}


def python_paths() -> tuple[Path, ...]:
    """The folders this interpreter runs from (venv, base installation): `visible` when a hidden folder holds them.

    A Python installed by pyenv or uv lives under the home folder, for instance, so hiding the home hides it.
    """
    found = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parent.parent}
    return tuple(sorted(p.resolve() for p in found))


def _paths(jail: Jail) -> dict[str, list[str]]:
    """Absolute, symlink-free paths (a cover or a bind acts on what a path points to), /run hidden in every jail.

    /run holds the host's control FIFOs (systemd's initctl) and secrets mounted by container runtimes; a FIFO
    opens for writing on a read-only mount. A jail with network gets back the resolver's files kept there.
    """
    for path in jail.writable:
        if not Path(path).exists():
            raise ValueError(f"writable path {path} does not exist")
    paths = {  # the interpreter stays visible even when a hidden folder (or the private /tmp) holds it
        "writable": jail.writable,
        "visible": (*python_paths(), *jail.visible),
        "hidden": (*jail.hidden, *ALWAYS_HIDDEN),
    }
    if jail.network:
        paths["visible"] += RESOLVER
    return {kind: sorted({str(Path(p).resolve()) for p in found}) for kind, found in paths.items()}


def _masks(jail: Jail, hidden: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The hidden paths split into those hidden one by one and, per mask root, the files hidden under it (relative),
    each under the shallowest root that holds it."""
    roots = sorted({str(Path(r).resolve()) for r in jail.mask_roots}, key=lambda r: r.count("/"))
    single, masks = [], {}
    for path in hidden:
        root = next((r for r in roots if path.startswith(r + "/") and not Path(path).is_dir()), None)
        if root is None:
            single.append(path)
        else:
            masks.setdefault(root, []).append(path[len(root) + 1 :])
    return single, masks


def _namespaces(cmd: list[str], jail: Jail) -> list[str]:
    unshare = [
        shutil.which("unshare") or "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--ipc",
    ]
    paths = _paths(jail)
    paths["hidden"], paths["masks"] = _masks(jail, paths["hidden"])
    # the spec travels in the environment of the jail's PID 1 (undumpable: unreadable from inside), not in its
    # command line, which every process of the jail can read in /proc/1/cmdline
    spec = [shutil.which("env") or "env", f"{JAIL_SPEC}={json.dumps(paths)}"]
    setup = [*spec, sys.executable, "-I", "-S", str(SETUP), "--jail", "--"]
    return [*unshare, *([] if jail.network else ["--net"]), "--", *setup, *cmd]


def _bwrap(cmd: list[str], jail: Jail) -> list[str]:
    paths = _paths(jail)
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc"]
    argv += [] if jail.network else ["--unshare-net"]
    argv += ["--die-with-parent", "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    size = ["--size", str(SCRATCH_MB << 20)]
    argv += [*size, "--tmpfs", TMP, *size, "--tmpfs", "/dev/shm", "--dir", HOME]
    for device in sorted(Path("/").glob(GPU_DEVICES.lstrip("/"))):
        argv += ["--dev-bind", str(device), str(device)]
    covers = []
    order = {"hidden": 0, "visible": 1, "writable": 2}  # shallow to deep: the deepest entry wins (as sandbox_setup)
    for path, kind in sorted(
        ((p, k) for k in order for p in paths[k]), key=lambda e: (e[0].count("/"), order[e[1]], e[0])
    ):
        if kind == "hidden" and Path(path).is_dir():
            argv += ["--tmpfs", path]
            covers.append(path)
        elif kind == "hidden" and Path(path).exists():
            argv += ["--dev-bind", "/dev/null", path]  # reads as empty; a plain bind would be nodev
        elif kind == "visible":
            argv += ["--ro-bind-try", path, path]
        elif kind == "writable":
            argv += ["--bind", path, path]
    for path in [*covers, "/proc", "/dev"]:  # after the binds inside covers, whose mount points bwrap creates there;
        argv += ["--remount-ro", path]  # /dev: bwrap's is an uncapped tmpfs the jail's root could write (not /dev/shm)
    return [*argv, "--", sys.executable, "-I", "-S", str(SETUP), FILTER_ONLY, "--", *cmd]


def _sbpl(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def profile(jail: Jail, private: Path) -> str:
    """The SBPL profile for macOS `sandbox-exec`: later rules win, so each exception follows its rule.

    `private` is this call's folder for TMPDIR, HOME and the bytecode cache (macOS has no private mount of /tmp).
    """
    paths = _paths(jail)

    def subpaths(kind: str) -> str:
        return " ".join(f"(subpath {_sbpl(p)})" for p in paths[kind])

    lines = ["(version 1)", "(allow default)"]
    if not jail.network:
        lines.append("(deny network*)")
    lines += ["(deny file-write*)", f'(allow file-write* (subpath {_sbpl(str(private))}) (literal "/dev/null"))']
    if paths["hidden"]:
        lines.append(f"(deny file-read* {subpaths('hidden')})")
    if paths["visible"]:
        lines.append(f"(allow file-read* {subpaths('visible')})")
    if paths["writable"]:
        lines.append(f"(allow file-read* file-write* {subpaths('writable')})")
    return "\n".join(lines) + "\n"


def _sandbox_exec(cmd: list[str], jail: Jail) -> list[str]:
    private = Path(tempfile.mkdtemp(prefix="arx-jail-")).resolve()
    (private / "home").mkdir()
    env = [f"TMPDIR={private}", f"HOME={private / 'home'}", f"PYTHONPYCACHEPREFIX={private / 'pycache'}"]
    return ["sandbox-exec", "-p", profile(jail, private), "/usr/bin/env", *env, *cmd]


BUILDERS = {"namespaces": _namespaces, "bwrap": _bwrap, "sandbox-exec": _sandbox_exec}


def command(cmd: list[str], jail: Jail, using: str | None = None) -> list[str]:
    """The argv that runs `cmd` inside `jail`, with the active backend (or the one named by `using`).

    Start it with `environment(...)` and `start_new_session=True`; SIGKILL its process group to end everything.
    The phase is over once no live process is left in that group (what runner.kill_group waits for), not as soon
    as the first process has been reaped: the jail's PID 1 is in the group and ends only after the kernel has
    killed everything else in its namespace.
    """
    name = using or backend().name
    if name not in BUILDERS:
        raise SandboxUnavailable(f"no sandbox on this machine: {backend().detail}")
    return BUILDERS[name](cmd, jail)


def probe(name: str) -> str | None:
    """None when `name` runs a command in a jail here, else the last line it printed."""
    try:
        done = subprocess.run(
            command([sys.executable, "-S", "-c", ""], Jail(), using=name),
            env=environment({}),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            cwd="/",
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]


@functools.cache
def backend() -> Backend:
    """The first backend that works on this machine, found by running a real jail once per process."""
    if platform.system() == "Darwin":
        if not shutil.which("sandbox-exec"):
            return Backend("none", "sandbox-exec not found")
        if (failure := probe("sandbox-exec")) is not None:
            return Backend("none", f"sandbox-exec: {failure}")
        return Backend("sandbox-exec", "sandbox-exec with a generated profile (no PID namespace)")
    if platform.system() != "Linux":
        return Backend("none", f"no sandbox for {platform.system()}")
    reasons = []
    if not shutil.which("unshare"):
        reasons.append("unshare not found (util-linux)")
    elif (failure := probe("namespaces")) is None:
        return Backend("namespaces", "unshare: user, mount, pid, ipc and net namespaces; no capabilities inside")
    else:
        reasons.append(f"unshare: {failure}")
    if not shutil.which("bwrap"):
        reasons.append("bwrap not installed")
    elif (failure := probe("bwrap")) is None:
        return Backend("bwrap", f"bubblewrap ({'; '.join(reasons)})")
    else:
        reasons.append(f"bwrap: {failure}")
    return Backend("none", "; ".join(reasons))


def require(allow_unsafe: bool) -> Backend:
    """The active backend; SandboxUnavailable when there is none and the user did not accept running without one."""
    found = backend()
    if found.name == "none" and not allow_unsafe:
        raise SandboxUnavailable(f"no sandbox for candidate code ({found.detail}): {FIX}, or pass --unsafe-no-sandbox")
    return found


def bench(tries: int = 10) -> dict:
    """Median seconds to run `python -c pass` inside a jail and outside: the set-up cost of one phase."""
    outside, inside = [], []
    cmd = [sys.executable, "-c", "pass"]
    env = environment({})
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        for sub in ("run", "state/worktree"):
            (Path(tmp) / sub).mkdir(parents=True)
        root = Path(tmp)
        jail = Jail(writable=(root / "run",), visible=(root / "state/worktree",), hidden=(root / "state",))
        for _ in range(tries):
            for argv, times in ((cmd, outside), (command(cmd, jail), inside)):
                t = time.perf_counter()
                subprocess.run(argv, env=env, check=True)
                times.append(time.perf_counter() - t)
    out, ins = statistics.median(outside), statistics.median(inside)
    return {
        "backend": backend().name,
        "tries": tries,
        "outside_s": round(out, 4),
        "inside_s": round(ins, 4),
        "setup_s": round(ins - out, 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.measure.sandbox",
        description="Show which sandbox candidate code runs in on this machine, and why.",
    )
    parser.add_argument(
        "--bench",
        action="store_true",
        help="print as JSON the median seconds of `python -c pass` in a jail and outside (10 tries)",
    )
    args = parser.parse_args(argv)
    found = backend()
    if args.bench:
        if found.name == "none":
            parser.exit(1, f"no sandbox to measure: {found.detail}\n")
        print(json.dumps(bench()))
    else:
        print(f"{found.name}: {found.detail}")


if __name__ == "__main__":
    main()
