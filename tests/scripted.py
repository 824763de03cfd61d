"""A campaign whose trainer is a formula of the code and the seed, for fast tests of its decisions.

Everything but training is real: git, worktrees, the ledger, the judge, the fingerprint. The loop is
handed a `ScriptedExecutor` in place of the local one: the score of a run is read from the commit the
daemon would train: BASE, plus the seed's luck, minus the gains that `GainAgent` wrote into the files
as comments (`# gain G`, or `# gain G seeds a:b` for a gain that differs by seed), minus a speed-up
when OpenBLAS is in the machine fingerprint (a faster BLAS trains more steps in the same time).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agents.base import Proposal, ProposalContext, ScopedEditor
from orchestrator import daemon, fingerprint, report
from orchestrator.campaign.campaign import CampaignLoop
from orchestrator.campaign.policy import Policy
from orchestrator.config import Settings
from orchestrator.measure.experiment import Measurement
from orchestrator.scoring.scorer import Scores

BASE = 3.0
SEED_LUCK = {s: 0.04 * ((s * 7919) % 11 - 5) / 5 for s in range(1, 200)} | {
    1: 0.0, 2: 0.04, 3: -0.04, 4: 0.02, 5: -0.02, 6: 0.01, 7: -0.01, 8: 0.03, 9: -0.03
}  # fmt: skip
FAST_BLAS_GAIN = 0.5
GAIN = re.compile(r"# gain (-?[\d.]+)(?: seeds ([-\d.:]+))?")
FILES = ("trainer/train.py", "trainer/prepare.py", "trainer/data_sources.py")


def gains_of(source: str, seed: int) -> float:
    """`# gain G`: G on every seed; `# gain G seeds a:b:c`: G plus a, b, c, ... on seeds 1, 2, 3, ... (cycled)."""
    total = 0.0
    for gain, spread in GAIN.findall(source):
        extra = [float(x) for x in spread.split(":")] if spread else [0.0]
        total += float(gain) + extra[(seed - 1) % len(extra)]
    return total


@dataclass
class GainAgent:
    """Appends `# gain G (proposal k)` to the program's first editable file, one G per proposal (a string G is
    written as is: `0.05 seeds 0.01:-0.01`)."""

    gains: list
    name: str = "gains"
    model: str | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        gain = self.gains.pop(0)
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        path = ctx.editable[0]
        editor.create(path, editor.read(path) + f"# gain {gain} (proposal {ctx.seq})\n")
        return Proposal(f"gain {gain} (#{ctx.seq})")


@dataclass
class ScriptedExecutor:
    """Scores each run by formula from the files of the commit it was handed; `cpu` maps a run's seq to the share
    of the machine other processes left it (default 0.9); `after` maps a seq to a function called once it is
    measured; `notes` collects what `status` showed as the campaign's reason during each run."""

    cpu: dict[int, float] = field(default_factory=dict)
    after: dict[int, Callable[[], None]] = field(default_factory=dict)
    fail: dict[int, str] = field(default_factory=dict)  # seq -> the status its measurement ends with (crash, ...)
    load_cost: float = 0.0  # val_bpb lost per unit of machine taken by others (a time budget trains fewer steps)
    load: Callable[[object], float | None] = lambda spec: None  # a run's share of the machine, before `cpu`
    node: str = "scripted"
    name: str = "scripted"
    holds_slots: bool = False
    notes: list = field(default_factory=list)

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None) -> Measurement:
        on_phase("training", None)
        seq = int(spec.run_dir.name)
        free = self.load(spec) or self.cpu.get(seq, 0.9)
        if seq in self.fail:
            return Measurement(self.fail[seq], f"scripted {self.fail[seq]}", "Traceback (scripted)", 1)
        sources = [
            subprocess.run(
                ["git", "show", f"{spec.commit}:{f}"], cwd=spec.worktree, capture_output=True, text=True
            ).stdout
            for f in FILES
        ]
        fast = "openblas" in str(self.fingerprint())
        gains = sum(gains_of(s, spec.seed) for s in sources)
        val = BASE + SEED_LUCK[spec.seed] - gains - (FAST_BLAS_GAIN if fast else 0) + self.load_cost * (1 - free)
        self.notes.append(report.status(spec.state_dir / "experiments.db", spec.state_dir)[0]["reason"])
        self.after.get(seq, lambda: None)()
        return Measurement(
            "measured",
            scores=Scores(val, val + 0.1, "v" * 64, "t" * 64, "k" * 64),
            claimed={"tok_per_sec": 1000.0},
            train_wall_s=spec.budget_s,
            cpu_share=0.9,
            cpu_free=free,
            node=self.node,
        )

    def fingerprint(self) -> dict:
        return fingerprint.current()

    def close(self) -> None:
        pass


@dataclass
class Setup:
    repo: Path
    program: str = "model"
    tag: str = "t"
    policy: Policy = field(default_factory=Policy)

    def loop(self, agent, max_experiments: int, executor: ScriptedExecutor | None = None, **kw) -> CampaignLoop:
        settings = Settings(
            state_dir=self.repo / "state",
            program=self.program,
            tag=self.tag,
            budget_s=1,
            max_experiments=max_experiments,
            policy=self.policy,
            repo=self.repo,
            **kw,
        )
        row = daemon.open_campaign(settings, agent.name, None, None)
        return CampaignLoop(settings, row, agent, executor or ScriptedExecutor())
