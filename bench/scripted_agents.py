"""Scripted agents for the A/A benchmark (`python -m bench --aa`) and the tests.

They make real edits to a real `trainer/train.py` through the scoped editor, like any agent:

- `RandomStreamAgent` proposes changes that alter nothing but the random stream: the k-th
  proposal salts the run's seed (seed + 1000 k), so every random draw moves: the initial weights
  and the data order. Such a change behaves like a new seed, the worst case for a keep rule that
  pairs seeds (with common random numbers, a change that only adds a draw moves nothing at all);
  a sound keep rule keeps almost none of them.
- `PlantedAgent` proposes one real improvement: it sets a constant that the benchmark's base
  commit deliberately spoiled back to its good value. A sound keep rule keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.base import Abandoned, Proposal, ProposalContext, ScopedEditor

TRAIN = "trainer/train.py"
SEED_LINE = '    seed = int(os.environ.get("ARX_SEED", "0"))\n'


@dataclass
class RandomStreamAgent:
    name: str = "aa"
    model: str | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        k = ctx.seq
        out = []
        for line in editor.read(TRAIN).splitlines(keepends=True):
            if "# A/A:" in line:
                continue  # an earlier kept A/A edit: replaced, not stacked
            out.append(line)
            if line == SEED_LINE:
                out.append(f"    seed += {1000 * k}  # A/A: another random stream (init and data order)\n")
        if not any("# A/A:" in line for line in out):
            raise Abandoned(f"no line {SEED_LINE.strip()!r} in {TRAIN} to salt")
        editor.create(TRAIN, "".join(out))
        return Proposal(f"A/A: seed + {1000 * k} (the random stream only)", "changes only the random stream")


@dataclass
class PlantedAgent:
    """Sets `constant` to `value` once; afterwards it has nothing left to try."""

    constant: str
    value: str
    name: str = "planted"
    model: str | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        lines = editor.read(TRAIN).splitlines(keepends=True)
        hit = next((line for line in lines if line.startswith(f"{self.constant} = ")), None)
        want = f"{self.constant} = {self.value}"
        if hit is None or hit.split("#")[0].strip() == want:
            raise Abandoned(f"{self.constant} is already {self.value}")
        editor.str_replace(TRAIN, hit, f"{want}  # restored by the planted improvement\n")
        return Proposal(f"planted improvement: {want}", "restores the value the base commit spoiled")
