"""The machine fingerprint: what it records, and that a change in any part shows."""

from __future__ import annotations

import shutil

from orchestrator import fingerprint
from orchestrator.programs import ROOT


def test_fingerprint_records_the_machine(monkeypatch, tmp_path):
    fp = fingerprint.current()
    assert set(fp) == {"backend", "mlx", "blas", "cpu", "cores", "os", "python", "arx"}
    assert fp["backend"] in ("cpu", "metal", "cuda") and "mlx" in fp["mlx"] and fp["cores"] >= 1
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    off = fingerprint.current()
    assert off["blas"].startswith("reference")
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "0")
    library = tmp_path / "libopenblas.so.0"  # ARX_BLAS_LIB must name a file that exists
    library.write_bytes(b"")
    monkeypatch.setenv("ARX_BLAS_LIB", str(library))
    on = fingerprint.current()
    assert fingerprint.digest(on) != fingerprint.digest(off)
    assert fingerprint.changes(off, on) == f"blas: {off['blas']} -> {library}"


def test_arx_version_follows_the_trusted_code(tmp_path):
    for name in ("orchestrator", "agents", "trainer", "inside"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint.arx_version(tmp_path)
    (tmp_path / "trainer" / "train.py").write_text("# an experiment: not trusted code\n")
    assert fingerprint.arx_version(tmp_path) == before
    with open(tmp_path / "inside" / "evaluate.py", "a") as f:
        f.write("\n# changed scorer\n")
    changed = fingerprint.arx_version(tmp_path)
    assert changed != before
    with open(tmp_path / "inside" / "loader.py", "a") as f:
        f.write("\n# changed loader\n")
    assert fingerprint.arx_version(tmp_path) != changed
