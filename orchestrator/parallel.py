"""K candidates in flight against one champion (`--parallel K`, on the ray executor's slots).

The main thread owns git and the agent: it proposes in the campaign's worktree, commits each
candidate OFF the branch (a commit whose parent is the champion, kept alive by a ref under
refs/arx/, never on the branch), puts the worktree back to the champion and proposes the next.
The agent sees the candidates in flight in its history (status training or evaluating) and the
duplicate check covers them. Judge threads only measure: the executor ships each commit to a slot,
and the verdict is taken against the measurements of the champion that candidate was built on,
with the same seed-paired, noise-aware rule as one at a time (`CampaignLoop.verdict`).

Verdicts are applied by the main thread as they arrive. A keep whose parent is still the champion
fast-forwards the branch to it. If the champion moved while it ran, the candidate is rebased onto
the new champion (a cherry-pick) and judged again, as a `rebase` run, against the new champion;
if it no longer applies it is rejected. So the branch only ever holds kept commits, each the child
of the one before. Baselines and the periodic re-measurement of the champion run when nothing is
in flight, one at a time, so the champion is measured under the same slots its challengers get; a
candidate that lands on a machine class the champion has no run on gets the champion measured on its
own node first (`CampaignLoop.verdict`).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

from agents.base import AgentPaused

from . import ledger, policy, worktree
from .campaign import CampaignLoop, StopCampaign
from .ledger import Run
from .programs import ACTIVE_RUN_STATUSES

JUDGE_THREAD = "arx-judge"
COLLECT_POLL_S = 0.5


class ParallelLoop(CampaignLoop):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = cf.ThreadPoolExecutor(max_workers=self.s.parallel, thread_name_prefix=JUDGE_THREAD)
        self.inflight: dict[cf.Future, Run] = {}
        self.judged_rows: set[int] = set()  # rows judge threads created: theirs to finish, not recover's
        self.keep_ref = f"refs/arx/{self.campaign.branch}"

    # ------------------------------------------------------------------ hooks of the one-at-a-time loop
    def checkout(self, commit: str) -> None:
        """Nothing: the executor ships the commit to its slot; the worktree stays with the agent."""

    def ensure_champion(self, fp: dict, fp_hash: str) -> None:
        """Nothing here: the main thread measured the champion before proposing, and a judge that finds
        too few of its seeds measures the parent on more (`pair_seed`)."""

    def new_run(self, kind, description, commit=None, rerun_of=None) -> Run:
        run = super().new_run(kind, description, commit, rerun_of)
        if threading.current_thread().name.startswith(JUDGE_THREAD):
            self.judged_rows.add(run.id)
        return run

    def recover(self, why: str) -> None:
        """Runs left mid-flight become `interrupted`, except those judge threads are still measuring."""
        if not self.inflight:
            return super().recover(why)
        flying = self.judged_rows | {r.id for r in self.inflight.values()}
        for run in self.runs():
            if run.status in ACTIVE_RUN_STATUSES and run.id not in flying:
                was = run.status
                self.finish(run, "interrupted", f"interrupted while {was} ({why})")
        worktree.reset_hard(self.wt, self.kept_head())

    def wind_down(self) -> None:
        """The stop reached every judge (their runs end as interrupted); wait for them, then release the slots."""
        self.pool.shutdown(wait=True)
        try:
            self.collect(block=False)
        finally:
            super().wind_down()

    # ------------------------------------------------------------------ the loop
    def step(self) -> None:
        self.collect(block=False)
        if not self.inflight:
            self.merge_sibling()
            if self.rebaseline_step(*self.fingerprint_now()):
                return
            if self.remeasure_due():
                self.remeasure_champion(self.new_seed(), f"every {self.s.policy.remeasure_every} keeps")
                return
        limit = self.limit_reached()
        if limit or len(self.inflight) >= self.s.parallel or (self.inflight and self.remeasure_due()):
            if not self.inflight:
                raise StopCampaign(limit)
            self.collect(block=True)
            return
        self.experiment(ledger.campaign_cost(self.db, self.campaign.id))

    def submit(self, run: Run) -> None:
        """Commit the candidate off the branch and hand it to a judge thread."""
        try:
            run.commit = worktree.commit_detached(self.wt, run.description, self.keep_ref)
        finally:
            worktree.reset_hard(self.wt, self.kept_head())
        self.save(run)
        self.judge(run)

    def judge(self, run: Run) -> None:
        self.inflight[self.pool.submit(self.verdict_or_none, run)] = run

    def verdict_or_none(self, run: Run) -> policy.Decision | None:
        try:
            return self.verdict(run)
        except StopCampaign:  # stopped: its runs are already finished as interrupted
            return None

    def collect(self, block: bool) -> None:
        """Apply the verdicts that are in (oldest run first); with `block`, wait for at least one."""
        while block and not self.stop_requested.is_set():
            done, _ = cf.wait(self.inflight, timeout=COLLECT_POLL_S, return_when=cf.FIRST_COMPLETED)
            if done:
                break
        if block and self.stop_requested.is_set():
            raise StopCampaign("stopped by request")
        done = [f for f in self.inflight if f.done()]
        for fut in sorted(done, key=lambda f: self.inflight[f].seq):
            run = self.inflight.pop(fut)
            try:
                d = fut.result()
            except AgentPaused:
                raise
            except Exception as e:  # a bug in a judge must not take the others down
                self.event("error", f"judging #{run.seq} failed: {type(e).__name__}: {e}", run)
                self.close_rows(f"judging #{run.seq} failed: {type(e).__name__}")
                continue
            if d is not None:
                self.apply(run, d)

    def close_rows(self, why: str) -> None:
        """A failed judge's rows that are still active become interrupted."""
        for row in self.runs():
            if row.id in self.judged_rows and row.status in ACTIVE_RUN_STATUSES:
                self.finish(row, "interrupted", why)

    def apply(self, run: Run, d: policy.Decision) -> None:
        reason = self.verdict_reason(run, d)
        if d.verdict != "keep":
            return self.finish(run, d.verdict, reason)
        head = self.kept_head()
        if run.parent_commit == head:
            self.update_campaign(best_run_id=run.id)
            worktree.reset_hard(self.wt, run.commit)  # a fast-forward: its parent is the branch head
            return self.finish(run, "keep", reason)
        champ = self.champion()
        try:
            rebased = worktree.rebase_detached(
                self.wt, run.commit, head, f"{run.description} (rebased onto #{champ.seq})", self.keep_ref
            )
        except worktree.GitError as e:
            return self.finish(
                run,
                "rejected",
                f"{reason}; but the champion moved to #{champ.seq} while it ran and it no longer applies ({e})",
            )
        again = self.new_run("rebase", f"{run.description} (rebased onto #{champ.seq})", rebased, run.id)
        again.hypothesis, again.diff = run.hypothesis, self.wt.git.diff(head, rebased)
        self.save(again)
        self.finish(
            run,
            "discard",
            f"{reason}; but the champion moved to #{champ.seq} while it ran: rebased as #{again.seq} and judged "
            "again against the new champion",
        )
        self.judge(again)
