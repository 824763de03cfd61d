"""The trainer benchmark runs end to end (slow: it trains three sides), so that it cannot rot unseen again."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import HANG_S, ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="torch is not installed: the PyTorch sides need the bench extra (pip install torch==2.13.0)",
)
def test_the_side_by_side_benchmark_on_a_tiny_budget(stdlib):
    env = dict(os.environ, ARX_PREPARED_DIR=str(stdlib.prepared))
    done = subprocess.run(
        [sys.executable, "-m", "bench", "trainer", "--budget", "2", "--rounds", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mlx_compile_s"] > 0 and report["rounds"] == 2
    for side in ("mlx", "torch_eager", "torch_compile"):
        runs = report["runs"][side]
        assert [r["round"] for r in runs] == [1, 2], runs
        assert all(r["tok_per_sec"] > 0 and r["tok_per_cpu_s"] > 0 and r["startup_s"] > 0 for r in runs), runs
        assert all(r["steps"] >= 2 for r in runs)
    for ratio in ("mlx_vs_torch_eager", "mlx_vs_torch_compile"):
        assert report["summary"][ratio]["min"] > 0
