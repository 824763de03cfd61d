"""The kernel cache's checks on real MLX kernel sources: what a compile phase may hand to its runs, and what not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import HANG_S, ROOT, copy_trainer, edit_constant, make_spec
from orchestrator import fingerprint
from orchestrator.measure import experiment, kernels

# A few more kernel shapes than the trainer's: scalars, casts, two outputs, integers, booleans, non-finite literals
FORMS = """
import mlx.core as mx
x, i = mx.ones((8, 8)), mx.arange(8, dtype=mx.int32)
fns = [
    lambda x: mx.exp(x) * 2.5 + mx.array(1.0),
    lambda x: (mx.tanh(x[::2]) * 3, mx.sigmoid(x[::2]) - 1),
    lambda x: mx.where(x > 0.5, x, float("inf")) + mx.nan_to_num(x, nan=float("-inf")),
    lambda x: (x.astype(mx.float16) * 3).astype(mx.float32),
    lambda x: mx.maximum(x.T * 2, 1e-30),
]
for f in fns:
    mx.eval(mx.compile(f)(x))
mx.eval(mx.compile(lambda i: (i * 3 + 1) % 5 == 2)(i))
mx.eval(mx.compile(lambda x, s: x * s + 0.25)(x, mx.array(3.0)))
"""


@pytest.fixture(scope="session")
def phase_output(stdlib, tmp_path_factory) -> Path:
    """The MLX kernel folder a real compile-only trainer run leaves (unsandboxed: the parser's input), plus FORMS."""
    tmp = tmp_path_factory.mktemp("compiled")
    env = dict(
        os.environ, ARX_COMPILE_ONLY="1", ARX_PREPARED_DIR=str(stdlib.prepared), ARX_RUN_DIR=str(tmp), TMPDIR=str(tmp)
    )
    for cmd in ([sys.executable, "-m", "trainer.train"], [sys.executable, "-c", FORMS]):
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
        assert done.returncode == 0, done.stderr[-2000:]
    return kernels.cache_dir(tmp)


def sources(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.cpp"))}


def test_every_kernel_mlx_writes_parses_and_its_name_is_derived_from_its_body(phase_output):
    found = sources(phase_output)
    kept, refused = kernels.select(phase_output)
    assert len(found) >= 35 and {f"{k.file_name}.cpp" for k in kept} == set(found)
    assert refused == {}  # the phase's own .so files are skipped silently, never kept
    assert any("_strided_" in k.name for k in kept) and any(k.constants for k in kept)
    assert 0 < kernels.capacity_bits(kept) // 8 < 8 << 10


def test_a_literal_has_one_text_per_value():
    """Else a literal's spelling (0.5, 0.50, 0.500...) would carry bits of its own, past the caps' bound."""
    assert kernels.canonical("float", "0.5") and kernels.canonical("float", "9.99999997e-07")
    assert kernels.canonical("int32_t", "-128") and kernels.canonical("bool", "true")
    assert not any(kernels.canonical("float", t) for t in ("0.50", "5e-1", "0.5000000001", "+0.5"))
    assert not kernels.canonical("int32_t", "0128")


def test_libstdcxx_hash_matches_mlx():
    # the name MLX gave `tanh(x * 0.5) + exp(y) * 3`, read off a real cache: its last number hashes "0.53"
    assert kernels.std_hash(b"0.53") == 9223693478639088057
    assert kernels.std_hash(b"") == 6142509188972423790


def tampered(source: str, name: str) -> dict[str, tuple[str, str]]:
    """Edits a compile phase could make to a real kernel source, each as (new text, new file stem)."""
    body = source.split("\n")
    loop = next(i for i, line in enumerate(body) if line.startswith("  for ("))
    return {
        "a data array": (source.replace("extern \"C\"  {\n", 'extern "C"  {\nfloat stash[] = {1.5, 2.5};\n'), name),
        "an include": (source.replace("#ifndef INFINITY", '#include "/etc/passwd"\n#ifndef INFINITY', 1), name),
        "a comment": ("\n".join([*body[:loop], "  // 0.1234 0.5678", *body[loop:]]), name),
        "a system call": (source.replace("Multiply()(", "system()(", 1), name),
        "bits in the name": (source.replace(name, name + "X"), name + "X"),
        "a changed literal": (source.replace(" = 0.5;", " = 0.25;", 1) if " = 0.5;" in source else None, name),
        "a renamed file": (source, name[:-1] + "Y"),
    }


def test_anything_but_what_mlx_writes_is_refused(phase_output, tmp_path):
    found = sources(phase_output)
    with_literal = next(n for n, s in found.items() if " = 0.5;" in s or "= 2;" in s)
    stem = with_literal.removesuffix(".cpp")
    for what, (text, new_stem) in tampered(found[with_literal], stem).items():
        if text is None:
            continue
        with pytest.raises(kernels.Refused):
            kernels.parse(text, new_stem)
            pytest.fail(f"{what} was accepted")
    folder = tmp_path / "phase"
    folder.mkdir()
    (folder / "weights.npy").write_bytes(b"\x93NUMPY stash")
    (folder / "libstash.so").write_bytes(b"\x7fELF stash")
    (folder / with_literal).symlink_to(phase_output / with_literal)
    (folder / "big.cpp").write_text(found[with_literal] + " " * kernels.MAX_SOURCE_BYTES)
    kept, refused = kernels.select(folder)
    assert kept == [] and set(refused) == {"weights.npy", with_literal, "big.cpp"}


def test_the_caps_bound_what_passes(phase_output, monkeypatch):
    monkeypatch.setattr(kernels, "MAX_CONSTANTS", 3)
    kept, refused = kernels.select(phase_output)
    assert sum(k.constants for k in kept) <= 3 and any("over the caps" in why for why in refused.values())
    monkeypatch.setattr(kernels, "MAX_KERNELS", 2)
    kept, _ = kernels.select(phase_output)
    assert len(kept) == 2


def test_the_key_follows_every_trainer_file_and_nothing_else(tmp_path):
    wt = copy_trainer(tmp_path / "a")
    key = kernels.cache_key(wt, 2049, "v1")
    assert kernels.cache_key(wt, 2049, "v1") == key
    assert len({key, kernels.cache_key(wt, 4097, "v1"), kernels.cache_key(wt, 2049, "v2")}) == 3
    edit_constant(wt, "MIN_DOC_CHARS", "65", file="data_sources.py")
    assert kernels.cache_key(wt, 2049, "v1") != key


@pytest.mark.skipif(kernels.backend() != "cpu", reason="only the CPU backend compiles kernels to files")
def test_a_compile_phase_publishes_kernels_compiled_here_and_later_runs_reuse_them(stdlib, tmp_path):
    wt = copy_trainer(tmp_path / "wt")
    edit_constant(wt, "MLP_RATIO", "3")  # code no other test compiles: a phase of its own
    spec = make_spec(wt, tmp_path / "run", stdlib, kernels=tmp_path / "kernels")
    spec.run_dir.mkdir()
    phases = []
    cache, log = experiment.compile_kernels(spec, stdlib.prepared, lambda: False, lambda p, pid: phases.append(p))
    key = kernels.cache_key(wt, json.loads((stdlib.prepared / "meta.json").read_text())["vocab_size"],
                            fingerprint.arx_version())
    assert cache == tmp_path / "kernels" / key and "compiling" in phases
    manifest = json.loads((cache / kernels.MANIFEST).read_text())
    assert len(manifest["kernels"]) >= 30 and manifest["refused"] == {} and manifest["forward_traced"] is True
    assert b"traced the compiled forward" in log and not (spec.run_dir / "compile.log").exists()  # not yet: see train
    libs = sorted(p.name for p in kernels.cache_dir(cache).iterdir())
    assert libs == sorted(f"lib{k}.so" for k in manifest["kernels"])  # libraries only, all made here
    assert [p.name for p in (tmp_path / "kernels").iterdir() if not p.name.startswith("pch-")] == [key]  # no scratch
    phases.clear()
    experiment.train(spec, lambda: False, lambda phase, pid: phases.append(phase))
    assert "compiling" not in phases  # the same code: no second phase
    assert not list(kernels.cache_dir(spec.run_dir / "tmp").glob("*.cpp"))  # the run compiled nothing itself


def test_a_link_on_the_way_to_the_kernels_is_refused(phase_output, tmp_path):
    """A compile phase that makes $TMPDIR/mlx/<version> a link would have the daemon read sources anywhere."""
    raw = tmp_path / "raw"
    (raw / "mlx").mkdir(parents=True)
    (raw / "mlx" / kernels.mlx_version()).symlink_to(phase_output.parent)
    manifest = kernels.publish(raw, tmp_path / "src", tmp_path / "out", tmp_path, kernels.compile_here)
    assert manifest["kernels"] == [] and list(manifest["refused"].values()) == ["a link, not MLX's folder"]


# Values where the kernels' arithmetic has edges: exp's clamps at +-88, non-finite inputs, subnormals, zero
EDGES = """
import sys
import mlx.core as mx
import numpy as np
edges = [0.0, -0.0, 1e-45, -1e-45, 1e-38, 0.5, -0.5, 87.9, 88.1, -87.9, -88.1, 1e30, -1e30, "inf", "-inf", "nan"]
x = mx.array(np.concatenate([np.array(edges, dtype=np.float32), np.linspace(-100, 100, 4093, dtype=np.float32)]))
cap = 15.0
fns = [
    lambda x: mx.exp(x * 0.13) * 2.5 + 1.0,
    lambda x: 1 - 2 / (1 + mx.exp(x * (2.0 / cap))),  # the trainer's tanh written with exp
    lambda x: mx.where(x > 0.5, mx.log(mx.abs(x) + 1e-30), mx.sigmoid(x)),
    lambda x: mx.rsqrt(x * x + 1e-6) - mx.square(x) / (x + 1),
]
np.save(sys.argv[1], np.stack([np.asarray(mx.compile(f)(x)) for f in fns]))
"""


@pytest.mark.skipif(kernels.backend() != "cpu", reason="only the CPU backend compiles kernels to files")
def test_the_vectorising_flags_change_no_bit(tmp_path):
    """The trusted compile adds flags that let g++ vectorise the kernels' loops (`kernels.VECTOR_FLAGS`): the same
    kernel sources built with and without them must compute exactly the same values, edges included."""
    script = tmp_path / "edges.py"
    script.write_text(EDGES)

    def run(tmpdir: Path) -> np.ndarray:
        out = tmp_path / f"{tmpdir.name}.npy"
        env = dict(os.environ, TMPDIR=str(tmpdir))
        done = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return np.load(out)

    raw = tmp_path / "raw"
    raw.mkdir()
    run(raw)  # MLX compiles the kernels itself and leaves their sources
    found = sorted(kernels.cache_dir(raw).glob("*.cpp"))
    assert len(found) >= 4 and set(kernels.VECTOR_FLAGS) <= set(kernels.cache_flags())
    without = tuple(f for f in kernels.cache_flags() if f not in kernels.VECTOR_FLAGS)
    values, vectorised = {}, 0
    for name, flags in (("without", without), ("with", kernels.cache_flags())):
        libs = kernels.cache_dir(tmp_path / name)
        libs.mkdir(parents=True)
        for source in found:
            cmd = ["g++", *flags, "-shared", "-I", str(kernels.mlx_include()), str(source)]
            done = subprocess.run([*cmd, "-o", str(libs / f"lib{source.stem}.so"), "-fopt-info-vec-optimized"],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            vectorised += name == "with" and "loop vectorized" in done.stderr
        values[name] = run(tmp_path / name)
        assert not list(libs.glob("*.cpp"))  # every kernel came from the libraries built here
    assert values["with"].tobytes() == values["without"].tobytes()  # bit for bit, NaN and infinities alike
    assert vectorised >= len(found) // 2  # the point of the flags: MLX's functors inlined into SIMD loops
