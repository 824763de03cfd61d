"""The machine fingerprint stamped on every run (DESIGN.md §7): what a score depends on besides the code.

A fixed time budget turns machine speed into val_bpb: a faster BLAS, a new MLX or another CPU
trains more steps and scores better with the same code. So two runs are comparable only when
their fingerprints match; when the fingerprint changes, the campaign re-measures its champion
before judging anything.

The daemon never imports MLX: the MLX version comes from package metadata and the backend from
a one-off subprocess, cached for the daemon's life (a backend does not change under a process).
The arx version is a hash of the trusted code on disk (the daemon, agents/ and inside/: the model server and the BLAS
loader among it), read anew each time, since the evaluator runs from disk in a fresh process for every run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .measure import runner
from .programs import ROOT

TRUSTED = ("orchestrator", "agents", "inside")
MLX_DISTRIBUTIONS = ("mlx", "mlx-metal", "mlx-cuda", "mlx-cpu")
PROBE_TIMEOUT_S = 120


@functools.cache
def backend() -> str:
    """cpu, metal or cuda, as the trainer will see it (asked of a subprocess, so MLX stays out of the daemon)."""
    probe = "from inside.device import backend; print(backend())"
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "unknown (probe timed out)"
    return out.stdout.strip() if out.returncode == 0 else f"unknown (probe exited {out.returncode})"


def mlx_versions() -> str:
    found = []
    for name in MLX_DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found) or "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def arx_version(root: Path = ROOT) -> str:
    """A hash of the trusted code files (path and content), so any edit to them shows."""
    h = hashlib.sha256()
    for entry in TRUSTED:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def current() -> dict:
    """The fingerprint of this machine now: backend, MLX, BLAS, CPU, cores, OS, Python, arx."""
    from inside import blas  # stdlib only, locked: the BLAS the runner will preload

    return {
        "backend": backend(),
        "mlx": mlx_versions(),
        "blas": blas.find_openblas() or "reference (the MLX wheel's own)",
        "cpu": cpu_model(),
        "cores": runner.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "arx": arx_version(),
    }


def digest(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def changes(old: dict, new: dict) -> str:
    """What differs, one line: 'blas: reference -> /usr/lib/.../libopenblas.so.0; cores: 2 -> 4'."""
    keys = sorted(set(old) | set(new))
    return (
        "; ".join(f"{k}: {old.get(k, '-')} -> {new.get(k, '-')}" for k in keys if old.get(k) != new.get(k)) or "nothing"
    )
