"""A candidate judged inside a campaign: the judge's `Measurements` as rows of the ledger.

Each measurement the judge asks for is a run with its own row: the candidate's first is its
experiment row (which then waits for the verdict), later ones are `rerun` rows, and the champion's
are `remeasure` rows of the commit the candidate was built on. Measurements set aside for unfair
conditions are flagged `contended` and never used again, the champion's included.
"""

from __future__ import annotations

import json
import threading

from ..ledger.ledger import Run
from ..ledger.statuses import FAILED, Kind, Status
from . import facts
from .judge import Point, Verdict, judge
from .measuring import Measurer
from .policy import Noise


def point(r: Run) -> Point:
    return Point(r.id, r.seq, r.seed, r.val_bpb, r.fingerprint_hash, r.cpu_free, r.node)


class ChampionLocks:
    """One champion measurement per (machine class, seed) at a time, however many judges want it (--parallel)."""

    def __init__(self):
        self.guard = threading.Lock()
        self.locks: dict[str, threading.Lock] = {}

    def __call__(self, fp_hash: str) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(fp_hash, threading.Lock())


class CampaignTrial:
    """The measurements of one candidate (`run`, committed) against the champion it was built on."""

    def __init__(self, measurer: Measurer, run: Run, locks: ChampionLocks):
        self.m, self.rec, self.run, self.locks = measurer, measurer.rec, run, locks
        self.parent = run.parent_commit
        self.rows: list[Run] = []  # the candidate's measurements
        self.made: list[Run] = []  # every row this judgment created (its re-runs, the champion's re-measures)
        self.node: str | None = None  # where its first run landed: every later run of the pair stays in that class

    def candidate(self, seed: int) -> Point | None:
        run = self.run
        if self.rows:
            row = self.rec.new_run(
                Kind.RERUN, f"re-run of #{run.seq} on seed {seed}: {run.description}", run.commit, run.id
            )
            self.made.append(row)
        else:
            row = run
        self.rows.append(row)
        if not self.m.measure_on(row, seed, near=self.node):
            return None
        self.node = self.node or row.node
        if row is run:
            row.status = Status.WAITING
            self.rec.save(row)
        else:
            self.rec.finish(
                row, Status.MEASURED, f"paired run of #{run.seq} on seed {seed}; its verdict is on #{run.seq}"
            )
        return point(row)

    def champion(self, seed: int, partner: Point, again: bool = False) -> Point | None:
        with self.locks(partner.fingerprint):  # another judge may have measured it meanwhile
            if not again:
                known = facts.on_seed(facts.measurements(self.rec.runs(), self.parent, partner.fingerprint), seed)
                if known:
                    return point(known)
            why = f"to pair with #{self.run.seq}" + (" under fair conditions" if again else "")
            row = remeasure(self.m, self.parent, seed, why, near=partner.node, made=self.made)
        return point(row) if row else None

    def set_aside(self, p: Point, why: str) -> None:
        row = next(r for r in [*self.rows, *self.rec.runs()] if r.id == p.run_id)
        row.contended = True
        self.rec.save(row)
        self.rec.event("unfair", f"#{row.seq} set aside: it {why}", row)

    def noise(self, fingerprint: str) -> Noise:
        return refresh_noise(self.m, fingerprint)

    def new_seed(self) -> int:
        return self.rec.new_seed()


def remeasure(
    m: Measurer, commit: str, seed: int, why: str, near: str | None = None, made: list[Run] | None = None
) -> Run | None:
    """One more measurement of the champion `commit` (current or earlier) on `seed`; None if it yielded no score.
    `made` is told of the row before it is measured (a judge thread's rows are its own to finish)."""
    champ = m.rec.kept_run(commit)
    row = m.rec.new_run(
        Kind.REMEASURE,
        f"re-measure champion #{champ.seq} on seed {seed} ({why}): {champ.description}",
        commit=commit,
        rerun_of=champ.id,
    )
    if made is not None:
        made.append(row)
    if not m.measure_on(row, seed, near):
        return None
    m.rec.finish(row, Status.MEASURED, f"champion re-measured on seed {seed} ({why}): val_bpb {row.val_bpb:.4f}")
    refresh_noise(m, row.fingerprint_hash)
    return row


def refresh_noise(m: Measurer, fingerprint: str) -> Noise:
    """The campaign's seed noise under a fingerprint, written on the campaign row for `status`."""
    noise = facts.noise(m.rec.runs(), fingerprint)
    m.rec.update(noise_sigma=noise.sigma, noise_dof=noise.dof)
    return noise


def judge_candidate(trial: CampaignTrial) -> Verdict:
    """Judge a committed candidate on the seeds of the champion it was built on (`run.parent_commit`); the
    verdict's record goes on its row, its re-runs are finished here, its own row is left to the caller."""
    m, run = trial.m, trial.run
    runs = m.rec.runs()
    fp = facts.reference_fp(runs, run.parent_commit)
    seeds = facts.seeds_of(facts.measurements(runs, run.parent_commit, fp)) if fp else []
    v = judge(m.s.policy, seeds, trial)
    if run.status not in FAILED:  # a candidate whose own run failed has its status, and no decision to record
        run.band, run.decision = v.band, json.dumps(v.record(m.s.policy))
        m.rec.save(run)
    return v
