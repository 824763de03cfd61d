"""The offline agent: a seeded local search over the editable files' numeric constants.

No LLM. Each proposal changes one UPPER_CASE numeric constant of the current best code (the
worktree is always at the champion) by a small step, never repeating a change already tried
from the same value. It is the default without an API key and the baseline Claude must beat.
"""

from __future__ import annotations

import random
import re

from .base import Abandoned, Proposal, ProposalContext, ScopedEditor

# Constants that are not hyperparameters, or whose change only makes the run invalid.
FROZEN = re.compile(r"^(PRINT_EVERY_S|COMPILE|GPU|EVAL_.*|DOWNLOAD_.*|MIX_SEED|BOS)$")
# `NAME = 1.5`, `NAME = 2**16`, or `NAME = 4 if GPU else 2`, then an optional comment
CONSTANT = re.compile(
    r"^(?P<name>[A-Z][A-Z0-9_]*) = (?P<gpu>[-+]?[\d.e*_+-]+)(?: if GPU else "
    r"(?P<cpu>[-+]?[\d.e*_+-]+))?(?P<rest>\s*(#.*)?)$"
)
UNIT_INTERVAL = re.compile(r"(_FRAC|BETA\d|MOMENTUM_START|MOMENTUM_END)$")
MAX_TRIES = 200


def parse_number(text: str) -> int | float | None:
    if "**" in text:
        base, exp = text.split("**")
        return int(base) ** int(exp)
    try:
        return int(text.replace("_", ""))
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def format_number(value: int | float) -> str:
    if isinstance(value, int):
        return f"2**{value.bit_length() - 1}" if value >= 1024 and value & (value - 1) == 0 else str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def neighbours(name: str, value: int | float) -> list[int | float]:
    """Candidate new values one small step away."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        if value >= 8:
            steps = [value // 2, value * 2] if value & (value - 1) == 0 else [round(value * 0.75), round(value * 1.5)]
        else:
            steps = [value - 1, value + 1]
        return [v for v in steps if v >= 1 and v != value]
    if UNIT_INTERVAL.search(name):
        return [v for v in (round(value + d, 4) for d in (-0.1, -0.05, 0.05, 0.1)) if 0 <= v < 1 and v != value]
    if value == 0:
        return []
    return [float(f"{value * f:.4g}") for f in (0.5, 0.7, 1.4, 2.0)]


def tunables(text: str, gpu: bool, frozen: frozenset[str] = frozenset()) -> list[tuple[int, str, int | float, str]]:
    """(line index, name, current value, which branch: 'gpu' | 'cpu' | 'both') of each constant; `frozen` names more
    constants to leave alone (a benchmark at a fixed step count freezes what changes the compute per step)."""
    found = []
    for i, line in enumerate(text.splitlines()):
        m = CONSTANT.match(line)
        if not m or FROZEN.match(m["name"]) or m["name"] in frozen or m["name"].endswith("_CPU" if gpu else "_GPU"):
            continue  # frozen, or a knob of the other backend (a change there would change nothing here)
        branch = "both" if m["cpu"] is None else ("gpu" if gpu else "cpu")
        value = parse_number(m["cpu"] if branch == "cpu" else m["gpu"])
        if value is not None:
            found.append((i, m["name"], value, branch))
    return found


def rewrite(line: str, branch: str, new: int | float) -> str:
    m = CONSTANT.match(line)
    gpu, cpu = m["gpu"], m["cpu"]
    if branch == "cpu":
        cpu = format_number(new)
    else:
        gpu = format_number(new)
    return f"{m['name']} = {gpu}" + (f" if GPU else {cpu}" if cpu is not None else "") + m["rest"]


class OfflineAgent:
    name = "offline"
    model = None

    def __init__(self, seed: int = 0, frozen: frozenset[str] = frozenset()):
        self.seed, self.frozen = seed, frozen

    def propose(self, ctx: ProposalContext) -> Proposal:
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        tried = {run["description"] for run in ctx.history if run.get("description")}
        rng = random.Random(f"{self.seed}:{ctx.seed}:{ctx.seq}")
        gpu = ctx.hardware.get("backend") in ("metal", "cuda")
        options = []
        for path in ctx.editable:
            text = editor.read(path)
            for line_no, name, value, branch in tunables(text, gpu, self.frozen):
                for new in neighbours(name, value):
                    options.append((path, line_no, name, value, branch, new))
        rng.shuffle(options)
        for path, line_no, name, value, branch, new in options[:MAX_TRIES]:
            description = f"{name} {format_number(value)} -> {format_number(new)}"
            if description in tried:
                continue
            line = editor.read(path).splitlines()[line_no]
            editor.str_replace(path, line, rewrite(line, branch, new))
            direction = "raise" if new > value else "lower"
            return Proposal(description=description, hypothesis=f"{direction} {name} around the current best")
        raise Abandoned("the offline search has tried every one-step change of the current best")
