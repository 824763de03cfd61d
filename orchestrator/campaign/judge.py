"""The judge: one candidate against the champion it was built on, one seed-paired measurement at a time.

It only decides which measurement comes next and when to stop; `Measurements` does the measuring
(real runs in the campaign loop, cached runs in the benchmarks, scripted values in the tests), and
`policy.assess` says what the pairs so far show. For each seed, in the champion's order and then
new ones:

1. measure the candidate on the seed;
2. find the champion's measurement on that seed under the same machine fingerprint (measuring it
   there if it has none);
3. fair conditions both ways: if the two runs had clearly different shares of the machine
   (`cpu_free`, measured by the daemon), the one that got less is set aside (never used again,
   champion measurements included) and measured again, up to `policy.max_unfair` times; when the
   same side got less twice in a row, the machine has changed since the other side's run, so that
   run is set aside instead and measured again beside it (else a machine that stays busier after
   the champion's runs would leave every candidate without a fair pair);
4. assess every pair under the latest pair's fingerprint: keep, discard, or go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .policy import CONTINUE, DISCARD, Assessment, Noise, Policy, assess

RULE = "sequential paired t (own pairs | pooled with the seed noise), Bonferroni over the looks"


@dataclass(frozen=True)
class Point:
    """One usable measurement, as the judge sees it."""

    run_id: int
    seq: int
    seed: int
    val_bpb: float
    fingerprint: str
    cpu_free: float | None = None
    node: str | None = None


@dataclass(frozen=True)
class Pair:
    champion: Point
    candidate: Point

    @property
    def gain(self) -> float:
        return self.champion.val_bpb - self.candidate.val_bpb


class Measurements(Protocol):
    """What the judge asks of the world."""

    def candidate(self, seed: int) -> Point | None:
        """A new measurement of the candidate on `seed` (None: it failed)."""

    def champion(self, seed: int, partner: Point, again: bool = False) -> Point | None:
        """The champion's usable measurement on `seed` under `partner`'s fingerprint, measured (near `partner`)
        if there is none or if `again`; None: it could not be measured."""

    def set_aside(self, point: Point, why: str) -> None:
        """Never use `point` again (it got less of the machine than its partner)."""

    def noise(self, fingerprint: str) -> Noise:
        """The campaign's seed-to-seed noise under a fingerprint."""

    def new_seed(self) -> int:
        """A seed nothing has used yet."""


@dataclass
class Verdict:
    decision: str  # keep or discard
    reason: str
    assessment: Assessment | None = None
    pairs: list[Pair] = field(default_factory=list)
    set_aside: list[tuple[Point, str]] = field(default_factory=list)
    noise: Noise | None = None

    @property
    def band(self) -> float | None:
        return self.assessment.band if self.assessment else None

    def record(self, policy: Policy) -> dict:
        """The decision as stored on the verdict row (`run.decision`): its test, its numbers, every run it used."""
        return {
            "rule": RULE,
            "decision": self.decision,
            "reason": self.reason,
            "policy": policy.to_dict(),
            "assessment": self.assessment.to_dict() if self.assessment else None,
            "noise": {"sigma": round(self.noise.sigma, 6), "dof": self.noise.dof} if self.noise else None,
            "pairs": [
                {
                    "seed": p.candidate.seed,
                    "fingerprint": p.candidate.fingerprint,
                    "champion_run": p.champion.run_id,
                    "champion_seq": p.champion.seq,
                    "champion": round(p.champion.val_bpb, 6),
                    "candidate_run": p.candidate.run_id,
                    "candidate_seq": p.candidate.seq,
                    "candidate": round(p.candidate.val_bpb, 6),
                    "gain": round(p.gain, 6),
                }
                for p in self.pairs
            ],
            "set_aside": [{"run": p.run_id, "seq": p.seq, "why": why} for p, why in self.set_aside],
        }

    @property
    def candidate_mean(self) -> float | None:
        """The candidate's val_bpb as the verdict judged it: its mean over the pairs it used."""
        return sum(p.candidate.val_bpb for p in self.pairs) / len(self.pairs) if self.pairs else None


def comparable(policy: Policy, a: Point, b: Point) -> bool:
    """Whether two runs had about the same share of the machine (unknown shares count as comparable)."""
    if a.cpu_free is None or b.cpu_free is None or policy.cpu_tolerance >= 1:
        return True
    low, high = sorted((a.cpu_free, b.cpu_free))
    return high <= 0 or low >= (1 - policy.cpu_tolerance) * high


def judge(
    policy: Policy,
    seeds: Iterable[int],
    m: Measurements,
    rule: Callable[[Policy, list[float], Noise], Assessment] = assess,
) -> Verdict:
    """Measure and assess until a verdict; `seeds` are the champion's seeds in order (new ones follow). `rule` is
    the keep rule (the benchmarks replay an older one on the same measurements)."""
    pairs: list[Pair] = []
    aside: list[tuple[Point, str]] = []

    def order() -> Iterator[int]:
        yield from seeds
        while True:
            yield m.new_seed()

    for seed in order():
        x = m.candidate(seed)
        if x is None:
            why = "its measurement failed" if not pairs and not aside else "a re-run failed"
            return Verdict(DISCARD, f"{why} (seed {seed}); not kept", pairs=pairs, set_aside=aside)
        c = m.champion(seed, x)
        unfair = streak = 0
        behind = None  # the side that got less at the last unfair look
        while c is not None and not comparable(policy, c, x):
            if unfair == policy.max_unfair:
                return Verdict(
                    DISCARD,
                    f"no fair pair on seed {seed} after {unfair} measurements again (CPU left free: champion "
                    f"{c.cpu_free:.2f}, candidate {x.cpu_free:.2f}); not kept",
                    pairs=pairs,
                    set_aside=aside,
                )
            unfair += 1
            less, more = (x, c) if x.cpu_free < c.cpu_free else (c, x)
            side = "candidate" if less is x else "champion"
            streak, behind = (streak + 1 if side == behind else 1), side
            if streak >= 2:  # the same side got less twice: the machine changed since the other side's run
                loser = more
                why = (
                    f"got {more.cpu_free:.2f} of the machine, its partner less twice on seed {seed} (now "
                    f"{less.cpu_free:.2f}): the machine changed since, so it is measured again beside its partner"
                )
            else:
                loser = less
                why = (
                    f"got {less.cpu_free:.2f} of the machine against {more.cpu_free:.2f} for its partner on seed "
                    f"{seed}: measured again"
                )
            m.set_aside(loser, why)
            aside.append((loser, why))
            if loser is x:
                x = m.candidate(seed)
                if x is None:
                    return Verdict(DISCARD, f"a re-run failed (seed {seed}); not kept", pairs=pairs, set_aside=aside)
            else:
                c = m.champion(seed, x, again=True)
        if c is None:
            return Verdict(
                DISCARD, f"the champion could not be measured on seed {seed}; not kept", pairs=pairs, set_aside=aside
            )
        pairs.append(Pair(c, x))
        same = [p for p in pairs if p.candidate.fingerprint == x.fingerprint]  # never compared across machines
        noise = m.noise(x.fingerprint)
        a = rule(policy, [p.gain for p in same], noise)
        if a.verdict != CONTINUE:
            return Verdict(a.verdict, a.reason, a, same, aside, noise)
    raise AssertionError("unreachable: the seeds never end")
