"""Scripted agents for the A/A benchmark (`python -m orchestrator.bench --aa`) and the tests.

They make real edits to a real `trainer/train.py` through the scoped editor, like any agent:

- `RandomStreamAgent` proposes changes that alter nothing but the random stream: the k-th
  proposal consumes k extra random numbers before the weights are initialised and shifts the
  data order's seed by k. Such a change behaves like a new seed; a sound keep rule keeps almost
  none of them.
- `PlantedAgent` proposes one real improvement: it sets a constant that the benchmark's base
  commit deliberately spoiled back to its good value. A sound keep rule keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Abandoned, Proposal, ProposalContext, ScopedEditor

TRAIN = "trainer/train.py"
SEED_LINE = "    mx.random.seed(seed)\n"


@dataclass
class RandomStreamAgent:
    name: str = "aa"
    model: str | None = None

    def propose(self, ctx: ProposalContext) -> Proposal:
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        k = ctx.seq
        out = []
        for line in editor.read(TRAIN).splitlines(keepends=True):
            if line.strip().startswith("loader = data_sources.batches("):
                call = f"data_sources.batches(tokens, offsets, DEVICE_BATCH, SEQ_LEN, seed + {k})"
                line = f"    loader = {call}  # A/A: data order\n"
            elif "# A/A:" in line:
                continue  # an earlier kept A/A edit: replaced, not stacked
            out.append(line)
            if line == SEED_LINE:
                out.append(
                    f"    mx.eval(mx.random.uniform(shape=({k},)))  # A/A: {k} extra random numbers before init\n"
                )
        editor.create(TRAIN, "".join(out))
        return Proposal(
            f"A/A: consume {k} extra random numbers before init, data order seed + {k}",
            "changes only the random stream; must not be kept",
        )


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
