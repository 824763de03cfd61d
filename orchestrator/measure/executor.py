"""Where measurements run: one small protocol in front of the machines that train candidates.

`local` is today's path: `experiment.measure` in the daemon's process, its phases as sandboxed subprocesses under
the watchdog, slots shared through file locks (orchestrator/measure/slots.py). `ray`
(orchestrator/measure/ray_executor.py, imported only when a campaign asks for it: daemon.executor_for) runs the same
sandboxed phases on a Ray node holding an exclusive slot, while the trusted scorer stays here with the held-out
documents.

An executor never touches the ledger or git: the campaign loop records what `measure` returns.
A measurement whose machine vanished under it (a killed worker, a lost node) comes back with
status LOST; the loop marks that attempt `interrupted` and measures once more, away from the
node it was lost on (`avoid`) where the executor has another. A champion is measured `near` a
candidate when that candidate landed on a machine class the champion has no run on.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from .. import fingerprint
from . import experiment

LOST = "lost"  # Measurement.status when the machine running it went away (retried once by the campaign)


class Unavailable(Exception):
    """The executor cannot start (no cluster at that address, no node with a slot's resources): one line."""


class Executor(Protocol):
    name: str
    holds_slots: bool  # True: each measurement already has an exclusive slot (no machine-wide file lock needed)

    def measure(
        self,
        spec: experiment.Spec,
        should_stop: Callable[[], bool],
        on_phase: Callable[[str, int | None], None],
        avoid: str | None = None,  # a Measurement.node to keep away from (where the last attempt was lost)
        near: str | None = None,  # a Measurement.node to measure on (the champion, on a candidate's machine class)
    ) -> experiment.Measurement: ...

    def fingerprint(self) -> dict:
        """The fingerprint of the machines measurements land on (the champion is measured under it)."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Phases as subprocesses of the daemon, on this machine."""

    name = "local"
    holds_slots = False

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None) -> experiment.Measurement:
        return replace(experiment.measure(spec, should_stop, on_phase), node=platform.node())

    def fingerprint(self) -> dict:
        return fingerprint.current()

    def close(self) -> None:
        pass
