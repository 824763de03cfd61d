"""Held-out text must not reach training: a check of a prepared folder's token stream (trusted side).

After a sandboxed prepare, every 32-token shingle of the val and test documents (tokenized with
the candidate's own tokenizer) is looked up among the shingles of the training stream. Honest
data code shares almost none (common idioms are shorter than 32 tokens); copying held-out text
into training, whole or in pieces, shares many. The stream is read through the trusted loader
(inside/loader.py) with its checks, so what is checked is exactly what the trainer will read.

The candidate's own files are checked too (`check_sources`, before anything runs): held-out text
written into the code from an LLM's memory and trained on from there never reaches train.bin. The
raw bytes and the value of every string literal are checked; text encoded first (compressed, base64,
built at run time) passes: docs/architecture.md says so.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .shingles import SCRUB_BYTES, SHINGLE_TOKENS, found_in, shingles

if TYPE_CHECKING:
    from .corpus import Corpus

MAX_SHARED_FRACTION = 0.01  # of the held-out shingles; an honest stdlib preparation shares about 0.1%
MAX_SOURCE_BYTES = 8 << 20  # an editable file larger than this is refused unread


def shared_fraction(train_tokens: np.ndarray, heldout_ids: list[list[int]]) -> float:
    held = np.unique(np.concatenate([shingles(np.array(ids)) for ids in heldout_ids] or [np.zeros(0, np.uint64)]))
    if not len(held):
        return 0.0
    train = shingles(train_tokens)
    return float(len(np.unique(train[found_in(train, held)])) / len(held))


def check_prepared(folder: Path, corpus: Corpus) -> str | None:
    """None when the prepared folder is clean, else why the run is invalid."""
    from inside.loader import PREPARED_FILES, BadPrepared, open_prepared

    from .scorer import Invalid, encode_checked, load_tokenizer

    extra = sorted(p.name for p in folder.iterdir() if p.name not in PREPARED_FILES)
    if extra:  # a trainer reads whatever is here: only what this check reads may be here
        return f"the prepared folder holds {', '.join(extra)}; only {', '.join(sorted(PREPARED_FILES))} may be there"
    try:
        prepared = open_prepared(folder, every_token=True)
        enc = load_tokenizer(folder / "tokenizer.json")
        ids = [doc for split in ("val", "test") for doc in encode_checked(enc, corpus.heldout(split))]
    except (Invalid, BadPrepared) as e:
        return str(e)
    (bos_text,) = enc.special_tokens_set
    if (prepared.vocab_size, prepared.bos_id) != (enc.n_vocab, enc.encode_single_token(bos_text)):
        return "meta.json's vocab_size and bos_id are not the tokenizer's"
    fraction = shared_fraction(prepared.tokens, ids)
    if fraction > MAX_SHARED_FRACTION:
        return (
            f"the training data shares {fraction:.1%} of the held-out {SHINGLE_TOKENS}-token shingles (limit "
            f"{MAX_SHARED_FRACTION:.0%}): held-out text leaked into training"
        )
    return None


@functools.cache
def heldout_byte_shingles(corpus: Corpus) -> np.ndarray:
    texts = [t for split in ("val", "test") for t in corpus.heldout(split)]
    return np.unique(np.concatenate([shingles(np.frombuffer(t.encode(), np.uint8), SCRUB_BYTES) for t in texts]))


def string_constants(source: bytes) -> bytes:
    """The str and bytes literals of Python source, each as the value it denotes (escapes undone, adjacent literals
    joined), one per line; nothing when it does not parse. Parsing runs none of it."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return b""
    values = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes))]
    return b"\n".join(v if isinstance(v, bytes) else v.encode(errors="replace") for v in values)


def check_sources(files: list[Path], corpus: Corpus) -> str | None:
    """None when the candidate's files share no more than MAX_SHARED_FRACTION of the held-out SCRUB_BYTES-byte runs,
    else why the run is invalid. Files are read capped: a sparse multi-gigabyte train.py costs nothing."""
    from .. import capped

    held = heldout_byte_shingles(corpus)
    found = []
    for path in files:
        try:
            data = capped.read_capped(path, MAX_SOURCE_BYTES)
        except capped.Refused as e:
            if not path.exists():
                continue
            return f"{path.name}: {e}"
        for text in (data, string_constants(data)):
            found.append(np.unique(shingles(np.frombuffer(text, np.uint8), SCRUB_BYTES)))
    if not len(held) or not found:
        return None
    fraction = float(found_in(held, np.unique(np.concatenate(found))).mean())
    if fraction > MAX_SHARED_FRACTION:
        return (
            f"the candidate's own files hold {fraction:.1%} of the held-out text ({SCRUB_BYTES}-byte runs, limit "
            f"{MAX_SHARED_FRACTION:.0%}): held-out text leaked into the code"
        )
    return None
