"""The scoped editor and the offline agent, on a real worktree copy of the trainer."""

from __future__ import annotations

import pytest

from agents.base import Abandoned, EditorError, ProposalContext, ScopedEditor
from agents.offline import OfflineAgent, neighbours, tunables
from conftest import ROOT


def editor(worktree) -> ScopedEditor:
    return ScopedEditor(worktree, ["trainer/train.py"], ["inside/evaluate.py"])


def test_editor_scope(worktree):
    ed = editor(worktree)
    assert "MATRIX_LR" in ed.view("trainer/train.py")
    assert "def serve" in ed.view("/inside/evaluate.py")
    with pytest.raises(EditorError, match="may not edit"):
        ed.str_replace("inside/evaluate.py", "import", "import")
    with pytest.raises(EditorError, match="may not view"):
        ed.view("pyproject.toml")
    with pytest.raises(EditorError, match="leave the worktree"):
        ed.view("../../etc/passwd")
    with pytest.raises(EditorError, match="not found"):
        ed.str_replace("trainer/train.py", "NO SUCH TEXT", "x")
    with pytest.raises(EditorError, match="occurs"):
        ed.str_replace("trainer/train.py", "import", "import")
    ed.str_replace(str(worktree / "trainer/train.py"), "MATRIX_LR = 0.04", "MATRIX_LR = 0.05")
    assert "MATRIX_LR = 0.05" in (worktree / "trainer/train.py").read_text()
    assert ed.edited == {"trainer/train.py"}


def test_view_range_and_insert(worktree):
    ed = editor(worktree)
    lines = ed.view("trainer/train.py", [1, 3]).splitlines()
    assert len(lines) == 3 and lines[0].strip().startswith("1")
    ed.insert("trainer/train.py", 0, "# hello")
    assert (worktree / "trainer/train.py").read_text().startswith("# hello\n")
    with pytest.raises(EditorError):
        ed.view("trainer/train.py", [0, 5])


def test_tunables_are_found_per_backend():
    text = (ROOT / "trainer/train.py").read_text()
    cpu = {name: value for _, name, value, _ in tunables(text, gpu=False)}
    gpu = {name: value for _, name, value, _ in tunables(text, gpu=True)}
    assert cpu["DEPTH"] == 2 and gpu["DEPTH"] == 4 and cpu["TOTAL_BATCH_TOKENS"] == 2**12
    assert "PRINT_EVERY_S" not in cpu and "COMPILE" not in cpu
    assert cpu["MATRIX_LR"] == 0.04


def test_neighbours_stay_in_range():
    assert neighbours("WARMDOWN_FRAC", 0.5) == [0.4, 0.45, 0.55, 0.6]
    assert neighbours("DEPTH", 2) == [1, 3]
    assert neighbours("SEQ_LEN", 256) == [128, 512]
    assert all(v > 0 for v in neighbours("MATRIX_LR", 0.04))


def context(worktree, history=()):
    return ProposalContext(
        program="model",
        worktree=worktree,
        editable=["trainer/train.py"],
        readable=[],
        history=list(history),
        best=None,
        last_failure_tail=None,
        budget_s=60,
        hardware={"backend": "cpu"},
        seq=3,
    )


def test_offline_agent_edits_one_constant_and_says_so(worktree):
    before = (worktree / "trainer/train.py").read_text()
    proposal = OfflineAgent(seed=1).propose(context(worktree))
    after = (worktree / "trainer/train.py").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1
    name, rest = proposal.description.split(" ", 1)
    old, new = rest.split(" -> ")
    assert changed[0][0].startswith(f"{name} = ") and changed[0][1].startswith(f"{name} = ")
    assert old != new


def test_offline_agent_never_repeats_a_tried_change(worktree, tmp_path):
    text = (worktree / "trainer/train.py").read_text()
    options = sum(len(neighbours(n, v)) for _, n, v, _ in tunables(text, gpu=False))
    seen = []
    for _ in range(options):
        (worktree / "trainer/train.py").write_text(text)
        seen.append(OfflineAgent(seed=1).propose(context(worktree, [{"description": d} for d in seen])).description)
    assert len(set(seen)) == options
    (worktree / "trainer/train.py").write_text(text)
    with pytest.raises(Abandoned):
        OfflineAgent(seed=1).propose(context(worktree, [{"description": d} for d in seen]))
