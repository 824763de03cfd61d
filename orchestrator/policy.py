"""Keep or discard (DESIGN.md §7): val_bpb first, judged against run-to-run noise.

A candidate is kept when it beats the champion by more than max(min_delta, 2 sigma), or ties
within that band while raising throughput by more than 10%. A candidate better than the champion
but inside the band is re-run (up to `max_reruns` more times) and decided on its mean. The
champion is re-measured every `remeasure_every` keeps. Sigma comes from repeated measurements of
the same commit (the baseline runs, re-runs, re-measurements), pooled.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass


@dataclass
class Policy:
    baseline_runs: int = 2
    min_delta: float = 0.001
    sigma_multiple: float = 2.0
    throughput_gain: float = 0.10
    max_reruns: int = 2
    remeasure_every: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decision:
    verdict: str  # keep, discard, rerun
    reason: str


def pooled_sigma(groups: list[list[float]]) -> float:
    """Pooled standard deviation of repeated measurements (groups of one add nothing)."""
    num = sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (num / dof) ** 0.5 if dof else 0.0


def decide(policy: Policy, candidate: list[float], candidate_tok_s: float | None, best: float, best_tok_s: float | None, sigma: float) -> Decision:
    """Judge a candidate's measurements (val_bpb, lower is better) against the champion's mean."""
    mean = statistics.fmean(candidate)
    gain = best - mean
    band = max(policy.min_delta, policy.sigma_multiple * sigma)
    runs = f"mean of {len(candidate)} runs " if len(candidate) > 1 else ""
    where = f"val_bpb {runs}{mean:.4f} vs best {best:.4f} (delta {-gain:+.4f}, noise band {band:.4f})"
    if gain > band:
        return Decision("keep", f"improved beyond noise: {where}")
    faster = candidate_tok_s and best_tok_s and candidate_tok_s > best_tok_s * (1 + policy.throughput_gain)
    if abs(gain) <= band and faster:
        return Decision("keep", f"tie within noise and {candidate_tok_s / best_tok_s - 1:+.0%} tok/s: {where}")
    if 0 < gain <= band and len(candidate) <= policy.max_reruns:
        return Decision("rerun", f"marginal, re-running ({len(candidate)}/{policy.max_reruns + 1}): {where}")
    if gain > 0:
        return Decision("discard", f"better but inside the noise band after {len(candidate)} runs: {where}")
    return Decision("discard", f"not better: {where}")
