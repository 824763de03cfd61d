"""The trusted scorer: exact bits per byte, causality probes that catch models that peek, checks of
the tokenizer and of what the model process returns, and the held-out leak check.

Most tests score fake `ModelProcess`es in this process on a tiny hand-made tokenizer and held-out
split (conftest), so they are fast and their expected values can be computed by brute force.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import write_model_config, write_tokenizer
from fake_models import Attack, TableModel, Tiny, Zeros, always, launcher, make_tiny, peek, unless_prefix_seen
from orchestrator.scoring import leakcheck, scorer, shingles
from orchestrator.scoring.corpus import docs_sha256, file_sha256

SEEDS = range(10)


def only_in_multi_row_batches(process, batch, logits):
    """Behaves when asked about one row at a time, as a single-row probe would."""
    if batch.shape[0] > 1:
        always(process, batch, logits)


def only_at_the_last_position(process, batch, logits):
    """The one position (predicting the row's last token) that fixed cuts at 0, 1/4, 1/2, 9/10 never checked."""
    where = np.zeros((batch.shape[0], batch.shape[1] - 1), bool)
    where[:, -1] = True
    peek(logits, batch, where)


def in_process(index: int) -> Attack:
    def attack(process, batch, logits):
        if process.index == index:
            always(process, batch, logits)

    attack.__name__ = f"only_in_process_{index}"
    return attack


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


# ---------------------------------------------------------------------------------------------
# Exact bits per byte
# ---------------------------------------------------------------------------------------------
def reference_bpb(model: TableModel, enc, texts: list[str], seq_len: int) -> tuple[float, int]:
    """Token by token over the documents (each after BOS) cut into rows of seq_len, in float64."""
    bos = enc.encode_single_token("<|bos|>")
    stream = [t for text in texts for t in (bos, *enc.encode_ordinary(text))]
    nll = []
    for i in range(len(stream) - 1):
        if stream[i + 1] == bos:
            continue  # BOS is never a target
        position = i % seq_len
        x = model.vector(stream[i], stream[i - 1] if position else None, position)
        top = x.max()
        nll.append(top + math.log(math.fsum(np.exp(x - top))) - x[stream[i + 1]])
    return math.fsum(nll) / (math.log(2) * sum(len(t.encode("utf-8")) for t in texts)), len(nll)


def longest(tiny) -> int:
    """The longest seq_len the scorer takes for the tiny split: one that leaves MIN_ROWS rows."""
    targets = sum(len(tiny.enc.encode_ordinary(t)) + 1 for s in ("val", "test") for t in tiny.corpus.heldout(s)) - 2
    return targets // scorer.MIN_ROWS


@pytest.mark.parametrize("seq_len", [16, 37, 256, "longest"])  # shorter than most documents ... the longest allowed
def test_bpb_matches_a_brute_force_reference(tiny, seq_len):
    seq_len = longest(tiny) if seq_len == "longest" else seq_len
    model = TableModel(tiny.enc.n_vocab + 3)  # a model may return more logits than the tokenizer has ids
    scores = scorer.evaluate(
        tiny.run_dir(seq_len), tiny.prepared, tiny.corpus, launcher(model), rng=np.random.default_rng(seq_len)
    )
    for split, got in (("val", scores.val_bpb), ("test", scores.test_bpb)):
        want, targets = reference_bpb(model, tiny.enc, tiny.corpus.heldout(split), seq_len)
        assert got == pytest.approx(want, rel=1e-9), split
        assert scores.detail["tokens"][split] == targets
    assert scores.detail["causality_max_diff"] == 0.0


def test_uniform_model_scores_log2_v_per_token(tiny):
    for width in (tiny.enc.n_vocab, 1000):
        scores = scorer.evaluate(tiny.run_dir(37), tiny.prepared, tiny.corpus, launcher(Zeros(width)))
        for split, got in (("val", scores.val_bpb), ("test", scores.test_bpb)):
            texts = tiny.corpus.heldout(split)
            tokens = sum(len(tiny.enc.encode_ordinary(t)) for t in texts)  # every non-BOS target, once
            n_bytes = sum(len(t.encode()) for t in texts)  # the text's bytes, not its tokens' (partial UTF-8 ones too)
            assert scores.detail["tokens"][split] == tokens and scores.detail["bytes"][split] == n_bytes
            assert got == pytest.approx(math.log2(width) * tokens / n_bytes, rel=1e-12)


def test_uniform_model_on_the_real_held_out_split(stdlib, tmp_path):
    """The session's real stdlib split and trained tokenizer, at the trainer's CPU row length."""
    enc = scorer.load_tokenizer(stdlib.prepared / "tokenizer.json")
    scores = scorer.evaluate(
        write_model_config(tmp_path, 256), stdlib.prepared, stdlib.corpus, launcher(Zeros(enc.n_vocab))
    )
    for split, got in (("val", scores.val_bpb), ("test", scores.test_bpb)):
        texts = stdlib.corpus.heldout(split)
        tokens = sum(len(ids) for ids in enc.encode_ordinary_batch(texts))
        assert got == pytest.approx(math.log2(enc.n_vocab) * tokens / sum(len(t.encode()) for t in texts), rel=1e-12)
    assert scores.val_sha256 == docs_sha256(stdlib.corpus.heldout("val")) != scores.test_sha256
    assert scores.tokenizer_sha256 == file_sha256(stdlib.prepared / "tokenizer.json")
    assert scores.detail["probes"] == scorer.expected_probes(scores.detail["rows"])


def test_score_does_not_depend_on_the_secret_shuffle(tiny):
    model = TableModel(tiny.enc.n_vocab)
    runs = [
        scorer.evaluate(tiny.run_dir(37), tiny.prepared, tiny.corpus, launcher(model), rng=np.random.default_rng(s))
        for s in range(3)
    ]
    for r in runs[1:]:
        assert r.val_bpb == pytest.approx(runs[0].val_bpb, rel=1e-12) and r.test_bpb == pytest.approx(
            runs[0].test_bpb, rel=1e-12
        )


def test_windows_cover_every_target_once():
    stream = np.arange(10)
    inputs, targets = scorer.windows(stream, 4, pad=0)
    assert inputs.shape == (3, 4)
    assert targets.reshape(-1)[:9].tolist() == list(range(1, 10)) and (targets.reshape(-1)[9:] == -1).all()
    np.testing.assert_array_equal(inputs.reshape(-1)[:9], stream[:9])


# ---------------------------------------------------------------------------------------------
# Causality: probes on real rows, spread over two processes that share nothing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "attack",
    [always, only_in_multi_row_batches, only_at_the_last_position, unless_prefix_seen, in_process(0), in_process(1)],
    ids=lambda a: a.__name__,
)
@pytest.mark.parametrize("seq_len", [37, 256])
def test_a_model_that_peeks_is_caught_every_time(tiny, attack, seq_len):
    """No miss in 10 evaluations (fresh secret probes each). Knowing which of the two processes it is
    in does not help a model either: each half's rows are probed by the other."""
    model = TableModel(tiny.enc.n_vocab)
    for seed in SEEDS:
        launch = launcher(model, attack)
        with pytest.raises(scorer.Invalid, match="causality probe failed"):
            scorer.evaluate(tiny.run_dir(seq_len), tiny.prepared, tiny.corpus, launch, rng=np.random.default_rng(seed))
        assert len(launch.launched) == 2 and all(p.closed for p in launch.launched)  # the third never started


class Recorder(TableModel):
    def __init__(self, width: int):
        super().__init__(width)
        self.batches: list[np.ndarray] = []

    def __call__(self, batch):
        self.batches.append(batch.copy())
        return super().__call__(batch)


def test_probe_batches_look_like_scoring_batches(tiny):
    """Every request has BATCH_ROWS int32 rows of seq_len real tokens; the probes hide among them."""
    model = Recorder(tiny.enc.n_vocab)
    scores = scorer.evaluate(tiny.run_dir(37), tiny.prepared, tiny.corpus, launcher(model))
    assert all(b.shape == (scorer.BATCH_ROWS, 37) and b.dtype == np.int32 for b in model.batches)
    sent = len(model.batches) * scorer.BATCH_ROWS
    rows = scores.detail["rows"] + scores.detail["probes"] + scores.detail["rescored"]
    assert rows <= sent < rows + 2 * scorer.BATCH_ROWS
    assert scores.detail["rescored"] == scorer.RESCORE_BATCHES * scorer.BATCH_ROWS
    assert all(((b >= 0) & (b < tiny.enc.n_vocab)).all() for b in model.batches)


def test_an_honest_model_is_never_invalid(tiny):
    model = TableModel(tiny.enc.n_vocab)
    for seed in SEEDS:
        launch = launcher(model)
        scores = scorer.evaluate(tiny.run_dir(37), tiny.prepared, tiny.corpus, launch, rng=np.random.default_rng(seed))
        assert scores.detail["causality_max_diff"] == scores.detail["rescore_max_diff"] == 0.0
        assert scores.detail["probes"] == scorer.expected_probes(scores.detail["rows"])
        assert len(launch.launched) == 3 and all(p.closed for p in launch.launched)


@pytest.mark.parametrize("seq_len", [37, 256])
def test_a_model_that_remembers_across_the_scoring_processes_is_caught_every_time(tiny, seq_len):
    """A channel between the two scoring processes (here: shared memory) lets a model answer every probe exactly as
    it answered the prefix before and peek everywhere else: no probe disagrees. The third, fresh process re-scores
    rows answered after a sibling, and gets other answers."""
    model = TableModel(tiny.enc.n_vocab)
    for seed in SEEDS:
        launch = launcher(model, unless_prefix_seen, shared_by=2)
        with pytest.raises(scorer.Invalid, match="causality check failed: rows re-scored"):
            scorer.evaluate(tiny.run_dir(seq_len), tiny.prepared, tiny.corpus, launch, rng=np.random.default_rng(seed))
        assert len(launch.launched) == 3


def test_memory_shared_by_every_process_still_defeats_the_check(tiny):
    """The attack the design leaves to the jail: a model whose memory reaches every model process of an evaluation,
    the re-scoring one too, answers everything consistently and scores better than it should. So each model process
    must start from nothing and leave nothing behind (tests/hostile/test_scorer_channels.py holds the jail to it)."""
    model = TableModel(tiny.enc.n_vocab)
    honest = scorer.evaluate(
        tiny.run_dir(37), tiny.prepared, tiny.corpus, launcher(model), rng=np.random.default_rng(0)
    )
    cheat = scorer.evaluate(
        tiny.run_dir(37),
        tiny.prepared,
        tiny.corpus,
        launcher(model, unless_prefix_seen, shared_by=3),
        rng=np.random.default_rng(0),
    )
    assert cheat.val_bpb < honest.val_bpb - 0.1


# ---------------------------------------------------------------------------------------------
# What the scorer refuses: tokenizers that would score other text, malformed logits, bad configs
# ---------------------------------------------------------------------------------------------
def test_a_tokenizer_that_drops_text_is_invalid(tiny, tmp_path):
    prepared = write_tokenizer(tmp_path, pattern=r"\S+")  # spaces and newlines never become tokens
    with pytest.raises(scorer.Invalid, match="round-trip"):
        scorer.evaluate(tiny.run_dir(37), prepared, tiny.corpus, launcher(Zeros(tiny.enc.n_vocab)))


BACKTRACKING = r"(?:.|..)+(?=\x00)|[\s\S]"  # exponential backtracking on every line: tiktoken panics


@pytest.mark.parametrize(
    ("pattern", "message"), [("(a|", "does not compile"), (BACKTRACKING, "fails on the held-out documents")]
)
def test_a_pattern_that_breaks_the_tokenizer_is_invalid_not_a_crash(tiny, tmp_path, pattern, message):
    """A hostile data program writes the pattern; the trusted side must answer Invalid, never die of it
    (a Rust panic reaches Python as a BaseException that `except Exception` would let through)."""
    prepared = write_tokenizer(tmp_path, pattern=pattern)
    with pytest.raises(scorer.Invalid, match=message):
        scorer.evaluate(tiny.run_dir(37), prepared, tiny.corpus, launcher(Zeros(tiny.enc.n_vocab)))


@pytest.mark.parametrize("bos_id", [100, 0, 262, "263", None])
def test_bos_must_be_a_special_id_outside_the_ranks(tiny, tmp_path, bos_id):
    prepared = write_tokenizer(tmp_path)
    spec = json.loads((prepared / "tokenizer.json").read_text())
    spec["bos_id"] = bos_id
    (prepared / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(scorer.Invalid, match="BOS"):
        scorer.evaluate(tiny.run_dir(37), prepared, tiny.corpus, launcher(Zeros(tiny.enc.n_vocab)))


def test_repeated_ranks_are_invalid(tiny, tmp_path):
    prepared = write_tokenizer(tmp_path)
    spec = json.loads((prepared / "tokenizer.json").read_text())
    spec["ranks"].append(spec["ranks"][5])
    (prepared / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(scorer.Invalid, match="not distinct"):
        scorer.evaluate(tiny.run_dir(37), prepared, tiny.corpus, launcher(Zeros(tiny.enc.n_vocab)))


class Reshaped:
    """Answers with whatever `change` makes of a correct answer."""

    def __init__(self, width: int, change: Callable[[np.ndarray], np.ndarray]):
        self.inner, self.change = TableModel(width), change

    def __call__(self, batch):
        return self.change(self.inner(batch))


def with_value(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(logits):
        logits = logits.copy()
        logits[3, 5, 7] = value
        return logits

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x[..., :-2], "shape"),  # fewer logits than the tokenizer has ids
        (lambda x: x[:-1], "shape"),  # a row short
        (lambda x: x[:, :-1], "shape"),  # a position short
        (lambda x: x[..., 0], "shape"),  # no vocabulary axis
        (with_value(float("nan")), "non-finite"),
        (with_value(float("inf")), "non-finite"),
        (with_value(float("-inf")), "non-finite"),
    ],
    ids=["narrow", "rows", "positions", "2d", "nan", "inf", "-inf"],
)
def test_malformed_logits_are_invalid(tiny, change, message):
    model = Reshaped(tiny.enc.n_vocab + 1, change)
    launch = launcher(model)
    with pytest.raises(scorer.Invalid, match=message):
        scorer.evaluate(tiny.run_dir(37), tiny.prepared, tiny.corpus, launch)
    assert len(launch.launched) == 1 and launch.launched[0].closed  # refused at its first answer, and closed


@pytest.mark.parametrize("seq_len", [15, 0, -5, scorer.MAX_SEQ_LEN + 1, "64", 64.0, True, None, "longer"])
def test_seq_len_out_of_bounds_is_invalid(tiny, tmp_path, seq_len):
    seq_len = longest(tiny) + 1 if seq_len == "longer" else seq_len  # too few rows left to probe
    with pytest.raises(scorer.Invalid, match="seq_len"):
        scorer.evaluate(
            write_model_config(tmp_path, seq_len), tiny.prepared, tiny.corpus, launcher(Zeros(tiny.enc.n_vocab))
        )


# ---------------------------------------------------------------------------------------------
# The leak check of a prepared folder, and the scrub of the training material
# ---------------------------------------------------------------------------------------------
def leaky_copy(prepared: Path, dest: Path, extra_texts: list[str]) -> Path:
    """A copy of a prepared folder whose token stream also holds `extra_texts`, each a document of its own."""
    dest.mkdir()
    shutil.copy(prepared / "tokenizer.json", dest / "tokenizer.json")
    meta = json.loads((prepared / "meta.json").read_text())
    enc = scorer.load_tokenizer(prepared / "tokenizer.json")
    docs = [[meta["bos_id"], *ids] for ids in enc.encode_ordinary_batch(extra_texts)]
    dtype = np.dtype(meta["dtype"])
    tokens = np.concatenate([np.fromfile(prepared / "train.bin", dtype=dtype), *[np.array(d, dtype) for d in docs]])
    tokens.tofile(dest / "train.bin")
    offsets = np.load(prepared / "train_offsets.npy")
    np.save(
        dest / "train_offsets.npy",
        np.concatenate([offsets, offsets[-1] + np.cumsum([len(d) for d in docs], dtype=np.int64)]),
    )
    meta |= {"train_docs": meta["train_docs"] + len(docs), "train_tokens": len(tokens)}
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def test_the_honest_prepared_stdlib_passes_the_leak_check(stdlib):
    assert leakcheck.check_prepared(stdlib.prepared, stdlib.corpus) is None


def test_a_copied_val_document_is_a_leak(stdlib, tmp_path):
    val = stdlib.corpus.heldout("val")
    folder = leaky_copy(stdlib.prepared, tmp_path / "leaky", [max(val, key=len)])
    assert "leaked" in leakcheck.check_prepared(folder, stdlib.corpus)


def test_pieces_of_every_test_document_are_a_leak(stdlib, tmp_path):
    pieces = [t[len(t) // 3 : 2 * len(t) // 3] for t in stdlib.corpus.heldout("test")]  # the middle third of each
    folder = leaky_copy(stdlib.prepared, tmp_path / "leaky", pieces)
    assert "leaked" in leakcheck.check_prepared(folder, stdlib.corpus)


def test_an_unreadable_or_lossy_prepared_folder_is_refused(stdlib, tmp_path):
    folder = leaky_copy(stdlib.prepared, tmp_path / "copy", [])
    (folder / "meta.json").unlink()
    assert "meta.json" in leakcheck.check_prepared(folder, stdlib.corpus)
    lossy = leaky_copy(stdlib.prepared, tmp_path / "lossy", [])
    spec = json.loads((lossy / "tokenizer.json").read_text())
    (lossy / "tokenizer.json").write_text(json.dumps(spec | {"pattern": r"\S+"}))
    assert "round-trip" in leakcheck.check_prepared(lossy, stdlib.corpus)
    (lossy / "tokenizer.json").write_text(json.dumps(spec | {"pattern": BACKTRACKING}))
    assert "fails on the held-out documents" in leakcheck.check_prepared(lossy, stdlib.corpus)


SHARED = "def held_out_function(alpha, beta):\n    return alpha ** beta + 42\n"  # 65 bytes


def test_scrub_cuts_long_shared_runs_only():
    assert len(SHARED.encode()) > shingles.SCRUB_BYTES
    held = ["# a held-out file\n" + SHARED + "# the end\n"]
    texts = ["A" * 20 + SHARED + "B" * 20, "nothing in common with the held-out text", SHARED[:30] + "|" + SHARED[30:]]
    out = shingles.scrub(texts, held)
    assert out[0] == ["A" * 20, "B" * 20]
    assert out[1] == [texts[1]] and out[2] == [texts[2]]  # a shorter shared run stays


def test_scrub_threshold_is_exactly_scrub_bytes():
    n = shingles.SCRUB_BYTES
    held = ["<" + "0123456789abcdefghijklmnopqrstuvwxyz" * 3 + ">"]
    run = held[0][1 : 1 + n]
    assert shingles.scrub(["[" + run[:-1] + "]"], held) == [["[" + run[:-1] + "]"]]
    assert shingles.scrub(["[" + run + "]"], held) == [["[", "]"]]


def test_scrub_never_joins_runs_across_documents():
    texts = [SHARED[:40], SHARED[40:]]  # together they hold the whole run, each alone too little
    assert shingles.scrub(texts, [SHARED]) == [[SHARED[:40]], [SHARED[40:]]]


def test_scrub_leaves_valid_text_around_multibyte_characters():
    held = ["«" + SHARED + "»"]
    out = shingles.scrub(["é" * 5 + "«" + SHARED + "»" + "ü" * 5], held)
    assert out == [["é" * 5, "ü" * 5]]
