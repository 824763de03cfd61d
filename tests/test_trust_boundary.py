"""The trust boundary as the code's imports: the trusted side never imports candidate code or MLX; the code that
runs in the jail beside candidate code (inside/) imports none of the daemon's; no data-program code is imported by
the trainer or the model process (it runs in `prepare` only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT
from orchestrator.programs import LOCKED, PROGRAMS

TRUSTED = ("orchestrator", "agents")
EDITABLE = {p[: -len(".py")].replace("/", ".") for program in PROGRAMS.values() for p in program.editable}
LOCKED_MODULES = {
    p[: -len(".py")].replace("/", ".") for p in LOCKED if p.endswith(".py") and not p.endswith("__init__.py")
}


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [
                (node.lineno, f"{node.module}.{alias.name}") for alias in node.names
            ]
    return found


def trusted_files() -> list[Path]:
    return sorted(p for folder in TRUSTED for p in (ROOT / folder).rglob("*.py"))


def test_the_editable_files_are_the_ones_the_test_guards():
    assert EDITABLE == {"trainer.train", "trainer.prepare", "trainer.data_sources"}
    assert LOCKED_MODULES == {"inside.evaluate", "inside.blas", "inside.device", "inside.loader"}
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "inside").glob("*.py")} <= set(LOCKED)


def test_the_trusted_side_never_imports_candidate_code_or_mlx():
    bad = []
    for path in trusted_files():
        for line, name in imports(path):
            module = name if name.startswith(("trainer.", "mlx")) else None
            if module is None:
                continue
            editable = any(module == m or module.startswith(m + ".") for m in EDITABLE)
            unlocked_trainer = module.startswith(("trainer.", "inside.")) and not any(
                module == m or module.startswith(m + ".") for m in LOCKED_MODULES
            )
            if editable or unlocked_trainer or module.startswith("mlx"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "the trusted side must not import these:\n" + "\n".join(bad)


def test_the_trainer_never_imports_the_daemon():
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {name}"
        for p in sorted((ROOT / "trainer").glob("*.py"))
        for line, name in imports(p)
        if name.split(".")[0] in ("orchestrator", "agents")
    ]
    assert not bad, "\n".join(bad)


def test_inside_imports_nothing_of_the_daemon_or_the_programs():
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {name}"
        for p in sorted((ROOT / "inside").glob("*.py"))
        for line, name in imports(p)
        if name.split(".")[0] in ("orchestrator", "agents", "trainer")
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", ["trainer/train.py", "inside/evaluate.py", "inside/blas.py"])
def test_no_data_program_code_is_imported_where_training_or_scoring_runs(path):
    """prepare.py and data_sources.py are the data program's: what they compute reaches training as the checked files
    of a prepared folder, never as code running beside the trainer or the model process."""
    data_program = {m for m in EDITABLE if m != "trainer.train"}
    source = ROOT / path
    found = [
        (line, name)
        for line, name in imports(source)
        if name in data_program or name.endswith((".prepare", ".data_sources"))
    ]
    relative = [
        (node.lineno, alias.name)
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
        for alias in node.names
        if alias.name in ("prepare", "data_sources")
    ]
    assert not found + relative, f"{path} imports data-program code: {found + relative}"
