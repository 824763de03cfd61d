"""Hostile trainers against the kernel cache: state stashed in "kernels" must never reach another run.

A cache that outlives a run is where a trainer would hide trained weights to keep training in its re-run on
another seed, or hand them to another candidate. These trainers stash a marker everywhere they can (a weights
file, a fake and a patched library, kernel sources with data in them) from the compile phase and from their
training runs; every later run looks for the marker in everything its TMPDIR holds. The compile phase also
tries to read the training data, which it must not see, and the training run looks for its compile phase's log
(what that phase printed is what it computed, outside the budget). The evaluation's model processes, which get
the cache read-only, try to change it and to read its manifest (which names the files the phase left).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from attack_kit import MARKER

from conftest import copy_trainer, make_spec
from orchestrator.measure import experiment, kernels, sandbox

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(kernels.backend() != "cpu", reason="only the CPU backend compiles kernels to files"),
]
TRAIN = "trainer/train.py"
HOOK = "    t_launch = time.time()\n"
STASH = '''
    import atexit

    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    cache = tmp / "mlx" / mx.__version__ / "cpu"
    marker = b"{marker}"
    if os.environ.get("ARX_COMPILE_ONLY") == "1":
        try:
            saw = len(Path({train_bin!r}).read_bytes()) > 0
        except OSError:
            saw = False
        print(f"HOSTILE compile phase read the training data: {{saw}}", flush=True)

        def stash():
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "weights.npy").write_bytes(marker * 100)
            (cache / "libstash.so").write_bytes(b"\\x7fELF" + marker)
            for i, cpp in enumerate(sorted(cache.glob("*.cpp"))):
                if i % 2:
                    text = cpp.read_text().replace('extern "C"  {{', 'extern "C"  {{\\nconst char* s = "{marker}";', 1)
                    cpp.write_text(text)
            for lib in cache.glob("lib*.so"):  # a new file under the old name: the loaded one stays mapped
                (cache / "new").write_bytes(lib.read_bytes() + marker)
                os.replace(cache / "new", lib)

        atexit.register(stash)
    else:
        seen = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and marker in p.read_bytes())
        print(f"HOSTILE stash seen: {{seen}}", flush=True)
        compile_log = Path(os.environ["ARX_RUN_DIR"]) / "compile.log"  # what its compile phase computed, unbudgeted
        print(f"HOSTILE training reads its compile phase's log: {{compile_log.exists()}}", flush=True)
        (Path(os.environ["ARX_RUN_DIR"]) / "seen.json").write_text(json.dumps(seen))
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "weights.npy").write_bytes(marker * 100)
        for lib in cache.glob("lib*.so"):
            (cache / "new").write_bytes(lib.read_bytes() + marker)
            os.replace(cache / "new", lib)
        for published in Path({root!r}).rglob("*"):
            try:
                published.write_bytes(marker) if published.is_file() else None
                print("HOSTILE wrote into the published cache", flush=True)
            except OSError:
                pass
'''


def hostile(wt: Path, train_bin: Path, root: Path, note: str = "") -> Path:
    path = wt / TRAIN
    code = STASH.format(marker=MARKER, train_bin=str(train_bin), root=str(root))
    path.write_text(path.read_text().replace(HOOK, HOOK + code, 1) + note)
    return wt


def caches(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if (p / kernels.MANIFEST).exists()]


def digest(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def train(wt: Path, run_dir: Path, stdlib, root: Path, seed: int) -> list[str]:
    spec = make_spec(wt, run_dir, stdlib, kernels=root, seed=seed)
    try:
        experiment.train(spec, lambda: False, lambda phase, pid: None)
    except experiment.Failed as f:
        pytest.fail(f"{f.status}: {f.reason}\n{f.log_tail}")
    log = (run_dir / "train.log").read_text()
    assert "HOSTILE stash seen" in log and "HOSTILE wrote into the published cache" not in log, log[-2000:]
    assert "HOSTILE training reads its compile phase's log: False" in log, log[-2000:]
    return json.loads((run_dir / "seen.json").read_text())


def test_nothing_stashed_in_kernels_reaches_a_rerun_or_another_candidate(stdlib, tmp_path):
    root = tmp_path / "kernels"
    a = hostile(copy_trainer(tmp_path / "a"), stdlib.prepared / "train.bin", root)
    assert train(a, tmp_path / "a1", stdlib, root, seed=1) == []
    compile_log = (tmp_path / "a1" / "compile.log").read_text()
    assert "HOSTILE compile phase read the training data: False" in compile_log, compile_log[-2000:]
    (cache,) = caches(root)
    manifest = json.loads((cache / kernels.MANIFEST).read_text())
    assert manifest["kernels"] and {"weights.npy", "libstash.so"}.isdisjoint(manifest["kernels"])
    assert "weights.npy" in manifest["refused"]
    tampered = [name for name, why in manifest["refused"].items() if name.endswith(".cpp")]
    assert tampered and not any("caps" in manifest["refused"][n] for n in tampered)  # refused as not MLX's text
    published = digest(root)
    assert all(MARKER.encode() not in p.read_bytes() for p in root.rglob("*") if p.is_file())

    assert train(a, tmp_path / "a2", stdlib, root, seed=2) == []  # the re-run on another seed: nothing of run 1
    b = hostile(copy_trainer(tmp_path / "b"), stdlib.prepared / "train.bin", root, note="\n# another candidate\n")
    assert train(b, tmp_path / "b1", stdlib, root, seed=1) == []  # another candidate: its own phase, nothing of a's
    assert len(caches(root)) == 2
    assert {k: v for k, v in digest(root).items() if k in published} == published  # no run changed a cache


EVAL_STASH = '''
if "--kernels" in sys.argv:  # a model process: try to change the cache it is handed, for the next process or run
    handed, wrote = Path(sys.argv[sys.argv.index("--kernels") + 1]), []
    for target in [*handed.rglob("*"), handed / "weights.npy"]:
        try:
            if target.is_file() or not target.exists():
                target.write_bytes(b"{marker}")
                wrote.append(target.name)
        except OSError:
            pass
    print(f"HOSTILE model process wrote into the cache it was handed: {{wrote}}", file=sys.stderr, flush=True)
    print(f"HOSTILE model process sees the manifest: {{(handed.parent / 'manifest.json').exists()}}", file=sys.stderr)
'''


@pytest.mark.skipif(sandbox.backend().name == "none", reason="no sandbox here: nothing is read-only")
def test_a_model_process_cannot_change_the_kernels_it_is_handed(stdlib, tmp_path):
    """The evaluation's model processes get the published cache read-only (and compile their forward with it): one
    that writes into it changes nothing that the next process, or the next run, reads."""
    root = tmp_path / "kernels"
    wt = copy_trainer(tmp_path / "a")
    (wt / TRAIN).write_text((wt / TRAIN).read_text() + EVAL_STASH.format(marker=MARKER))
    published = None
    for seed in (1, 2):
        spec = make_spec(wt, tmp_path / f"run{seed}", stdlib, kernels=root, seed=seed)
        m = experiment.measure(spec)
        assert m.ok, f"{m.status}: {m.reason}\n{m.log_tail}"
        log = (spec.run_dir / "eval.log").read_text()
        assert log.count("HOSTILE model process wrote into the cache it was handed: []") == 3, log[-2000:]
        assert log.count("HOSTILE model process sees the manifest: False") == 3, log[-2000:]  # it names refused files
        assert log.count("forward compiled, with the daemon's kernels") == 3, log[-2000:]
        published = published or digest(root)
        assert digest(root) == published
    assert all(MARKER.encode() not in p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_a_forward_that_cannot_be_traced_is_served_uncompiled(stdlib, tmp_path):
    """A trainer whose compile phase leaves no model_config.json (an older trainer, or a broken one): the run is
    measured all the same, its model processes run the forward uncompiled and compile nothing themselves."""
    wt = copy_trainer(tmp_path / "a")
    text = (wt / TRAIN).read_text()
    written = '        (run_dir / "model_config.json").write_text(json.dumps(config))\n        return 0\n'
    assert written in text
    (wt / TRAIN).write_text(text.replace(written, "        return 0\n", 1))
    root = tmp_path / "kernels"
    spec = make_spec(wt, tmp_path / "run", stdlib, kernels=root)
    m = experiment.measure(spec)
    assert m.ok, f"{m.status}: {m.reason}\n{m.log_tail}"
    assert "the forward was not traced" in (spec.run_dir / "compile.log").read_text()
    (cache,) = caches(root)
    assert json.loads((cache / kernels.MANIFEST).read_text())["forward_traced"] is False
    log = (spec.run_dir / "eval.log").read_text()
    assert log.count("forward uncompiled") == 3 and "kernels compiled here" not in log, log[-2000:]
