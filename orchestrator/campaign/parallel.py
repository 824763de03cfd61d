"""K candidates in flight against one champion (`--parallel K`, on the ray executor's slots).

The campaign loop's main thread owns git and the agent: it proposes in the campaign's worktree,
commits each candidate OFF the branch (a commit whose parent is the champion, kept alive by a ref
under refs/arx/, never on the branch), puts the worktree back on the champion and proposes the
next. The agent sees the candidates in flight in its history and the duplicate check covers them.
Judge threads only measure: the executor ships each commit to a slot, and the judge (the same one
as one at a time, orchestrator/campaign/judge.py) pairs it with the champion it was built on.

Verdicts are applied by the main thread as they arrive. A keep whose parent is still the champion
fast-forwards the branch to it. If the champion moved while it ran, the candidate is rebased onto
the new champion (a cherry-pick) and judged again, as a `rebase` run, against the new champion;
if it no longer applies it is rejected. So the branch only ever holds kept commits, each the child
of the one before. Baselines and the periodic re-measurement of the champion run when nothing is
in flight, so the champion is measured under the same slots its challengers get.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import TYPE_CHECKING

from agents.base import AgentPaused

from ..ledger.ledger import Run
from ..ledger.statuses import FAILED, UNFINISHED, Kind, Status
from . import judging, worktree
from .judge import Verdict
from .measuring import StopCampaign
from .policy import KEEP

if TYPE_CHECKING:
    from .campaign import CampaignLoop

JUDGE_THREAD = "arx-judge"
COLLECT_POLL_S = 0.5


class Inflight:
    """The candidates a campaign has in flight, each judged in its own thread."""

    def __init__(self, loop: CampaignLoop):
        self.loop, self.rec = loop, loop.rec
        self.pool = cf.ThreadPoolExecutor(max_workers=loop.s.parallel, thread_name_prefix=JUDGE_THREAD)
        self.trials: dict[cf.Future, judging.CampaignTrial] = {}
        self.keep_ref = f"refs/arx/{loop.campaign.branch}"

    @property
    def busy(self) -> bool:
        return bool(self.trials)

    @property
    def full(self) -> bool:
        return len(self.trials) >= self.loop.s.parallel

    def rows(self) -> set[int]:
        """Rows that judge threads are still measuring: theirs to finish, not recovery's."""
        return {r.id for t in self.trials.values() for r in (t.run, *t.made)}

    def submit(self, run: Run) -> None:
        """Commit the candidate off the branch and hand it to a judge thread."""
        try:
            run.commit = worktree.commit_detached(self.loop.wt, run.description, self.keep_ref)
        finally:
            worktree.reset_hard(self.loop.wt, self.rec.kept_head())
        self.rec.save(run)
        self.judge(run)

    def judge(self, run: Run) -> None:
        trial = judging.CampaignTrial(self.loop.measurer, run, self.loop.locks)
        self.trials[self.pool.submit(self.verdict_or_none, trial)] = trial

    @staticmethod
    def verdict_or_none(trial: judging.CampaignTrial) -> Verdict | None:
        try:
            return judging.judge_candidate(trial)
        except StopCampaign:  # stopped: its runs are already finished as interrupted
            return None

    def collect(self, block: bool) -> None:
        """Apply the verdicts that are in (oldest run first); with `block`, wait for at least one."""
        stop = self.loop.stop_requested
        while block and not stop.is_set():
            done, _ = cf.wait(self.trials, timeout=COLLECT_POLL_S, return_when=cf.FIRST_COMPLETED)
            if done:
                break
        if block and stop.is_set():
            raise StopCampaign("stopped by request")
        done = [f for f in self.trials if f.done()]
        for fut in sorted(done, key=lambda f: self.trials[f].run.seq):
            trial = self.trials.pop(fut)
            try:
                v = fut.result()
            except AgentPaused:
                raise
            except Exception as e:  # a bug in a judge must not take the others down
                self.rec.event("error", f"judging #{trial.run.seq} failed: {type(e).__name__}: {e}", trial.run)
                self.close_rows(trial, f"judging #{trial.run.seq} failed: {type(e).__name__}")
                continue
            if v is not None and trial.run.status not in FAILED:
                self.apply(trial.run, v)

    def close_rows(self, trial: judging.CampaignTrial, why: str) -> None:
        """A failed judge's rows that are still unfinished become interrupted."""
        for row in self.rec.runs():
            if row.id in {r.id for r in (trial.run, *trial.made)} and row.status in UNFINISHED:
                self.rec.finish(row, Status.INTERRUPTED, why)

    def apply(self, run: Run, v: Verdict) -> None:
        if v.decision != KEEP:
            return self.rec.finish(run, v.decision, v.reason)
        head, wt = self.rec.kept_head(), self.loop.wt
        if run.parent_commit == head:
            self.rec.update(best_run_id=run.id)
            worktree.reset_hard(wt, run.commit)  # a fast-forward: its parent is the branch head
            return self.rec.finish(run, Status.KEEP, v.reason)
        champ = self.rec.champion()
        try:
            rebased = worktree.rebase_detached(
                wt, run.commit, head, f"{run.description} (rebased onto #{champ.seq})", self.keep_ref
            )
        except worktree.GitError as e:
            return self.rec.finish(
                run,
                Status.REJECTED,
                f"{v.reason}; but the champion moved to #{champ.seq} while it ran and it no longer applies ({e})",
            )
        again = self.rec.new_run(Kind.REBASE, f"{run.description} (rebased onto #{champ.seq})", rebased, run.id)
        again.hypothesis, again.diff = run.hypothesis, wt.git.diff(head, rebased)
        self.rec.save(again)
        self.rec.finish(
            run,
            Status.DISCARD,
            f"{v.reason}; but the champion moved to #{champ.seq} while it ran: rebased as #{again.seq} and judged "
            "again against the new champion",
        )
        self.judge(again)

    def wind_down(self) -> None:
        """The stop reached every judge (their runs end as interrupted); wait for them, then apply what came in."""
        self.pool.shutdown(wait=True)
        self.collect(block=False)
