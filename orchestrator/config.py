"""One campaign's settings, each field documented where it is declared.

`arx-daemon start` turns its options into a `Settings`; the campaign row keeps `limits_dict()` as
JSON (`campaign.settings`), so a resumed campaign and a person reading the ledger see what it ran with.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .policy import Policy
from .programs import ROOT


def _doc(default=MISSING, help: str = "", factory=MISSING):
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class Settings:
    state_dir: Path = _doc(help="where the ledger, worktrees, runs, logs and locks live")
    program: str = _doc(help="research program: model (edits trainer/train.py) or data (prepare.py, data_sources.py)")
    tag: str = _doc(help="campaign name; the branch is autoresearch/<tag> or autoresearch-data/<tag>")
    dataset: str = _doc("stdlib", "dataset registry name (stdlib is embedded and offline)")
    budget_s: float = _doc(300.0, "training seconds per run, by the daemon's clock (start-up and scoring are extra)")
    max_experiments: int | None = _doc(
        None,
        "stop after this many proposals (measurements of the champion and re-runs "
        "of a candidate not counted); None: no limit",
    )
    max_cost_usd: float | None = _doc(None, "stop before an LLM call could take spending past this; None: no limit")
    slots: int = _doc(1, "trainers allowed at once across every campaign of this state directory")
    seed: int = _doc(
        0, "runs use seeds from seed + 1 up (baselines seed + 1 .. seed + R); also seeds the offline agent"
    )
    startup_grace_s: float = _doc(
        180.0, "seconds a trainer may run past its budget until a baseline has measured the real start-up allowance"
    )
    stall_s: float = _doc(120.0, "kill a phase that prints nothing for this long")
    memory_mb: float | None = _doc(None, "kill a phase whose process tree RSS + swap passes this; None: no cap")
    eval_timeout_s: float = _doc(600.0, "deadline of the sealed evaluation of one run")
    backoff_s: float = _doc(5.0, "first wait after a failed agent call or an unexpected error; doubles up to 300 s")
    unsafe_no_sandbox: bool = _doc(False, "run candidate code unconfined (only where no sandbox can be set up)")
    policy: Policy = _doc(help="the keep rule's thresholds (orchestrator/policy.py)", factory=Policy)
    executor: str = _doc("local", "where measurements run: local (subprocesses here) or ray (slots of a Ray cluster)")
    ray_address: str = _doc("local", "the Ray cluster (host:port), or local: start one on this machine")
    parallel: int = _doc(1, "candidates in flight at once (more than 1 needs the ray executor)")
    slot_resources: dict = _doc(help="what one ray slot holds exclusively, e.g. {'CPU': 1}", factory=lambda: {"CPU": 1})
    repo: Path = _doc(ROOT, "the repository campaigns branch from (tests and benchmarks use a scratch copy)")

    def limits_dict(self) -> dict:
        """What the campaign row records: everything but the paths and the names that key the campaign."""
        skip = {"state_dir", "program", "tag", "dataset", "repo", "policy"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip} | {
            "policy": self.policy.to_dict()
        }

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}
