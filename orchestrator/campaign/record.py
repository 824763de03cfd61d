"""One campaign's rows in the ledger, and the only code of the loop that writes them.

Every transition is committed before the next step starts (DESIGN.md §2), so a `kill -9` loses at
most the run in flight. Judge threads (`--parallel`) create rows too: the seq counter and the seeds
promised to measurements not yet started are guarded by one lock.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..ledger import ledger
from ..ledger.ledger import Campaign, Run, utcnow
from ..ledger.statuses import Kind, Status
from ..programs import StatePaths
from . import facts


class CampaignRecord:
    def __init__(self, paths: StatePaths, campaign: Campaign, base_seed: int, hardware: Callable[[], dict]):
        self.paths, self.db, self.campaign = paths, paths.db, campaign
        self.base_seed, self.hardware = base_seed, hardware
        self.lock = threading.RLock()  # new rows and seeds: parallel measurements must not share a seq or a seed
        self.promised: set[int] = set()

    def event(self, kind: str, message: str, run: Run | None = None) -> None:
        ledger.log_event(self.db, self.campaign.id, kind, message, run.id if run else None)
        print(f"[{time.strftime('%H:%M:%S')}] {kind}: {message}", flush=True)

    def save(self, *rows) -> None:
        ledger.save(self.db, *rows)

    def runs(self) -> list[Run]:
        return ledger.campaign_runs(self.db, self.campaign.id)

    def update(self, **fields) -> None:
        with ledger.session(self.db) as s:
            row = s.get(Campaign, self.campaign.id)
            for k, v in fields.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()
            s.refresh(row)
            self.campaign = row

    # ------------------------------------------------------------------ the champion
    def champion(self) -> Run | None:
        """The run that made the current champion: the first baseline, a kept candidate, or a merge."""
        if self.campaign.best_run_id is None:
            return None
        with ledger.session(self.db) as s:
            return s.get(Run, self.campaign.best_run_id)

    def kept_head(self) -> str:
        champ = self.champion()
        return champ.commit if champ else self.campaign.base_commit

    def kept_run(self, commit: str) -> Run:
        """The run that made `commit` a champion (an earlier champion, which a candidate in flight was built on)."""
        champ = self.champion()
        if champ and champ.commit == commit:
            return champ
        return next(
            r
            for r in self.runs()
            if r.commit == commit and (r.status == Status.KEEP or r.kind in (Kind.BASELINE, Kind.REBASELINE))
        )

    # ------------------------------------------------------------------ rows
    def new_run(self, kind: str, description: str, commit: str | None = None, rerun_of: int | None = None) -> Run:
        with self.lock:
            seq = max((r.seq for r in self.runs()), default=0) + 1
            run = Run(
                campaign_id=self.campaign.id,
                seq=seq,
                kind=kind,
                parent_commit=self.kept_head(),
                commit=commit,
                description=description,
                rerun_of=rerun_of,
                status=Status.PROPOSED,
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
        if status != Status.MEASURED:  # a measurement's value was logged when it came in
            self.event(status, f"#{run.seq} {run.description}: {reason}", run)
        if status != Status.KEEP and run.kind not in (Kind.BASELINE, Kind.REBASELINE):
            self.drop_checkpoint(run)

    @staticmethod
    def drop_checkpoint(run: Run) -> None:
        """Checkpoints and compiled kernels of runs that made no champion are deleted; logs and json stay."""
        if run.run_dir:
            (Path(run.run_dir) / "model.safetensors").unlink(missing_ok=True)
            shutil.rmtree(Path(run.run_dir) / "tmp", ignore_errors=True)

    def new_seed(self) -> int:
        """A seed no run of this campaign has used or been promised."""
        with self.lock:
            seed = facts.next_seed(self.runs(), self.promised, self.base_seed)
            self.promised.add(seed)
            return seed
