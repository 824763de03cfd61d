"""Datasets and the dataloader. The data program edits this file (and prepare.py).

Every knob the data program may turn is an UPPER_CASE constant below. The evaluation split at the
bottom is pinned: the daemon hashes the val and test documents at campaign start, so a change
there makes every later run `invalid` rather than better.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Data knobs (the data program tunes these)
# ---------------------------------------------------------------------------------------------
DOC_MAX_CHARS = 2000  # training documents longer than this are split at line boundaries
MIN_DOC_CHARS = 64  # shorter training documents are dropped
DEDUP = True  # drop exact-duplicate training documents
MIX_WEIGHTS = {"code": 1.0, "docstrings": 1.0, "topics": 1.0, "text": 1.0}  # repeats per kind
NUM_SHARDS = {"climbmix": 2, "tinystories": 1}  # how many parquet shards to download and use
PACK_BUFFER_DOCS = 64  # candidate documents considered by best-fit packing
MIX_SEED = 1234  # seed of the fractional part of MIX_WEIGHTS

# ---------------------------------------------------------------------------------------------
# Registry. A dataset is either `stdlib` (built from the running interpreter) or parquet shards
# downloaded over HTTP; ARX_DATA_BASE_URL overrides every base URL (tests serve shards locally).
# ---------------------------------------------------------------------------------------------
DATASETS: dict[str, dict] = {
    "stdlib": {
        "kind": "stdlib",
        "about": "Python's own standard-library sources, docstrings and pydoc topics (offline)",
    },
    "climbmix": {
        "kind": "parquet",
        "about": "ClimbMix 400B web text, shuffled parquet shards",
        "base_url": "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main",
        "shard": "shard_{index:05d}.parquet",
        "text_column": "text",
    },
    "tinystories": {
        "kind": "parquet",
        "about": "TinyStories short stories, parquet shards",
        "base_url": "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/refs%2Fconvert%2Fparquet/default/train",
        "shard": "{index:04d}.parquet",
        "text_column": "text",
    },
}

STDLIB_SKIP = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


class UnknownDataset(ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")


def dataset_info(name: str) -> dict:
    if name not in DATASETS:
        raise UnknownDataset(name)
    return DATASETS[name]


def shard_names(name: str) -> list[str]:
    info = dataset_info(name)
    return [info["shard"].format(index=i) for i in range(NUM_SHARDS.get(name, 1))]


# ---------------------------------------------------------------------------------------------
# Documents: (split_key, kind, text). Documents that share a split_key always share a split.
# ---------------------------------------------------------------------------------------------
def stdlib_documents() -> Iterator[tuple[str, str, str]]:
    """The interpreter's own library: real prose and code that needs no download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if STDLIB_SKIP.intersection(rel.parts):
            continue
        key = f"stdlib/{rel.as_posix()}"
        source = path.read_text(encoding="utf-8", errors="replace")
        yield key, "code", source
        docstrings = module_docstrings(source)
        if docstrings:
            yield key, "docstrings", docstrings
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"topics/{name}", "topics", topics[name]


def module_docstrings(source: str) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return "\n\n".join(d for d in (ast.get_docstring(n) for n in nodes) if d)


def parquet_documents(name: str, raw_dir: Path) -> Iterator[tuple[str, str, str]]:
    import pyarrow.parquet as pq

    column = dataset_info(name)["text_column"]
    for shard in shard_names(name):
        table = pq.read_table(raw_dir / shard, columns=[column])
        for row, text in enumerate(table.column(column).to_pylist()):
            if text:
                yield f"{shard}/{row}", "text", text


def documents(name: str, raw_dir: Path) -> Iterator[tuple[str, str, str]]:
    if dataset_info(name)["kind"] == "stdlib":
        return stdlib_documents()
    return parquet_documents(name, raw_dir)


# ---------------------------------------------------------------------------------------------
# Training documents: chunking, filters, dedup, mixing
# ---------------------------------------------------------------------------------------------
def chunk(text: str, max_chars: int = DOC_MAX_CHARS) -> list[str]:
    """Split at blank lines (else newlines) so each piece starts somewhere a reader would."""
    if len(text) <= max_chars:
        return [text]
    pieces, start = [], 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            cut = text.rfind("\n\n", start + max_chars // 4, end)
            if cut < 0:
                cut = text.rfind("\n", start + max_chars // 4, end)
            end = cut + 1 if cut >= 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def fingerprint(text: str) -> bytes:
    return hashlib.sha1(text.encode()).digest()


def training_documents(docs: list[tuple[str, str]], evaluation_texts: list[str]) -> list[str]:
    """(kind, text) pairs of the train split -> the list of documents the model trains on.

    A training piece identical to a piece of an evaluation document is dropped: boilerplate shared
    across files (the stdlib's codec tables, licence headers) would otherwise leak into val/test.
    """
    rng = np.random.default_rng(MIX_SEED)
    banned = {fingerprint(piece) for text in evaluation_texts for piece in chunk(text)}
    seen: set[bytes] = set()
    out: list[str] = []
    for kind, text in docs:
        weight = MIX_WEIGHTS.get(kind, 1.0)
        repeats = int(weight) + (1 if rng.random() < weight - int(weight) else 0)
        for piece in chunk(text):
            digest = fingerprint(piece)
            if len(piece) < MIN_DOC_CHARS or digest in banned or (DEDUP and digest in seen):
                continue
            seen.add(digest)
            out.extend([piece] * repeats)
    return out


# ---------------------------------------------------------------------------------------------
# Dataloader: rows start at a document (BOS), best-fit packing, shuffled with a seed.
# ---------------------------------------------------------------------------------------------
def batches(tokens: np.ndarray, offsets: np.ndarray, batch_size: int, seq_len: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (inputs, targets) int32 arrays of shape [batch_size, seq_len], forever.

    `tokens` holds the training documents back to back, each starting with BOS; document i is
    tokens[offsets[i]:offsets[i+1]]. Each row is filled with the longest buffered document that
    still fits; when none fits, the next one is cropped to fill the row, so no row ever starts
    mid-document and no padding is needed.
    """
    rng = np.random.default_rng(seed)
    lengths = np.diff(offsets)
    row_len = seq_len + 1

    def order() -> Iterator[int]:
        while True:
            yield from rng.permutation(len(lengths)).tolist()

    stream = order()
    buffer = np.array([next(stream) for _ in range(min(PACK_BUFFER_DOCS, len(lengths)))])
    while True:
        rows = np.empty((batch_size, row_len), dtype=np.int32)
        for r in range(batch_size):
            pos = 0
            while pos < row_len:
                space = row_len - pos
                sizes = lengths[buffer]
                fitting = np.flatnonzero(sizes <= space)
                j = fitting[np.argmax(sizes[fitting])] if len(fitting) else int(np.argmin(sizes))
                take = min(int(sizes[j]), space)
                start = offsets[buffer[j]]
                rows[r, pos : pos + take] = tokens[start : start + take]
                pos += take
                buffer[j] = next(stream)
        yield rows[:, :-1], rows[:, 1:]


# ---------------------------------------------------------------------------------------------
# Evaluation split (pinned; see the module docstring). Whole source files or rows chosen by a
# stable hash of their key, filled to EVAL_BYTES each, never larger than EVAL_MAX_DOC_BYTES.
# ---------------------------------------------------------------------------------------------
EVAL_BYTES = 96_000
EVAL_MAX_DOC_BYTES = 24_000
EVAL_KINDS = {"code", "topics", "text"}
EVAL_SKIP_PREFIXES = ("stdlib/encodings/",)  # generated codec tables: near-free to predict, they would flatter val_bpb


def split_keys(candidates: dict[str, int]) -> dict[str, str]:
    """{split_key: bytes} -> {split_key: 'val' | 'test'} for the keys that leave training."""
    ranked = sorted(candidates, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    chosen: dict[str, str] = {}
    filled = {"val": 0, "test": 0}
    for key in ranked:
        if candidates[key] > EVAL_MAX_DOC_BYTES or key.startswith(EVAL_SKIP_PREFIXES):
            continue
        split = "val" if filled["val"] < EVAL_BYTES else "test" if filled["test"] < EVAL_BYTES else None
        if split is None:
            break
        chosen[key] = split
        filled[split] += candidates[key]
    return chosen
