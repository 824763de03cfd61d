"""Training outside the budget: the data program trained for a minute inside `prepare` (its limit was 2x the
evaluation's), appended the weights to train.bin, and swapped them in at save time from data_sources.py, which
ran inside the trainer; a re-run on another seed then scored the identical value. So: no data-program code runs in
the trainer; prepare has its own small deadline; train.bin holds exactly the documents meta.json and the offsets
describe, nothing after them; nothing a run writes is there for a later run to read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fake_candidate import PREPARE, make_data_worktree, make_worktree, measure_in_child

from conftest import HANG_S, copy_trainer, run_module
from orchestrator.scoring import leakcheck


def test_the_trainer_runs_no_data_program_code(stdlib, tmp_path):
    """Poisoned at import, prepare.py and data_sources.py must not stop a training run: they are not imported."""
    wt = copy_trainer(tmp_path / "wt")
    for name in ("prepare.py", "data_sources.py"):
        path = wt / "trainer" / name
        path.write_text(path.read_text() + '\nraise SystemExit("DATA PROGRAM CODE RAN IN THE TRAINER")\n')
    env = {
        "ARX_RUN_DIR": str(tmp_path / "run"),
        "ARX_PREPARED_DIR": str(stdlib.prepared),
        "ARX_BUDGET_S": str(HANG_S),
        "ARX_MAX_STEPS": "1",
    }
    result = run_module("trainer.train", wt, env)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    assert "DATA PROGRAM CODE RAN" not in result.stdout + result.stderr


def test_prepare_has_its_own_small_deadline(stdlib, tmp_path):
    """A prepare that keeps printing (no stall) and trains for as long as it may: cut off at PREPARE_TIMEOUT_S."""
    attack = """
    import time
    for i in range(120):
        print("training inside prepare", i, flush=True)
        time.sleep(0.5)
    """
    wt = make_data_worktree(tmp_path / "wt", attack=attack)
    m = measure_in_child(wt, tmp_path / "run", program="data", eval_timeout_s=60.0, constants={"PREPARE_TIMEOUT_S": 5})
    assert m["status"] == "timeout" and "prepare" in m["reason"], m


TRAIN_BIN = {
    "weights after the last document": """
        extra = (np.arange(1000) % 256).astype(np.uint16)
        with open(out / "train.bin", "ab") as f:
            extra.tofile(f)
        meta["train_tokens"] += len(extra)
        (out / "meta.json").write_text(json.dumps(meta))
        """,
    "train.bin longer than meta.json says": """
        with open(out / "train.bin", "ab") as f:
            np.zeros(64, np.uint16).tofile(f)
        """,
    "offsets that skip a stretch of train.bin": """
        offsets = np.load(out / "train_offsets.npy")
        offsets[1:-1] += 1
        np.save(out / "train_offsets.npy", offsets)
        """,
    "offsets that do not start at 0": """
        offsets = np.load(out / "train_offsets.npy")
        offsets[0] = 5
        np.save(out / "train_offsets.npy", offsets)
        """,
    "offsets that go backwards": """
        offsets = np.load(out / "train_offsets.npy")
        offsets[3], offsets[4] = offsets[4], offsets[3]
        np.save(out / "train_offsets.npy", offsets)
        """,
    "a token outside the vocabulary": """
        tokens = np.fromfile(out / "train.bin", np.uint16)
        tokens[7] = 4000
        tokens.tofile(out / "train.bin")
        """,
    "a packing buffer of a billion documents": """
        meta["pack_buffer_docs"] = 10**9
        (out / "meta.json").write_text(json.dumps(meta))
        """,
    "a pickled offsets file": """
        import pickle
        np.save(out / "train_offsets.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
        """,
}


NAMED = ("train.bin", "offsets", "meta.json", "pack_buffer_docs")


def test_weights_after_the_last_document_make_an_invalid_run(stdlib, tmp_path):
    """Through the daemon's measure(): the sandboxed prepare appends them, the leak check refuses the folder."""
    wt = make_data_worktree(tmp_path / "wt", attack=TRAIN_BIN["weights after the last document"])
    m = measure_in_child(wt, tmp_path / "run", program="data")
    assert m["status"] == "invalid" and any(f in m["reason"] for f in NAMED), m


@pytest.mark.parametrize("name", list(TRAIN_BIN))
def test_train_bin_holds_exactly_what_meta_and_offsets_describe(stdlib, tmp_path, name):
    """Each folder as the fake data program writes it (run here, unsandboxed: only its output matters), judged by
    the leak check the daemon runs on every prepared folder before it is published."""
    folder = prepare_here(tmp_path, TRAIN_BIN[name], stdlib.corpus.train_dir)
    problem = leakcheck.check_prepared(folder, stdlib.corpus)
    assert problem and any(f in problem for f in NAMED), problem


def prepare_here(tmp_path, attack: str, corpus_dir) -> Path:
    source = PREPARE.format(docs=100, attack=textwrap.dedent(attack))
    out = tmp_path / "prepared"
    out.mkdir()
    env = dict(os.environ, ARX_CORPUS_DIR=str(corpus_dir), ARX_PREPARED_DIR=str(out))
    subprocess.run([sys.executable, "-c", source], env=env, check=True, capture_output=True, timeout=HANG_S)
    return out


STASH = """
import glob
found = []
places = [os.environ["ARX_PREPARED_DIR"], "/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd(),
          os.environ.get("TMPDIR", "/tmp"), str(run_dir.parent), "/root", "/home", "/opt", "/srv"]
for place in places:
    found += glob.glob(os.path.join(place, "**", "arx-stash-*"), recursive=True)
    try:
        with open(os.path.join(place, "arx-stash-" + run_dir.name), "w") as f:
            f.write("weights")
    except OSError:
        pass
print("STASH FOUND", sorted({f for f in found if not f.endswith("-" + run_dir.name)}), flush=True)  # not its own
"""


@pytest.mark.slow  # two measurements; it held before this issue too (tests/hostile/test_claim_attacks.py: warm start)
def test_a_run_leaves_nothing_a_later_run_can_read(stdlib, tmp_path):
    """Weights kept by one run for the next (another seed, the same code): every place a trainer can write."""
    wt = make_worktree(tmp_path / "wt", attack=STASH)
    first = measure_in_child(wt, tmp_path / "first")
    second = measure_in_child(wt, tmp_path / "second")
    assert first["status"] == second["status"] == "measured", (first, second)
    log = (tmp_path / "second" / "train.log").read_text()
    assert "STASH FOUND []" in log, log[-2000:]
