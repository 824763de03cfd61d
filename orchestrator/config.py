"""One campaign's settings, each field documented where it is declared.

`arx-daemon start` has one option per field, generated from here (orchestrator/cli.py
`settings_options`; the keep rule's thresholds likewise from `Policy`), so a field's meaning is
written once; the campaign row keeps `limits_dict()` as JSON (`campaign.settings`), so a resumed
campaign and a person reading the ledger see what it ran with.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .campaign.policy import Policy
from .programs import ROOT


def _doc(default=MISSING, help: str = "", factory=MISSING, flag: str | None = None, option: bool = True, choices=()):
    """A documented field; `flag`: start's option when it is not the field's name; `option`: whether start has one;
    `choices`: the values it takes, when they are few."""
    meta = {"help": help, "flag": flag, "option": option, "choices": choices}
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass
class Settings:
    state_dir: Path = _doc(
        help="where the ledger, worktrees, runs, logs and locks live (start: state/ in the arx checkout, or "
        "$ARX_STATE_DIR)"
    )
    program: str = _doc(help="research program: model (edits trainer/train.py) or data (prepare.py, data_sources.py)")
    tag: str = _doc(help="campaign name; the branch is autoresearch/<tag> or autoresearch-data/<tag>")
    dataset: str = _doc("stdlib", "dataset registry name (stdlib is embedded and offline)")
    budget_s: float = _doc(
        300.0, "training seconds per run, by the daemon's clock (start-up and scoring are extra)", flag="budget"
    )
    max_experiments: int | None = _doc(
        None,
        "stop after this many proposals (measurements of the champion and re-runs "
        "of a candidate not counted); unset: no limit",
    )
    max_cost_usd: float | None = _doc(None, "stop before an LLM call could take spending past this; unset: no limit")
    slots: int = _doc(1, "trainers allowed at once across every campaign of this state directory")
    seed: int = _doc(
        0, "runs use seeds from seed + 1 up (baselines seed + 1 .. seed + R); also seeds the offline agent"
    )
    startup_grace_s: float = _doc(
        180.0, "seconds a trainer may run past its budget until a baseline has measured the real start-up allowance"
    )
    stall_s: float = _doc(120.0, "kill a phase that prints nothing for this long")
    memory_mb: float | None = _doc(
        None, "kill a phase whose process tree RSS + swap passes this (start: 85% of RAM, shared by --parallel runs)"
    )
    eval_timeout_s: float = _doc(600.0, "deadline of the sealed evaluation of one run")
    backoff_s: float = _doc(5.0, "first wait after a failed agent call or an unexpected error; doubles up to 300 s")
    unsafe_no_sandbox: bool = _doc(
        False, "run candidate code unconfined when no sandbox can be set up (never needed where `doctor` shows one)"
    )
    policy: Policy = _doc(
        help="the keep rule's thresholds (orchestrator/campaign/policy.py; start has one option each)",
        factory=Policy,
        option=False,
    )
    executor: str = _doc(
        "local",
        "where runs train: local (subprocesses on this machine) or ray (exclusive slots on a Ray cluster; the "
        "held-out documents and the scoring stay here)",
        choices=("local", "ray"),
    )
    ray_address: str = _doc(
        "local",
        "with --executor ray: HOST:PORT of the head (`ray start --head` prints it), auto (RAY_ADDRESS or a cluster "
        "started on this machine), or local (start a Ray instance here with --parallel slots)",
    )
    parallel: int = _doc(
        1,
        "candidates in flight at once (above 1 needs --executor ray); each is judged against the champion it was "
        "built on and rebased and re-measured if the champion moved",
    )
    slot_resources: dict = _doc(
        help='what one run holds exclusively on its node, as JSON: {"CPU": 8}, {"GPU": 1}; CPUs are pinned',
        factory=lambda: {"CPU": 1},
    )
    repo: Path = _doc(
        ROOT, "the repository campaigns branch from: arx's own checkout (tests and benchmarks use a copy)", option=False
    )

    def limits_dict(self) -> dict:
        """What the campaign row records: everything but the paths and the names that key the campaign."""
        skip = {"state_dir", "program", "tag", "dataset", "repo", "policy"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip} | {
            "policy": self.policy.to_dict()
        }

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}
