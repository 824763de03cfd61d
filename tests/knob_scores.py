"""A scripted executor that scores a run from the constants of its train.py, for campaigns of a search agent.

tests/scripted.py `ScriptedExecutor` scores from `# gain` comments; a search agent writes constants instead. Here
val_bpb is the scripted score plus a bowl over a few constants: a squared distance from OPTIMUM, on a log2 scale
for rates and in tenths for fractions, times WEIGHT. The base code sits off the bowl's bottom, so a search that
moves the right constants the right way is kept, and one that moves them the wrong way is discarded.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, replace

from agents.offline import tunables
from scripted import ScriptedExecutor

OPTIMUM = {"MATRIX_LR": 0.12, "EMBEDDING_LR": 0.6, "WARMDOWN_FRAC": 0.2}  # base: 0.04, 0.6, 0.5
WEIGHT = 0.02


def penalty(train_py: str) -> float:
    values = {name: value for _, name, value, _ in tunables(train_py, gpu=False)}
    total = 0.0
    for name, best in OPTIMUM.items():
        v = values[name]
        distance = (v - best) * 10 if name.endswith("_FRAC") else math.log2(v / best) if v > 0 else 10.0
        total += WEIGHT * distance**2
    return total


@dataclass
class KnobExecutor(ScriptedExecutor):
    name: str = "knobs"

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None):
        m = super().measure(spec, should_stop, on_phase, avoid, near)
        if not m.ok:
            return m
        source = subprocess.run(
            ["git", "show", f"{spec.commit}:trainer/train.py"], cwd=spec.worktree, capture_output=True, text=True
        ).stdout
        extra = penalty(source)
        scores = replace(m.scores, val_bpb=m.scores.val_bpb + extra, test_bpb=m.scores.test_bpb + extra)
        return replace(m, scores=scores)
