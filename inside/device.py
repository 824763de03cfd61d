"""Which MLX backend this process runs on (cpu, metal or cuda). LOCKED.

The trainer sizes its model by it, the model process its streams, the daemon's fingerprint asks it of a
subprocess: one answer for all of them, kept out of the data program's files, whose code runs only in `prepare`.
"""

from __future__ import annotations


def backend() -> str:
    import mlx.core as mx

    for name in ("metal", "cuda"):  # either module may be missing from a given MLX build
        module = getattr(mx, name, None)
        if module is not None and module.is_available():
            return name
    return "cpu"
