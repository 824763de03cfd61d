"""The campaign loop (DESIGN.md §2): propose, check, commit, measure, judge, record.

Every transition is committed to the ledger before the next step starts, so a `kill -9` at any
moment loses at most the run in flight; `recover` marks it `interrupted`, reaps its processes and
resets the worktree to the branch head, which only ever holds kept commits.

The loop is a small state machine over what the ledger already says (orchestrator/campaign/facts.py):
before each proposal the champion must be known under the machine's fingerprint (baselines,
re-baselines) and re-measured on schedule; then one experiment: the agent proposes
(orchestrator/campaign/proposing.py), the change is checked and committed, and the judge measures it
against the champion on paired seeds until a verdict (orchestrator/campaign/judge.py). With `--parallel`
(orchestrator/campaign/parallel.py) judgments run in threads while the agent proposes the next candidate.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil

from agents.base import Agent, AgentPaused, CostLimitReached

from .. import fingerprint
from ..config import Settings
from ..ledger import ledger
from ..ledger.ledger import Campaign, Run, utcnow
from ..ledger.statuses import CANDIDATE_KINDS, FAILED, UNFINISHED, Kind, Status
from ..measure import executor, runner
from ..programs import PROGRAMS, StatePaths
from . import facts, judging, sibling, worktree
from .measuring import Measurer, StopCampaign, hardware
from .policy import KEEP
from .proposing import BACKOFF_MAX_S, Proposer, Rejected
from .record import CampaignRecord

HEARTBEAT_S = 5.0
MAX_BASELINE_FAILURES = 3
BASELINE_NOTES = ("baseline", "re-baselining")  # campaign notes set while the champion is being (re-)measured
MAX_CONSECUTIVE_ERRORS = 5
MAX_FAILED_PROPOSALS = 5  # abandoned, refused or empty proposals in a row before the campaign pauses


class CampaignLoop:
    def __init__(self, settings: Settings, campaign: Campaign, agent: Agent, runner_: executor.Executor):
        self.s, self.agent, self.executor = settings, agent, runner_
        self.paths = StatePaths(settings.state_dir, settings.program, settings.tag)
        self.program = PROGRAMS[settings.program]
        self.repo = worktree.open_repo(settings.repo)
        self.wt = worktree.ensure_worktree(self.repo, Path(campaign.worktree), campaign.branch, campaign.base_commit)
        self.stop_requested = threading.Event()
        self.rec = CampaignRecord(self.paths, campaign, settings.seed, lambda: hardware(self.rec))
        self.measurer = Measurer(settings, self.rec, runner_, self.wt, self.stop_requested, settings.parallel == 1)
        self.proposer = Proposer(settings, self.rec, agent, self.wt, self.stop_requested)
        self.locks = judging.ChampionLocks()
        self.failed_proposals = 0  # in a row; a restart (a person acted) starts the count again
        self.refused_merges: set[str] = set()  # sibling commits that could not be merged (conflict, out of scope)
        self.inflight = None
        if settings.parallel > 1:
            from .parallel import Inflight

            self.inflight = Inflight(self)

    @property
    def campaign(self) -> Campaign:
        return self.rec.campaign

    @property
    def db(self) -> Path:
        return self.paths.db

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> str:
        """Run until a stop condition; returns the stop reason."""
        self.rec.update(status="running", pid=os.getpid(), heartbeat_at=utcnow(), stop_reason=None, note=None)
        threading.Thread(target=self.heartbeat, daemon=True).start()
        self.recover("daemon restarted")
        reason, errors = "stopped", 0
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
                    self.rec.event("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}")
                    self.recover(f"daemon error {type(e).__name__}")
                    if errors >= MAX_CONSECUTIVE_ERRORS:
                        raise StopCampaign(f"{errors} unexpected errors in a row; last: {type(e).__name__}: {e}") from e
                    if self.stop_requested.wait(min(BACKOFF_MAX_S, self.s.backoff_s * 2**errors)):
                        raise StopCampaign("stopped by request") from e
        except StopCampaign as e:
            reason = str(e)
        except AgentPaused as e:
            self.rec.update(status="paused", stop_reason=str(e), note=str(e))
            self.rec.event("paused", str(e))
            return str(e)
        finally:
            self.stop_requested.set()
            if self.inflight:
                self.inflight.wind_down()
            self.executor.close()
        self.rec.update(status="stopped", stop_reason=reason, note=None)
        self.rec.event("stopped", reason)
        return reason

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
        """Runs left mid-flight (a dead daemon, an unexpected error) become `interrupted`, except those a judge
        thread still measures; their processes are reaped and the worktree goes back to the branch head."""
        flying = self.inflight.rows() if self.inflight else set()
        for run in self.rec.runs():
            if run.status in UNFINISHED and run.id not in flying:
                if run.pid and is_our_child(run.pid):
                    runner.kill_group(run.pid)
                was = run.status
                run.status, run.ended_at = Status.INTERRUPTED, utcnow()
                run.decision_reason = f"interrupted while {was} ({why})"
                self.rec.save(run)
                self.rec.event("recovered", f"run #{run.seq} was {was}; marked interrupted", run)
        worktree.reset_hard(self.wt, self.rec.kept_head())

    # ------------------------------------------------------------------ one step
    def step(self) -> None:
        if self.inflight:
            self.inflight.collect(block=False)
        busy = bool(self.inflight and self.inflight.busy)
        runs = self.rec.runs()
        if not busy:
            self.merge_sibling()
            if self.rebaseline_step(*self.measurer.fingerprint_now()):
                return
            if facts.remeasure_due(runs, self.s.policy.remeasure_every):
                why = f"every {self.s.policy.remeasure_every} keeps"
                judging.remeasure(self.measurer, self.rec.kept_head(), self.rec.new_seed(), why)
                return
        limit = self.limit_reached(runs)
        if busy and (limit or self.inflight.full or facts.remeasure_due(runs, self.s.policy.remeasure_every)):
            self.inflight.collect(block=True)
            return
        if limit:
            raise StopCampaign(limit)
        self.experiment()

    def limit_reached(self, runs: list[Run]) -> str | None:
        """Why no further experiment may start (--max-experiments, --max-cost-usd), or None."""
        if self.s.max_experiments is not None and facts.proposals(runs) >= self.s.max_experiments:
            return f"reached --max-experiments {self.s.max_experiments}"
        cost = ledger.campaign_cost(self.db, self.campaign.id)
        if self.s.max_cost_usd is not None and cost >= self.s.max_cost_usd:
            return f"reached --max-cost-usd {self.s.max_cost_usd} (spent ${cost:.2f})"
        return None

    # ------------------------------------------------------------------ the champion
    def rebaseline_step(self, fp: dict, fp_hash: str) -> bool:
        """Measure the champion once more if it is not yet known well enough under this fingerprint.

        Needed at campaign start (the baselines), after a merge from the sibling program (a new
        commit), and whenever the machine fingerprint differs from the one the champion was
        measured under: runs are never compared across fingerprints. A champion kept by an
        experiment under this fingerprint is known on the seeds it was judged on. Returns
        whether it measured (or tried to).
        """
        runs, head, need = self.rec.runs(), self.rec.kept_head(), self.s.policy.baseline_runs
        here = [r for r in runs if r.commit == head and r.fingerprint_hash == fp_hash]
        known = [r for r in here if facts.usable(r)]
        if len(known) >= need or any(r.kind in CANDIDATE_KINDS for r in known):
            if self.campaign.note and self.campaign.note.startswith(BASELINE_NOTES):
                self.rec.update(note=None)
            return False
        failures = [r for r in here if r.kind in (Kind.BASELINE, Kind.REBASELINE) and r.status in FAILED]
        if len(failures) >= MAX_BASELINE_FAILURES:
            raise StopCampaign(
                f"the champion failed {MAX_BASELINE_FAILURES} times under this machine: "
                f"{failures[-1].error or failures[-1].decision_reason}"
            )
        before = [r for r in runs if r.commit == head and facts.usable(r)]
        first = not any(r.kind != Kind.BASELINE for r in runs)
        champ = self.rec.champion()
        if first:
            why, kind = "baseline (unchanged code)", Kind.BASELINE
        elif before:  # measured, but under another fingerprint
            old = json.loads(before[-1].fingerprint or "{}")
            why, kind = f"machine changed ({fingerprint.changes(old, fp)})", Kind.REBASELINE
            if not known:
                self.rec.event(
                    "fingerprint",
                    f"fingerprint {before[-1].fingerprint_hash} -> {fp_hash}: {why}; re-measuring the champion "
                    "before judging anything",
                )
        else:
            why, kind = f"new champion commit {head[:10]} ({champ.description if champ else 'base'})", Kind.REBASELINE
        n = len(known) + 1
        self.rec.update(note=f"baseline {n}/{need}" if first else f"re-baselining {n}/{need}: {why}")
        seeds = facts.seeds_of(before) + list(range(self.s.seed + 1, self.s.seed + need + 1))
        taken = {r.seed for r in known}
        seed = next((s for s in dict.fromkeys(seeds) if s not in taken), None) or self.rec.new_seed()
        anchor = next(
            (r for r in runs if r.commit == head and r.kind == Kind.REBASELINE and r.status == Status.PROPOSED), None
        )
        run = anchor or self.rec.new_run(
            kind, f"{kind} {n}/{need} on seed {seed}: {why}", commit=head, rerun_of=champ.id if champ else None
        )
        if self.measurer.measure_on(run, seed):
            if self.campaign.best_run_id is None:
                self.rec.update(best_run_id=run.id)
            self.rec.finish(run, Status.MEASURED, f"{kind} {n}/{need} (seed {seed}): val_bpb {run.val_bpb:.4f}; {why}")
            noise = judging.refresh_noise(self.measurer, fp_hash)
            if n == need:
                value, count = facts.estimate(self.rec.runs(), head)
                self.rec.event(
                    kind, f"champion {value:.4f} on {count} seeds, noise sigma {noise.sigma:.4f} ({noise.dof} dof)"
                )
        return True

    def merge_sibling(self) -> None:
        merged = sibling.merge(self.rec, self.wt, self.repo, self.program, self.refused_merges)
        if merged is not None:
            self.rec.update(note=f"re-baselining 1/{self.s.policy.baseline_runs}: {merged.description}")

    # ------------------------------------------------------------------ an experiment
    def experiment(self) -> None:
        """One proposal, from the agent's edits to its verdict; the worktree ends on the champion whatever happens."""
        run = self.rec.new_run(Kind.EXPERIMENT, "(proposing)")
        self.rec.event("propose", f"#{run.seq}: asking the {self.agent.name} agent")
        asked = time.time()
        try:
            proposal = self.proposer.ask(run, ledger.campaign_cost(self.db, self.campaign.id))
            self.failed_proposals = 0
            run.agent_seconds = round(time.time() - asked, 3)
            run.description = proposal.description.strip()[:500] or "(no description)"
            run.hypothesis = proposal.hypothesis
            self.proposer.check(run)
            self.submit(run)
        except Rejected as r:
            self.rec.finish(run, r.status, r.reason)
            if r.agent_failed:
                self.proposal_failed(run, r.reason)
        except (CostLimitReached, StopCampaign, AgentPaused) as e:
            if run.status in UNFINISHED:
                self.rec.finish(run, Status.INTERRUPTED, str(e) or type(e).__name__)
            if isinstance(e, CostLimitReached):
                raise StopCampaign(str(e)) from e
            raise
        finally:
            worktree.reset_hard(self.wt, self.rec.kept_head())

    def submit(self, run: Run) -> None:
        """Commit the checked candidate and judge it: now on the branch, or off it in a judge thread (--parallel)."""
        if self.inflight:
            return self.inflight.submit(run)
        run.commit = worktree.commit_all(self.wt, run.description)
        self.rec.save(run)
        v = judging.judge_candidate(judging.CampaignTrial(self.measurer, run, self.locks))
        if run.status in FAILED:  # its own measurement failed: the row is finished already
            return
        if v.decision == KEEP:
            self.rec.update(best_run_id=run.id)
        self.rec.finish(run, v.decision, v.reason)

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
        wait = min(BACKOFF_MAX_S, self.s.backoff_s * 2 ** (self.failed_proposals - 1))
        self.rec.update(note=f"{self.failed_proposals} failed proposals in a row; next in {wait:.0f}s")
        self.rec.event(
            "cooldown",
            f"{self.failed_proposals} failed proposals in a row (pause at {MAX_FAILED_PROPOSALS}); next in {wait:.0f}s",
            run,
        )
        if self.stop_requested.wait(wait):
            raise StopCampaign("stopped by request")


def is_our_child(pid: int) -> bool:
    """Whether `pid` is still a trainer, evaluator or prepare process (not a reused pid)."""
    try:
        return any(
            m in " ".join(psutil.Process(pid).cmdline())
            for m in ("trainer.train", "inside.evaluate", "trainer.prepare")
        )
    except psutil.Error:
        return False


def install_signal_handlers(loop: CampaignLoop) -> None:
    """SIGTERM/SIGINT ask the loop to stop: the run in flight is aborted and marked interrupted."""

    def handler(signum, _frame):
        loop.stop_requested.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
