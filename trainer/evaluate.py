"""Sealed evaluation. LOCKED: no research program may edit this file; the daemon refuses a diff
that touches it and always runs its own copy, never the worktree's.

    python -m trainer.evaluate --run-dir DIR --worktree PATH

Rebuilds the model with the worktree's `build_model`, loads the run's checkpoint and tokenizer,
checks causality, and writes DIR/eval.json with val_bpb and test_bpb:

    bpb = sum of next-token NLL (nats) over every non-BOS target / (ln 2 * UTF-8 bytes of the docs)

The bytes are those of the document text itself, never per-token byte tables (a token that is a
partial UTF-8 sequence has no byte length of its own). The sha256 of the val and test documents
goes into eval.json so the daemon can pin them for the whole campaign.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

EVAL_BATCH_ROWS = 16
CPU_STREAMS = 2  # on CPU, batches alternate between parallel streams (see trainer/blas.py)
CAUSALITY_TOLERANCE = 1e-4
CAUSALITY_CUTS = (0.0, 0.25, 0.5, 0.9)


def load_tokenizer(path: Path):
    """tiktoken Encoding from a tokenizer.json written by prepare (BPE ranks + BOS)."""
    import tiktoken

    spec = json.loads(Path(path).read_text())
    ranks = {base64.b64decode(token): rank for rank, token in enumerate(spec["ranks"])}
    return tiktoken.Encoding(name="arx-bpe", pat_str=spec["pattern"], mergeable_ranks=ranks, special_tokens={spec["bos"]: spec["bos_id"]})


def load_build_model(worktree: Path):
    """The worktree's `trainer.train.build_model`, imported under a private package name.

    A plain `import trainer.train` would find whichever `trainer` is first on sys.path (this
    checkout, or an installed copy); loading the worktree's folder as its own package makes sure
    the candidate's code, and only it, builds the model.
    """
    folder = Path(worktree).resolve() / "trainer"
    name = "arx_candidate_" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.train").build_model


def docs_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()


def read_docs(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]


def windows(stream: np.ndarray, seq_len: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token stream into [rows, seq_len] inputs and targets; targets past the end are -1."""
    n_targets = len(stream) - 1
    rows = max(1, math.ceil(n_targets / seq_len))
    padded = np.full(rows * seq_len + 1, pad, dtype=np.int64)
    padded[: len(stream)] = stream
    inputs = padded[:-1].reshape(rows, seq_len)
    targets = padded[1:].reshape(rows, seq_len).copy()
    targets.reshape(-1)[n_targets:] = -1
    return inputs, targets


def bits_per_byte(model, enc, texts: list[str], seq_len: int) -> dict:
    """Exact bits per byte of `texts` under `model`; each document is preceded by BOS."""
    import mlx.core as mx

    (bos_text,) = enc.special_tokens_set  # BOS is the only special token
    bos = enc.encode_single_token(bos_text)
    ids = enc.encode_ordinary_batch(texts)
    stream = np.fromiter((t for doc in ids for t in (bos, *doc)), dtype=np.int64)
    inputs, targets = windows(stream, seq_len, bos)
    device = mx.default_device()
    streams = [mx.new_stream(device) for _ in range(CPU_STREAMS if device == mx.cpu else 1)]
    nll, counted, pending = 0.0, 0, []
    for n, i in enumerate(range(0, len(inputs), EVAL_BATCH_ROWS)):
        y = targets[i : i + EVAL_BATCH_ROWS]
        with mx.stream(streams[n % len(streams)]):
            logits = model(mx.array(inputs[i : i + EVAL_BATCH_ROWS])).astype(mx.float32)
            picked = mx.take_along_axis(logits, mx.array(np.where(y >= 0, y, 0))[..., None], axis=-1)[..., 0]
            pending.append((mx.logsumexp(logits, axis=-1) - picked, y))
        if len(pending) == len(streams) or i + EVAL_BATCH_ROWS >= len(inputs):
            mx.eval([losses for losses, _ in pending])
            for losses, y in pending:
                keep = (y >= 0) & (y != bos)
                nll += float(np.asarray(losses, dtype=np.float64)[keep].sum())
                counted += int(keep.sum())
            pending = []
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"bpb": nll / (math.log(2) * n_bytes), "tokens": counted, "bytes": n_bytes}


def causality_violation(model, vocab_size: int, seq_len: int, seed: int = 0) -> float:
    """Largest change of any logit at or before position t when only tokens after t change."""
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab_size, size=(1, seq_len))
    base = np.array(model(mx.array(x)).astype(mx.float32))
    worst = 0.0
    for cut in CAUSALITY_CUTS:
        t = min(int(cut * seq_len), seq_len - 2)
        y = x.copy()
        y[:, t + 1 :] = rng.integers(0, vocab_size, size=(1, seq_len - t - 1))
        out = np.array(model(mx.array(y)).astype(mx.float32))
        worst = max(worst, float(np.abs(out[:, : t + 1] - base[:, : t + 1]).max()))
    return worst


def evaluate(run_dir: Path, worktree: Path) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    from . import blas

    started = time.time()
    if mx.default_device() == mx.cpu:
        blas.use_streams(CPU_STREAMS)
    train_info = json.loads((run_dir / "train.json").read_text())
    config = json.loads((run_dir / "model_config.json").read_text())
    enc = load_tokenizer(run_dir / "tokenizer.json")
    model = load_build_model(worktree)(config)
    model.update(tree_unflatten(list(mx.load(str(run_dir / "model.safetensors")).items())))
    model.eval()
    mx.eval(model.parameters())

    data_dir = Path(train_info["data_dir"])
    seq_len = int(config["seq_len"])
    violation = causality_violation(model, int(config["vocab_size"]), seq_len)
    result: dict = {"causality_max_diff": violation, "causal": violation <= CAUSALITY_TOLERANCE}
    for split in ("val", "test"):
        texts = read_docs(data_dir / f"{split}.jsonl")
        result[f"{split}_sha256"] = docs_sha256(texts)
        if result["causal"]:
            scored = bits_per_byte(model, enc, texts, seq_len)
            result |= {f"{split}_bpb": scored["bpb"], f"{split}_tokens": scored["tokens"], f"{split}_bytes": scored["bytes"]}
    result["status"] = "ok" if result["causal"] else "invalid"
    if not result["causal"]:
        result["error"] = f"causality probe failed: a logit moved by {violation:.3g} when only later tokens changed"
    result["eval_seconds"] = round(time.time() - started, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description="Sealed evaluation of a training run.")
    parser.add_argument("--run-dir", required=True, type=Path, help="folder with train.json, model.safetensors, model_config.json, tokenizer.json")
    parser.add_argument("--worktree", required=True, type=Path, help="checkout whose trainer/train.py defines build_model")
    args = parser.parse_args(argv)
    missing = [n for n in ("train.json", "model.safetensors", "model_config.json", "tokenizer.json") if not (args.run_dir / n).exists()]
    if missing:
        print(f"error: {args.run_dir} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    result = evaluate(args.run_dir, args.worktree)
    (args.run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from trainer import blas

    blas.reexec_with_openblas()
    sys.exit(main())
