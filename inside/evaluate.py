"""The untrusted half of evaluation: a model process that turns token rows into logits. LOCKED.

    python -m inside.evaluate --run-dir DIR --worktree PATH [--kernels DIR]   (the daemon runs it in a sandbox)
    python -m inside.evaluate --compile-only ROWS --run-dir DIR --worktree PATH   (the daemon's compile phase)

It loads the worktree's `build_model` (candidate code) and the run's checkpoint, then answers
requests on stdin/stdout until told to stop. It never sees a document, a tokenizer, a byte count
or a score: the trusted scorer (orchestrator/scoring/scorer.py) owns all of those, and checks what comes
back (shape, finiteness, causality on its own secret probe rows). Whatever candidate code does in
this process can only change the logits it returns.

On CPU the forward pass is `mx.compile`d when the daemon hands over its kernel cache (`--kernels`, the folder it
made for this trainer code: orchestrator/measure/kernels.py), copied into this process's private TMPDIR where MLX
looks for kernels. The compile phase ran this file with `--compile-only` on a batch of the scorer's shape, so the
cache holds the forward's kernels too. Without a cache the forward runs uncompiled: compiling kernels here would
cost more seconds than it saves.

Wire format (little-endian): request  b"ROWS" int32 rows int32 cols, then rows*cols int32 tokens;
                             response b"LOGT" int32 rows int32 cols int32 vocab, then float32 logits.
A request with rows == 0 ends the process.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

REQUEST = struct.Struct("<4sii")
RESPONSE = struct.Struct("<4siii")
CPU_STREAMS = 2  # rows of a request evaluated in parallel on CPU, one stream per core


def load_build_model(worktree: Path):
    """The worktree's `trainer.train.build_model`, imported under a private package name.

    A plain `import trainer.train` would find whichever `trainer` is first on sys.path (the
    daemon's checkout, or an installed copy); loading the worktree's folder as its own package
    makes sure the candidate's code, and only it, builds the model.
    """
    folder = Path(worktree).resolve() / "trainer"
    name = "arx_candidate_" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.train").build_model


def load_model(run_dir: Path, worktree: Path):
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    config = json.loads((run_dir / "model_config.json").read_text())
    model = load_build_model(worktree)(config)
    model.update(tree_unflatten(list(mx.load(str(run_dir / "model.safetensors")).items())))
    model.eval()
    mx.eval(model.parameters())
    return model


def compiled(model, kernels: Path):
    """`model`'s forward, compiled with the kernels of the daemon's cache, copied where MLX looks for them: a fresh
    folder made TMPDIR (inside the jail's private /tmp), removed when the process ends."""
    own = Path(tempfile.mkdtemp(prefix="arx-kernels-"))
    atexit.register(shutil.rmtree, own, ignore_errors=True)
    shutil.copytree(kernels, own / "mlx")
    os.environ["TMPDIR"] = str(own)  # MLX reads it when it looks for a kernel
    return compiled_forward(model)


def compiled_forward(model):
    """The forward as one compiled function, the weights captured as constants (they never change here): a forward
    that fails to trace then leaves the model as it was (traced with the weights as inputs, MLX leaves them as
    tracers), so the uncompiled fallback still works. The compile phase traces exactly this."""
    import mlx.core as mx

    return mx.compile(lambda tokens: model(tokens))


def compiled_here(kernels: Path) -> list[str]:
    """The kernel libraries in this process's TMPDIR that the daemon's cache did not hold."""
    handed = {p.relative_to(kernels) for p in kernels.rglob("*.so")}
    mine = Path(os.environ["TMPDIR"]) / "mlx"
    return sorted(str(p) for p in mine.rglob("*.so") if p.relative_to(mine) not in handed)


def read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("the scorer closed the pipe")
    return data


@functools.cache
def cpu_streams() -> list:
    """One MLX stream per core, at most CPU_STREAMS, on CPU; the default stream elsewhere.

    MLX runs elementwise work (the soft-cap over the vocabulary dominates a small model) on one core
    per stream: rows split across two streams evaluate about 1.6x faster on 2 cores."""
    import mlx.core as mx

    from inside import blas
    from inside.device import backend

    if backend() != "cpu":
        return [mx.default_stream(mx.default_device())]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # a Ray slot's
    n = max(1, min(CPU_STREAMS, cores or 1))
    blas.use_streams(n)
    return [mx.new_stream(mx.cpu) for _ in range(n)]


def forward(model, tokens: np.ndarray, streams: list) -> list[np.ndarray]:
    """The model's outputs for `tokens`, its rows split across `streams` (each row is scored on its own)."""
    import mlx.core as mx

    outs = []
    for stream, part in zip(streams, np.array_split(tokens, min(len(streams), len(tokens)))):
        with mx.stream(stream):
            outs.append(model(mx.array(part)).astype(mx.float32))
    mx.eval(*outs)
    return [np.asarray(o) for o in outs]


def serve(model, requests, responses, fast=None) -> None:
    """Answer requests with `fast` (the compiled forward) until it fails, then with `model` (candidate code that
    does not compile is evaluated as it is, only slower)."""
    streams = cpu_streams()
    while True:
        magic, rows, cols = REQUEST.unpack(read_exact(requests, REQUEST.size))
        if magic != b"ROWS" or rows == 0:
            return
        tokens = np.frombuffer(read_exact(requests, rows * cols * 4), dtype=np.int32).reshape(rows, cols)
        try:
            parts = forward(fast or model, tokens, streams)
        except Exception as e:  # noqa: BLE001 (whatever the candidate's forward raises when traced)
            if fast is None:
                raise
            print(f"the compiled forward failed ({type(e).__name__}: {e}); evaluating uncompiled", file=sys.stderr)
            fast = None
            parts = forward(model, tokens, streams)
        if any(p.ndim != 3 or p.shape[1:] != parts[0].shape[1:] for p in parts):
            responses.write(RESPONSE.pack(b"LOGT", rows, cols, -1))  # the scorer refuses the malformed header
            responses.flush()
            continue
        logits = np.concatenate(parts)
        responses.write(RESPONSE.pack(b"LOGT", *logits.shape))
        responses.write(np.ascontiguousarray(logits).tobytes())
        responses.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inside.evaluate", description="Serve a trained model's logits to the trusted scorer."
    )
    parser.add_argument(
        "--run-dir", required=True, type=Path, help="folder with model.safetensors and model_config.json"
    )
    parser.add_argument(
        "--worktree", required=True, type=Path, help="checkout whose trainer/train.py defines build_model"
    )
    parser.add_argument("--kernels", type=Path, help="the daemon's kernel cache for this code (its mlx folder)")
    parser.add_argument(
        "--compile-only",
        type=int,
        metavar="ROWS",
        help="trace the compiled forward once on a request of ROWS rows of zeros, at the initial weights",
    )
    args = parser.parse_args(argv)
    if args.compile_only is not None:
        return trace(args.run_dir, args.worktree, args.compile_only)
    missing = [n for n in ("model.safetensors", "model_config.json") if not (args.run_dir / n).exists()]
    if missing:
        print(f"error: {args.run_dir} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    # the protocol gets the real stdout; anything the candidate prints goes to the log (stderr)
    requests, responses = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    streams = cpu_streams()  # before MLX evaluates anything: it sizes the BLAS threads per stream
    model = load_model(args.run_dir, args.worktree)
    fast = compiled(model, args.kernels) if args.kernels else None
    how = "compiled, with the daemon's kernels" if fast else "uncompiled"
    print(f"model loaded; serving logits on {len(streams)} stream(s), forward {how}", file=sys.stderr, flush=True)
    try:
        serve(model, requests, responses, fast)
    except (EOFError, BrokenPipeError):
        pass
    if args.kernels:  # each one a g++ run of seconds: the compile phase traced another forward than this one ran
        print(f"kernels compiled here: {len(compiled_here(args.kernels))}", file=sys.stderr, flush=True)
    return 0


def trace(run_dir: Path, worktree: Path, rows: int) -> int:
    """The compile phase's second half: the forward a model process compiles, traced on a request's shape, so that
    MLX writes its kernel sources beside the training step's (the trainer wrote model_config.json for this). Exit 1:
    not traced, and the model processes will evaluate the forward uncompiled."""
    streams = cpu_streams()
    try:
        config = json.loads((run_dir / "model_config.json").read_text())
        model = load_build_model(worktree)(config)
        model.eval()
        forward(compiled_forward(model), np.zeros((rows, config["seq_len"]), dtype=np.int32), streams)
    except Exception as e:  # noqa: BLE001 (candidate code: whatever it raises)
        print(f"the forward pass was not traced ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    print(f"traced the compiled forward on {rows} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from inside import blas

    blas.reexec_with_openblas()
    sys.exit(main())
