"""Training documents. The data program edits this file (and prepare.py); both run in `prepare` only.

Every knob the data program may turn is an UPPER_CASE constant below. Which datasets exist, their
downloads and their held-out (val/test) split are the daemon's (orchestrator/scoring/corpus.py): this
side only ever sees the training material, never a held-out document.
"""

from __future__ import annotations

import hashlib

import numpy as np

# ---------------------------------------------------------------------------------------------
# Data knobs (the data program tunes these)
# ---------------------------------------------------------------------------------------------
DOC_MAX_CHARS = 2000  # training documents longer than this are split at line boundaries
MIN_DOC_CHARS = 64  # shorter training documents are dropped
DEDUP = True  # drop exact-duplicate training documents
MIX_WEIGHTS = {"code": 1.0, "docstrings": 1.0, "topics": 1.0, "text": 1.0}  # repeats per kind
NUM_SHARDS = 2  # how many shards of the training material to use (stdlib has one)
PACK_BUFFER_DOCS = 64  # documents best-fit packing chooses among (meta.json: the trusted loader reads it, 1-4096)
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
