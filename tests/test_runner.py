"""The watchdog with small real child processes: deadline, stall, memory, stop, no orphans."""

from __future__ import annotations

import sys
import time

import psutil

from orchestrator import runner


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run(tmp_path, code: str, **limits) -> runner.Outcome:
    return runner.run_watched(child(code), tmp_path, {"PATH": "/usr/bin:/bin"}, tmp_path / "log.txt", runner.Limits(**({"deadline_s": 30} | limits)))


def test_normal_exit_keeps_the_log(tmp_path):
    out = run(tmp_path, "print('hello'); print('bye')")
    assert out.ok and out.log_tail.splitlines()[-2:] == ["hello", "bye"]


def test_exit_code_is_reported(tmp_path):
    out = run(tmp_path, "import sys; print('boom'); sys.exit(3)")
    assert out.exit_code == 3 and out.reason is None and not out.ok


def test_hard_deadline(tmp_path):
    out = run(tmp_path, "import time\nwhile True:\n    print('tick', flush=True); time.sleep(0.1)", deadline_s=1.5)
    assert out.reason == "deadline" and out.seconds < 8


def test_stall(tmp_path):
    out = run(tmp_path, "import time; print('started', flush=True); time.sleep(600)", stall_s=1.0)
    assert out.reason == "stall" and "printed nothing" in out.detail and out.seconds < 8


def test_memory_cap_counts_the_whole_tree(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(400 << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(600)'])\n"
        "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])\n"
        "while True:\n    print('alive', flush=True); time.sleep(0.2)\n"
    )
    out = run(tmp_path, code, rss_mb=450)
    assert out.reason == "memory" and "RSS" in out.detail


def test_sigterm_ignoring_child_and_grandchildren_are_killed(tmp_path):
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "print(kid.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    out = run(tmp_path, code, deadline_s=1.5)
    grandchild = int(out.log_tail.splitlines()[0])
    time.sleep(0.2)
    assert out.reason == "deadline"
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_stop_request(tmp_path):
    started = time.time()
    out = runner.run_watched(child("import time; print('x', flush=True); time.sleep(600)"), tmp_path, {}, tmp_path / "log.txt", runner.Limits(60), should_stop=lambda: time.time() - started > 1)
    assert out.reason == "stopped"


def test_cpu_share_counts_the_whole_tree(tmp_path):
    """A child that busies one core, and a grandchild that busies it too, against one that sleeps."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    busy = run(tmp_path, f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {spin!r}])\n{spin}")
    idle = run(tmp_path, "import time; time.sleep(1.0)")
    assert busy.ok and idle.ok and idle.cpu_share < 0.05
    assert busy.cpu_share > 5 * idle.cpu_share  # the grandchild's second is counted, even on a loaded machine
