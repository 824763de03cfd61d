"""The campaign loop (DESIGN.md §2): propose, check, commit, train, evaluate, decide, record.

Every transition is committed to the ledger before the next step starts, so a `kill -9` at any
moment loses at most the run in flight; `recover` marks it `interrupted`, reaps its processes and
resets the worktree to the branch head, which only ever holds kept commits.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from agents.base import (
    Abandoned,
    Agent,
    AgentPaused,
    CostLimitReached,
    NoEdits,
    ProposalContext,
    Refused,
    TransientAgentError,
)

from . import corpus, executor, experiment, fingerprint, ledger, policy, runner, slots, worktree
from .ledger import Campaign, LlmCall, Run, utcnow
from .programs import ACTIVE_RUN_STATUSES, LOCKED, PROGRAMS, ROOT, StatePaths, out_of_scope

HEARTBEAT_S = 5.0
BACKOFF_START_S = 5.0
BACKOFF_MAX_S = 300.0
MAX_BASELINE_FAILURES = 3
BASELINE_KINDS = ("baseline", "rebaseline")  # measurements that (re-)establish the champion
CANDIDATE_KINDS = ("experiment", "rerun", "rebase")  # measurements of a candidate under judgment
BASELINE_NOTES = ("baseline", "re-baselining")  # campaign notes set while the champion is being (re-)measured
MAX_CONSECUTIVE_ERRORS = 5
MAX_FAILED_PROPOSALS = 5  # abandoned, refused or empty proposals in a row before the campaign pauses
GAP_OVERHEAD_S = 60.0  # start-up, evaluation and bookkeeping between two proposals, until runs measure it
GAP_RUNS = 5  # measured runs the expected gap between proposals is taken from
FAILURE_TAIL_LINES = 20
MIN_ALLOWANCE_S = 10.0  # every second of it is a second a hostile trainer may train past its budget
ALLOWANCE_FACTOR = 2.0


@dataclass
class Settings:
    state_dir: Path
    program: str
    tag: str
    dataset: str = "stdlib"
    budget_s: float = 300.0
    max_experiments: int | None = None
    max_cost_usd: float | None = None
    slots: int = 1
    seed: int = 0  # runs use seeds from seed + 1 up (baselines seed+1..seed+R); also seeds the offline agent
    startup_grace_s: float = 180.0
    stall_s: float = 120.0
    memory_mb: float | None = None
    eval_timeout_s: float = 600.0
    unsafe_no_sandbox: bool = False
    policy: policy.Policy = field(default_factory=policy.Policy)
    executor: str = "local"  # where measurements run: local (subprocesses here) or ray (slots of a Ray cluster)
    ray_address: str = "local"  # the Ray cluster (host:port), or local: start one on this machine
    parallel: int = 1  # candidates in flight at once (more than 1 needs the ray executor)
    slot_resources: dict = field(default_factory=lambda: {"CPU": 1})  # what one ray slot holds exclusively
    repo: Path = ROOT  # the repository campaigns branch from (tests use a scratch copy)

    def limits_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "budget_s",
                "max_experiments",
                "max_cost_usd",
                "slots",
                "seed",
                "startup_grace_s",
                "stall_s",
                "memory_mb",
                "eval_timeout_s",
                "unsafe_no_sandbox",
                "executor",
                "ray_address",
                "parallel",
                "slot_resources",
            )
        } | {"policy": self.policy.to_dict()}


class StopCampaign(Exception):
    """Ends the loop cleanly with a reason (a limit reached, a stop asked for)."""


class ClusterLost(AgentPaused):
    """The machines measuring runs went away (twice for one run): pause with the reason in `status`."""


def make_executor(s: Settings) -> executor.Executor:
    """The executor the settings ask for; Ray is imported only here, and only for `ray`."""
    if s.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(s.ray_address, s.slot_resources, s.parallel)
    return executor.LocalExecutor()


class CampaignLoop:
    def __init__(self, settings: Settings, campaign: Campaign, agent: Agent):
        self.s = settings
        self.paths = StatePaths(settings.state_dir, settings.program, settings.tag)
        self.program = PROGRAMS[settings.program]
        self.campaign = campaign
        self.agent = agent
        self.repo = worktree.open_repo(settings.repo)
        self.wt = worktree.ensure_worktree(self.repo, Path(campaign.worktree), campaign.branch, campaign.base_commit)
        self.stop_requested = threading.Event()
        self.db = self.paths.db
        self.failed_proposals = 0  # in a row; a restart (a person acted) starts the count again
        self.refused_merges: set[str] = set()  # sibling commits that could not be merged (conflict, out of scope)
        self.executor = make_executor(settings)
        self.rows_lock = threading.RLock()  # new rows and seeds: parallel measurements must not share a seq or seed
        self.class_locks: dict[str, threading.Lock] = {}  # one champion measurement per class, however many judges
        self.reserved_seeds: set[int] = set()

    # ------------------------------------------------------------------ ledger helpers
    def event(self, kind: str, message: str, run: Run | None = None) -> None:
        ledger.log_event(self.db, self.campaign.id, kind, message, run.id if run else None)
        print(f"[{time.strftime('%H:%M:%S')}] {kind}: {message}", flush=True)

    def save(self, *rows) -> None:
        ledger.save(self.db, *rows)

    def runs(self) -> list[Run]:
        return ledger.campaign_runs(self.db, self.campaign.id)

    def update_campaign(self, **fields) -> None:
        with ledger.session(self.db) as s:
            row = s.get(Campaign, self.campaign.id)
            for k, v in fields.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()
            s.refresh(row)
            self.campaign = row

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> str:
        """Run until a stop condition; returns the stop reason."""
        self.update_campaign(status="running", pid=os.getpid(), heartbeat_at=utcnow(), stop_reason=None, note=None)
        beat = threading.Thread(target=self.heartbeat, daemon=True)
        beat.start()
        self.recover("daemon restarted")
        reason = "stopped"
        errors = 0
        try:
            while True:
                if self.stop_requested.is_set():
                    raise StopCampaign("stopped by request")
                try:
                    self.step()
                    errors = 0
                except (StopCampaign, AgentPaused):
                    raise
                except Exception as e:  # a bug or a broken machine must not end the night silently
                    errors += 1
                    self.event("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
                    self.recover(f"daemon error {type(e).__name__}")
                    if errors >= MAX_CONSECUTIVE_ERRORS:
                        raise StopCampaign(f"{errors} unexpected errors in a row; last: {type(e).__name__}: {e}") from e
                    if self.stop_requested.wait(min(BACKOFF_MAX_S, BACKOFF_START_S * 2**errors)):
                        raise StopCampaign("stopped by request") from e
        except StopCampaign as e:
            reason = str(e)
        except AgentPaused as e:
            self.update_campaign(status="paused", stop_reason=str(e), note=str(e))
            self.event("paused", str(e))
            return str(e)
        finally:
            self.stop_requested.set()
            self.wind_down()
        self.update_campaign(status="stopped", stop_reason=reason, note=None)
        self.event("stopped", reason)
        return reason

    def wind_down(self) -> None:
        """After the loop: let go of the executor's machines."""
        self.executor.close()

    def heartbeat(self) -> None:
        while not self.stop_requested.wait(HEARTBEAT_S):
            try:
                with ledger.session(self.db) as s:
                    row = s.get(Campaign, self.campaign.id)
                    row.heartbeat_at = utcnow()
                    s.add(row)
                    s.commit()
            except Exception as e:  # a busy database must not kill the heartbeat thread
                print(f"heartbeat: {e}", file=sys.stderr, flush=True)

    def recover(self, why: str) -> None:
        """Runs left mid-flight (a dead daemon, an unexpected error) become `interrupted`; their
        processes are reaped and the worktree goes back to the branch head."""
        for run in self.runs():
            if run.status in ACTIVE_RUN_STATUSES:
                if run.pid and is_our_child(run.pid):
                    runner.kill_group(run.pid)
                was = run.status
                run.status, run.ended_at = "interrupted", utcnow()
                run.decision_reason = f"interrupted while {was} ({why})"
                self.save(run)
                self.event("recovered", f"run #{run.seq} was {was}; marked interrupted", run)
        worktree.reset_hard(self.wt, self.kept_head())

    # ------------------------------------------------------------------ state derived from the ledger
    def champion(self) -> Run | None:
        if self.campaign.best_run_id is None:
            return None
        with ledger.session(self.db) as s:
            return s.get(Run, self.campaign.best_run_id)

    def kept_head(self) -> str:
        champ = self.champion()
        return champ.commit if champ else self.campaign.base_commit

    def measurements(self, commit: str, fp_hash: str, runs: list[Run] | None = None) -> list[Run]:
        """Usable measurements of `commit` under one machine fingerprint, oldest first."""
        return [
            r
            for r in (self.runs() if runs is None else runs)
            if r.commit == commit and r.fingerprint_hash == fp_hash and usable(r)
        ]

    def reference_fp(self, runs: list[Run] | None = None) -> str | None:
        """The fingerprint the champion was last measured under (None before its first measurement)."""
        head = self.kept_head()
        mine = [r for r in (self.runs() if runs is None else runs) if r.commit == head and usable(r)]
        return mine[-1].fingerprint_hash if mine else None

    def champion_stats(self) -> float | None:
        """The champion's mean val_bpb under the fingerprint it was last measured under."""
        runs = self.runs()
        fp = self.reference_fp(runs)
        vals = [r.val_bpb for r in self.measurements(self.kept_head(), fp, runs)] if fp else []
        return statistics.fmean(vals) if vals else None

    def noise(self, fp_hash: str) -> policy.Noise:
        """Seed-to-seed noise: val_bpb pooled over every commit measured on several seeds under `fp_hash`."""
        groups: dict[str, list[float]] = {}
        for r in self.runs():
            if r.fingerprint_hash == fp_hash and usable(r):
                groups.setdefault(r.commit, []).append(r.val_bpb)
        return policy.pooled(list(groups.values()))

    def refresh_sigma(self, fp_hash: str) -> policy.Noise:
        noise = self.noise(fp_hash)
        self.update_campaign(noise_sigma=noise.sigma, noise_dof=noise.dof)
        return noise

    def next_seq(self) -> int:
        runs = self.runs()
        return max((r.seq for r in runs), default=0) + 1

    def new_seed(self) -> int:
        """A seed no run of this campaign has used or been promised (seeds count up from --seed + 1)."""
        with self.rows_lock:
            used = {r.seed for r in self.runs() if r.seed is not None} | self.reserved_seeds
            seed = max(used, default=self.s.seed) + 1
            self.reserved_seeds.add(seed)
            return seed

    def fingerprint_now(self) -> tuple[dict, str]:
        fp = self.executor.fingerprint()
        return fp, fingerprint.digest(fp)

    def hardware(self) -> dict:
        from trainer import blas  # no MLX import: the orchestrator never loads MLX

        chosen = blas.describe()
        info = {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "blas": chosen["library"],
            "blas_source": " ".join(filter(None, (chosen["source"], chosen["version"]))),
        }
        champ = self.champion()
        if champ and champ.run_dir and (Path(champ.run_dir) / "train.json").exists():
            info["backend"] = json.loads((Path(champ.run_dir) / "train.json").read_text()).get("backend")
            info["tok_per_sec"] = champ.tok_per_sec
        return info

    # ------------------------------------------------------------------ one step of the loop
    def step(self) -> None:
        self.merge_sibling()
        fp, fp_hash = self.fingerprint_now()
        if self.rebaseline_step(fp, fp_hash):
            return
        limit = self.limit_reached()
        if limit:
            raise StopCampaign(limit)
        if self.remeasure_due():
            self.remeasure_champion(self.new_seed(), f"every {self.s.policy.remeasure_every} keeps")
            return
        self.experiment(ledger.campaign_cost(self.db, self.campaign.id))

    def limit_reached(self) -> str | None:
        """Why no further experiment may start (--max-experiments, --max-cost-usd), or None."""
        experiments = [r for r in self.runs() if r.kind == "experiment"]
        if self.s.max_experiments is not None and len(experiments) >= self.s.max_experiments:
            return f"reached --max-experiments {self.s.max_experiments}"
        cost = ledger.campaign_cost(self.db, self.campaign.id)
        if self.s.max_cost_usd is not None and cost >= self.s.max_cost_usd:
            return f"reached --max-cost-usd {self.s.max_cost_usd} (spent ${cost:.2f})"
        return None

    def remeasure_due(self) -> bool:
        """The champion is re-measured every `remeasure_every` keeps."""
        runs = self.runs()
        last_remeasure = max((r.id for r in runs if r.kind == "remeasure"), default=0)
        recent = [
            r for r in runs if r.kind in ("experiment", "rebase") and r.status == "keep" and r.id > last_remeasure
        ]
        return bool(self.s.policy.remeasure_every) and len(recent) >= self.s.policy.remeasure_every

    def new_run(self, kind: str, description: str, commit: str | None = None, rerun_of: int | None = None) -> Run:
        with self.rows_lock:
            return self._new_run(kind, description, commit, rerun_of)

    def _new_run(self, kind: str, description: str, commit: str | None, rerun_of: int | None) -> Run:
        seq = self.next_seq()
        run = Run(
            campaign_id=self.campaign.id,
            seq=seq,
            kind=kind,
            parent_commit=self.kept_head(),
            commit=commit,
            description=description,
            rerun_of=rerun_of,
            status="proposed",
            hardware=json.dumps(self.hardware()),
            run_dir=str(self.paths.run_dir(seq)),
            sibling_commit=self.campaign.sibling_commit,
        )
        self.save(run)
        return run

    def finish(self, run: Run, status: str, reason: str, error: str | None = None) -> None:
        run.status, run.decision_reason, run.ended_at = status, reason, utcnow()
        if error is not None:
            run.error = error
        run.total_seconds = (run.ended_at - run.started_at).total_seconds()
        self.save(run)
        self.event(status, f"#{run.seq} {run.description}: {reason}", run)
        if status != "keep":
            self.drop_checkpoint(run)

    def drop_checkpoint(self, run: Run) -> None:
        """Checkpoints and compiled kernels of runs that were not kept are deleted; logs and json stay."""
        if run.run_dir:
            (Path(run.run_dir) / "model.safetensors").unlink(missing_ok=True)
            shutil.rmtree(Path(run.run_dir) / "tmp", ignore_errors=True)

    def measure_on(self, run: Run, seed: int, near: str | None = None) -> bool:
        """Measure `run`'s commit on `seed`, stamped with the machine fingerprint; candidate runs that
        got clearly less CPU than the champion's runs are flagged `contended` (re-run, never judged)."""
        fp, fp_hash = self.fingerprint_now()
        run.seed, run.fingerprint, run.fingerprint_hash = seed, json.dumps(fp, sort_keys=True), fp_hash
        self.save(run)
        self.checkout(run.commit)
        if not self.measure(run, near):
            return False
        judged_against = run.parent_commit if run.kind in CANDIDATE_KINDS else self.kept_head()
        shares = [
            r.cpu_share for r in self.measurements(judged_against, run.fingerprint_hash) if r.cpu_share is not None
        ]
        floor = (
            min(shares) * (1 - self.s.policy.cpu_share_drop) if shares else None
        )  # below the champion's worst-served run
        if run.kind in CANDIDATE_KINDS and floor is not None and run.cpu_share is not None and run.cpu_share < floor:
            run.contended = True
            self.save(run)
            self.event(
                "contended",
                f"#{run.seq} got a CPU share of {run.cpu_share:.2f}, below {floor:.2f} (the lowest of the champion's "
                f"runs, {min(shares):.2f}, less {self.s.policy.cpu_share_drop:.0%}): re-run, not judged",
                run,
            )
        return True

    def checkout(self, commit: str) -> None:
        """Put `commit` in the worktree for the executor (the parallel loop ships commits instead)."""
        if worktree.head(self.wt) != commit:
            worktree.reset_hard(self.wt, commit)

    # ------------------------------------------------------------------ the champion's measurements
    def rebaseline_step(self, fp: dict, fp_hash: str) -> bool:
        """Measure the champion once more if it is not yet known well enough under this fingerprint.

        Needed at campaign start (the baselines), after a merge from the sibling program (a new
        commit), and whenever the machine fingerprint differs from the one the champion was
        measured under: runs are never compared across fingerprints. A champion kept by an
        experiment under this fingerprint is known on the seeds it was measured on. Returns
        whether it measured (or tried to).
        """
        runs = self.runs()
        head, need = self.kept_head(), self.s.policy.baseline_runs
        here = [r for r in runs if r.commit == head and r.fingerprint_hash == fp_hash]
        known = [r for r in here if usable(r)]
        if len(known) >= need or any(r.kind in CANDIDATE_KINDS for r in known):
            if self.campaign.note and self.campaign.note.startswith(BASELINE_NOTES):
                self.update_campaign(note=None)
            return False
        failures = [r for r in here if r.kind in BASELINE_KINDS and r.status in ("crash", "timeout", "invalid")]
        if len(failures) >= MAX_BASELINE_FAILURES:
            raise StopCampaign(
                f"the champion failed {MAX_BASELINE_FAILURES} times under this machine: "
                f"{failures[-1].error or failures[-1].decision_reason}"
            )
        before = [r for r in runs if r.commit == head and usable(r)]
        first = not any(r.kind != "baseline" for r in runs)
        if first:
            why, kind = "baseline (unchanged code)", "baseline"
        elif before:  # measured, but under another fingerprint
            old = json.loads(before[-1].fingerprint or "{}")
            why, kind = f"machine changed ({fingerprint.changes(old, fp)})", "rebaseline"
            if not known:
                self.event(
                    "fingerprint",
                    f"fingerprint {before[-1].fingerprint_hash} -> {fp_hash}: {why}; re-measuring the champion "
                    "before judging anything",
                )
        else:
            why, kind = (
                f"new champion commit {head[:10]} ({self.champion().description if self.champion() else 'base'})",
                "rebaseline",
            )
        n = len(known) + 1
        self.update_campaign(note=f"re-baselining {n}/{need}: {why}" if not first else f"baseline {n}/{need}")
        seeds = [r.seed for r in before if r.seed is not None] + list(range(self.s.seed + 1, self.s.seed + need + 1))
        seed = next((s for s in dict.fromkeys(seeds) if s not in {r.seed for r in known}), None) or self.new_seed()
        champ = self.champion()
        anchor = next(
            (r for r in runs if r.commit == head and r.kind in BASELINE_KINDS and r.status == "proposed"), None
        )
        run = anchor or self.new_run(
            kind, f"{kind} {n}/{need} on seed {seed}: {why}", commit=head, rerun_of=champ.id if champ else None
        )
        if self.measure_on(run, seed):
            if self.campaign.best_run_id is None:
                self.update_campaign(best_run_id=run.id)
            self.finish(run, "keep", f"{kind} {n}/{need} (seed {seed}): val_bpb {run.val_bpb:.4f}; {why}")
            noise = self.refresh_sigma(fp_hash)
            if n == need:
                self.event(
                    kind,
                    f"champion {self.champion_stats():.4f} on {need} seeds, noise sigma {noise.sigma:.4f} "
                    f"({noise.dof} dof)",
                )
        return True

    def remeasure_champion(self, seed: int, why: str, commit: str | None = None, near: str | None = None) -> bool:
        """One more measurement of the champion (or of the earlier champion `commit`, which a candidate in
        flight was built on) on `seed`, on the node `near` names if the executor can; False if it yielded no
        usable score."""
        champ = self.champion() if commit in (None, self.kept_head()) else self.kept_run(commit)
        run = self.new_run(
            "remeasure",
            f"re-measure champion #{champ.seq} on seed {seed} ({why}): {champ.description}",
            commit=champ.commit,
            rerun_of=champ.id,
        )
        if not self.measure_on(run, seed, near):
            return False
        self.finish(run, "keep", f"champion re-measured on seed {seed} ({why}): val_bpb {run.val_bpb:.4f}")
        self.refresh_sigma(run.fingerprint_hash)
        return True

    def class_lock(self, fp_hash: str) -> threading.Lock:
        with self.rows_lock:
            return self.class_locks.setdefault(fp_hash, threading.Lock())

    def kept_run(self, commit: str) -> Run:
        """The run that made `commit` the champion (a baseline, a kept candidate or a merge)."""
        return next(r for r in self.runs() if r.commit == commit and r.status == "keep")

    def pair_seed(self, k: int, fp_hash: str, champion: str | None = None, near: str | None = None) -> int | None:
        """The champion's k-th seed under this fingerprint, measuring it on a new seed if it has fewer."""
        champion = champion or self.kept_head()
        seeds = list(dict.fromkeys(r.seed for r in self.measurements(champion, fp_hash)))
        if k < len(seeds):
            return seeds[k]
        seed = self.new_seed()
        return seed if self.remeasure_champion(seed, "to pair with a candidate", champion, near) else None

    # ------------------------------------------------------------------ the sibling program
    def merge_sibling(self) -> None:
        """Bring the sibling program's (same tag) latest kept commit into this branch; the champion is
        then the merge, and it is re-baselined before the next judgment (DESIGN.md §2)."""
        other = next(p for p in PROGRAMS if p != self.program.name)
        sib = ledger.find_campaign(self.db, other, self.campaign.tag)
        if sib is None or sib.best_run_id is None:
            return
        with ledger.session(self.db) as s:
            sib_champ = s.get(Run, sib.best_run_id)
        theirs, head = sib_champ.commit, self.kept_head()
        if not theirs or theirs in self.refused_merges or self.repo.is_ancestor(theirs, head):
            return
        worktree.reset_hard(self.wt, head)
        try:
            merged = worktree.merge(
                self.wt, theirs, f"merge {other}/{self.campaign.tag} #{sib_champ.seq}: {sib_champ.description}"
            )
        except worktree.GitError as e:
            self.refused_merges.add(theirs)
            self.event("merge", f"could not merge {other}/{self.campaign.tag} {theirs[:10]}: {e}")
            return
        touched = self.wt.git.diff(head, merged, "--name-only").split()
        outside = [f for f in touched if f not in (*PROGRAMS[other].editable, *self.program.editable) or f in LOCKED]
        if outside:
            worktree.reset_hard(self.wt, head)
            self.refused_merges.add(theirs)
            self.event("merge", f"refused {other}/{self.campaign.tag} {theirs[:10]}: it changes {', '.join(outside)}")
            return
        desc = f"merged {other}/{self.campaign.tag} #{sib_champ.seq} ({theirs[:10]}): {sib_champ.description}"
        champ = self.champion()
        self.update_campaign(sibling_commit=theirs)
        run = self.new_run("rebaseline", desc, commit=merged, rerun_of=champ.id if champ else None)
        self.update_campaign(best_run_id=run.id, note=f"re-baselining 1/{self.s.policy.baseline_runs}: {desc}")
        self.event("merge", f"{desc}; re-baselining before the next judgment", run)

    # ------------------------------------------------------------------ an experiment
    def experiment(self, cost_so_far: float) -> None:
        run = self.new_run("experiment", "(proposing)")
        self.event("propose", f"#{run.seq}: asking the {self.agent.name} agent")
        asked = time.time()
        try:
            proposal = self.propose(run, cost_so_far)
        except (NoEdits, Abandoned, Refused) as e:
            worktree.reset_hard(self.wt, self.kept_head())
            status, label = (
                ("refused", "refused")
                if isinstance(e, Refused)
                else ("rejected", "no edits" if isinstance(e, NoEdits) else "abandoned")
            )
            self.finish(run, status, f"{label}: {e}")
            return self.proposal_failed(run, f"{label}: {e}")
        except (CostLimitReached, StopCampaign, AgentPaused) as e:
            worktree.reset_hard(self.wt, self.kept_head())
            self.finish(run, "interrupted", str(e) or type(e).__name__)
            if isinstance(e, AgentPaused):
                raise
            raise StopCampaign(str(e)) from e
        self.failed_proposals = 0
        run.agent_seconds = round(time.time() - asked, 3)
        run.description, run.hypothesis = proposal.description.strip()[:500] or "(no description)", proposal.hypothesis
        changed = worktree.changed_files(self.wt)
        run.diff = worktree.diff(self.wt)
        self.save(run)
        if not changed:
            worktree.reset_hard(self.wt, self.kept_head())
            return self.finish(run, "rejected", "the proposal changed no file")
        outside = out_of_scope(self.program, changed)
        if outside:
            worktree.reset_hard(self.wt, self.kept_head())
            return self.finish(
                run, "rejected", f"edits outside the {self.program.name} program's files: {', '.join(outside)}"
            )
        duplicate = next(
            (r for r in self.runs() if r.id != run.id and r.diff == run.diff and r.parent_commit == run.parent_commit),
            None,
        )
        if duplicate:
            worktree.reset_hard(self.wt, self.kept_head())
            return self.finish(run, "rejected", f"same change as run #{duplicate.seq}")
        self.submit(run)

    def submit(self, run: Run) -> None:
        """Commit the checked candidate on the branch and judge it now."""
        run.commit = worktree.commit_all(self.wt, run.description)
        self.save(run)
        self.decide(run)

    def proposal_failed(self, run: Run, why: str) -> None:
        """A proposal that yielded nothing cost API calls and taught nothing: wait longer after each
        one in a row (a loop that proposes again at once would spend --max-experiments in seconds),
        and pause after MAX_FAILED_PROPOSALS so a person can look."""
        self.failed_proposals += 1
        if self.failed_proposals >= MAX_FAILED_PROPOSALS:
            raise AgentPaused(
                f"{self.failed_proposals} proposals in a row yielded no experiment (last, #{run.seq}, {why}); "
                f"read them with `arx-daemon show {self.campaign.tag}/{run.seq}`, then start again"
            )
        wait = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (self.failed_proposals - 1))
        self.update_campaign(note=f"{self.failed_proposals} failed proposals in a row; next in {wait:.0f}s")
        self.event(
            "cooldown",
            f"{self.failed_proposals} failed proposals in a row (pause at {MAX_FAILED_PROPOSALS}); next in {wait:.0f}s",
            run,
        )
        if self.stop_requested.wait(wait):
            raise StopCampaign("stopped by request")

    def propose(self, run: Run, cost_so_far: float):
        """Ask the agent, backing off on transient failures, and once more if it made no edits."""
        delay = BACKOFF_START_S
        retry_note = None
        if getattr(self.agent, "keeps_conversations", False):
            run.conversation = str(self.paths.conversation(run.seq))
            self.save(run)
        while True:
            ctx = self.context(run, cost_so_far, retry_note)
            try:
                proposal = self.agent.propose(ctx)
                self.update_campaign(note=None)
                if not worktree.changed_files(self.wt):
                    raise NoEdits("the agent submitted without editing a file")
                return proposal
            except NoEdits:
                if retry_note is not None:
                    raise
                retry_note = (
                    "Your previous proposal changed no file. Edit an editable file, then call submit_experiment."
                )
                worktree.reset_hard(self.wt, self.kept_head())
            except TransientAgentError as e:
                wait = max(
                    delay * (0.8 + 0.4 * random.random()), e.retry_after_s or 0
                )  # the API's retry-after is a floor
                self.update_campaign(note=f"agent error, retrying in {wait:.0f}s: {e}")
                self.event("backoff", f"{e}; retrying in {wait:.0f}s", run)
                worktree.reset_hard(self.wt, self.kept_head())
                if self.stop_requested.wait(wait):
                    raise StopCampaign("stopped by request") from e
                delay = min(delay * 2, BACKOFF_MAX_S)
            cost_so_far = ledger.campaign_cost(self.db, self.campaign.id)

    def context(self, run: Run, cost_so_far: float, retry_note: str | None) -> ProposalContext:
        runs = [r for r in self.runs() if r.id != run.id]
        best = self.champion_stats()
        champ = self.champion()
        history = []
        for r in runs:
            history.append(
                {
                    "seq": r.seq,
                    "kind": r.kind,
                    "status": r.status,
                    "val_bpb": r.val_bpb,
                    "delta": (r.val_bpb - best) if r.val_bpb is not None and best is not None else None,
                    "description": r.description,
                    "decision_reason": r.decision_reason,
                }
            )
        failures = [r for r in runs if r.status in ("crash", "timeout", "invalid")]

        def record(call: dict) -> None:
            self.save(LlmCall(campaign_id=self.campaign.id, run_id=run.id, **call))

        return ProposalContext(
            program=self.program.name,
            worktree=Path(self.campaign.worktree),
            editable=list(self.program.editable),
            readable=list(self.program.readable),
            history=history,
            best={"seq": champ.seq, "val_bpb": best, "tok_per_sec": champ.tok_per_sec, "description": champ.description}
            if champ
            else None,
            last_failure_tail="\n".join(failures[-1].error.splitlines()[-FAILURE_TAIL_LINES:])
            if failures and failures[-1].error
            else None,
            budget_s=self.s.budget_s,
            hardware=self.hardware(),
            seq=run.seq,
            seed=self.s.seed,
            record_call=record,
            cost_left_usd=(self.s.max_cost_usd - cost_so_far) if self.s.max_cost_usd is not None else None,
            retry_note=retry_note,
            base_files=self.base_files,
            best_diff=self.wt.git.diff(self.campaign.base_commit, "HEAD", "--", *self.program.editable),
            expected_gap_s=expected_gap_s(runs, self.s.budget_s),
            conversation_path=Path(run.conversation) if run.conversation else None,
        )

    @functools.cached_property
    def base_files(self) -> dict[str, str]:
        """The program's files at the campaign's base commit (fixed for the campaign's life)."""
        base = self.campaign.base_commit
        return {p: self.repo.git.show(f"{base}:{p}") for p in (*self.program.editable, *self.program.readable)}

    def decide(self, run: Run) -> None:
        """Judge a committed candidate, then keep it (the branch advances) or reset the branch to its parent."""
        d = self.verdict(run)
        if d is None:  # it already finished as crash, timeout or invalid
            worktree.reset_hard(self.wt, self.kept_head())
            return
        if d.verdict == "keep":
            self.update_campaign(best_run_id=run.id)
            worktree.reset_hard(self.wt, run.commit)
        else:
            worktree.reset_hard(self.wt, run.parent_commit)
        self.finish(run, d.verdict, self.verdict_reason(run, d))

    @staticmethod
    def verdict_reason(run: Run, d: policy.Decision) -> str:
        return d.reason + ("; this row's own measurement got too little CPU and was not used" if run.contended else "")

    def ensure_champion(self, fp: dict, fp_hash: str) -> None:
        """Before each measurement of a candidate: the champion known under this fingerprint."""
        while self.rebaseline_step(fp, fp_hash):
            pass

    def verdict(self, run: Run) -> policy.Decision | None:
        """Measure a committed candidate on the seeds of the champion it was built on (`run.parent_commit`),
        one paired run at a time, until a verdict; None if its own measurement failed (it is then finished).

        Before each measurement the machine fingerprint is checked: if it changed, the champion is
        re-measured under the new one first, and only runs under one fingerprint are paired. A
        contended run (too little CPU) is repeated on the same seed, at most `max_contended` times.
        Its re-runs are finished here; the candidate's own row is left to the caller.

        On an executor with several nodes, every later run of the candidate, and of the champion paired with
        it, is placed on the node of its first run (`near=run.node`): the pairs stay within one machine class.
        """
        pol = self.s.policy
        parent = run.parent_commit
        rows: list[Run] = []
        attempt: Run | None = run
        contended = 0
        placed: set[int] = set()  # seeds the champion was measured on, on the candidate's node, for this verdict
        while True:
            fp, fp_hash = self.fingerprint_now()
            self.ensure_champion(fp, fp_hash)
            paired = [r for r in rows if r.fingerprint_hash == fp_hash and usable(r)]
            seed = self.pair_seed(len(paired), fp_hash, parent, near=run.node)
            if seed is None:
                d = policy.Decision(
                    "discard", "the champion could not be measured on a new seed to pair with; not kept"
                )
                break
            if attempt is None:
                why = " (the last one got too little CPU)" if contended else ""
                attempt = self.new_run(
                    "rerun",
                    f"re-run of #{run.seq} on seed {seed}{why}: {run.description}",
                    commit=run.commit,
                    rerun_of=run.id,
                )
            if not self.measure_on(attempt, seed, near=run.node):  # run.node: None until its first run
                if attempt is run:
                    return None
                d = policy.Decision("discard", f"a re-run failed ({attempt.status}); not kept")
                break
            rows.append(attempt)
            if attempt.contended:
                contended += 1
                if contended <= pol.max_contended:
                    attempt = None
                    continue
                # the machine stays busier than when the champion was measured: measure the champion again
                # now, on this seed, and pair the candidate with that (its CPU share also moves the reference)
                if not self.remeasure_champion(
                    seed, f"the machine stayed busy for {contended} runs of #{run.seq}", parent, near=run.node
                ):
                    d = policy.Decision(
                        "discard", "the champion could not be re-measured under the current load; not kept"
                    )
                    break
                attempt.contended = False
                self.save(attempt)
            contended = 0
            champion = self.measurements(parent, attempt.fingerprint_hash)
            pairs = [r for r in rows if r.fingerprint_hash == attempt.fingerprint_hash and usable(r)]
            # Measured on a machine class (a Ray node) where the champion has no run on this seed: measure the
            # champion there, on the candidate's own node, once per seed, and pair with that.
            seeds = [s for s in unpaired_seeds(pairs, champion) if s not in placed]
            if seeds:
                placed.add(seeds[0])
                with self.class_lock(attempt.fingerprint_hash):  # another judge may have measured it there meanwhile
                    champion = self.measurements(parent, attempt.fingerprint_hash)
                    why = f"to pair with #{run.seq} on its machine class"
                    if seeds[0] in unpaired_seeds(pairs, champion):
                        self.remeasure_champion(seeds[0], why, parent, near=attempt.node)
                        champion = self.measurements(parent, attempt.fingerprint_hash)
            unpaired = unpaired_seeds(pairs, champion)
            if unpaired:  # the champion could not be measured there (its node died, or the class changed again)
                d = policy.Decision(
                    "discard",
                    f"the champion has no run on seed {unpaired[0]} under fingerprint {attempt.fingerprint_hash}, "
                    "where this candidate was measured: not comparable; not kept",
                )
                break
            on_seed = [
                [c.val_bpb for c in champion if c.seed == r.seed][-1] for r in pairs
            ]  # its latest run on that seed
            d = policy.decide(pol, [r.val_bpb for r in pairs], on_seed, self.refresh_sigma(attempt.fingerprint_hash))
            if d.verdict != "rerun":
                break
            self.event("rerun", f"#{run.seq}: {d.reason}", run)
            attempt = None
        for extra in rows[1:]:
            extra.band = d.band
            self.finish(
                extra,
                d.verdict,
                f"re-run of #{run.seq} (seed {extra.seed}{', contended: not used' if extra.contended else ''}): "
                f"{d.verdict}",
            )
        run.band = d.band
        if rows:
            self.refresh_sigma(rows[-1].fingerprint_hash)
        return d

    # ------------------------------------------------------------------ train and evaluate one commit
    def measure(self, run: Run, near: str | None = None) -> bool:
        """Prepare (data program), train and evaluate `run`'s commit; False if it did not yield a score."""
        run_dir = Path(run.run_dir)
        if self.executor.holds_slots:  # each measurement gets its own exclusive slot from the executor
            return self._measure(run, run_dir, near)
        try:
            with slots.trainer_slot(
                self.s.state_dir,
                self.s.slots,
                self.stop_requested.is_set,
                lambda: self.event("slot", f"#{run.seq} waiting for a free trainer slot", run),
            ):
                return self._measure(run, run_dir)
        except slots.Stopped:
            self.finish(run, "interrupted", "stopped while waiting for a trainer slot")
            raise StopCampaign("stopped by request") from None

    def _measure(self, run: Run, run_dir: Path, near: str | None = None) -> bool:
        allowance = self.startup_allowance()
        spec = experiment.Spec(
            program=self.program.name,
            worktree=Path(self.campaign.worktree),
            run_dir=run_dir,
            corpus=self.corpus,
            budget_s=self.s.budget_s,
            seed=run.seed,
            state_dir=self.s.state_dir,
            train_deadline_s=self.s.budget_s + allowance,
            stall_s=max(self.s.stall_s, allowance),  # the first step compiles in silence: as long as start-up may take
            memory_mb=self.s.memory_mb,
            eval_timeout_s=self.s.eval_timeout_s,
            tokenizer_sha256=self.campaign.tokenizer_sha256 if self.program.name == "model" else None,
            kernels=self.paths.kernels,
            unsafe_no_sandbox=self.s.unsafe_no_sandbox,
            commit=run.commit,
            seeds_kernels=run.kind == "baseline",
        )

        def on_phase(phase: str, pid: int | None) -> None:
            run.status, run.pid = ("training" if phase in ("preparing", "prepare") else phase), pid
            self.save(run)

        m = self.executor.measure(spec, self.stop_requested.is_set, on_phase, near=near)
        if m.status == executor.LOST:  # its machine went away: that attempt is interrupted, measured once more
            self.record_lost(run, m)
            m = self.executor.measure(spec, self.stop_requested.is_set, on_phase, avoid=m.node)
            if m.status == executor.LOST:
                self.finish(run, "interrupted", f"{m.reason}, twice")
                raise ClusterLost(f"run #{run.seq} lost its worker twice (last: {m.reason}); check the cluster")
        run.node = m.node
        if m.fingerprint is not None:  # measured elsewhere: stamped with where it ran
            run.fingerprint = json.dumps(m.fingerprint, sort_keys=True)
            run.fingerprint_hash = fingerprint.digest(m.fingerprint)
        run.pid, run.exit_code, run.train_wall_s, run.eval_seconds, run.cpu_share = (
            None,
            m.exit_code,
            m.train_wall_s,
            m.eval_seconds,
            m.cpu_share,
        )
        for key in ("steps", "tokens", "tok_per_sec", "training_seconds", "peak_memory_mb", "num_params"):
            setattr(run, key, m.claimed.get(key))
        if m.status == "interrupted":
            self.finish(run, "interrupted", m.reason)
            raise StopCampaign("stopped by request")
        if not m.ok:
            self.finish(run, m.status, m.reason, m.log_tail or None)
            return False
        scores = m.scores
        pins = (scores.val_sha256, scores.test_sha256, scores.tokenizer_sha256)
        if self.campaign.val_sha256 is None:
            self.update_campaign(val_sha256=pins[0], test_sha256=pins[1], tokenizer_sha256=pins[2])
            self.event(
                "pinned",
                f"evaluation data pinned: val {pins[0][:12]}, test {pins[1][:12]}, tokenizer {pins[2][:12]}",
                run,
            )
        elif pins[:2] != (self.campaign.val_sha256, self.campaign.test_sha256):
            self.finish(run, "invalid", "the evaluation documents differ from those pinned at campaign start")
            return False
        if (
            run.kind == "baseline" and not self.paths.kernels.exists() and (run_dir / "tmp").is_dir()
        ):  # compiled by the unchanged code: a safe seed (a remote executor keeps its kernels on the node)
            shutil.copytree(run_dir / "tmp", self.paths.kernels, symlinks=False)
        run.val_bpb, run.test_bpb = scores.val_bpb, scores.test_bpb
        run.scoring = json.dumps(scores.detail)
        self.save(run)
        claimed = f"{run.tok_per_sec:,.0f} tok/s claimed" if run.tok_per_sec else "no throughput claimed"
        self.event(
            "measured",
            f"#{run.seq} val_bpb {run.val_bpb:.4f} test_bpb {run.test_bpb:.4f} (trained {run.train_wall_s:.0f}s "
            f"by the daemon's clock; {claimed})",
            run,
        )
        return True

    def record_lost(self, run: Run, m: experiment.Measurement) -> None:
        """A row for the attempt whose worker was lost (status interrupted), before `run` is measured again."""
        lost = self.new_run("lost", f"lost attempt of #{run.seq}: {run.description}", run.commit, run.id)
        lost.seed, lost.node, lost.started_at = run.seed, m.node, run.started_at
        self.finish(lost, "interrupted", f"{m.reason}; measured once more as #{run.seq}")
        run.started_at = utcnow()
        self.save(run)

    def startup_allowance(self) -> float:
        """Seconds a trainer may run past its budget (start-up, compilation, saving), measured by the
        daemon on the unchanged baseline: ALLOWANCE_FACTOR x its smallest overhead (a baseline that
        found its compiled kernels cached, as every later run does), at least MIN_ALLOWANCE_S.
        Until a baseline has been timed, the configured --startup-grace-s."""
        overheads = [
            r.train_wall_s - self.s.budget_s
            for r in self.runs()
            if r.kind in BASELINE_KINDS and r.train_wall_s and r.val_bpb is not None
        ]
        if not overheads:
            return self.s.startup_grace_s
        return max(MIN_ALLOWANCE_S, ALLOWANCE_FACTOR * min(overheads))

    @functools.cached_property
    def corpus(self) -> corpus.Corpus:
        return corpus.materialize(self.campaign.dataset)


def expected_gap_s(runs: list[Run], budget_s: float) -> float:
    """Seconds between two proposals' API calls (what decides the cache lifetime): the median wall
    time outside the agent of the last measured runs, else the budget plus a stated overhead."""
    spans = [r.total_seconds - (r.agent_seconds or 0.0) for r in runs if r.total_seconds and r.val_bpb is not None][
        -GAP_RUNS:
    ]
    return statistics.median(spans) if spans else budget_s + GAP_OVERHEAD_S


def unpaired_seeds(pairs: list[Run], champion: list[Run]) -> list[int]:
    """The seeds of a candidate's runs that the champion has no run on (under the same fingerprint)."""
    return [r.seed for r in pairs if not any(c.seed == r.seed for c in champion)]


def usable(r: Run) -> bool:
    """A measurement that may enter a decision or the noise: scored, not contended, not interrupted."""
    return r.val_bpb is not None and not r.contended and r.status not in ("interrupted", "crash", "timeout", "invalid")


def is_our_child(pid: int) -> bool:
    """Whether `pid` is still a trainer, evaluator or prepare process (not a reused pid)."""
    try:
        return any(
            m in " ".join(psutil.Process(pid).cmdline())
            for m in ("trainer.train", "trainer.evaluate", "trainer.prepare")
        )
    except psutil.Error:
        return False


def install_signal_handlers(loop: CampaignLoop) -> None:
    """SIGTERM/SIGINT ask the loop to stop: the run in flight is aborted and marked interrupted."""

    def handler(signum, _frame):
        loop.stop_requested.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
