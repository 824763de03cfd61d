"""Keep or discard (DESIGN.md §7): val_bpb only, judged on seed-paired differences against noise.

A candidate is measured on the champion's seeds, in order, so each of its n measurements has a
partner: the champion's measurement on the same seed under the same machine fingerprint. The
verdict looks at the mean paired gain (champion minus candidate; positive = better):

- gain > band: keep.
- 0 < gain <= band and n <= max_reruns: re-run on the champion's next seed, decide on the mean.
- otherwise discard (a tie is not better; a worse run is discarded whatever its speed).

The band is max(min_delta, m x sigma x sqrt(2 / n)). Sigma is the run-to-run spread across seeds,
pooled over every commit measured on several seeds under the current fingerprint, with `dof`
degrees of freedom. sqrt(2 / n): a change that only moves the random stream (init draw order, data
order) behaves like a new seed, so one paired difference has variance 2 sigma^2 and the mean of n
has 2 sigma^2 / n. m widens k (`sigma_multiple`) for a sigma estimated from few runs: it is the
Student t quantile with `dof` degrees of freedom at the one-sided level a normal k would give
(k = 2: 97.7%), which tends to k as dof grows (dof 2: 4.5, dof 4: 2.9, dof 20: 2.1). With dof 0
sigma is unknown and nothing is kept until re-runs have measured it.

Throughput never decides: tok/s is reported by the (untrusted) trainer, so a worse-but-faster
candidate is discarded and a slower tie is decided by the val_bpb rule alone.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, fields


def _field(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Policy:
    """Every threshold of the keep rule; `arx-daemon start` has one option per field."""

    baseline_runs: int = _field(
        3,
        "measurements of the unchanged code (seeds 1..R) before the first judgment and after a machine change or merge",
    )
    min_delta: float = _field(0.001, "smallest val_bpb gain that can count as an improvement, whatever the noise")
    sigma_multiple: float = _field(
        2.0, "k: the band in sigmas were sigma known exactly; widened by a t quantile when it is not"
    )
    max_reruns: int = _field(3, "extra paired runs of a candidate that is better but inside the band")
    remeasure_every: int = _field(5, "re-measure the champion on a new seed after this many keeps (0: never)")
    cpu_share_drop: float = _field(
        0.25,
        "a candidate run whose CPU share is below (1 - this) x the lowest of the champion's runs is re-run, not judged",
    )
    max_contended: int = _field(
        3, "re-runs of a measurement that got too little CPU before the champion is re-measured under the new load"
    )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}


@dataclass
class Decision:
    verdict: str  # keep, discard, rerun
    reason: str
    band: float | None = None


@dataclass(frozen=True)
class Noise:
    sigma: float
    dof: int


def pooled(groups: list[list[float]]) -> Noise:
    """Pooled standard deviation of groups of measurements (each group one commit on several seeds)."""
    num = sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return Noise((num / dof) ** 0.5 if dof else 0.0, dof)


def t_cdf(t: float, dof: int) -> float:
    """Student t distribution function for an integer dof (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(dof))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for j in range(1, (dof - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term, total = 1.0, 1.0
        for j in range(1, dof // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        a = s * total
    return 0.5 + 0.5 * a


def t_quantile(p: float, dof: int) -> float:
    """The t quantile at probability p > 0.5 (bisection on `t_cdf`)."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, dof) < p else (lo, mid)
    return (lo + hi) / 2


def multiplier(k: float, dof: int) -> float:
    """k widened for a sigma with `dof` degrees of freedom (infinite when dof is 0)."""
    if dof <= 0:
        return math.inf
    return t_quantile(0.5 * (1 + math.erf(k / math.sqrt(2))), dof)


def band(policy: Policy, noise: Noise, n: int) -> tuple[float, str]:
    """The keep band for the mean of n paired differences, and how it was computed (one line)."""
    m = multiplier(policy.sigma_multiple, noise.dof)
    width = max(policy.min_delta, m * noise.sigma * math.sqrt(2 / n))
    if math.isinf(m):
        return math.inf, f"band unknown: sigma has 0 degrees of freedom (measure more seeds), n={n}"
    how = (
        f"band {width:.4f} = max(min_delta {policy.min_delta:g}, t {m:.2f} (k={policy.sigma_multiple:g}, dof "
        f"{noise.dof}) x sigma {noise.sigma:.4f} x sqrt(2/{n}))"
    )
    return width, how


def decide(policy: Policy, candidate: list[float], champion: list[float], noise: Noise) -> Decision:
    """Judge a candidate's val_bpb (lower is better) against the champion's on the same seeds, pair by pair."""
    if len(candidate) != len(champion) or not candidate:
        raise ValueError(
            f"need paired measurements, got {len(candidate)} candidate and {len(champion)} champion values"
        )
    n = len(candidate)
    gain = statistics.fmean(champion) - statistics.fmean(candidate)
    width, how = band(policy, noise, n)
    where = (
        f"val_bpb {statistics.fmean(candidate):.4f} vs champion {statistics.fmean(champion):.4f} on the same {n} "
        f"seed{'s' if n > 1 else ''} (mean paired gain {gain:+.4f}); {how}"
    )
    if gain > width:
        return Decision("keep", f"improved beyond noise: {where}", width)
    if 0 < gain and n <= policy.max_reruns:
        return Decision(
            "rerun",
            f"better but inside the band, re-running on the champion's next seed ({n}/{policy.max_reruns + 1}): "
            f"{where}",
            width,
        )
    if gain > 0:
        return Decision("discard", f"better but inside the band after {n} paired runs: {where}", width)
    return Decision("discard", f"not better: {where}", width)
