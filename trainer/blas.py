"""Use an optimized BLAS on Linux CPU. Neither research program may edit this file.

The `mlx[cpu]` wheel links a reference BLAS (about 6 GFLOP/s for fp32 matmul on 2 cores).
Preloading OpenBLAS's `cblas_sgemm` makes matmul 20-30x faster, but LD_PRELOAD only works at
process start, so the trainer and evaluator re-execute themselves once with it set. The same
re-exec tells glibc to keep freed blocks of up to 32 MB instead of unmapping them: MLX frees and
reallocates every activation each step, and re-faulting those pages cost about 15% of a CPU step.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys

CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
]
MARKER = "ARX_BLAS_PRELOADED"
BFS_WIDTH = 1000
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


def find_openblas() -> str | None:
    """The path of an installed OpenBLAS, or None (ARX_BLAS_LIB overrides; ARX_NO_FAST_BLAS=1 disables)."""
    if platform.system() != "Linux" or os.environ.get("ARX_NO_FAST_BLAS") == "1":
        return None
    if os.environ.get("ARX_BLAS_LIB"):
        return os.environ["ARX_BLAS_LIB"]
    found = [p for p in CANDIDATES if os.path.exists(p)] + sorted(glob.glob("/usr/lib/*/openblas*/libopenblas*.so*"))
    return found[0] if found else None


def active() -> str | None:
    """The BLAS preloaded into this process, if any."""
    return os.environ.get(MARKER) or None


def use_streams(streams: int) -> None:
    """Tune this process for `streams` CPU streams running in parallel.

    Each stream is a thread of its own, so OpenBLAS gets cores // streams threads each instead of
    every core per call, and MLX's graph traversal is widened so that the independent work of
    different streams interleaves instead of running one after the other. Must run before MLX
    evaluates anything.
    """
    os.environ.setdefault("MLX_BFS_MAX_WIDTH", str(BFS_WIDTH))
    lib = active()
    if lib:
        ctypes.CDLL(lib).openblas_set_num_threads(max(1, (os.cpu_count() or 1) // streams))


def fast_env() -> dict[str, str]:
    """Environment additions that give a new process OpenBLAS and the malloc settings (or {})."""
    lib = find_openblas()
    if lib is None:
        return {}
    preload = ":".join(p for p in (lib, os.environ.get("LD_PRELOAD", "")) if p)
    return {k: v for k, v in MALLOC.items() if k not in os.environ} | {"LD_PRELOAD": preload, MARKER: lib}


def reexec_with_openblas() -> None:
    """Replace this process with itself plus `fast_env()`, once; the pid stays the same.

    The daemon starts trainers with `fast_env()` already set, so this only costs a second
    interpreter start when a person runs the trainer by hand.
    """
    if os.environ.get(MARKER) or not (extra := fast_env()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, dict(os.environ, **extra))
