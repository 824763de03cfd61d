"""The Optuna agent: a seeded TPE search over the editable files' numeric constants, judged by the keep rule.

No LLM. The study's parameters are the constants the offline agent finds (agents/offline.py `tunables`),
with ranges set once per campaign from their values at the base commit and their kind: a positive float is a
rate on a log scale (its base value divided and multiplied by SPAN), a `*_FRAC`/beta/momentum constant a
fraction in [0, 1), an integer that is a power of two a shape among nearby powers of two, any other positive
integer a count on a log scale. A constant with two branches (`4 if GPU else 2`) is tuned on the branch this
machine runs, as its own parameter (`NAME@gpu`, `NAME@cpu`).

Each proposal is one trial: KNOBS constants chosen at random are drawn by TPE, every other one is held at the
champion's value (so each trial records a whole configuration, and the value it gets is a function of that
configuration). The drawing happens on a copy of the study in memory; the study on disk receives the trial as
written to the file (values rounded to what the file holds, draws too close to the champion's value to be
measured left at the champion's value). Its value is the one the keep rule judged the candidate on (the
candidate's mean val_bpb over the pairs of its verdict); a crash, timeout or invalid run is a pruned trial
(TPE counts it among the bad ones), a proposal that never ran (rejected, interrupted) a failed one (ignored).
Verdicts arrive with the next proposal's history (trials are mapped to runs by seq, a user attribute), so a
resumed daemon finds the trials still open and closes them. The unchanged code is trial 0, valued at the mean
of its baselines.

The study lives in the state folder (Optuna's RDB storage on SQLite, one per campaign: state/optuna/
<program>-<tag>.db; `optuna-dashboard sqlite:///state/optuna/model-<tag>.db` opens it). Its sampler seed is
recorded in the study's user attributes when the study is created and wins on a resume; proposal k draws
with a TPE sampler seeded from (that seed, the campaign's seed, k, the attempt), so a resumed campaign proposes
what an uninterrupted one would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from orchestrator.ledger.statuses import FAILED, UNFINISHED, Kind, Status

from .base import Abandoned, Proposal, ProposalContext, ScopedEditor
from .offline import UNIT_INTERVAL, format_number, parse_number, rewrite, tunables

SPAN = 4  # a log-scale knob ranges from its base value / SPAN to its base value x SPAN
DOUBLINGS = 2  # a power-of-two knob ranges over this many halvings and doublings of its base value
FRACTION_HIGH = 0.999  # a fraction ranges over [0, FRACTION_HIGH]: [0, 1) as the file can write it
KNOBS = 3  # constants drawn per proposal (the rest stay at the champion's values)
MIN_RATIO = 1.2  # a draw closer than this factor to the champion's value stays at it: the keep rule could not
MIN_STEP = 0.05  # see the change, and a change it cannot see costs the most pairs (likewise for a fraction)
STARTUP_TRIALS = 5  # finished trials (the unchanged code's included) before TPE replaces random draws
ATTEMPTS = 50  # draws per proposal before giving up (each may repeat a tried change or move nothing)

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the daemon's log says what matters: one line per proposal


@dataclass(frozen=True)
class Knob:
    """One parameter of the study: a constant in an editable file, on one branch."""

    path: str
    name: str  # the constant's name
    branch: str  # 'both' | 'gpu' | 'cpu' (offline.tunables)
    base: int | float  # its value at the campaign's base commit
    distribution: BaseDistribution


def param_name(name: str, branch: str) -> str:
    """A two-branch constant is one parameter per backend: the CPU's best value says nothing of the GPU's."""
    return name if branch == "both" else f"{name}@{branch}"


def constants(files: dict[str, str], gpu: bool, frozen: frozenset[str]):
    """(param, path, line index, name, value, branch) of every constant `tunables` finds in `files`."""
    for path, text in files.items():
        for line_no, name, value, branch in tunables(text, gpu, frozen):
            yield param_name(name, branch), path, line_no, name, value, branch


def distribution(name: str, value: int | float) -> BaseDistribution | None:
    """The range a constant is searched over, from its base value and its kind; None: not searchable."""
    if UNIT_INTERVAL.search(name):
        return FloatDistribution(0.0, FRACTION_HIGH) if 0 <= value <= FRACTION_HIGH else None
    if value <= 0:
        return None  # no scale to search on
    if isinstance(value, int):
        if value & (value - 1) == 0:
            e = value.bit_length() - 1
            return CategoricalDistribution([2**k for k in range(max(0, e - DOUBLINGS), e + DOUBLINGS + 1)])
        return IntDistribution(max(1, value // SPAN), value * SPAN, log=True)
    return FloatDistribution(written(value / SPAN), written(value * SPAN), log=True)


def written(value: float) -> float:
    """A float as the file will hold it (format_number's digits), so a trial records what was trained."""
    return float(parse_number(format_number(float(value))))


def search_space(files: dict[str, str], gpu: bool, frozen: frozenset[str] = frozenset()) -> dict[str, Knob]:
    """The study's parameters (by param name) from the editable files at the campaign's base commit."""
    space: dict[str, Knob] = {}
    for param, path, _, name, value, branch in constants(files, gpu, frozen):
        dist = distribution(name, value)
        if dist is not None and param not in space:  # a name in two files: the first file's
            space[param] = Knob(path, name, branch, value, dist)
    return space


def contains(dist: BaseDistribution, value: int | float) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return dist.low <= value <= dist.high


def moved(dist: BaseDistribution, old: int | float, new: int | float) -> bool:
    """Whether `new` is far enough from `old` for the keep rule to have a chance of seeing it."""
    if isinstance(dist, CategoricalDistribution) or new == old:
        return new != old
    if dist.log:
        return max(new, old) / min(new, old) >= MIN_RATIO
    return abs(new - old) >= MIN_STEP


def as_written(dist: BaseDistribution, value: int | float) -> int | float:
    return written(value) if isinstance(dist, FloatDistribution) else value


def tell_verdicts(study: optuna.Study, history: list[dict]) -> None:
    """Close every open trial whose run has ended, each exactly once (a closed trial is no longer RUNNING). The
    history leaves out the run being proposed: a trial of it still open was asked again (no edits), and failed."""
    rows = {r["seq"]: r for r in history if r.get("kind") == Kind.EXPERIMENT}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        row = rows.get(trial.user_attrs.get("seq"))
        status = row["status"] if row else None
        if status in UNFINISHED:
            continue  # still being judged (--parallel)
        if status in (Status.KEEP, Status.DISCARD):
            value = row["judged_val_bpb"] if row.get("judged_val_bpb") is not None else row["val_bpb"]
            study.tell(trial.number, value)
        elif status in FAILED:
            study.tell(trial.number, state=TrialState.PRUNED)
        else:  # rejected, refused, interrupted, or no row at all: nothing was learned about its values
            study.tell(trial.number, state=TrialState.FAIL)


def draw(
    trials: list[FrozenTrial], space: dict[str, BaseDistribution], fixed: dict[str, int | float], seed: int
) -> dict[str, int | float]:
    """TPE's values for the parameters of `space` not in `fixed`, given the study's finished trials (on a copy in
    memory: the study on disk receives only what was written)."""
    scratch = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    )
    scratch.add_trials(trials)
    scratch.enqueue_trial(fixed)
    return scratch.ask(space).params


def tell_base(study: optuna.Study, history: list[dict], space: dict[str, Knob]) -> None:
    """Trial 0: the unchanged code (the base commit's values), valued at the mean of its baselines, so TPE knows
    from the start where the default lies and how good it is."""
    baselines = [r for r in history if r.get("kind") == Kind.BASELINE and r.get("val_bpb") is not None]
    if not baselines:
        return
    study.add_trial(
        optuna.trial.create_trial(
            params={p: k.base for p, k in space.items()},
            distributions={p: k.distribution for p, k in space.items()},
            value=sum(r["val_bpb"] for r in baselines) / len(baselines),
            user_attrs={"seq": [r["seq"] for r in baselines], "description": "the unchanged code (its baselines)"},
        )
    )


class OptunaAgent:
    name = "optuna"
    model = None

    def __init__(self, seed: int = 0, frozen: frozenset[str] = frozenset()):
        self.seed, self.frozen = seed, frozen
        self.study: optuna.Study | None = None
        self.path = None  # where self.study is stored

    def open(self, ctx: ProposalContext) -> optuna.Study:
        """The campaign's study, created on its first proposal; a resumed daemon opens the same one."""
        if ctx.agent_state is None:
            raise Abandoned("the optuna agent needs a state folder for its study (ProposalContext.agent_state)")
        path = ctx.agent_state.with_suffix(".db")
        if self.path != path:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path = path
            self.study = optuna.create_study(
                study_name=ctx.agent_state.name, storage=f"sqlite:///{path}", direction="minimize", load_if_exists=True
            )
            if "sampler_seed" not in self.study.user_attrs:
                for key, value in {
                    "sampler": f"TPESampler(n_startup_trials={STARTUP_TRIALS})",
                    "sampler_seed": self.seed,
                    "knobs_per_proposal": KNOBS,
                    "objective": "val_bpb as the keep rule judged it (mean over the verdict's pairs)",
                }.items():
                    self.study.set_user_attr(key, value)
        return self.study

    def propose(self, ctx: ProposalContext) -> Proposal:
        study = self.open(ctx)
        sampler_seed = study.user_attrs["sampler_seed"]
        tell_verdicts(study, ctx.history)
        gpu = ctx.hardware.get("backend") in ("metal", "cuda")
        space = search_space({p: ctx.base_files[p] for p in ctx.editable}, gpu, self.frozen)
        editor = ScopedEditor(ctx.worktree, ctx.editable, ctx.readable)
        current = {}  # param -> (line index, value) in the champion's files
        for param, path, line_no, _, value, _ in constants({p: editor.read(p) for p in ctx.editable}, gpu, self.frozen):
            knob = space.get(param)
            if knob and knob.path == path and contains(knob.distribution, value):
                current[param] = (line_no, value)
        if not current:
            raise Abandoned("no searchable constant in the editable files (all frozen, or outside the study's ranges)")
        distributions = {p: space[p].distribution for p in current}
        if not study.get_trials(deepcopy=False):
            tell_base(study, ctx.history, space)
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        tried = {r["description"] for r in ctx.history if r.get("description")}
        rng = random.Random(f"{sampler_seed}:{ctx.seed}:{ctx.seq}")
        for attempt in range(ATTEMPTS):
            chosen = rng.sample(sorted(current), min(KNOBS, len(current)))
            seed = rng.randrange(2**32)
            values = {p: current[p][1] for p in current if p not in chosen}
            drawn = draw(trials, distributions, values, seed)
            changes = {}
            for p in chosen:
                new = as_written(distributions[p], drawn[p])
                if moved(distributions[p], current[p][1], new):
                    changes[p] = new
            description = ", ".join(
                f"{space[p].name} {format_number(current[p][1])} -> {format_number(new)}"
                for p, new in sorted(changes.items())
            )
            if changes and description not in tried:
                break
        else:
            raise Abandoned(f"{ATTEMPTS} draws from the study moved nothing or repeated a tried change")
        for p, new in changes.items():
            line = editor.read(space[p].path).splitlines()[current[p][0]]
            editor.str_replace(space[p].path, line, rewrite(line, space[p].branch, new))
        params = {p: changes.get(p, current[p][1]) for p in current}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.RUNNING,
                params=params,
                distributions=distributions,
                user_attrs={"seq": ctx.seq, "description": description, "draw_seed": seed, "attempt": attempt},
            )
        )
        number = study.get_trials(deepcopy=False)[-1].number
        held = len(chosen) - len(changes)
        return Proposal(
            description=description,
            hypothesis=f"Optuna TPE trial {number} (sampler seed {sampler_seed}, draw seed {seed}): "
            f"{len(changes)} of {len(current)} constants moved together"
            + (f", {held} drawn near the champion's value and left there" if held else ""),
        )
