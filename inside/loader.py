"""The trusted data loader: a prepared folder in, training batches out. LOCKED.

    prepared = loader.open_prepared(folder)                   # checked: sizes first, then meta, offsets, tokens
    batches = loader.batches(prepared, DEVICE_BATCH, SEQ_LEN, seed)

The data program's code runs in `prepare` only. What it leaves for training is a prepared folder of four files:
tokenizer.json, train.bin (uint16 or uint32 tokens), train_offsets.npy (document i is tokens[offsets[i]:
offsets[i+1]], each starting with BOS) and meta.json. Its only say over how the trainer reads them is the values in
meta.json that KNOBS names, each checked against its range. The daemon's leak check reads train.bin through
`open_prepared` too (with `every_token=True`), so what it checks is exactly what the trainer trains on: train.bin
holds the documents the offsets describe and nothing after them, and its size is checked before a byte is read
(a sparse file costs its writer nothing and a reader gigabytes).

The order of the documents is fixed by the seed and the prepared data alone (common random numbers): for one seed,
trainers that differ in their batch size or tokens per step read the same rows in the same order.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREPARED_FILES = ("tokenizer.json", "train.bin", "train_offsets.npy", "meta.json")  # all a prepared folder may hold
MAX_META_BYTES = 64 << 10
MAX_VOCAB = 1 << 20
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
KNOBS = {"pack_buffer_docs": (64, 1, 4096)}  # meta.json values the data program sets: default, lowest, highest
NPY_HEADER_BYTES = 4096  # what an .npy file may hold besides its numbers


class BadPrepared(ValueError):
    """The prepared folder is not one the trainer may read; the message says which file and why (sizes, types)."""


@dataclass(frozen=True)
class Prepared:
    tokens: np.ndarray  # memory-mapped train.bin
    offsets: np.ndarray  # int64, train_docs + 1
    meta: dict
    vocab_size: int
    bos_id: int
    pack_buffer_docs: int


def open_regular(path: Path, cap: int | None = None):
    """A regular file opened for reading (no link followed) and its size, refused when it holds more than `cap`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadPrepared(f"{path.name} cannot be opened ({e.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BadPrepared(f"{path.name} is not a regular file")
    if cap is not None and info.st_size > cap:
        os.close(fd)
        raise BadPrepared(f"{path.name} holds {info.st_size:,} bytes, over the limit of {cap:,}")
    return os.fdopen(fd, "rb"), info.st_size


def integer(meta: dict, key: str, low: int, high: int) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadPrepared(f"meta.json: {key} is not an integer in [{low}, {high}]")
    return value


def read_meta(folder: Path) -> dict:
    f, _ = open_regular(folder / "meta.json", MAX_META_BYTES)
    with f:
        try:
            meta = json.loads(f.read(MAX_META_BYTES + 1))
        except (ValueError, RecursionError):
            raise BadPrepared("meta.json is not valid JSON") from None
    if not isinstance(meta, dict):
        raise BadPrepared("meta.json is not a JSON object")
    return meta


def open_prepared(folder: Path, every_token: bool = False) -> Prepared:
    """The prepared folder, checked: meta.json's values, train.bin's size against meta.json before anything is read,
    the offsets (from 0 to the last token, strictly increasing), each document starting with BOS; with
    `every_token` (the daemon's check) also that every token is below the vocabulary size."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("dtype") not in DTYPES:
        raise BadPrepared(f"meta.json: dtype is not one of {', '.join(DTYPES)}")
    dtype = np.dtype(DTYPES[meta["dtype"]])
    vocab_size = integer(meta, "vocab_size", 257, min(MAX_VOCAB, np.iinfo(dtype).max + 1))
    bos_id = integer(meta, "bos_id", 0, vocab_size - 1)
    n_docs = integer(meta, "train_docs", 1, 1 << 40)
    n_tokens = integer(meta, "train_tokens", n_docs, 1 << 40)
    knobs = {
        key: integer(meta, key, low, high) if key in meta else default for key, (default, low, high) in KNOBS.items()
    }

    f, size = open_regular(folder / "train.bin")
    f.close()
    if size != n_tokens * dtype.itemsize:
        raise BadPrepared(
            f"train.bin holds {size:,} bytes; meta.json's {n_tokens:,} {meta['dtype']} tokens are "
            f"{n_tokens * dtype.itemsize:,}"
        )
    f, _ = open_regular(folder / "train_offsets.npy", (n_docs + 1) * 8 + NPY_HEADER_BYTES)
    with f:
        try:
            offsets = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise BadPrepared("train_offsets.npy is not an array of integers") from None
    if offsets.shape != (n_docs + 1,) or offsets.dtype.kind not in "iu":
        raise BadPrepared(f"train_offsets.npy is not {n_docs + 1:,} integers (meta.json's train_docs + 1)")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != n_tokens or (np.diff(offsets) < 1).any():
        raise BadPrepared("train_offsets.npy does not run from 0 to the last token of train.bin, strictly increasing")
    tokens = np.memmap(folder / "train.bin", dtype=dtype, mode="r")
    if (tokens[offsets[:-1]] != bos_id).any():
        raise BadPrepared("train.bin: a document does not start with BOS")
    if every_token and int(tokens.max()) >= vocab_size:
        raise BadPrepared(f"train.bin: a token is not below meta.json's vocab_size {vocab_size}")
    return Prepared(tokens, offsets, meta, vocab_size, bos_id, knobs["pack_buffer_docs"])


def placeholder(folder: Path, seq_len: int) -> Prepared:
    """What the compile phase trains on (orchestrator/measure/kernels.py): no training data, one document of zeros long
    enough for a row, and the vocabulary size of the meta.json the daemon wrote."""
    meta = read_meta(Path(folder))
    vocab_size = integer(meta, "vocab_size", 1, MAX_VOCAB)
    tokens, offsets = np.zeros(seq_len + 1, np.int32), np.array([0, seq_len + 1])
    return Prepared(tokens, offsets, meta, vocab_size, 0, KNOBS["pack_buffer_docs"][0])


def batches(prepared: Prepared, batch_size: int, seq_len: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (inputs, targets) int32 arrays of shape [batch_size, seq_len], forever.

    Rows start at a document (BOS): each is filled with the longest buffered document that still fits; when none
    fits, the next one is cropped to fill the row, so no row starts mid-document and none needs padding. The
    documents come in a seeded shuffle, epoch after epoch, and rows are made one after another whatever the batch
    size: the stream of rows depends on the seed, seq_len and the prepared folder only.
    """
    rng = np.random.default_rng(seed)
    tokens, offsets = prepared.tokens, prepared.offsets
    lengths = np.diff(offsets)
    row_len = seq_len + 1

    def order() -> Iterator[int]:
        while True:
            yield from rng.permutation(len(lengths)).tolist()

    stream = order()
    buffer = np.array([next(stream) for _ in range(min(prepared.pack_buffer_docs, len(lengths)))])
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
