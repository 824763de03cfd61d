"""The figures a person reads about a campaign, computed once from its runs for every place that shows them.

`status`, `runs`, `show`, `plot`, `export` and the dashboard all take their numbers from here, so a
figure means the same thing everywhere and a test can check each against a ledger built by hand:

- best: the champion and its estimate (`facts.estimate`: its mean val_bpb under the fingerprint it was
  last measured on), with the number of seeds behind it. Re-measuring the champion moves it.
- vs baseline: the sum of the mean paired gains the kept changes were judged on (each champion minus
  candidate, seed by seed, so the luck of a seed cancels). It changes only at a keep. Shown as the
  change in val_bpb (negative is better).
- drift: how far the champion's estimate has moved since it became champion (re-measures on new
  seeds, a machine change): best now minus its value when kept. Shown apart, never folded into
  vs baseline.
- the running best: a step line that starts at the baseline mean and steps down by each keep's paired
  gain at that keep's run, and nowhere else. Baselines and re-measures of the champion are
  measurements of the champion, never kept experiments.
- the noise warning: when the keep band after the most pairs a candidate gets is larger than any
  plausible gain, one sentence that says so and what to change (docs/guide.md, "Can anything be kept?").
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping

from .campaign import facts
from .campaign.policy import Noise, Policy, from_dict, keep_band
from .ledger.statuses import CHAMPION_KINDS, FAILED, IN_FLIGHT, VERDICT_KINDS, Kind, Status

PLAUSIBLE_SHARE = 0.05  # a single change that gains more than 5% of the champion's val_bpb is not plausible


class Row(dict):
    """A ledger row read by sqlite3: by key (`row["seq"]`) and by attribute (`row.seq`), as facts' functions read
    runs (the dict is its own attribute dictionary, so both are plain lookups). A column an older ledger lacks reads
    as None."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self

    def __getattr__(self, name: str):  # only for a name that is not a column
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def policy_of(campaign: Mapping) -> Policy:
    """The keep rule a campaign recorded at its start (`campaign.settings`), the defaults where it says nothing."""
    try:
        settings = json.loads(campaign.get("settings") or "{}")
    except ValueError:
        settings = {}
    policy = settings.get("policy") if isinstance(settings, dict) else None
    return from_dict(policy if isinstance(policy, dict) else {})


def noise_of(campaign: Mapping) -> Noise | None:
    sigma = campaign.get("noise_sigma")
    return Noise(sigma, campaign.get("noise_dof") or 0) if sigma is not None else None


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are there (None if none are)."""
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


CATEGORIES = ("kept", "discarded", "champion", "candidate", "set aside", "failed", "unscored")


def category(r: Row) -> str:
    """What a run is on a chart, exactly one of CATEGORIES: a kept or a discarded experiment (its verdict row), a
    measurement of the champion (baseline, re-baseline, re-measure: never a kept experiment), another measurement of
    a candidate (a paired re-run, a verdict row still waiting), a measurement set aside for unfair conditions, a
    failure, or a run without a score (rejected, interrupted, in flight)."""
    if r.status in FAILED:
        return "failed"
    if r.val_bpb is None or not math.isfinite(r.val_bpb):
        return "unscored"
    if r.contended:
        return "set aside"
    if r.kind in VERDICT_KINDS and r.status == Status.KEEP:
        return "kept"
    if r.kind in VERDICT_KINDS and r.status == Status.DISCARD:
        return "discarded"
    if r.kind in CHAMPION_KINDS:
        return "champion"
    return "candidate"


def kept(runs: Iterable[Row]) -> list[Row]:
    """Kept candidates (experiments, or rebases under --parallel), in run order: the chain of champions."""
    return sorted((r for r in runs if r.kind in VERDICT_KINDS and r.status == Status.KEEP), key=lambda r: r.seq)


def baseline(runs: Iterable[Row]) -> tuple[float | None, int]:
    """The unchanged code at campaign start: the mean of its usable baseline runs, and how many."""
    values = [r.val_bpb for r in runs if r.kind == Kind.BASELINE and facts.usable(r)]
    return (statistics.fmean(values), len(values)) if values else (None, 0)


def steps(runs: list[Row]) -> list[tuple[int, float]]:
    """The running best as (run seq, level): the baseline mean from the first baseline, then one step at each keep,
    down by its mean paired gain (a keep recorded before verdicts stored their pairs steps to its own val_bpb)."""
    base, _ = baseline(runs)
    if base is None:
        return []
    first = min(r.seq for r in runs if r.kind == Kind.BASELINE and facts.usable(r))
    out, level = [(first, base)], base
    for r in kept(runs):
        j = facts.judged(r)
        if j is not None:
            level -= j.gain
        elif r.val_bpb is not None:
            level = r.val_bpb
        else:
            continue
        out.append((r.seq, level))
    return out


def levels(line: list[tuple[int, float]], seqs: list[int]) -> list[float | None]:
    """The running best at each of `seqs` (ascending), None before the first baseline: one walk along both."""
    out, i, level = [], 0, None
    for seq in seqs:
        while i < len(line) and line[i][0] <= seq:
            level = line[i][1]
            i += 1
        out.append(level)
    return out


def champion(campaign: Mapping, runs: list[Row]) -> Row | None:
    best = campaign.get("best_run_id")
    return next((r for r in runs if r.id == best), None) if best is not None else None


def at_keep(champ: Row, runs: list[Row]) -> float | None:
    """The champion's value when it became champion: the mean its verdict judged (a kept candidate), else the mean of
    the measurements that made it champion (the baselines of the unchanged code, or a merge's re-baselines)."""
    value = facts.judged_value(champ)
    if value is not None:
        return value
    fp = facts.reference_fp(runs, champ.commit)
    made = [
        r.val_bpb
        for r in runs
        if r.commit == champ.commit
        and r.kind in (Kind.BASELINE, Kind.REBASELINE)
        and facts.usable(r)
        and r.fingerprint_hash == fp
    ]
    return statistics.fmean(made) if made else champ.val_bpb


def summary(
    campaign: Mapping,
    runs: list[Row],
    similar_gains: Callable[[], Iterable[float]] = tuple,
    counts: dict[str, int] | None = None,
) -> dict:
    """Every figure of one campaign that status and the dashboard show (module docstring); `runs` in seq order (all
    of them, or at least its baselines, keeps, unfinished runs and the champion's measurements, with `counts` the
    number of runs by status), `similar_gains` the kept paired gains of campaigns of the same program and dataset
    (for the noise warning, asked only when the noise comes near a plausible gain)."""
    if counts is None:
        counts = {}
        for r in runs:
            counts[r.status] = counts.get(r.status, 0) + 1
    champ = champion(campaign, runs)
    head = champ.commit if champ and champ.commit else campaign.get("base_commit")
    fp = facts.reference_fp(runs, head) if head else None
    if fp is not None:
        measured, estimate = facts.measurements(runs, head, fp), facts.estimate(runs, head)
    else:  # a ledger from before fingerprints (v4): every usable measurement of the champion
        measured = [r for r in runs if head and r.commit == head and facts.usable(r)]
        estimate = (statistics.fmean(r.val_bpb for r in measured), len(measured)) if measured else None
    tests = [r.test_bpb for r in measured if r.test_bpb is not None]
    base, base_n = baseline(runs)
    line = steps(runs)
    best = estimate[0] if estimate else None
    when_kept = at_keep(champ, runs) if champ else None
    keeps = kept(runs)
    policy, noise = policy_of(campaign), noise_of(campaign)
    band = keep_band(policy, noise) if noise else None
    return {
        "runs": counts,
        "total_runs": sum(counts.values()),
        "kept": len(keeps),
        "best_val_bpb": best,
        "best_seeds": estimate[1] if estimate else 0,
        "best_test_bpb": statistics.fmean(tests) if tests else None,
        "best_run": champ.seq if champ else None,
        "best_kind": champ.kind if champ else None,
        "best_description": champ.description if champ else None,
        "best_when_kept": when_kept,
        "drift": best - when_kept if best is not None and when_kept is not None else None,
        "baseline_val_bpb": base,
        "baseline_seeds": base_n,
        "improvement": base - line[-1][1] if line else None,  # positive: lower val_bpb than the baseline
        "last_keep_at": max((r.ended_at for r in keeps if r.ended_at), default=None),
        "steps": line,
        "in_flight": [r for r in runs if r.status in IN_FLIGHT],
        "proposing": [r for r in runs if r.status == Status.PROPOSED],
        "waiting": [r for r in runs if r.status == Status.WAITING],
        "noise_sigma": noise.sigma if noise else None,
        "noise_dof": noise.dof if noise else None,
        "band": band,
        "warning": noise_warning(
            f"{campaign.get('program')}/{campaign.get('tag')}", policy, noise, best, similar_gains
        ),
    }


def plausible_gain(champion_value: float, gains: Iterable[float]) -> tuple[float, str]:
    """The largest gain one change can be expected to make, and how it was decided: PLAUSIBLE_SHARE of the champion's
    val_bpb, or the largest paired gain kept so far in campaigns of the same program and dataset if that is larger."""
    share = PLAUSIBLE_SHARE * champion_value
    largest = max(gains, default=0.0)
    if largest > share:
        return largest, f"the largest gain kept in campaigns like it, {largest:.4f}"
    return share, f"{PLAUSIBLE_SHARE:.0%} of the champion's {champion_value:.4f}"


def noise_warning(
    name: str,
    policy: Policy,
    noise: Noise | None,
    champion_value: float | None,
    gains: Callable[[], Iterable[float]] = tuple,
) -> str | None:
    """One sentence when the band after `max_pairs` pairs (the smallest gain the seed noise lets a candidate show) is
    larger than any plausible gain; None when a plausible change can still be kept, or the noise is not known yet.
    `gains`: the paired gains kept in campaigns like it (read only when the band passes PLAUSIBLE_SHARE)."""
    if noise is None or noise.dof <= 0 or champion_value is None:
        return None
    band = keep_band(policy, noise, policy.max_pairs)
    if band is None or band <= PLAUSIBLE_SHARE * champion_value:
        return None
    plausible, how = plausible_gain(champion_value, gains())
    if band <= plausible:
        return None
    return (
        f"{name}: the seed noise (sigma {noise.sigma:.4f}) needs a gain of {band:.4f} bpb even after "
        f"{policy.max_pairs} pairs, more than any plausible change ({how}), so nothing is likely to be kept: "
        "lengthen --budget, take load off the machine, or measure more seeds (--max-pairs, --baseline-runs)."
    )


def run_note(r: Row, runs: list[Row]) -> str:
    """What a run is, in a few words, where its status alone would mislead: a candidate waiting for its verdict, a
    measurement set aside, a measurement of the champion, a paired re-run (`runs`: its campaign's, to name others)."""
    of = next((x for x in runs if x.id == r.rerun_of), None) if r.rerun_of else None
    if r.contended:
        return "set aside: got less of the machine than its partner, measured again (never used)"
    if r.status == Status.WAITING:
        reruns = sum(1 for x in runs if x.rerun_of == r.id and x.kind == Kind.RERUN and x.val_bpb is not None)
        return f"measured; waiting for its verdict ({1 + reruns} of its runs measured so far)"
    if r.kind in CHAMPION_KINDS and r.status == Status.MEASURED:
        return "a measurement of the champion, not a kept experiment"
    if r.kind == Kind.RERUN and r.status == Status.MEASURED:
        return f"a paired re-run of #{of.seq}" if of else "a paired re-run of its candidate"
    return ""
