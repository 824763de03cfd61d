"""The watchdog: run one child (trainer, prepare, evaluator) so that it cannot outlive its welcome.

The child gets its own process group (and, on Linux, dies with the daemon through PR_SET_PDEATHSIG and is
the OOM killer's first choice). It is stopped, SIGTERM then SIGKILL to the whole group, on a hard deadline,
on silence longer than `stall_s`, when its process tree's memory (RSS plus swap) passes `rss_mb`, or when
the daemon is asked to stop. Output goes to a log file (its first LOG_CAP bytes), read in pieces of at most
PUMP_CHUNK whatever the child prints (gigabytes without a newline cost the daemon nothing); the log's tail comes
back in the result.
The child is reaped with wait4, whose resource usage covers the child and every descendant it
waited for, so the result also says how much of the machine the run got (`cpu_share`) and how much other
processes left it (`cpu_free`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import capped

TERM_GRACE_S = 5.0
POLL_S = 0.2
TAIL_LINES = 50
PUMP_CHUNK = 64 << 10  # the child's output is read in pieces of at most this, newline or not
LOG_CAP = 64 << 20  # a log keeps the first this many bytes of a child's output (the rest is read and dropped)
OOM_SCORE_ADJ = 1000  # the most: killed first when the machine runs out of memory


@dataclass
class Limits:
    deadline_s: float
    stall_s: float = 120.0
    rss_mb: float | None = None


@dataclass
class Outcome:
    exit_code: int | None
    reason: str | None  # None when the child ended by itself; else deadline, stall, memory, stopped
    seconds: float
    log_tail: str
    detail: str = ""
    cpu_share: float | None = None  # CPU seconds of the child's whole tree / (wall seconds x cores)
    cpu_free: float | None = None  # share of those cores' time that other processes left to the run

    @property
    def ok(self) -> bool:
        return self.reason is None and self.exit_code == 0


def child_setup() -> None:
    """Runs in the child between fork and exec (Linux only): SIGKILL it if the daemon dies, and make it, and all it
    starts, the OOM killer's first choice. A candidate can fill RAM where no RSS shows (pipe and socket buffers,
    page tables) faster than the watchdog polls; when the kernel must kill something, it is the candidate, not
    the daemon that records what happened."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        try:
            with open("/proc/self/oom_score_adj", "w") as f:  # raising it needs no privilege; nothing inside lowers it
                f.write(str(OOM_SCORE_ADJ))
        except OSError:
            pass


def tree_rss_mb(pid: int) -> float:
    """Resident plus swapped memory of the process tree: on a machine with swap, a tree that outgrows RAM keeps
    growing in swap while its RSS stands still, and would run into the deadline instead of the memory cap."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss + swapped_bytes(p.pid)
        except psutil.NoSuchProcess:
            pass
    return total / (1 << 20)


def swapped_bytes(pid: int) -> int:
    """VmSwap from /proc (psutil's swap figure reads every mapping in smaps: too slow five times a second)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSwap:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux, or the process is gone
        pass
    return 0


def kill_group(pgid: int, grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the group, wait, then SIGKILL whatever is left (including strays that left it)."""
    try:
        strays = psutil.Process(pgid).children(recursive=True)
    except psutil.NoSuchProcess:
        strays = []
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        end = time.time() + wait
        while time.time() < end and group_alive(pgid):
            time.sleep(0.05)
        if not group_alive(pgid):
            break
    for p in strays:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie leader still "exists"; count only live members
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.info["pid"]) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log in a run directory. The sandboxed child may have swapped the log for a link (to
    /proc/self/environ: the daemon's secrets) or a FIFO (a hang): only a regular file is read, its tail only."""
    return "\n".join(capped.read_tail(path).decode(errors="replace").splitlines()[-lines:])


def pump(source, log, on_output: Callable[[], None], cap: int = LOG_CAP) -> None:
    """Copy a child's output into `log` until EOF, in bounded pieces, keeping the first `cap` bytes."""
    kept = 0
    while chunk := source.read1(PUMP_CHUNK):
        on_output()
        if kept < cap:
            piece = chunk[: cap - kept]
            log.write(piece)
            kept += len(piece)
            if kept == cap:
                log.write(f"\n[arx watchdog] the log stops here: the first {cap:,} bytes are kept\n".encode())
            log.flush()


def run_watched(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    limits: Limits,
    should_stop: Callable[[], bool] = lambda: False,
    on_start: Callable[[int], None] = lambda pid: None,
) -> Outcome:
    """Run `cmd` to completion or until a limit trips; never returns with the child alive."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    busy_before = busy_cpu_seconds()
    started = time.time()
    last_output = [started]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_setup,
        )
        on_start(proc.pid)

        def output_seen() -> None:
            last_output[0] = time.time()

        reader = threading.Thread(target=pump, args=(proc.stdout, log, output_seen), daemon=True)
        reader.start()
        ended, usage = threading.Event(), {}

        def reap() -> None:  # the only waiter: Popen never calls waitpid on this child
            _, usage["status"], usage["rusage"] = os.wait4(proc.pid, 0)
            ended.set()

        threading.Thread(target=reap, daemon=True).start()
        reason, detail = None, ""
        while not ended.is_set():
            now = time.time()
            if now - started > limits.deadline_s:
                reason, detail = "deadline", f"ran past its hard deadline of {limits.deadline_s:.0f}s"
            elif now - last_output[0] > limits.stall_s:
                reason, detail = "stall", f"printed nothing for {limits.stall_s:.0f}s"
            elif limits.rss_mb and (rss := tree_rss_mb(proc.pid)) > limits.rss_mb:
                cap = limits.rss_mb
                reason, detail = "memory", f"process tree RSS+swap {rss:.0f} MB passed the cap of {cap:.0f} MB"
            elif should_stop():
                reason, detail = "stopped", "stopped by request"
            if reason:
                kill_group(proc.pid)
                break
            ended.wait(POLL_S)  # returns as soon as the child exits
        ended.wait()
        wall = time.time() - started
        others = busy_cpu_seconds() - busy_before
        proc.returncode = exit_code = os.waitstatus_to_exitcode(usage["status"])
        ru = usage["rusage"]
        kill_group(proc.pid, grace_s=0.5)  # anything the child left behind in its group
        reader.join(timeout=5)
        if reason:
            log.write(f"\n[arx watchdog] {detail}\n".encode())
    tree = ru.ru_utime + ru.ru_stime
    capacity = max(wall, 1e-6) * cpu_count()
    others -= tree
    return Outcome(
        exit_code=exit_code,
        reason=reason,
        seconds=wall,
        log_tail=tail(log_path),
        detail=detail,
        cpu_share=round(tree / capacity, 4),
        cpu_free=round(min(1.0, max(0.0, 1 - others / capacity)), 4),
    )


def busy_cpu_seconds() -> float:
    """CPU seconds every process together has spent on the CPUs this process may use (idle and I/O wait excluded).

    The difference over a run, less the run's own tree, is what other processes took: how much of the machine the
    run could have had, whatever the candidate's code does with it (a trainer that uses one core of two is not
    "contended")."""
    mine = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    total = 0.0
    for i, t in enumerate(psutil.cpu_times(percpu=True)):
        if mine is None or i in mine:
            total += t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
            total += getattr(t, "steal", 0.0)
    return total


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
