"""Asking the agent for a proposal and checking what it changed, before anything is committed.

Every way a proposal ends early raises `Rejected(status, reason)`; the loop has one handler that
finishes the row, and one `finally` that puts the worktree back on the champion.
"""

from __future__ import annotations

import functools
import random
import threading
from pathlib import Path

from agents.base import Abandoned, Agent, NoEdits, ProposalContext, Refused, TransientAgentError

from ..config import Settings
from ..ledger import ledger
from ..ledger.ledger import LlmCall, Run
from ..ledger.statuses import FAILED, Status
from ..programs import PROGRAMS, out_of_scope
from . import facts, worktree
from .measuring import StopCampaign
from .record import CampaignRecord

BACKOFF_MAX_S = 300.0
FAILURE_TAIL_LINES = 20


class Rejected(Exception):
    """A proposal that ends before it is judged, with the status its row gets. `agent_failed`: the agent yielded
    nothing (no edits, abandoned, refused), which counts toward pausing a campaign whose agent keeps failing."""

    def __init__(self, status: str, reason: str, agent_failed: bool = False):
        super().__init__(reason)
        self.status, self.reason, self.agent_failed = status, reason, agent_failed


class Proposer:
    def __init__(self, settings: Settings, record: CampaignRecord, agent: Agent, wt, stop: threading.Event):
        self.s, self.rec, self.agent, self.wt, self.stop = settings, record, agent, wt, stop
        self.program = PROGRAMS[settings.program]

    def ask(self, run: Run, cost_so_far: float):
        """The agent's proposal, edited into the worktree: backing off on transient failures (every `retry-after`
        capped, every wait cut short by a stop), asking once more if it edited nothing."""
        delay, retry_note = self.s.backoff_s, None
        if getattr(self.agent, "keeps_conversations", False):
            run.conversation = str(self.rec.paths.conversation(run.seq))
            self.rec.save(run)
        while True:
            try:
                proposal = self.agent.propose(self.context(run, cost_so_far, retry_note))
                self.rec.update(note=None)
                if not worktree.changed_files(self.wt):
                    raise NoEdits("the agent submitted without editing a file")
                return proposal
            except NoEdits as e:
                if retry_note is not None:
                    raise Rejected(Status.REJECTED, f"no edits: {e}", agent_failed=True) from e
                retry_note = (
                    "Your previous proposal changed no file. Edit an editable file, then call submit_experiment."
                )
            except Abandoned as e:
                raise Rejected(Status.REJECTED, f"abandoned: {e}", agent_failed=True) from e
            except Refused as e:
                raise Rejected(Status.REFUSED, f"refused: {e}", agent_failed=True) from e
            except TransientAgentError as e:
                wait = min(BACKOFF_MAX_S, max(delay * (0.8 + 0.4 * random.random()), e.retry_after_s or 0))
                self.rec.update(note=f"agent error, retrying in {wait:.0f}s: {e}")
                self.rec.event("backoff", f"{e}; retrying in {wait:.0f}s", run)
                if self.stop.wait(wait):
                    raise StopCampaign("stopped by request") from e
                delay = min(delay * 2, BACKOFF_MAX_S)
            worktree.reset_hard(self.wt, self.rec.kept_head())
            cost_so_far = ledger.campaign_cost(self.rec.db, self.rec.campaign.id)

    def check(self, run: Run) -> None:
        """What the proposal changed may be committed: something, inside the program's files, not a repeat."""
        changed = worktree.changed_files(self.wt)
        run.diff = worktree.diff(self.wt)
        self.rec.save(run)
        if not changed:
            raise Rejected(Status.REJECTED, "the proposal changed no file")
        outside = out_of_scope(self.program, changed)
        if outside:
            raise Rejected(
                Status.REJECTED, f"edits outside the {self.program.name} program's files: {', '.join(outside)}"
            )
        same = next(
            (
                r
                for r in self.rec.runs()
                if r.id != run.id and r.diff == run.diff and r.parent_commit == run.parent_commit
            ),
            None,
        )
        if same:
            raise Rejected(Status.REJECTED, f"same change as run #{same.seq}")

    def context(self, run: Run, cost_so_far: float, retry_note: str | None) -> ProposalContext:
        runs = [r for r in self.rec.runs() if r.id != run.id]
        champ = self.rec.champion()
        best = facts.estimate(runs, self.rec.kept_head())
        best_val = best[0] if best else None
        history = [
            {
                "seq": r.seq,
                "kind": r.kind,
                "status": r.status,
                "val_bpb": r.val_bpb,
                "judged_val_bpb": facts.judged_value(r),
                "delta": (r.val_bpb - best_val) if r.val_bpb is not None and best_val is not None else None,
                "description": r.description,
                "decision_reason": r.decision_reason,
            }
            for r in runs
        ]
        failures = [r for r in runs if r.status in FAILED]
        campaign = self.rec.campaign

        def record(call: dict) -> None:
            self.rec.save(LlmCall(campaign_id=campaign.id, run_id=run.id, **call))

        return ProposalContext(
            program=self.program.name,
            worktree=Path(campaign.worktree),
            editable=list(self.program.editable),
            readable=list(self.program.readable),
            history=history,
            best={
                "seq": champ.seq,
                "val_bpb": best_val,
                "tok_per_sec": champ.tok_per_sec,
                "description": champ.description,
            }
            if champ
            else None,
            last_failure_tail="\n".join(failures[-1].error.splitlines()[-FAILURE_TAIL_LINES:])
            if failures and failures[-1].error
            else None,
            budget_s=self.s.budget_s,
            hardware=self.rec.hardware(),
            seq=run.seq,
            seed=self.s.seed,
            record_call=record,
            cost_left_usd=(self.s.max_cost_usd - cost_so_far) if self.s.max_cost_usd is not None else None,
            retry_note=retry_note,
            base_files=self.base_files,
            best_diff=self.wt.git.diff(campaign.base_commit, "HEAD", "--", *self.program.editable),
            expected_gap_s=facts.expected_gap_s(runs, self.s.budget_s),
            conversation_path=Path(run.conversation) if run.conversation else None,
            agent_state=self.rec.paths.state / self.agent.name / self.rec.paths.name,
        )

    @functools.cached_property
    def base_files(self) -> dict[str, str]:
        """The program's files at the campaign's base commit (fixed for the campaign's life)."""
        base = self.rec.campaign.base_commit
        return {p: self.wt.git.show(f"{base}:{p}") for p in (*self.program.editable, *self.program.readable)}
