"""The trust boundary as the code's imports, readable from `ls`: orchestrator/ and agents/ never import trainer/ (nor
MLX); trainer/ imports only inside/; inside/ imports neither orchestrator/ nor agents/ nor trainer/. No data-program
code is imported by the trainer (it runs in `prepare` only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT
from orchestrator.programs import LOCKED, PROGRAMS

OURS = ("orchestrator", "agents", "inside", "trainer", "bench")
# Of our packages (and MLX), what each may import; the stdlib and third-party packages are not listed.
MAY_IMPORT = {
    "orchestrator": {"orchestrator", "agents", "inside"},
    "agents": {"agents", "orchestrator"},
    "trainer": {"trainer", "inside", "mlx"},
    "inside": {"inside", "mlx"},
}
EDITABLE = {p[: -len(".py")].replace("/", ".") for program in PROGRAMS.values() for p in program.editable}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in OURS for p in sorted((ROOT / package).rglob("*.py"))}


def type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: they never run."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute name) of every import that runs, at module level or in a function: a relative import is
    resolved against the file's package; `from a import b` names both a and a.b (b may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = type_checking_only(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_the_editable_files_are_the_ones_the_test_guards():
    assert EDITABLE == {"trainer.train", "trainer.prepare", "trainer.data_sources"}
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "trainer").glob("*.py")} == {
        *(p for program in PROGRAMS.values() for p in program.editable),
        "trainer/__init__.py",
    }, "trainer/ holds candidate code only"
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "inside").glob("*.py")} <= set(LOCKED)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_side_imports_only_what_the_trust_boundary_allows(package):
    ours = {*OURS, "mlx"}
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imports(path)
        if name.split(".")[0] in ours and name.split(".")[0] not in MAY_IMPORT[package]
    ]
    assert not bad, f"{package}/ may import only {sorted(MAY_IMPORT[package])} of ours:\n" + "\n".join(bad)


def test_no_data_program_code_is_imported_where_training_runs():
    """prepare.py and data_sources.py are the data program's: what they compute reaches training as the checked files
    of a prepared folder, never as code running beside the trainer."""
    data_program = {"prepare", "data_sources"}
    train = ROOT / "trainer" / "train.py"
    found = [(line, name) for line, name in imports(train) if name.rpartition(".")[2] in data_program]
    assert not found, f"trainer/train.py imports data-program code: {found}"
