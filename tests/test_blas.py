"""Which BLAS a trainer gets on Linux CPU, and that the wheel's OpenBLAS really computes (no apt step)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from inside import blas

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS is chosen on Linux only")


@pytest.fixture
def no_system_blas(monkeypatch):
    """This machine as a fresh clone sees it: no OpenBLAS from the distribution."""
    monkeypatch.setattr(blas, "SYSTEM", [])
    monkeypatch.setattr(blas, "SYSTEM_GLOB", "/nonexistent/*.so")
    for name in ("ARX_NO_FAST_BLAS", "ARX_BLAS_LIB"):
        monkeypatch.delenv(name, raising=False)


def sgemm(library: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A B through `cblas_sgemm`, the one call of MLX's CPU matmul."""
    lib = ctypes.CDLL(library)
    c = np.zeros((a.shape[0], b.shape[1]), np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    row_major, no_transpose = 101, 111
    one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
    a_, b_, c_ = (x.ctypes.data_as(ptr) for x in (a, b, c))
    lib.cblas_sgemm(row_major, no_transpose, no_transpose, m, n, k, one, a_, k, b_, n, zero, c_, n)
    return c


def test_order_of_preference(monkeypatch, tmp_path, no_system_blas):
    wheel = blas.describe()
    assert wheel["source"] == "scipy-openblas32" and wheel["version"] and Path(wheel["library"]).exists()
    system = tmp_path / "x86_64-linux-gnu" / "libopenblas.so.0"
    system.parent.mkdir()
    system.write_bytes(b"")
    monkeypatch.setattr(blas, "SYSTEM", [str(system)])
    assert blas.describe() | {"note": ""} == {"source": "debian", "library": str(system), "version": None, "note": ""}
    monkeypatch.setenv("ARX_BLAS_LIB", str(tmp_path / "missing.so"))
    assert blas.describe()["source"] == "reference" and "does not exist" in blas.describe()["note"]
    monkeypatch.setenv("ARX_BLAS_LIB", wheel["library"])
    assert blas.describe()["source"] == "ARX_BLAS_LIB" and blas.find_openblas() == wheel["library"]
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    assert blas.describe()["source"] == "reference" and blas.find_openblas() is None and blas.fast_env() == {}


def test_the_wheels_copy_exports_cblas_and_computes(no_system_blas):
    library = blas.find_openblas()
    names = set(blas.exported_names(Path(library)))
    assert {"cblas_sgemm", "sgemm_", "openblas_set_num_threads"} <= names
    assert not any(n.startswith(blas.WHEEL_PREFIX) for n in names)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((67, 129), dtype=np.float32), rng.standard_normal((129, 33), dtype=np.float32)
    np.testing.assert_allclose(sgemm(library, a, b), a @ b, rtol=1e-4, atol=1e-4)


def test_unprefix_renames_every_export_and_nothing_else(tmp_path):
    original, _ = blas.wheel_library()
    copy = tmp_path / "libopenblas-test.so"
    blas.unprefix(original, copy)
    before, after = blas.exported_names(original), blas.exported_names(copy)
    assert sorted(n.removeprefix(blas.WHEEL_PREFIX) for n in before) == sorted(after)
    assert [p.name for p in tmp_path.iterdir()] == [copy.name], "no temporary file is left behind"


def test_a_missing_wheel_means_the_reference_blas_and_a_loud_warning(monkeypatch, no_system_blas):
    monkeypatch.setattr(blas.importlib.util, "find_spec", lambda name: None)
    chosen = blas.describe()
    assert chosen["source"] == "reference" and "scipy-openblas32 wheel is not installed" in chosen["note"]
    warning = blas.slow_warning()
    assert warning.startswith("*** SLOW") and blas.FIX in warning and "\n" not in warning


def test_start_warns_once_before_anything_runs(tmp_path):
    """`start` on a machine without a fast BLAS: the loud line comes first. (Each start here then
    stops at its first check, an unprepared dataset, before it touches git or a ledger.)"""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"} | {
        "ARX_DATA_DIR": str(tmp_path / "no-data")
    }
    args = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "start",
        "--program",
        "model",
        "--tag",
        "x",
        "--dataset",
        "climbmix",
    ]
    args += ["--foreground", "--state-dir", str(tmp_path / "state")]
    slow = subprocess.run(args, cwd=tmp_path, env=env | {"ARX_NO_FAST_BLAS": "1"}, capture_output=True, text=True)
    assert slow.returncode == 2 and "climbmix" in slow.stderr, slow.stdout + slow.stderr
    lines = [line for line in slow.stdout.splitlines() if "SLOW" in line]
    assert len(lines) == 1 and blas.FIX in lines[0] and "ARX_NO_FAST_BLAS=1" in lines[0], slow.stdout
    fast = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert fast.returncode == 2 and "SLOW" not in fast.stdout, "the wheel's OpenBLAS is a dependency: never slow here"


def test_a_trainer_records_the_blas_it_ran_with(trained_run):
    info = json.loads((trained_run / "train.json").read_text())
    assert info["blas"] == blas.describe() and info["blas"]["source"] != "reference"


def test_the_matmul_probe_runs_on_the_chosen_library():
    """The re-exec puts the library into LD_PRELOAD: the process that multiplies has it mapped."""
    code = (
        "from inside import blas; blas.reexec_with_openblas()\n"
        "import mlx.core as mx; a = mx.ones((64, 64)); mx.eval(a @ a)\n"
        "print(blas.active()); print(open('/proc/self/maps').read())"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    active, maps = out.stdout.split("\n", 1)
    assert active == blas.find_openblas() and os.path.realpath(active) in maps
