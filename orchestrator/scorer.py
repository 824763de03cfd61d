"""The trusted half of evaluation: held-out documents in, val_bpb and test_bpb out.

It never runs candidate code. It owns the held-out documents, the tokenizer used for scoring, the
rows the model sees, the log-softmax and NLL arithmetic, the causality check and the result. A
`ModelProcess` (a sandboxed `trainer/evaluate.py`) only turns rows into logits:

    bpb = sum of next-token NLL (nats) over every non-BOS target / (ln 2 * UTF-8 bytes of the docs)

Each document is preceded by BOS; the bytes are those of the documents themselves, never
per-token byte tables.

Causality is checked on the real rows. The rows of val and test are shuffled and dealt to two
model processes that run one after the other and cannot talk to each other (a fresh sandbox
each, nothing writable that outlives it). Each process also gets probe rows: a real row that the
OTHER process scores, with everything after a secret random cut replaced by another real row's
tokens. The logits at and before the cut must match what the other process returned for the
original row. A model that peeks at later tokens cannot tell a probe from a scored row (same
shapes, natural text, interleaved, never seen beside its original), so it is caught at once.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .corpus import Corpus, docs_sha256, file_sha256

BATCH_ROWS = 16  # every request has exactly this many rows (probe batches look like scoring batches)
PROBES_PER_PROCESS = 8  # at least this many probe rows per model process ...
PROBE_FRACTION = 0.25  # ... or this fraction of the rows it scores, each at its own cut
DONOR_TRIES = 16  # rows tried for a probe's continuation whose first token differs from the original's
CAUSALITY_TOLERANCE = 1e-3  # largest allowed change of a logit at or before the cut (soft-capped logits)
MIN_SEQ_LEN, MAX_SEQ_LEN = 8, 1 << 16


class ModelProcess(Protocol):
    """Turns [rows, seq_len] int32 token batches into [rows, seq_len, vocab] float32 logits."""

    def logits(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


class Invalid(Exception):
    """The run cannot be scored honestly; the message says why."""


@dataclass(frozen=True)
class Scores:
    val_bpb: float
    test_bpb: float
    val_sha256: str
    test_sha256: str
    tokenizer_sha256: str
    detail: dict = field(default_factory=dict)  # tokens, bytes, probes, largest causal diff, seconds


# ---------------------------------------------------------------------------------------------
# Tokenizer: read as data (base64 ranks, a split pattern, BOS) and checked before it scores anything
# ---------------------------------------------------------------------------------------------
def load_tokenizer(path: Path):
    import tiktoken

    spec = json.loads(Path(path).read_text())
    ranks = {base64.b64decode(token): rank for rank, token in enumerate(spec["ranks"])}
    if len(ranks) != len(spec["ranks"]) or sorted(ranks.values()) != list(range(len(ranks))):
        raise Invalid("tokenizer.json: the BPE ranks are not distinct")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise Invalid(
            f"tokenizer.json: {len(missing)} single bytes (first {missing[0]:#04x}) have no rank: "
            "text holding them cannot be encoded"
        )
    if not isinstance(spec.get("bos_id"), int) or spec["bos_id"] < len(ranks):
        raise Invalid(
            f"tokenizer.json: BOS id {spec.get('bos_id')} is not a special id outside the {len(ranks)} BPE ranks"
        )
    try:
        return tiktoken.Encoding(
            name="arx-scoring",
            pat_str=spec["pattern"],
            mergeable_ranks=ranks,
            special_tokens={spec["bos"]: spec["bos_id"]},
        )
    except ValueError as e:
        raise Invalid(f"tokenizer.json: the split pattern does not compile ({e})") from None


def encode_checked(enc, texts: list[str]) -> list[list[int]]:
    """Token ids of each document; every document must come back exactly from its tokens.

    The tokenizer is the candidate's data: whatever tiktoken raises on it, including a Rust panic (a BaseException
    that would end the daemon's loop), means the run cannot be scored."""
    try:
        ids = enc.encode_ordinary_batch(texts)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 (pyo3's PanicException derives from BaseException)
        raise Invalid(f"the tokenizer fails on the held-out documents ({type(e).__name__}: {e})") from None
    for i, (text, tokens) in enumerate(zip(texts, ids)):
        if enc.decode(tokens) != text:
            raise Invalid(
                f"the tokenizer does not round-trip held-out document {i}: it would score text it drops or changes"
            )
    return ids


# ---------------------------------------------------------------------------------------------
# Rows and the arithmetic
# ---------------------------------------------------------------------------------------------
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


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] in float64, for every position (targets < 0 give 0)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(x).sum(axis=-1))
    picked = np.take_along_axis(x, np.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return np.where(targets >= 0, log_z - picked, 0.0)


def check_logits(logits: np.ndarray, rows: int, seq_len: int, n_vocab: int) -> None:
    if logits.ndim != 3 or logits.shape[:2] != (rows, seq_len) or logits.shape[2] < n_vocab:
        raise Invalid(f"the model returned logits of shape {logits.shape}, expected ({rows}, {seq_len}, >= {n_vocab})")
    if not np.isfinite(logits).all():
        raise Invalid("the model returned non-finite logits")


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    tokens: np.ndarray  # [seq_len] int
    targets: np.ndarray | None = None  # scored rows only
    split: str | None = None
    probe_of: int | None = None  # probe rows: index of the original row
    cut: int = -1


def evaluate(
    run_dir: Path,
    prepared_dir: Path,
    corpus: Corpus,
    launch: Callable[[], ModelProcess],
    rng: np.random.Generator | None = None,
) -> Scores:
    """Score the run's checkpoint on val and test; raises `Invalid` for anything that cannot be trusted."""
    started = time.time()
    rng = rng or np.random.default_rng()  # the probes are secret: fresh entropy every evaluation
    config = json.loads((run_dir / "model_config.json").read_text())
    seq_len = config.get("seq_len")
    if not isinstance(seq_len, int) or not MIN_SEQ_LEN <= seq_len <= MAX_SEQ_LEN:
        raise Invalid(f"model_config.json: seq_len {seq_len!r} is not an int in [{MIN_SEQ_LEN}, {MAX_SEQ_LEN}]")
    tokenizer_file = prepared_dir / "tokenizer.json"
    enc = load_tokenizer(tokenizer_file)
    (bos_text,) = enc.special_tokens_set
    bos = enc.encode_single_token(bos_text)
    texts = {split: corpus.heldout(split) for split in ("val", "test")}

    rows: list[Row] = []
    n_bytes = {}
    for split, docs in texts.items():
        ids = encode_checked(enc, docs)
        stream = np.fromiter((t for doc in ids for t in (bos, *doc)), dtype=np.int64)
        inputs, targets = windows(stream, seq_len, bos)
        rows += [Row(x, y, split) for x, y in zip(inputs, targets)]
        n_bytes[split] = sum(len(t.encode("utf-8")) for t in docs)

    order = rng.permutation(len(rows))
    halves = [order[: len(order) // 2], order[len(order) // 2 :]]
    nll = {"val": 0.0, "test": 0.0}
    counted = {"val": 0, "test": 0}
    kept_logits: dict[int, np.ndarray] = {}  # originals of the other half's probes
    probe_logits: list[tuple[Row, np.ndarray]] = []
    probes_for = [make_probes(rows, halves[1], seq_len, rng), make_probes(rows, halves[0], seq_len, rng)]
    wanted = {p.probe_of for ps in probes_for for p in ps}
    transfer = 0.0
    for half, probes in zip(halves, probes_for):
        work = [rows[i] for i in half] + probes
        index = [int(i) for i in half] + [-1] * len(probes)
        mix = rng.permutation(len(work))
        work, index = [work[i] for i in mix], [index[i] for i in mix]
        while len(work) % BATCH_ROWS:  # pad the last batch with unscored real rows: every request looks alike
            work.append(Row(rows[int(rng.choice(half))].tokens))  # from this half: never a probe's original
            index.append(-1)
        batches = [
            np.stack([r.tokens for r in work[i : i + BATCH_ROWS]]).astype(np.int32)
            for i in range(0, len(work), BATCH_ROWS)
        ]
        model = launch()
        try:
            t0 = time.time()
            for b, logits in enumerate(model.logits(batches)):
                transfer += time.time() - t0
                check_logits(logits, BATCH_ROWS, seq_len, enc.n_vocab)
                for j in range(BATCH_ROWS):
                    row, idx = work[b * BATCH_ROWS + j], index[b * BATCH_ROWS + j]
                    if row.targets is not None and idx >= 0:
                        keep = (row.targets >= 0) & (row.targets != bos)
                        nll[row.split] += float(token_nll(logits[j], row.targets)[keep].sum())
                        counted[row.split] += int(keep.sum())
                        if idx in wanted:
                            kept_logits[idx] = logits[j].copy()
                    elif row.probe_of is not None:
                        probe_logits.append((row, logits[j, : row.cut + 1].copy()))
                t0 = time.time()
        finally:
            model.close()
    worst = 0.0
    for probe, logits in probe_logits:
        worst = max(worst, float(np.abs(kept_logits[probe.probe_of][: probe.cut + 1] - logits).max()))
    if worst > CAUSALITY_TOLERANCE:
        raise Invalid(
            f"causality probe failed: a logit at or before the cut moved by {worst:.3g} when only later tokens changed"
        )
    bpb = {split: nll[split] / (math.log(2) * n_bytes[split]) for split in nll}
    for split, value in bpb.items():
        if not (math.isfinite(value) and value > 0):
            raise Invalid(f"{split}_bpb {value} is not positive and finite")
    detail = {
        "tokens": counted,
        "bytes": n_bytes,
        "rows": len(rows),
        "probes": len(probe_logits),
        "causality_max_diff": worst,
        "transfer_seconds": round(transfer, 3),
        "seconds": round(time.time() - started, 3),
    }
    return Scores(
        bpb["val"],
        bpb["test"],
        docs_sha256(texts["val"]),
        docs_sha256(texts["test"]),
        file_sha256(tokenizer_file),
        detail,
    )


def probe_count(originals: int) -> int:
    return min(originals, max(PROBES_PER_PROCESS, round(PROBE_FRACTION * originals)))


def expected_probes(rows: int) -> int:
    """Probe rows of a whole evaluation of `rows` scored rows (each half gets the other half's probes)."""
    return probe_count(rows // 2) + probe_count(rows - rows // 2)


def make_probes(rows: list[Row], originals: np.ndarray, seq_len: int, rng: np.random.Generator) -> list[Row]:
    """Rows that share a prefix with a row scored elsewhere and continue with another real row's tokens.

    A peek one token ahead shows only at the cut itself, so each probe checks one position: the first
    cuts at the last one (a uniform cut would check a peek at the row's last token once in seq_len
    evaluations), the others at distinct secret positions, PROBE_FRACTION of the rows; the donor's
    token after the cut differs from the original's (else nothing moves)."""
    count = probe_count(len(originals))
    cuts = [seq_len - 2, *rng.permutation(seq_len - 2)]  # positions 0..cut are compared; cut + 1.. replaced
    probes = []
    for k, idx in enumerate(rng.choice(originals, size=count, replace=False)):
        cut = int(cuts[k % len(cuts)])
        original = rows[idx].tokens
        for _ in range(DONOR_TRIES):
            donor = rows[
                (int(idx) + 1 + int(rng.integers(len(rows) - 1))) % len(rows)
            ].tokens  # any row but the original
            if donor[cut + 1] != original[cut + 1]:
                break
        tokens = np.concatenate([original[: cut + 1], donor[cut + 1 :]])
        probes.append(Row(tokens, probe_of=int(idx), cut=cut))
    return probes
