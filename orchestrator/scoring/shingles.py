"""Shingles: 64-bit hashes of every window of n symbols, the arithmetic of the leak check and of the corpus's scrub.

Below both the corpus (which cuts held-out text out of the training material with `scrub`) and the leak check (which
looks held-out shingles up in a prepared folder's tokens and in the candidate's files), so neither imports the other.
"""

from __future__ import annotations

import numpy as np

SHINGLE_TOKENS = 32  # the leak check's windows of the candidate's tokens
SCRUB_BYTES = 48  # the trusted corpus cuts every 48-byte run shared with a held-out document out of training
HASH_BASE = np.uint64(0x9E3779B97F4A7C15)


def shingles(tokens: np.ndarray, n: int = SHINGLE_TOKENS) -> np.ndarray:
    """A 64-bit polynomial hash of every window of n tokens (wrapping arithmetic)."""
    count = len(tokens) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    t = np.asarray(tokens).astype(np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * HASH_BASE + t[j : j + count] + np.uint64(1)
    return h


def found_in(needles: np.ndarray, haystack: np.ndarray) -> np.ndarray:
    """needles[i] in haystack, for a small haystack (binary search beats np.isin on 4M elements)."""
    if not len(haystack):
        return np.zeros(len(needles), dtype=bool)
    at = np.minimum(np.searchsorted(haystack, needles), len(haystack) - 1)
    return haystack[at] == needles


def scrub(texts: list[str], heldout: list[str]) -> list[list[str]]:
    """Each text split into the pieces that remain after cutting out every run of SCRUB_BYTES
    bytes that also occurs in a held-out document (licence headers, copied functions, pydoc
    topics repeated in docstrings)."""
    n = SCRUB_BYTES
    held = np.unique(np.concatenate([shingles(np.frombuffer(t.encode(), np.uint8), n) for t in heldout]))
    blob = "\x00".join(texts).encode()
    starts = np.flatnonzero(found_in(shingles(np.frombuffer(blob, np.uint8), n), held))
    cover = np.zeros(len(blob) + 1, dtype=np.int32)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + n, -1)
    covered = np.cumsum(cover[:-1]) > 0
    out, pos = [], 0
    for text in texts:
        size = len(text.encode())
        mask = covered[pos : pos + size]
        if not mask.any():
            out.append([text])
        else:
            raw = blob[pos : pos + size]
            edges = np.flatnonzero(np.diff(np.concatenate([[1], mask.astype(np.int8), [1]])))
            out.append([raw[a:b].decode(errors="ignore") for a, b in zip(edges[::2], edges[1::2])])
        pos += size + 1
    return out
