"""Measuring one run of a campaign: build its `Spec`, hand it to the executor, record what comes back.

The executor (`executor.LocalExecutor`, the Ray executor, or a test's scripted one) is handed in:
this module never decides where a run trains, only what the ledger says about it afterwards.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import threading
from pathlib import Path

import psutil

from agents.base import AgentPaused

from .. import fingerprint
from ..config import Settings
from ..ledger.ledger import Run
from ..ledger.statuses import Kind, Status
from ..measure import executor, experiment, slots
from ..scoring import corpus
from . import facts, worktree
from .record import CampaignRecord


class StopCampaign(Exception):
    """Ends the loop cleanly with a reason (a limit reached, a stop asked for)."""


class ClusterLost(AgentPaused):
    """The machines measuring runs went away (twice for one run): pause with the reason in `status`."""


class Measurer:
    def __init__(
        self,
        settings: Settings,
        record: CampaignRecord,
        runner: executor.Executor,
        wt,
        stop: threading.Event,
        checkout: bool = True,
    ):
        self.s, self.rec, self.executor, self.wt, self.stop = settings, record, runner, wt, stop
        self.checkout = checkout  # False with --parallel: the executor ships each commit, the worktree stays put
        self.program = record.campaign.program

    def fingerprint_now(self) -> tuple[dict, str]:
        fp = self.executor.fingerprint()
        return fp, fingerprint.digest(fp)

    def measure_on(self, run: Run, seed: int, near: str | None = None) -> bool:
        """Measure `run`'s commit on `seed`, stamped with the machine fingerprint; False if it yielded no score."""
        fp, fp_hash = self.fingerprint_now()
        run.seed, run.fingerprint, run.fingerprint_hash = seed, json.dumps(fp, sort_keys=True), fp_hash
        self.rec.save(run)
        if self.checkout and worktree.head(self.wt) != run.commit:
            worktree.reset_hard(self.wt, run.commit)
        if self.executor.holds_slots:  # each measurement gets its own exclusive slot from the executor
            return self.measure(run, near)
        try:
            with slots.trainer_slot(
                self.s.state_dir,
                self.s.slots,
                self.stop.is_set,
                lambda: self.rec.event("slot", f"#{run.seq} waiting for a free trainer slot", run),
            ):
                return self.measure(run)
        except slots.Stopped:
            self.rec.finish(run, Status.INTERRUPTED, "stopped while waiting for a trainer slot")
            raise StopCampaign("stopped by request") from None

    def spec(self, run: Run) -> experiment.Spec:
        allowance = facts.startup_allowance(self.rec.runs(), self.s.budget_s, self.s.startup_grace_s)
        campaign = self.rec.campaign
        return experiment.Spec(
            program=self.program,
            worktree=Path(campaign.worktree),
            run_dir=Path(run.run_dir),
            corpus=self.corpus,
            budget_s=self.s.budget_s,
            seed=run.seed,
            state_dir=self.s.state_dir,
            train_deadline_s=self.s.budget_s + allowance,
            stall_s=max(self.s.stall_s, allowance),  # the first step compiles in silence: as long as start-up may take
            memory_mb=self.s.memory_mb,
            eval_timeout_s=self.s.eval_timeout_s,
            tokenizer_sha256=campaign.tokenizer_sha256 if self.program == "model" else None,
            kernels=self.rec.paths.kernels,
            unsafe_no_sandbox=self.s.unsafe_no_sandbox,
            commit=run.commit,
        )

    def measure(self, run: Run, near: str | None = None) -> bool:
        spec = self.spec(run)

        def on_phase(phase: str, pid: int | None) -> None:
            before_training = phase in ("preparing", "prepare", "compiling", "compile phase")
            run.status, run.pid = (Status.TRAINING if before_training else phase), pid
            self.rec.save(run)

        m = self.executor.measure(spec, self.stop.is_set, on_phase, near=near)
        if m.status == executor.LOST:  # its machine went away: that attempt is interrupted, measured once more
            self.record_lost(run, m)
            m = self.executor.measure(spec, self.stop.is_set, on_phase, avoid=m.node)
            if m.status == executor.LOST:
                self.rec.finish(run, Status.INTERRUPTED, f"{m.reason}, twice")
                raise ClusterLost(f"run #{run.seq} lost its worker twice (last: {m.reason}); check the cluster")
        return self.record(run, spec, m)

    def record(self, run: Run, spec: experiment.Spec, m: experiment.Measurement) -> bool:
        """Write what a measurement found into its row; False if it yielded no score (the row is then finished)."""
        run.node = m.node
        if m.fingerprint is not None:  # measured elsewhere: stamped with where it ran
            run.fingerprint = json.dumps(m.fingerprint, sort_keys=True)
            run.fingerprint_hash = fingerprint.digest(m.fingerprint)
        run.pid, run.exit_code, run.train_wall_s, run.eval_seconds = None, m.exit_code, m.train_wall_s, m.eval_seconds
        run.cpu_share, run.cpu_free = m.cpu_share, m.cpu_free
        for key in ("steps", "tokens", "tok_per_sec", "training_seconds", "peak_memory_mb", "num_params"):
            setattr(run, key, m.claimed.get(key))
        if m.status == Status.INTERRUPTED:
            self.rec.finish(run, Status.INTERRUPTED, m.reason)
            raise StopCampaign("stopped by request")
        if not m.ok:
            self.rec.finish(run, m.status, m.reason, m.log_tail or None)
            return False
        scores, campaign = m.scores, self.rec.campaign
        pins = (scores.val_sha256, scores.test_sha256, scores.tokenizer_sha256)
        if campaign.val_sha256 is None:
            self.rec.update(val_sha256=pins[0], test_sha256=pins[1], tokenizer_sha256=pins[2])
            self.rec.event(
                "pinned",
                f"evaluation data pinned: val {pins[0][:12]}, test {pins[1][:12]}, tokenizer {pins[2][:12]}",
                run,
            )
        elif pins[:2] != (campaign.val_sha256, campaign.test_sha256):
            self.rec.finish(run, Status.INVALID, "the evaluation documents differ from those pinned at campaign start")
            return False
        run.val_bpb, run.test_bpb, run.scoring = scores.val_bpb, scores.test_bpb, json.dumps(scores.detail)
        self.rec.save(run)
        claimed = f"{run.tok_per_sec:,.0f} tok/s claimed" if run.tok_per_sec else "no throughput claimed"
        how = [claimed]
        if run.train_wall_s is not None:
            how.insert(0, f"trained {run.train_wall_s:.0f}s by the daemon's clock")
        if run.cpu_free is not None:
            how.insert(1, f"{run.cpu_free:.2f} of the machine free")
        self.rec.event(
            "measured", f"#{run.seq} val_bpb {run.val_bpb:.4f} test_bpb {run.test_bpb:.4f} ({'; '.join(how)})", run
        )
        return True

    def record_lost(self, run: Run, m: experiment.Measurement) -> None:
        """A row for the attempt whose worker was lost (status interrupted), before `run` is measured again."""
        lost = self.rec.new_run(Kind.LOST, f"lost attempt of #{run.seq}: {run.description}", run.commit, run.id)
        lost.seed, lost.node, lost.started_at = run.seed, m.node, run.started_at
        self.rec.finish(lost, Status.INTERRUPTED, f"{m.reason}; measured once more as #{run.seq}")
        run.started_at = lost.ended_at
        self.rec.save(run)

    @functools.cached_property
    def corpus(self) -> corpus.Corpus:
        return corpus.materialize(self.rec.campaign.dataset)


def hardware(record: CampaignRecord) -> dict:
    """What a run's `hardware` column records: the machine, the BLAS, and the champion's backend and speed."""
    from inside import blas  # no MLX import: the orchestrator never loads MLX

    chosen = blas.describe()
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "blas": chosen["library"],
        "blas_source": " ".join(filter(None, (chosen["source"], chosen["version"]))),
    }
    champ = record.champion()
    if champ and champ.run_dir:
        info["backend"] = experiment.read_claims(Path(champ.run_dir) / "train.json").get("backend")
        info["tok_per_sec"] = champ.tok_per_sec
    return info
