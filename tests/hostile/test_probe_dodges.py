"""Dodging the causality probes instead of beating them: a sequence length so long that each model process gets one
row and one probe (which then equals its original), held-out rows so alike that no probe can differ from its
original, too few probes in a process to catch a model that peeks at some positions only.

Fake model processes on a tiny hand-made held-out split (tests/fake_models.py): the scorer is the real one.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_corpus, write_model_config
from fake_models import TableModel, always, launcher, make_tiny
from orchestrator.scoring import scorer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def scored_rows(tiny, seq_len: int) -> set[bytes]:
    """The rows the scorer cuts from val and test at `seq_len` (every other row it sends is a probe)."""
    bos = tiny.enc.encode_single_token("<|bos|>")
    found = set()
    for split in ("val", "test"):
        stream = np.array([t for doc in tiny.corpus.heldout(split) for t in (bos, *tiny.enc.encode_ordinary(doc))])
        inputs, _ = scorer.windows(stream, seq_len, bos)
        found |= {row.astype(np.int32).tobytes() for row in inputs}
    return found


class Recorder(TableModel):
    def __init__(self, width: int):
        super().__init__(width)
        self.batches: list[list[np.ndarray]] = []  # per process

    def __call__(self, batch):
        self.batches[-1].append(batch.copy())
        return super().__call__(batch)


def test_a_sequence_as_long_as_the_split_cannot_dodge_the_probes(tiny):
    """One row per process and one probe, equal to its original: a model that peeks everywhere was accepted."""
    n_tokens = sum(len(tiny.enc.encode_ordinary(t)) + 1 for s in ("val", "test") for t in tiny.corpus.heldout(s))
    for seq_len in (n_tokens // 2 + 1, 4096):  # one row per split (the fake model takes rows up to 4096)
        with pytest.raises(scorer.Invalid, match="seq_len|causality"):
            scorer.evaluate(
                tiny.run_dir(seq_len),
                tiny.prepared,
                tiny.corpus,
                launcher(TableModel(tiny.enc.n_vocab), always),
                rng=np.random.default_rng(0),
            )


@pytest.mark.parametrize("rows", [4, 6, 12, 16, 24, 40])
def test_every_process_gets_its_probes_at_distinct_cuts_or_the_length_is_refused(tiny, rows):
    """Whatever the sequence length: at least PROBES_PER_PROCESS probes in every model process, at distinct cuts,
    none equal to its original; or the run is invalid because rows that long leave too few to probe."""
    n_tokens = sum(len(tiny.enc.encode_ordinary(t)) + 1 for s in ("val", "test") for t in tiny.corpus.heldout(s))
    seq_len = n_tokens // rows
    model = Recorder(tiny.enc.n_vocab)

    def launch(*_):
        model.batches.append([])
        return launcher(model)()

    try:
        scorer.evaluate(tiny.run_dir(seq_len), tiny.prepared, tiny.corpus, launch, rng=np.random.default_rng(rows))
    except scorer.Invalid as e:
        assert "seq_len" in str(e), e
        return
    scored = scored_rows(tiny, seq_len)
    originals = [np.frombuffer(r, np.int32) for r in scored]
    for process in model.batches[:2]:  # the two processes that score (a third one only re-scores)
        probes = [row for b in process for row in b if row.tobytes() not in scored]
        cuts = []
        for probe in probes:
            shared = [int(np.argmax(probe != o)) if (probe != o).any() else len(o) for o in originals]
            assert max(shared) < seq_len, "a probe equal to a scored row"
            cuts.append(max(shared) - 1)
        assert len(probes) >= scorer.PROBES_PER_PROCESS, (seq_len, len(probes))
        assert len(set(cuts)) >= min(len(probes), seq_len - 1), (seq_len, sorted(cuts))


def test_rows_too_alike_to_probe_are_invalid_not_accepted(tmp_path):
    """Held-out text of one repeated character, exactly 47 rows of 64 per split (no padding): no donor row differs
    from an original after any cut, so a probe would equal its original and prove nothing."""
    tiny = make_tiny(tmp_path)
    corpus = write_corpus(tmp_path / "same", ["a" * 47 * 64], ["a" * 47 * 64])
    run_dir = write_model_config(tmp_path / "run", 64)
    with pytest.raises(scorer.Invalid, match="probe|causality"):
        scorer.evaluate(
            run_dir, tiny.prepared, corpus, launcher(TableModel(tiny.enc.n_vocab), always), rng=np.random.default_rng(0)
        )
