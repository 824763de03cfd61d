"""The names a run's status and kind take in the ledger, in one place.

Both are `StrEnum`s: a member equals its plain string, so SQL written by hand, rows read back from
SQLite and code comparing with a member all agree. Imports nothing heavy (status and the dashboard
use it without loading sqlmodel).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What became of a run (`run.status`); users filter on these names in SQL."""

    PROPOSED = "proposed"  # the agent is proposing, or the row waits for its first measurement
    TRAINING = "training"  # prepare or train is running
    EVALUATING = "evaluating"  # the sealed scorer is running
    WAITING = "waiting"  # measured; its candidate's verdict waits for more pairs or for the champion
    MEASURED = "measured"  # a measurement that is not itself a verdict: a baseline, a re-measure, a re-run
    KEEP = "keep"  # a candidate the keep rule kept: the branch advanced to it
    DISCARD = "discard"  # a candidate the keep rule discarded
    CRASH = "crash"
    TIMEOUT = "timeout"
    INVALID = "invalid"  # its score could not be trusted (probes, pins, malformed output)
    REJECTED = "rejected"  # the proposal ended before training (no edits, out of scope, duplicate, ...)
    REFUSED = "refused"  # the model refused the request
    INTERRUPTED = "interrupted"  # stopped, or left mid-flight by a dead daemon


UNFINISHED = (Status.PROPOSED, Status.TRAINING, Status.EVALUATING, Status.WAITING)  # recovery interrupts these
IN_FLIGHT = (Status.TRAINING, Status.EVALUATING)  # using a trainer slot right now
FAILED = (Status.CRASH, Status.TIMEOUT, Status.INVALID)  # measured nothing usable


class Kind(StrEnum):
    """Why a run exists (`run.kind`)."""

    BASELINE = "baseline"  # the unchanged code at campaign start, seeds 1..R
    REBASELINE = "rebaseline"  # the champion again after a machine change or a merge from the sibling program
    EXPERIMENT = "experiment"  # an agent's proposal: the row that carries its verdict
    RERUN = "rerun"  # a further paired measurement of a candidate (`rerun_of` its experiment)
    REMEASURE = "remeasure"  # the champion on another seed (to pair with a candidate, or on a schedule)
    REBASE = "rebase"  # --parallel: a kept candidate re-judged on the champion that moved under it
    LOST = "lost"  # --parallel on Ray: an attempt whose worker died (interrupted, measured again)


CHAMPION_KINDS = (Kind.BASELINE, Kind.REBASELINE, Kind.REMEASURE)  # measurements of the champion
VERDICT_KINDS = (Kind.EXPERIMENT, Kind.REBASE)  # rows that carry a candidate's verdict
CANDIDATE_KINDS = (Kind.EXPERIMENT, Kind.RERUN, Kind.REBASE)  # measurements of a candidate under judgment


def sql_list(values: tuple[str, ...]) -> str:
    """`('a', 'b')` for an SQL `IN`: the members' plain names (a tuple of enums would print their reprs)."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"
