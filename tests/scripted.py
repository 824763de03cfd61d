"""A campaign whose trainer is a formula of the code and the seed, for fast tests of its decisions.

Everything but training is real: git, worktrees, the ledger, the policy, the fingerprint. The score
of a run is read from the worktree the daemon would train: BASE, plus the seed's luck, minus the
gains that `GainAgent` wrote into the files as comments, minus a speed-up when OpenBLAS is in the
machine fingerprint (a faster BLAS trains more steps in the same time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agents.base import Proposal, ProposalContext, ScopedEditor
from orchestrator import daemon, report
from orchestrator.campaign import CampaignLoop, Settings
from orchestrator.policy import Policy

BASE = 3.0
SEED_LUCK = {1: 0.0, 2: 0.04, 3: -0.04, 4: 0.02, 5: -0.02, 6: 0.01, 7: -0.01, 8: 0.03, 9: -0.03}
FAST_BLAS_GAIN = 0.5
GAIN = re.compile(r"# gain (-?[\d.]+)")


@dataclass
class GainAgent:
    """Appends `# gain G (proposal k)` to the program's first editable file, one G per proposal."""

    gains: list[float]
    name: str = "gains"
    model: str | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        gain = self.gains.pop(0)
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        path = ctx.editable[0]
        editor.create(path, editor.read(path) + f"# gain {gain} (proposal {ctx.seq})\n")
        return Proposal(f"gain {gain} (#{ctx.seq})")


class Scripted(CampaignLoop):
    """Scores each run by formula; `cpu` maps a run's seq to the CPU share it 'got' (default 0.9)."""

    def __init__(self, *args, cpu: dict[int, float] | None = None, after: dict | None = None, **kw):
        super().__init__(*args, **kw)
        self.cpu = cpu or {}
        self.after = after or {}  # seq -> a function called once that run is measured
        self.notes: list[str | None] = []  # what `status` showed as the campaign's reason during each run

    def _measure(self, run, run_dir: Path, near: str | None = None) -> bool:
        wt = Path(self.campaign.worktree)
        gains = sum(
            float(g)
            for f in ("trainer/train.py", "trainer/prepare.py", "trainer/data_sources.py")
            for g in GAIN.findall((wt / f).read_text())
        )
        fast = "openblas" in (run.fingerprint or "")
        run.val_bpb = BASE + SEED_LUCK[run.seed] - gains - (FAST_BLAS_GAIN if fast else 0.0)
        run.test_bpb, run.tok_per_sec, run.cpu_share = run.val_bpb + 0.1, 1000.0, self.cpu.get(run.seq, 0.9)
        self.save(run)
        self.notes.append(report.status(self.db, self.s.state_dir)[0]["reason"])
        self.after.get(run.seq, lambda: None)()
        return True


@dataclass
class Setup:
    repo: Path
    program: str = "model"
    tag: str = "t"
    policy: Policy = field(default_factory=lambda: Policy(max_reruns=2))  # the expected run sequences assume 2

    def loop(self, agent, max_experiments: int, **kw) -> Scripted:
        settings = Settings(
            state_dir=self.repo / "state",
            program=self.program,
            tag=self.tag,
            budget_s=1,
            max_experiments=max_experiments,
            policy=self.policy,
            repo=self.repo,
        )
        row = daemon.open_campaign(settings, agent.name, None, None)
        return Scripted(settings, row, agent, **kw)
