"""Fake model processes and a tiny held-out corpus for tests of the trusted scorer (tests/test_scorer.py and the
hostile probe tests): fast, in this Python process, their expected values computable by brute force."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conftest import tiny_texts, write_corpus, write_model_config, write_tokenizer
from orchestrator.scoring import scorer

BOOST = 4.0  # what a peeking model adds to the logit of the token that really comes next


@dataclass(frozen=True)
class Tiny:
    prepared: Path
    corpus: object
    enc: object
    root: Path

    def run_dir(self, seq_len) -> Path:
        return write_model_config(self.root / f"run-{seq_len}", seq_len)


def make_tiny(root: Path) -> Tiny:
    prepared = write_tokenizer(root / "prepared")
    corpus = write_corpus(root / "data", *tiny_texts())
    return Tiny(prepared, corpus, scorer.load_tokenizer(prepared / "tokenizer.json"), root)


class TableModel:
    """Strictly causal, far from uniform: logit = table[current token] + table[previous token in the
    row] + table[position]. Every entry is a multiple of 1/64 below 4, so float32 sums are exact and
    a float64 reference reproduces each logit bit for bit."""

    def __init__(self, width: int, max_len: int = 4096, seed: int = 0):
        rng = np.random.default_rng(seed)

        def table(*shape):
            return (rng.integers(-256, 256, shape) / 64).astype(np.float32)

        self.current, self.previous, self.position, self.start = (
            table(width, width),
            table(width, width),
            table(max_len, width),
            table(width),
        )

    def vector(self, token: int, previous: int | None, position: int) -> np.ndarray:
        before = self.start if previous is None else self.previous[previous]
        return self.current[token].astype(np.float64) + before + self.position[position]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        before = np.concatenate(
            [np.broadcast_to(self.start, (len(batch), 1, self.start.size)), self.previous[batch[:, :-1]]], axis=1
        )
        return self.current[batch] + before + self.position[: batch.shape[1]]


class Zeros:
    """Every next token equally likely."""

    def __init__(self, width: int):
        self.width = width

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((*batch.shape, self.width), dtype=np.float32)


Attack = Callable[["Process", np.ndarray, np.ndarray], None]  # edits logits in place


class Process:
    """A `scorer.ModelProcess` in this Python process: a model plus, optionally, a way to cheat."""

    def __init__(self, model, attack: Attack | None, index: int, memory: dict):
        self.model, self.attack, self.index, self.memory = model, attack, index, memory
        self.closed = False

    def logits(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for batch in batches:
            out = self.model(batch)
            if self.attack:
                self.attack(self, batch, out)
            yield out

    def close(self) -> None:
        self.closed = True


def launcher(model, attack: Attack | None = None, shared_by: int = 0) -> Callable[..., Process]:
    """`launch` for the scorer: a fresh process each call, numbered; the first `shared_by` processes share one
    memory (a channel between them), every other starts from nothing."""
    launched: list[Process] = []
    shared: dict = {}

    def launch(*_) -> Process:
        index = len(launched)
        launched.append(Process(model, attack, index, shared if index < shared_by else {}))
        return launched[-1]

    launch.launched = launched
    return launch


def peek(logits: np.ndarray, batch: np.ndarray, where: np.ndarray) -> None:
    """Raise the logit of the true next token at the positions `where` ([rows, seq_len - 1])."""
    rows, positions = np.nonzero(where)
    logits[rows, positions, batch[rows, positions + 1]] += BOOST


def always(process, batch, logits):
    peek(logits, batch, np.ones((batch.shape[0], batch.shape[1] - 1), bool))


def unless_prefix_seen(process, batch, logits):
    """Peeks, but answers any prefix it has answered before exactly as it did then (a prefix cache
    across calls): a probe built beside its original row in one process would see equal logits."""
    for r, row in enumerate(batch):
        peek(logits[r : r + 1], row[None], np.ones((1, len(row) - 1), bool))
        for t in range(len(row)):
            key = row[: t + 1].tobytes()
            if key in process.memory:
                logits[r, t] = process.memory[key]
            else:
                process.memory[key] = logits[r, t].copy()
