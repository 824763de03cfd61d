"""The agent protocol, its context and result, and the scoped editor every agent edits through.

Agents never touch git or the database: they edit files in a campaign worktree through a
`ScopedEditor` and return a `Proposal`. Control flow between the campaign loop and an agent
is by exceptions, so the loop reads as the happy path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class NoEdits(Exception):
    """The agent finished without changing any editable file."""


class Abandoned(Exception):
    """The agent did not submit an experiment within its round limit."""


class Refused(Exception):
    """The model refused the request (stop reason `refusal`), on the fallback model too if one was given."""

    def __init__(self, message: str, category: str | None = None):
        super().__init__(message)
        self.category = category


class TransientAgentError(Exception):
    """Worth retrying later: overload, rate limit, server error, timeout."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the API's retry-after: the daemon waits at least this long


class AgentPaused(Exception):
    """Cannot continue until a person acts (an invalid key, a billing or spend limit, a request the
    API rejects as invalid); the campaign pauses with this message, which says what to do."""


class CostLimitReached(Exception):
    """The next call would exceed the campaign's --max-cost-usd."""


@dataclass
class ProposalContext:
    program: str
    worktree: Path
    editable: list[str]
    readable: list[str]
    history: list[dict]  # seq, kind, status, val_bpb, delta, description, decision_reason; oldest first
    best: dict | None  # seq, val_bpb, tok_per_sec, description of the champion
    last_failure_tail: str | None  # the last lines of the most recent failed run's log
    budget_s: float
    hardware: dict
    seq: int
    seed: int = 0
    record_call: Callable[[dict], None] = lambda call: None  # writes one llm_call row
    cost_left_usd: float | None = None  # None: no limit
    retry_note: str | None = None  # set when the agent is asked again (e.g. after a proposal with no edits)
    base_files: dict[str, str] = field(default_factory=dict)  # editable + readable files at the campaign's base commit
    best_diff: str = ""  # how the current best differs from the base, in the editable files
    expected_gap_s: float | None = None  # expected seconds between two proposals (training + evaluation + overhead)
    conversation_path: Path | None = None  # where the agent keeps this proposal's conversation (outside the run dir)
    agent_state: Path | None = None  # a path stem (state/<agent>/<program>-<tag>) an agent may keep files under


@dataclass
class Proposal:
    description: str
    hypothesis: str = ""


class Agent(Protocol):
    name: str
    model: str | None

    def propose(self, ctx: ProposalContext) -> Proposal: ...


class EditorError(Exception):
    """A refused or failed edit; its message goes back to the model as a tool error."""


class ScopedEditor:
    """View the readable files, edit only the editable ones, inside one worktree."""

    def __init__(self, root: Path, editable: list[str], readable: list[str]):
        self.root = Path(root).resolve()
        self.editable = set(editable)
        self.readable = set(readable) | self.editable
        self.edited: set[str] = set()

    def relative(self, path: str) -> str:
        """'trainer/train.py', '/trainer/train.py' and the absolute path all name the same file."""
        p = Path(str(path))
        if p.is_absolute():
            p = p.relative_to(self.root) if p.is_relative_to(self.root) else Path(*p.parts[1:])
        if ".." in p.parts:
            raise EditorError(f"{path}: paths may not leave the worktree")
        return p.as_posix()

    def _file(self, path: str, for_edit: bool) -> tuple[str, Path]:
        rel = self.relative(path)
        allowed = self.editable if for_edit else self.readable
        if rel not in allowed:
            verb = "edit" if for_edit else "view"
            raise EditorError(f"{rel}: you may not {verb} this file; allowed: {', '.join(sorted(allowed))}")
        return rel, self.root / rel

    def view(self, path: str, view_range: list[int] | None = None) -> str:
        rel = self.relative(path)
        if rel in ("", ".", "trainer"):
            return "\n".join(sorted(self.readable))
        rel, file = self._file(path, for_edit=False)
        lines = file.read_text().splitlines()
        start, end = 1, len(lines)
        if view_range:
            start, end = view_range[0], (len(lines) if view_range[1] == -1 else view_range[1])
            if not (1 <= start <= max(1, len(lines)) and start <= end):
                raise EditorError(f"invalid view_range {view_range} for {rel} ({len(lines)} lines)")
        return "\n".join(f"{i:6}\t{line}" for i, line in enumerate(lines[start - 1 : end], start))

    def read(self, path: str) -> str:
        return self._file(path, for_edit=False)[1].read_text()

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        rel, file = self._file(path, for_edit=True)
        text = file.read_text()
        count = text.count(old_str) if old_str else 0
        if count == 0:
            raise EditorError(f"old_str not found in {rel}; view the file and copy the text exactly")
        if count > 1:
            raise EditorError(f"old_str occurs {count} times in {rel}; include more context to make it unique")
        file.write_text(text.replace(old_str, new_str, 1))
        self.edited.add(rel)
        return f"edited {rel}"

    def create(self, path: str, file_text: str) -> str:
        rel, file = self._file(path, for_edit=True)
        file.write_text(file_text)
        self.edited.add(rel)
        return f"wrote {rel}"

    def insert(self, path: str, insert_line: int, text: str) -> str:
        rel, file = self._file(path, for_edit=True)
        lines = file.read_text().splitlines(keepends=True)
        if not 0 <= insert_line <= len(lines):
            raise EditorError(f"insert_line {insert_line} is outside 0..{len(lines)} for {rel}")
        lines.insert(insert_line, text if text.endswith("\n") else text + "\n")
        file.write_text("".join(lines))
        self.edited.add(rel)
        return f"inserted into {rel} after line {insert_line}"
