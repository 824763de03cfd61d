"""Training documents and the dataloader. The data program edits this file (and prepare.py).

Every knob the data program may turn is an UPPER_CASE constant below. Which datasets exist, their
downloads and their held-out (val/test) split are the daemon's (orchestrator/corpus.py): this
side only ever sees the training material, never a held-out document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

# ---------------------------------------------------------------------------------------------
# Data knobs (the data program tunes these)
# ---------------------------------------------------------------------------------------------
DOC_MAX_CHARS = 2000  # training documents longer than this are split at line boundaries
MIN_DOC_CHARS = 64  # shorter training documents are dropped
DEDUP = True  # drop exact-duplicate training documents
MIX_WEIGHTS = {"code": 1.0, "docstrings": 1.0, "topics": 1.0, "text": 1.0}  # repeats per kind
NUM_SHARDS = 2  # how many shards of the training material to use (stdlib has one)
PACK_BUFFER_DOCS = 64  # candidate documents considered by best-fit packing
MIX_SEED = 1234  # seed of the fractional part of MIX_WEIGHTS


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


def training_documents(docs: list[tuple[str, str]]) -> list[str]:
    """(kind, text) pairs of the training material -> the list of documents the model trains on."""
    rng = np.random.default_rng(MIX_SEED)
    seen: set[bytes] = set()
    out: list[str] = []
    for kind, text in docs:
        weight = MIX_WEIGHTS.get(kind, 1.0)
        repeats = int(weight) + (1 if rng.random() < weight - int(weight) else 0)
        for piece in chunk(text):
            digest = fingerprint(piece)
            if len(piece) < MIN_DOC_CHARS or (DEDUP and digest in seen):
                continue
            seen.add(digest)
            out.extend([piece] * repeats)
    return out


# ---------------------------------------------------------------------------------------------
# Dataloader: rows start at a document (BOS), best-fit packing, shuffled with a seed.
# ---------------------------------------------------------------------------------------------
def batches(
    tokens: np.ndarray, offsets: np.ndarray, batch_size: int, seq_len: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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
