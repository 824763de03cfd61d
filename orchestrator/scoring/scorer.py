"""The trusted half of evaluation: held-out documents in, val_bpb and test_bpb out.

It never runs candidate code. It owns the held-out documents, the tokenizer used for scoring, the
rows the model sees, the log-softmax and NLL arithmetic, the causality check and the result. A
`ModelProcess` (a sandboxed `inside/evaluate.py`) only turns rows into logits:

    bpb = sum of next-token NLL (nats) over every non-BOS target / (ln 2 * UTF-8 bytes of the docs)

Each document is preceded by BOS; the bytes are those of the documents themselves, never
per-token byte tables.

Causality is checked on the real rows. The rows of val and test are shuffled and dealt to two
model processes that run one after the other and cannot talk to each other (a fresh sandbox
each, nothing writable that outlives it, no page-cache probes). Each process also gets probe rows:
a real row that the OTHER process scores, with everything after a secret random cut replaced by
another real row's tokens. The logits at and before the cut must match what the other process
returned for the original row. A model that peeks at later tokens cannot tell a probe from a scored
row (same shapes, natural text, interleaved, never seen beside its original), so it is caught at once.

The probes alone assume the two processes share nothing. A model that remembers across them (through
a channel the jail missed) answers each row that shares a prefix with an earlier one as it answered
that one, and peeks everywhere else: every probe agrees. So a third, fresh process
re-scores rows that were answered after a sibling, and they must come back as they were answered
the first time: a model whose answers depend on what it saw before fails here. What is left open
(a channel that also reaches the third process, timing, peeking at few positions) is in
docs/architecture.md.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import capped
from .corpus import Corpus, docs_sha256, file_sha256

BATCH_ROWS = 16  # every request has exactly this many rows (probe batches look like scoring batches)
PROBES_PER_PROCESS = 8  # at least this many probe rows per scoring process, at distinct secret cuts ...
PROBE_FRACTION = 0.25  # ... or this fraction of the rows the other process scores
MIN_ROWS = 2 * PROBES_PER_PROCESS  # seq_len is at most the held-out targets / this: at least this many rows
RESCORE_BATCHES = 2  # batches a third, fresh process re-scores (rows answered after a sibling, first)
RESCORE_POSITIONS = 8  # positions of each re-scored row compared, besides its probe cut
CAUSALITY_TOLERANCE = 1e-3  # largest allowed change of a logit at or before the cut (soft-capped logits)
MIN_SEQ_LEN, MAX_SEQ_LEN = 16, 1 << 16  # MIN_SEQ_LEN > PROBES_PER_PROCESS: that many distinct cuts always exist
VOCAB_SLACK = 1024  # logits may be wider than the tokenizer (a padded head) by at most this
MAX_TOKENIZER_BYTES = 64 << 20


class ModelProcess(Protocol):
    """Turns [rows, seq_len] int32 token batches into [rows, seq_len, vocab] float32 logits. Started by a `launch(n)`
    that is told the tokenizer's vocabulary n (the widest answer it may accept is max_vocab(n))."""

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

    try:
        spec = capped.parse_json(capped.read_capped(path, MAX_TOKENIZER_BYTES), "tokenizer.json")
    except capped.Refused as e:
        raise Invalid(str(e)) from None
    shapes = {"ranks": list, "pattern": str, "bos": str}
    wrong = [k for k, kind in shapes.items() if not isinstance(spec, dict) or not isinstance(spec.get(k), kind)]
    if wrong or not all(isinstance(t, str) for t in spec["ranks"]):
        raise Invalid(f"tokenizer.json: {', '.join(wrong) or 'ranks'} missing or of the wrong type")
    try:
        ranks = {base64.b64decode(token, validate=True): rank for rank, token in enumerate(spec["ranks"])}
    except ValueError:
        raise Invalid("tokenizer.json: a rank is not base64") from None
    if len(ranks) != len(spec["ranks"]) or sorted(ranks.values()) != list(range(len(ranks))):
        raise Invalid("tokenizer.json: the BPE ranks are not distinct")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise Invalid(
            f"tokenizer.json: {len(missing)} single bytes (first {missing[0]:#04x}) have no rank: "
            "text holding them cannot be encoded"
        )
    bos_id = spec.get("bos_id")
    if isinstance(bos_id, bool) or not isinstance(bos_id, int) or not len(ranks) <= bos_id < len(ranks) + VOCAB_SLACK:
        raise Invalid(f"tokenizer.json: the BOS id is not a special id just after the {len(ranks)} BPE ranks")
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
        # the type only: a message could quote the held-out text it failed on, and the agent reads reasons
        raise Invalid(f"the tokenizer fails on the held-out documents ({type(e).__name__})") from None
    if any(enc.decode(tokens) != text for text, tokens in zip(texts, ids)):  # which one would tell about its text
        raise Invalid("the tokenizer does not round-trip a held-out document: it would score text it drops or changes")
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


def max_vocab(n_vocab: int) -> int:
    """The widest logits a model process may answer for a tokenizer of `n_vocab` ids."""
    return n_vocab + VOCAB_SLACK


def check_logits(logits: np.ndarray, rows: int, seq_len: int, n_vocab: int) -> None:
    """The shape and values of one answer. The reasons quote none of what the model process chose: it was sent
    held-out rows, and a run's reason reaches the agent."""
    if logits.ndim != 3 or logits.shape[:2] != (rows, seq_len) or not n_vocab <= logits.shape[2] <= max_vocab(n_vocab):
        raise Invalid(f"the model returned logits of the wrong shape, expected ({rows}, {seq_len}, >= {n_vocab})")
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
    index: int = -1  # scored rows: their index in the evaluation's rows


def evaluate(
    run_dir: Path,
    prepared_dir: Path,
    corpus: Corpus,
    launch: Callable[[int], ModelProcess],
    rng: np.random.Generator | None = None,
) -> Scores:
    """Score the run's checkpoint on val and test; raises `Invalid` for anything that cannot be trusted.

    `launch(n_vocab)` starts a fresh model process, told the tokenizer's vocabulary (which bounds the logits it may
    answer). Three are started, one after the other: two score the rows, each with probes of the other's rows; the
    third re-scores rows answered after a sibling, which must get the answers they got then (`rescore_plan`)."""
    started = time.time()
    rng = rng or np.random.default_rng()  # the probes are secret: fresh entropy every evaluation
    try:
        config = capped.read_json_object(run_dir / "model_config.json")
    except capped.Refused as e:
        raise Invalid(str(e)) from None
    seq_len = config.get("seq_len")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not MIN_SEQ_LEN <= seq_len <= MAX_SEQ_LEN:
        raise Invalid(f"model_config.json: seq_len is not an int in [{MIN_SEQ_LEN}, {MAX_SEQ_LEN}]")
    tokenizer_file = prepared_dir / "tokenizer.json"
    enc = load_tokenizer(tokenizer_file)
    (bos_text,) = enc.special_tokens_set
    bos = enc.encode_single_token(bos_text)
    texts = {split: corpus.heldout(split) for split in ("val", "test")}

    rows: list[Row] = []
    n_bytes, n_targets = {}, 0
    for split, docs in texts.items():
        ids = encode_checked(enc, docs)
        stream = np.fromiter((t for doc in ids for t in (bos, *doc)), dtype=np.int64)
        inputs, targets = windows(stream, seq_len, bos)
        rows += [Row(x, y, split, index=len(rows) + i) for i, (x, y) in enumerate(zip(inputs, targets))]
        n_bytes[split] = sum(len(t.encode("utf-8")) for t in docs)
        n_targets += len(stream) - 1
    if seq_len > n_targets // MIN_ROWS:  # so that there are at least MIN_ROWS rows
        raise Invalid(
            f"model_config.json: seq_len {seq_len} is too long for the held-out text: the causality probes need "
            f"{MIN_ROWS} rows of it, so seq_len at most {n_targets // MIN_ROWS}"
        )

    order = rng.permutation(len(rows))
    halves = [order[: len(order) // 2], order[len(order) // 2 :]]
    probes_for = [make_probes(rows, halves[1], seq_len, rng), make_probes(rows, halves[0], seq_len, rng)]
    again = rescore_plan(rows, probes_for, seq_len, rng)
    compared = {id(row): positions for row, positions in again}
    wanted = {p.probe_of: p.cut for ps in probes_for for p in ps}  # originals whose logits the probes compare to
    nll = {"val": 0.0, "test": 0.0}
    counted = {"val": 0, "test": 0}
    kept_logits: dict[int, np.ndarray] = {}
    probe_logits: list[tuple[Row, np.ndarray]] = []
    first: dict[int, np.ndarray] = {}  # id of a row the third process re-scores -> its first answer at `compared`
    transfer = [0.0]
    for half, probes in zip(halves, probes_for):
        work = [rows[i] for i in half] + probes
        work = [work[i] for i in rng.permutation(len(work))]
        scored = len(work)
        while len(work) % BATCH_ROWS:  # pad the last batch with unscored real rows: every request looks alike
            work.append(rows[int(rng.choice(half))])  # from this half: never a probe's original
        for k, (row, logits) in enumerate(answers(launch, enc.n_vocab, work, seq_len, transfer)):
            if id(row) in compared and id(row) not in first:
                first[id(row)] = logits[compared[id(row)]]
            if row.probe_of is not None:
                probe_logits.append((row, logits[: row.cut + 1].copy()))  # a copy: a view keeps its batch
            elif k < scored:
                keep = (row.targets >= 0) & (row.targets != bos)
                nll[row.split] += float(token_nll(logits, row.targets)[keep].sum())
                counted[row.split] += int(keep.sum())
                if row.index in wanted:
                    kept_logits[row.index] = logits[: wanted[row.index] + 1].copy()
    worst = max((float(np.abs(kept_logits[p.probe_of] - x).max()) for p, x in probe_logits), default=0.0)
    if worst > CAUSALITY_TOLERANCE:
        raise Invalid(
            f"causality probe failed: a logit at or before the cut moved by more than {CAUSALITY_TOLERANCE:g} when "
            "only later tokens changed"
        )
    moved = 0.0
    work = [again[i][0] for i in rng.permutation(len(again))]
    for row, logits in answers(launch, enc.n_vocab, work, seq_len, transfer):
        moved = max(moved, float(np.abs(logits[compared[id(row)]] - first[id(row)]).max()))
    if moved > CAUSALITY_TOLERANCE:
        raise Invalid(
            f"causality check failed: rows re-scored by a fresh model process moved by more than "
            f"{CAUSALITY_TOLERANCE:g} from their first answers (answers that depend on what a process saw before)"
        )
    bpb = {split: nll[split] / (math.log(2) * n_bytes[split]) for split in nll}
    for split, value in bpb.items():
        if not (math.isfinite(value) and value > 0):
            raise Invalid(f"{split}_bpb is not positive and finite")
    detail = {
        "tokens": counted,
        "bytes": n_bytes,
        "rows": len(rows),
        "probes": len(probe_logits),
        "causality_max_diff": worst,
        "rescored": len(again),
        "rescore_max_diff": moved,
        "transfer_seconds": round(transfer[0], 3),
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


def answers(
    launch: Callable[[int], ModelProcess], n_vocab: int, work: list[Row], seq_len: int, transfer: list[float]
) -> Iterator[tuple[Row, np.ndarray]]:
    """Each row of `work` (a whole number of batches) with its logits, from one fresh model process, checked; the
    process is closed however the caller's loop ends. `transfer` adds up the seconds spent waiting for it."""
    batches = [
        np.stack([r.tokens for r in work[i : i + BATCH_ROWS]]).astype(np.int32) for i in range(0, len(work), BATCH_ROWS)
    ]
    model = launch(n_vocab)
    try:
        t = time.time()
        for b, logits in enumerate(model.logits(batches)):
            transfer[0] += time.time() - t
            check_logits(logits, BATCH_ROWS, seq_len, n_vocab)
            for j in range(BATCH_ROWS):
                yield work[b * BATCH_ROWS + j], logits[j]
            t = time.time()
    finally:
        model.close()


def probe_count(originals: int) -> int:
    return max(PROBES_PER_PROCESS, round(PROBE_FRACTION * originals))


def expected_probes(rows: int) -> int:
    """Probe rows of a whole evaluation of `rows` scored rows (each half gets the other half's probes)."""
    return probe_count(rows // 2) + probe_count(rows - rows // 2)


def make_probes(rows: list[Row], originals: np.ndarray, seq_len: int, rng: np.random.Generator) -> list[Row]:
    """Rows that share a prefix with a row scored elsewhere and continue with another real row's tokens.

    A peek one token ahead shows only at the cut itself, so each probe checks one position: the first cuts at the
    last one (a uniform cut would check a peek at the row's last token once in seq_len evaluations), the others at
    distinct secret positions; at least PROBES_PER_PROCESS of them, or PROBE_FRACTION of the originals (MIN_ROWS
    leaves each half at least PROBES_PER_PROCESS rows to take them from). The donor's token after the cut differs
    from the original's, so a probe never equals its original; where no row has such a token, nothing can be
    probed and the run is invalid."""
    count = probe_count(len(originals))
    cuts = [seq_len - 2, *rng.permutation(seq_len - 2)]  # positions 0..cut are compared; cut + 1.. replaced
    probes = []
    for k, idx in enumerate(rng.choice(originals, size=count, replace=False)):
        cut = int(cuts[k % len(cuts)])
        original = rows[idx].tokens
        donors = (rows[i].tokens for i in rng.permutation(len(rows)) if i != idx)
        donor = next((d for d in donors if d[cut + 1] != original[cut + 1]), None)
        if donor is None:
            raise Invalid("the held-out rows are too alike to probe causality: no row differs from another after a cut")
        probes.append(Row(np.concatenate([original[: cut + 1], donor[cut + 1 :]]), probe_of=int(idx), cut=cut))
    return probes


def rescore_plan(
    rows: list[Row], probes_for: list[list[Row]], seq_len: int, rng: np.random.Generator
) -> list[tuple[Row, np.ndarray]]:
    """What the third, fresh model process re-scores: RESCORE_BATCHES batches of rows, each with the positions at
    which it is compared with its first answer.

    The probes alone hold only while the scoring processes share nothing. A model with a memory (a process's own, or
    a channel between the two) can answer a row that shares a prefix with one it answered before exactly as it
    answered that one, and peek everywhere else: every probe then agrees with its original. But its answers to such
    rows depend on what it saw before, so a fresh process answers them differently. The third process gets first
    rows that were answered after a sibling (the second process's probes, and its rows that the first process
    probed), one member of each family only (given two, a fresh process could build the same memory), each
    compared at its cut and at RESCORE_POSITIONS secret positions; then rows no probe was made of; then repeats."""
    slots = RESCORE_BATCHES * BATCH_ROWS
    probed = {p.probe_of for ps in probes_for for p in ps}
    second = [(p, p.cut) for p in probes_for[1]] + [(rows[p.probe_of], p.cut) for p in probes_for[0]]
    chosen = [second[i] for i in rng.permutation(len(second))][:slots]
    loners = [(rows[i], None) for i in rng.permutation(len(rows)) if i not in probed]
    chosen += loners[: slots - len(chosen)]
    chosen += [chosen[i % len(chosen)] for i in range(slots - len(chosen))]
    plan = []
    for row, cut in chosen:
        positions = rng.choice(seq_len, size=RESCORE_POSITIONS, replace=False)
        plan.append((row, np.unique(positions if cut is None else np.append(positions, cut))))
    return plan
