"""Channels between the model processes of one evaluation. The causality probes are sound only if a process cannot
learn which rows another was sent: a process that could would answer each probe as its original was answered and
peek everywhere else (tests/test_scorer.py has the arithmetic, and the re-scoring that catches it). So: nothing one
model process writes is readable by another (its log goes to the daemon through a pipe, not to the run folder),
the evaluation jail sees the checkpoint and nothing else of the run, the page cache of a shared file cannot be
probed, and no data-program code runs in a model process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fake_candidate import make_worktree, measure_in_child

from conftest import copy_trainer, make_spec
from orchestrator.measure import experiment, sandbox
from orchestrator.measure.sandbox import Jail

LINUX_JAIL = sys.platform.startswith("linux") and sandbox.backend().name in ("namespaces", "bwrap")
EVENT_TIMEOUT_S = 60


def test_a_model_process_finds_nothing_another_one_wrote(stdlib, tmp_path):
    """Each fake model process leaves a marker every way it can (its log, the run folder, /tmp, /dev/shm, its home)
    and looks for another process's marker in everything it can read of the run folder and those places."""
    at_start = """
    import glob, uuid
    tag = "".join(["MA", "RK-"])  # in neither this file nor its bytecode: only what a process wrote holds it
    mine = tag + uuid.uuid4().hex
    print(mine, file=sys.stderr, flush=True)
    places = [run_dir, "/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd(), "/var/tmp"]
    for place in places:
        try:
            with open(os.path.join(place, "marker-" + mine), "w") as f:
                f.write(mine)
        except OSError:
            pass
    print("LISTING", json.dumps(sorted(os.listdir(run_dir))), file=sys.stderr, flush=True)
    for place in places:
        for path in glob.glob(os.path.join(place, "**"), recursive=True):
            try:
                text = open(path, errors="replace").read(1 << 20)
            except OSError:
                continue
            if tag in text.replace(mine, ""):
                print("FOUND another process's marker in", path, file=sys.stderr, flush=True)
    """
    m = measure_in_child(make_worktree(tmp_path / "wt", at_start=at_start), tmp_path / "run")
    assert m["status"] == "measured", m
    log = (tmp_path / "run" / "eval.log").read_text()
    assert log.count("MARK-") >= 2, log[-2000:]  # every process did run the attack
    assert "FOUND" not in log, log[-3000:]
    listings = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines() if line.startswith("LISTING")]
    own = [[name for name in seen if not name.startswith("marker-")] for seen in listings]  # its own marker, if any:
    assert own and all(seen == ["model.safetensors", "model_config.json"] for seen in own), listings  # private /tmp


def test_no_data_program_code_runs_in_a_model_process(trained_run, stdlib, tmp_path):
    """The data program's files are the data campaign's candidate code: in a model process they could read the rows
    it is sent. Poisoned, they must never run there (nor in the trainer: test_budget_attacks.py)."""
    import numpy as np

    from orchestrator.scoring import scorer

    wt = copy_trainer(tmp_path / "wt")
    for name in ("prepare.py", "data_sources.py"):
        path = wt / "trainer" / name
        path.write_text(
            path.read_text() + '\nprint("DATA PROGRAM CODE RAN", file=__import__("sys").stderr, flush=True)\n'
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("model.safetensors", "model_config.json"):
        (run_dir / name).write_bytes((trained_run / name).read_bytes())
    vocab = scorer.load_tokenizer(stdlib.prepared / "tokenizer.json").n_vocab
    model = experiment.SandboxedModel(make_spec(wt, run_dir, stdlib), lambda: False, lambda p, q: None, vocab)
    try:
        (logits,) = model.logits([np.zeros((scorer.BATCH_ROWS, 32), np.int32)])
    finally:
        model.close()
    assert logits.shape[:2] == (scorer.BATCH_ROWS, 32)
    log = (run_dir / "eval.log").read_text()
    assert "model loaded" in log and "DATA PROGRAM CODE RAN" not in log


PAGE_CACHE_PROBES = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
buf = (ctypes.c_ubyte * ((size + 4095) // 4096))()
results = {}
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
ptr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
r = libc.mincore(ptr, size, buf)
results["mincore"] = "refused" if r != 0 and ctypes.get_errno() == 1 else "allowed"
try:
    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
    results["fadvise"] = "allowed"
except OSError as e:
    results["fadvise"] = "refused" if e.errno == 1 else f"errno {e.errno}"
# cachestat(2), Linux 6.5: fd, &range{off, len}, &stat, flags
rng = (ctypes.c_uint64 * 2)(0, size)
stat = (ctypes.c_uint64 * 5)()
r = libc.syscall({cachestat}, fd, rng, stat, 0)
err = ctypes.get_errno()
results["cachestat"] = "refused" if r != 0 and err == 1 else ("absent" if err == 38 else "allowed")
r = libc.madvise(ptr, size, 21)  # MADV_PAGEOUT: evicts a shared file's pages
results["madvise_pageout"] = "refused" if r != 0 and ctypes.get_errno() == 1 else "allowed"
r = libc.madvise(ptr, size, 20)  # MADV_COLD
results["madvise_cold"] = "refused" if r != 0 and ctypes.get_errno() == 1 else "allowed"
try:  # a read that fails with EAGAIN when the page is not cached: residency without mincore
    os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
    results["preadv2_nowait"] = "allowed"
except OSError as e:
    results["preadv2_nowait"] = "refused" if e.errno == 1 else f"errno {e.errno}"
results["pread"] = len(os.pread(fd, 10, 0))  # honest reads still work
r = libc.madvise(ptr, size, 3)  # MADV_WILLNEED: honest code may use it
results["madvise_willneed"] = "refused" if r != 0 else "allowed"
print(json.dumps(results))
"""
CACHESTAT = {"x86_64": 451, "aarch64": 451}


@pytest.mark.skipif(not LINUX_JAIL, reason="no Linux sandbox here")
def test_the_page_cache_of_a_shared_file_cannot_be_probed_or_evicted():
    """Two jails read the same read-only files (the venv, the worktree): whether a page is cached is a bit one can set
    (read it, or evict it) and the other can read (mincore, cachestat, posix_fadvise). Such a channel carried 360
    bits between the two model processes without error. Timing a read is still possible (docs/architecture.md)."""
    import platform

    target = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="arx-hostile-cache-")) / "shared.bin"
    target.write_bytes(b"x" * (1 << 16))
    code = PAGE_CACHE_PROBES.replace("{cachestat}", str(CACHESTAT[platform.machine()]))
    full = Jail(visible=(*sandbox.python_paths(), target.parent))
    try:
        done = subprocess.run(
            sandbox.command([sys.executable, "-c", code, str(target)], full),
            env=sandbox.environment({}),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=EVENT_TIMEOUT_S,
            check=False,
        )
    finally:
        target.unlink()
        target.parent.rmdir()
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["mincore"] == seen["fadvise"] == "refused", seen
    assert seen["madvise_pageout"] == seen["madvise_cold"] == seen["preadv2_nowait"] == "refused", seen
    assert seen["pread"] == 10, seen
    assert seen["cachestat"] in ("refused", "absent"), seen
    assert seen["madvise_willneed"] == "allowed", seen
    # honest MLX and numpy never needed them: tests/test_evaluation.py trains and scores in these jails
