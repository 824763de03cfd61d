"""`arx-daemon doctor`: what this machine offers arx, and a fix for each problem found."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass

from . import sandbox
from .programs import ROOT


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def checks() -> list[Check]:
    from trainer import blas  # stdlib only: the orchestrator never imports MLX

    out = [
        Check(
            "platform",
            True,
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs",
        )
    ]
    if sys.version_info < (3, 11):
        out[-1] = Check("platform", False, out[-1].detail, "arx needs Python 3.11 or newer")

    probe = run([sys.executable, "-m", "trainer.bench", "--matmul"])
    if probe.returncode == 0:
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        out.append(Check("mlx", True, f"MLX {info['mlx_version']}, backend {info['backend']}"))
        used = info["blas"]
        slow = info["backend"] == "cpu" and used["source"] == "reference"
        name = " ".join(filter(None, (used["source"], used["version"], used["library"] and f"({used['library']})")))
        detail = f"{info['gflops']:.0f} GFLOP/s fp32 (512x512, slower on a busy machine); BLAS: {name}, {used['note']}"
        out.append(Check("matmul", not slow, detail, blas.FIX if slow else ""))
    else:
        out.append(
            Check(
                "mlx",
                False,
                (probe.stderr.strip().splitlines() or ["MLX failed to load"])[-1],
                "reinstall: uv sync (mlx on macOS, mlx[cpu] or mlx[cuda] on Linux)",
            )
        )

    git = shutil.which("git")
    version = run(["git", "--version"]).stdout.strip() if git else ""
    out.append(Check("git", bool(git), version or "git not found", "" if git else "install git"))

    free_gb = shutil.disk_usage(ROOT).free / 2**30
    out.append(
        Check(
            "disk",
            free_gb > 5,
            f"{free_gb:.0f} GB free at {ROOT}",
            "" if free_gb > 5 else "free some disk: each run keeps logs, kept runs keep a checkpoint",
        )
    )

    listed = run([sys.executable, "-m", "trainer.prepare", "--list"])
    prepared = [
        line.split()[0]
        for line in listed.stdout.splitlines()
        if " prepared " in f" {line} " and "not prepared" not in line
    ]
    out.append(
        Check(
            "datasets",
            bool(prepared),
            f"prepared: {', '.join(prepared) or 'none'}",
            ""
            if prepared
            else "uv run python -m trainer.prepare --dataset stdlib (start does this for stdlib by itself)",
        )
    )

    box = sandbox.backend()
    out.append(
        Check("sandbox", box.name != "none", f"{box.name}: {box.detail}", "" if box.name != "none" else sandbox.FIX)
    )

    key = bool(os.environ.get("ANTHROPIC_API_KEY"))
    base = os.environ.get("ANTHROPIC_BASE_URL")
    detail = "ANTHROPIC_API_KEY is set" if key else "ANTHROPIC_API_KEY is not set: campaigns use the offline agent"
    out.append(
        Check(
            "api key",
            True,
            detail + (f"; ANTHROPIC_BASE_URL={base}" if base else ""),
            "" if key else "export ANTHROPIC_API_KEY=... to let Claude propose experiments",
        )
    )
    return out
