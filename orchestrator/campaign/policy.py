"""Keep or discard (DESIGN.md §7): val_bpb only, judged on seed-paired differences, sequentially.

A candidate is measured on the champion's seeds, one seed at a time, so each of its measurements
has a partner: the champion's measurement on the same seed under the same machine fingerprint.
After each pair the verdict looks at the paired gains d_i = champion_i - candidate_i (positive is
better), their mean d and their spread s:

- d <= 0 (a tie is not better; worse whatever its speed): discard. A clearly worse candidate
  goes after one run.
- at least `min_pairs` pairs and d >= `min_delta`, and one of two one-sided t tests passes: keep.
  1. the candidate's own pairs: t = d / (s / sqrt n), n - 1 degrees of freedom (n >= 3). With
     common random numbers an honest change moves every seed alike, so its pairs are far tighter
     than two seeds and this test keeps it in a few runs; a change that only moves the random
     stream (A/A) has pairs as wide as two seeds, and the test knows it from their spread.
  2. the campaign's seed noise pooled with the pairs' spread: the variance of an A/A pair is
     2 sigma^2, estimated by the campaign (`dof` degrees of freedom) and by the pairs (n - 1):
     s2 = (dof 2 sigma^2 + (n - 1) s^2) / (dof + n - 1), t = d / sqrt(s2 / n). This keeps large
     gains whose pairs are not tight, and needs no spread of the candidate's own at n = 2.
- from 3 pairs, an own-pairs t below `futility_t` (a mean gain smaller than its standard error):
  discard as not promising; more pairs would rarely change that, and A/A candidates stop sooner.
- from 3 pairs, a gain too small to matter: when even the upper SMALL_BOUND confidence bound of the
  mean gain, d + t s / sqrt n, is below `min_delta`, no number of pairs could keep it (a nudge whose
  pairs agree on almost nothing would otherwise run to `max_pairs`).
- `max_pairs` pairs without a keep: discard ("better but not shown").
- otherwise: measure one more pair.

Every test at every look runs at level `false_keep` / L, where L counts the tests the procedure
can run over its looks (Bonferroni): whatever the looks have in common, a candidate that only
moves the random stream is kept with probability at most `false_keep`. Both tests are exact for
normal noise (test 2 under the A/A null, test 1 for any candidate); discarding early only removes
paths. `python -m bench policy` measures the actual rates, and the power.

Throughput never decides: tok/s is reported by the (untrusted) trainer.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import asdict, dataclass, field, fields

SMALL_BOUND = 0.9  # the confidence of the upper bound that calls a gain too small to matter (a discard: no false keep)


def _field(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Policy:
    """Every threshold of the keep rule; `arx-daemon start` has one option per field."""

    baseline_runs: int = _field(
        3,
        "measurements of the unchanged code (seeds 1..R) before the first judgment and after a machine change or merge",
    )
    min_delta: float = _field(0.001, "smallest mean val_bpb gain that can count as an improvement, whatever the noise")
    false_keep: float = _field(
        0.05,
        "the most a change that only moves the random stream may be kept, over all the looks at it: 1 in 20 "
        "(a bound: about 1.3% is measured)",
    )
    min_pairs: int = _field(2, "paired runs before a keep (one run cannot tell a gain from a wider spread)")
    max_pairs: int = _field(8, "paired runs of a candidate at most; not kept by then, it is discarded")
    futility_t: float = _field(
        1.0, "from 3 pairs, discard a candidate whose own-pairs t is below this (its gain is within one standard error)"
    )
    remeasure_every: int = _field(5, "re-measure the champion on a new seed after this many keeps (0: never)")
    cpu_tolerance: float = _field(
        0.15,
        "two paired runs are comparable when the CPU the machine left free differs by at most this fraction; else "
        "the run that got less is measured again (1: never)",
    )
    max_unfair: int = _field(3, "measurements again for unfair conditions before a candidate is discarded")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}

    def looks(self) -> int:
        """How many tests the procedure can run on one candidate: both tests at each look, own pairs from 3 pairs."""
        first = max(1, self.min_pairs)
        return sum((2 if n >= 3 else 1) for n in range(first, self.max_pairs + 1))

    def level(self) -> float:
        return self.false_keep / max(1, self.looks())


KEEP, DISCARD, CONTINUE = "keep", "discard", "continue"


@dataclass(frozen=True)
class Noise:
    sigma: float
    dof: int


@dataclass(frozen=True)
class Assessment:
    """The verdict after n pairs, with every number it rests on (stored as the decision's JSON)."""

    verdict: str  # keep, discard or continue
    reason: str
    n: int
    mean_gain: float
    sd: float | None  # of the paired gains (n >= 2)
    test: str | None = None  # the test that kept it: "own pairs" or "pooled"
    t_own: float | None = None
    t_pooled: float | None = None
    t_crit_own: float | None = None
    t_crit_pooled: float | None = None
    level: float | None = None  # the level of each test at each look
    band: float | None = None  # the smallest mean gain the pooled test would keep at this n

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


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


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, dof: int) -> float:
    """The t quantile at probability p > 0.5 (bisection on `t_cdf`; a verdict asks for the same few again and again)."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, dof) < p else (lo, mid)
    return (lo + hi) / 2


def assess(policy: Policy, gains: list[float], noise: Noise) -> Assessment:
    """The verdict on a candidate whose paired gains so far are `gains` (champion minus candidate, oldest first)."""
    n = len(gains)
    if not n:
        raise ValueError("need at least one paired gain")
    mean = statistics.fmean(gains)
    sd = statistics.stdev(gains) if n > 1 else None
    level = policy.level()
    numbers = {"n": n, "mean_gain": mean, "sd": sd, "level": level}
    t_own = crit_own = t_pool = crit_pool = band = None
    if n >= 3:
        crit_own = t_quantile(1 - level, n - 1)
        t_own = mean / (sd / math.sqrt(n)) if sd else (math.inf if mean > 0 else 0.0)
    dof = noise.dof + n - 1
    if dof > 0:
        s2 = (noise.dof * 2 * noise.sigma**2 + (n - 1) * (sd or 0.0) ** 2) / dof
        crit_pool = t_quantile(1 - level, dof)
        band = crit_pool * math.sqrt(s2 / n)
        t_pool = mean / math.sqrt(s2 / n) if s2 > 0 else (math.inf if mean > 0 else 0.0)
    numbers |= {"t_own": t_own, "t_pooled": t_pool, "t_crit_own": crit_own, "t_crit_pooled": crit_pool, "band": band}
    where = describe(numbers, noise)
    if mean <= 0:
        return Assessment(DISCARD, f"not better: {where}", **numbers)
    passed = [
        name
        for name, t, crit in (("own pairs", t_own, crit_own), ("pooled", t_pool, crit_pool))
        if t is not None and t > crit
    ]
    if passed and n >= policy.min_pairs and mean >= policy.min_delta:
        return Assessment(KEEP, f"improved ({passed[0]} test): {where}", test=passed[0], **numbers)
    if n >= policy.max_pairs:
        return Assessment(DISCARD, f"better but not shown after {n} pairs: {where}", **numbers)
    if t_own is not None and t_own < policy.futility_t:
        return Assessment(DISCARD, f"not promising (own-pairs t below {policy.futility_t:g}): {where}", **numbers)
    if n >= 3 and mean + t_quantile(SMALL_BOUND, n - 1) * sd / math.sqrt(n) < policy.min_delta:
        return Assessment(DISCARD, f"too small to matter (below min_delta {policy.min_delta:g}): {where}", **numbers)
    return Assessment(CONTINUE, f"better but not yet shown: {where}", **numbers)


def keep_band(policy: Policy, noise: Noise, n: int | None = None) -> float | None:
    """The smallest mean paired gain the pooled test keeps after n pairs (default `min_pairs`) whose spread matches
    the campaign's noise: what a change must beat on the seed noise alone (tight pairs can be kept below it)."""
    if noise.dof <= 0:
        return None
    n = max(n or policy.min_pairs, 1)
    dof = noise.dof + n - 1
    return max(policy.min_delta, t_quantile(1 - policy.level(), dof) * noise.sigma * math.sqrt(2 / n))


def from_dict(values: dict) -> Policy:
    """The policy a campaign recorded (`campaign.settings`), ignoring fields of other versions of the rule."""
    known = {f.name for f in fields(Policy)}
    return Policy(**{k: v for k, v in values.items() if k in known})


def describe(x: dict, noise: Noise) -> str:
    """The numbers of an assessment in one line (what `show` and the agent read)."""
    n = x["n"]
    parts = [f"mean paired gain {x['mean_gain']:+.4f} over {n} seed{'s' if n > 1 else ''}"]
    if x["sd"] is not None:
        parts.append(f"sd {x['sd']:.4f}")
    if x["t_own"] is not None:
        parts.append(f"own-pairs t {x['t_own']:.2f} vs {x['t_crit_own']:.2f} ({n - 1} dof)")
    if x["t_pooled"] is not None:
        parts.append(
            f"pooled t {x['t_pooled']:.2f} vs {x['t_crit_pooled']:.2f} ({noise.dof + n - 1} dof; sigma "
            f"{noise.sigma:.4f} on {noise.dof} dof)"
        )
    else:
        parts.append("seed noise not yet measured")
    parts.append(f"each test at level {x['level']:.2g}")
    return ", ".join(parts)
