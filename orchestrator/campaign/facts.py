"""What a campaign knows, derived from its runs: pure functions over the ledger's rows.

Nothing here reads the database or the disk: the loop, the dashboard's tests and the benchmarks pass
the runs in. So the same rows always give the same champion, noise and seeds, and a test can build a
ledger by hand and check each figure against it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ledger.statuses import FAILED, Kind, Status
from .policy import Noise, pooled

if TYPE_CHECKING:  # any object with a run's attributes will do: status and the dashboard pass rows read by sqlite3
    from ..ledger.ledger import Run

MIN_ALLOWANCE_S = 10.0  # every second of it is a second a hostile trainer may train past its budget
ALLOWANCE_FACTOR = 2.0
GAP_OVERHEAD_S = 60.0  # start-up, evaluation and bookkeeping between two proposals, until runs measure it
GAP_RUNS = 5  # measured runs the expected gap between proposals is taken from


def usable(r: Run) -> bool:
    """A measurement that may enter a decision or the noise: scored, not set aside, not failed or interrupted."""
    return r.val_bpb is not None and not r.contended and r.status not in (*FAILED, Status.INTERRUPTED)


def measurements(runs: Iterable[Run], commit: str, fp_hash: str) -> list[Run]:
    """Usable measurements of `commit` under one machine fingerprint, oldest first."""
    return [r for r in runs if r.commit == commit and r.fingerprint_hash == fp_hash and usable(r)]


def seeds_of(runs: Iterable[Run]) -> list[int]:
    """The distinct seeds of `runs`, in the order they were first measured."""
    return list(dict.fromkeys(r.seed for r in runs if r.seed is not None))


def on_seed(runs: list[Run], seed: int) -> Run | None:
    """The latest of `runs` on `seed` (a measurement set aside for unfair conditions is no longer among them)."""
    return next((r for r in reversed(runs) if r.seed == seed), None)


def reference_fp(runs: list[Run], head: str) -> str | None:
    """The fingerprint the champion `head` was last measured under (None before its first measurement)."""
    mine = [r for r in runs if r.commit == head and usable(r)]
    return mine[-1].fingerprint_hash if mine else None


def estimate(runs: list[Run], head: str) -> tuple[float, int] | None:
    """The champion's val_bpb: its mean over its usable measurements under its reference fingerprint, and how many."""
    fp = reference_fp(runs, head)
    vals = [r.val_bpb for r in measurements(runs, head, fp)] if fp else []
    return (statistics.fmean(vals), len(vals)) if vals else None


def noise(runs: Iterable[Run], fp_hash: str) -> Noise:
    """Seed-to-seed noise: val_bpb pooled over every commit measured on several seeds under `fp_hash`."""
    groups: dict[str, list[float]] = {}
    for r in runs:
        if r.fingerprint_hash == fp_hash and usable(r):
            groups.setdefault(r.commit, []).append(r.val_bpb)
    return pooled(list(groups.values()))


def next_seed(runs: Iterable[Run], promised: set[int], base_seed: int) -> int:
    """A seed no run has used or been promised (seeds count up from --seed + 1)."""
    used = {r.seed for r in runs if r.seed is not None} | promised
    return max(used, default=base_seed) + 1


def remeasure_due(runs: list[Run], every: int) -> bool:
    """The champion is re-measured on a fresh seed every `every` keeps."""
    last = max((r.id for r in runs if r.kind == Kind.REMEASURE), default=0)
    kept = [r for r in runs if r.kind in (Kind.EXPERIMENT, Kind.REBASE) and r.status == Status.KEEP and r.id > last]
    return bool(every) and len(kept) >= every


@dataclass(frozen=True)
class Judged:
    """What a verdict row's decision (`run.decision`) says about its candidate."""

    value: float  # the candidate's val_bpb as the verdict judged it: its mean over the pairs it used
    gain: float  # the mean paired gain (champion minus candidate, seed by seed) the verdict rests on
    pairs: int


def judged(r: Run) -> Judged | None:
    """The candidate's value, paired gain and pair count as its verdict used them (None: no judged pair)."""
    if not r.decision:
        return None
    record = json.loads(r.decision)
    pairs = record.get("pairs") or []
    if not pairs:
        return None
    gain = (record.get("assessment") or {}).get("mean_gain")
    return Judged(
        value=sum(p["candidate"] for p in pairs) / len(pairs),
        gain=gain if gain is not None else sum(p["gain"] for p in pairs) / len(pairs),
        pairs=len(pairs),
    )


def judged_value(r: Run) -> float | None:
    """A verdict row's val_bpb as its verdict judged it: the candidate's mean over the pairs it used."""
    j = judged(r)
    return j.value if j else None


def proposals(runs: Iterable[Run]) -> int:
    """Experiments that count against --max-experiments: every proposal but one cut off before it was committed
    (a stop, a lost API connection): those taught nothing and must not burn the campaign's allowance."""
    return sum(r.kind == Kind.EXPERIMENT and not (r.status == Status.INTERRUPTED and r.commit is None) for r in runs)


def startup_allowance(runs: Iterable[Run], budget_s: float, grace_s: float) -> float:
    """Seconds a trainer may run past its budget (start-up, compilation, saving), measured by the daemon on the
    champion: ALLOWANCE_FACTOR x its smallest overhead, at least MIN_ALLOWANCE_S; until one was timed, `grace_s`."""
    overheads = [
        r.train_wall_s - budget_s
        for r in runs
        if r.kind in (Kind.BASELINE, Kind.REBASELINE) and r.train_wall_s and r.val_bpb is not None
    ]
    if not overheads:
        return grace_s
    return max(MIN_ALLOWANCE_S, ALLOWANCE_FACTOR * min(overheads))


def expected_gap_s(runs: list[Run], budget_s: float) -> float:
    """Seconds between two proposals' API calls (what decides the cache lifetime): the median wall time outside
    the agent of the last measured runs, else the budget plus a stated overhead."""
    spans = [r.total_seconds - (r.agent_seconds or 0.0) for r in runs if r.total_seconds and r.val_bpb is not None]
    return statistics.median(spans[-GAP_RUNS:]) if spans else budget_s + GAP_OVERHEAD_S
