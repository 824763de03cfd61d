"""Data preparation: tokenizer and token cache. The data program edits this file.

    python -m trainer.prepare --corpus DIR --out DIR        (the daemon runs it in a sandbox)
    uv run arx-daemon prepare --dataset stdlib              (by hand: prints the prepared folder)

Input: the training material of a dataset, which the daemon's trusted side has downloaded and
stripped of every held-out document (`ARX_CORPUS_DIR`: docs-*.jsonl, one {key, kind, text} per
line). Output, in `ARX_PREPARED_DIR`: tokenizer.json (BPE ranks + BOS), train.bin (uint16/32
tokens, each document preceded by BOS), train_offsets.npy and meta.json. The daemon gives each
version of this file and data_sources.py a folder of its own, so a data campaign's edits never
disturb the data a model campaign trains on, and unchanged code reuses what is there.

This code runs in the prepare phase only: the trainer reads the folder through the trusted loader
(inside/loader.py), which checks it and takes from meta.json only the values it names (KNOBS).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from inside.device import backend

from . import data_sources as ds

# ---------------------------------------------------------------------------------------------
# Data knobs (the data program tunes these)
# ---------------------------------------------------------------------------------------------
VOCAB_SIZE_GPU = 8192  # BPE vocabulary (without BOS) on Metal/CUDA
VOCAB_SIZE_CPU = 2048  # smaller on CPU, where the softmax over the vocabulary dominates
TOKENIZER_TRAIN_CHARS = 50_000_000  # at most this much training text teaches the tokenizer

BOS = "<|bos|>"


def vocab_size() -> int:
    return VOCAB_SIZE_CPU if backend() == "cpu" else VOCAB_SIZE_GPU


def load_tokenizer(path: Path):
    """tiktoken Encoding from a tokenizer.json (BPE ranks + BOS as the one special token)."""
    import tiktoken

    spec = json.loads(Path(path).read_text())
    ranks = {base64.b64decode(token): rank for rank, token in enumerate(spec["ranks"])}
    return tiktoken.Encoding(
        name="arx-bpe", pat_str=spec["pattern"], mergeable_ranks=ranks, special_tokens={spec["bos"]: spec["bos_id"]}
    )


# ---------------------------------------------------------------------------------------------
# Tokenizer: BPE trained here (rustbpe), saved as ranks that tiktoken loads (inside/evaluate.py)
# ---------------------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], size: int) -> dict:
    import rustbpe

    def limited():
        used = 0
        for t in texts:
            if used >= TOKENIZER_TRAIN_CHARS:
                return
            used += len(t)
            yield t

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(limited(), size)
    ranks = sorted(tok.get_mergeable_ranks(), key=lambda r: r[1])
    return {
        "pattern": tok.get_pattern(),
        "ranks": [base64.b64encode(b).decode() for b, _ in ranks],
        "bos": BOS,
        "bos_id": len(ranks),
        "vocab_size": len(ranks) + 1,
    }


# ---------------------------------------------------------------------------------------------
# The whole preparation
# ---------------------------------------------------------------------------------------------
def read_corpus(corpus: Path) -> list[tuple[str, str, str]]:
    """(key, kind, text) of the first NUM_SHARDS shards of the training material."""
    shards = sorted(corpus.glob("docs-*.jsonl"))[: ds.NUM_SHARDS]
    return [
        (d["key"], d["kind"], d["text"]) for shard in shards for d in map(json.loads, shard.read_text().splitlines())
    ]


def prepare(corpus: Path, out: Path, console=None) -> Path:
    """Tokenizer and token cache of the training material in `corpus`, written into `out`."""
    from rich.console import Console
    from rich.progress import Progress

    console = console or Console(stderr=True)
    started = time.time()
    with console.status(f"reading {corpus}"):
        docs = read_corpus(corpus)
    train_docs = ds.training_documents([(kind, text) for _, kind, text in docs])
    if not train_docs:
        raise SystemExit(f"error: {corpus} yielded no training documents")
    out.mkdir(parents=True, exist_ok=True)
    with console.status(f"training a {vocab_size()}-token BPE on {len(train_docs):,} documents"):
        spec = train_tokenizer(train_docs, vocab_size())
        (out / "tokenizer.json").write_text(json.dumps(spec))
        enc = load_tokenizer(out / "tokenizer.json")

    dtype = np.uint16 if spec["vocab_size"] <= 1 << 16 else np.uint32
    lengths = []
    with open(out / "train.bin", "wb") as f, Progress(console=console) as bar:
        task = bar.add_task("tokenizing", total=len(train_docs))
        for i in range(0, len(train_docs), 1024):
            batch = enc.encode_ordinary_batch(train_docs[i : i + 1024], num_threads=os.cpu_count() or 1)
            for ids in batch:
                np.array([spec["bos_id"], *ids], dtype=dtype).tofile(f)
                lengths.append(len(ids) + 1)
            bar.advance(task, len(batch))
    np.save(out / "train_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    meta = {
        "backend": backend(),
        "dtype": np.dtype(dtype).name,
        "vocab_size": spec["vocab_size"],
        "bos_id": spec["bos_id"],
        "train_docs": len(train_docs),
        "train_tokens": int(sum(lengths)),
        "pack_buffer_docs": ds.PACK_BUFFER_DOCS,  # the trusted loader's packing buffer (inside/loader.py)
        "seconds": round(time.time() - started, 2),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    console.print(f"prepared: {meta['train_tokens']:,} training tokens, vocab {meta['vocab_size']} -> {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.prepare", description="Tokenize and cache a dataset's training material."
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=os.environ.get("ARX_CORPUS_DIR"),
        help="training material (default $ARX_CORPUS_DIR)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=os.environ.get("ARX_PREPARED_DIR"),
        help="folder to write (default $ARX_PREPARED_DIR)",
    )
    args = parser.parse_args(argv)
    if args.corpus is None or args.out is None or not args.corpus.is_dir():
        print(
            "error: no training material; prepare data with: uv run arx-daemon prepare --dataset stdlib",
            file=sys.stderr,
        )
        return 2
    prepare(args.corpus, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
