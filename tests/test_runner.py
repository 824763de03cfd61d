"""The watchdog with small real child processes: deadline, stall, memory, stop, no orphans."""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from conftest import HANG_S
from orchestrator.measure import runner


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run(tmp_path, code: str, should_stop=lambda: False, **limits) -> runner.Outcome:
    limits = {"deadline_s": HANG_S} | limits
    env = {"PATH": "/usr/bin:/bin"}
    return runner.run_watched(
        child(code), tmp_path, env, tmp_path / "log.txt", runner.Limits(**limits), should_stop=should_stop
    )


@pytest.fixture(scope="module")
def startup_s(tmp_path_factory) -> float:
    """How long a child that does nothing takes from start to reaped, on this machine right now."""
    return max(run(tmp_path_factory.mktemp("startup"), "pass").seconds for _ in range(3))


def promptly(startup_s: float) -> float:
    """Seconds the watchdog may take to stop a child once a limit trips: a poll, SIGTERM, and a margin
    of start-ups measured here (a loaded machine is slow at everything, the watchdog included)."""
    return runner.POLL_S + 10 * startup_s + 1


def test_normal_exit_keeps_the_log(tmp_path):
    out = run(tmp_path, "print('hello'); print('bye')")
    assert out.ok and out.log_tail.splitlines()[-2:] == ["hello", "bye"]


def test_exit_code_is_reported(tmp_path):
    out = run(tmp_path, "import sys; print('boom'); sys.exit(3)")
    assert out.exit_code == 3 and out.reason is None and not out.ok


def test_hard_deadline(tmp_path, startup_s):
    out = run(tmp_path, "import time\nwhile True:\n    print('tick', flush=True); time.sleep(0.1)", deadline_s=1.5)
    assert out.reason == "deadline" and 1.5 < out.seconds < 1.5 + promptly(startup_s)


def test_stall(tmp_path, startup_s):
    out = run(tmp_path, "import time; print('started', flush=True); time.sleep(600)", stall_s=1.0)
    assert out.reason == "stall" and "printed nothing" in out.detail
    assert 1.0 < out.seconds < 1.0 + startup_s + promptly(startup_s)


def test_memory_cap_counts_the_whole_tree(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(400 << 20); b[::4096] = "
        'b"x" * len(b[::4096]); time.sleep(600)\'])\n'
        "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])\n"
        "while True:\n    print('alive', flush=True); time.sleep(0.2)\n"
    )
    out = run(tmp_path, code, rss_mb=450)
    assert out.reason == "memory" and "RSS" in out.detail


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="oom_score_adj is Linux's")
def test_a_child_and_its_children_are_the_oom_killers_first_choice(tmp_path):
    """RAM a candidate fills where no RSS shows is beyond the memory cap: if the kernel must kill, not the daemon."""
    with open("/proc/self/oom_score_adj") as f:
        if f.read().strip() == str(runner.OOM_SCORE_ADJ):
            pytest.skip("this test process is already the OOM killer's first choice: nothing to tell apart")
    code = "import subprocess; subprocess.run(['cat', '/proc/self/oom_score_adj'])"
    out = run(tmp_path, code)
    assert out.ok and out.log_tail.strip() == str(runner.OOM_SCORE_ADJ) == "1000"


def test_sigterm_ignoring_child_and_grandchildren_are_killed(tmp_path, startup_s):
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, "
        "signal.SIG_IGN); time.sleep(600)'])\n"
        "print(kid.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "log.txt"
    out = run(
        tmp_path, code, should_stop=lambda: log.exists() and log.read_text().strip().isdigit()
    )  # the grandchild exists
    grandchild = int(out.log_tail.splitlines()[0])
    assert out.reason == "stopped"
    end = time.monotonic() + promptly(startup_s)  # SIGKILL was sent; delivering it may take a moment
    while not dead(grandchild):
        assert time.monotonic() < end, "the grandchild outlived the watchdog"
        time.sleep(0.05)


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_request(tmp_path):
    log = tmp_path / "log.txt"
    printed = lambda: log.exists() and "x" in log.read_text()  # noqa: E731
    out = run(tmp_path, "import time; print('x', flush=True); time.sleep(600)", should_stop=printed)
    assert out.reason == "stopped" and out.log_tail.startswith("x")


def test_cpu_share_counts_the_whole_tree(tmp_path):
    """A child that busies one core, and a grandchild that busies it too, against one that sleeps."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    busy = run(tmp_path, f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {spin!r}])\n{spin}")
    idle = run(tmp_path, "import time; time.sleep(1.0)")
    assert busy.ok and idle.ok and idle.cpu_share < 0.05
    assert busy.cpu_share > 5 * idle.cpu_share  # the grandchild's second is counted, even on a loaded machine
