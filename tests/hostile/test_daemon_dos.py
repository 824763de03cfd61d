"""Files and output a candidate makes to take the daemon down, measured through the real `measure()` in a stand-in
daemon whose data segment is capped (fake_candidate.py): a sparse train.json of 6 GiB, nested JSON, numbers too
large for the ledger, gigabytes of stdout without a newline, a 2 GiB hole in train.bin, a logits header that
announces 8 GiB. Each must end as a failed run with a reason, the stand-in alive and small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_candidate import make_data_worktree, make_worktree, measure_in_child

SMALL_MB = 400  # the stand-in's peak RSS after any of these attacks: a fraction of what reading them whole takes

ATTACKS = {
    "a sparse 6 GiB train.json": (
        """
        with open(run_dir / "train.json", "r+b") as f:
            f.truncate(6 << 30)
        """,
        "train.json",
    ),
    "train.json nested 100,000 deep": (
        """(run_dir / "train.json").write_text("[" * 100_000 + "]" * 100_000)""",
        "train.json",
    ),
    "train.json with a step count no ledger holds": (
        """
        info = json.loads((run_dir / "train.json").read_text())
        (run_dir / "train.json").write_text(json.dumps(info | {"steps": 10**30}))
        """,
        "train.json",
    ),
    "train.json that is a list": ("""(run_dir / "train.json").write_text("[1, 2]")""", "train.json"),
    "model_config.json that is a list": ("""(run_dir / "model_config.json").write_text("[]")""", "model_config"),
    "model_config.json nested 100,000 deep": (
        """(run_dir / "model_config.json").write_text("[" * 100_000 + "]" * 100_000)""",
        "model_config",
    ),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_candidate_json_is_an_invalid_run_never_a_daemon_error(stdlib, tmp_path, name):
    attack, named = ATTACKS[name]
    wt = make_worktree(tmp_path / "wt", attack=attack)
    m = measure_in_child(wt, tmp_path / "run")
    assert m["status"] == "invalid" and named in m["reason"], m
    assert m["maxrss_mb"] < SMALL_MB, m


def test_stdout_without_a_newline_is_read_in_bounded_pieces(stdlib, tmp_path):
    """1.5 GiB of output and no newline: a pump that reads lines keeps it all in memory at once."""
    attack = """
    chunk = b"x" * (1 << 20)
    for _ in range(1536):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    """
    wt = make_worktree(tmp_path / "wt", attack=attack)
    m = measure_in_child(wt, tmp_path / "run", stall_s=60.0)
    assert m["status"] == "measured", m
    assert m["maxrss_mb"] < SMALL_MB, m
    assert (tmp_path / "run" / "train.log").stat().st_size < 256 << 20  # the log is capped too: the disk is shared


def test_a_hole_in_train_bin_is_refused_before_it_is_read(stdlib, tmp_path):
    attack = """
    with open(out / "train.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) + (2 << 30))
    """
    wt = make_data_worktree(tmp_path / "wt", attack=attack)
    m = measure_in_child(wt, tmp_path / "run", program="data")
    assert m["status"] == "invalid" and "train.bin" in m["reason"], m
    assert m["maxrss_mb"] < SMALL_MB, m


def test_a_logits_header_is_checked_before_anything_is_allocated(stdlib, tmp_path):
    """rows x cols x vocab = 2**31 floats passed the old bound: 8 GiB allocated for the read."""
    on_batch = """
    responses.write(RESPONSE.pack(b"LOGT", rows, cols, (1 << 31) // (rows * cols)))
    responses.flush()
    import time
    time.sleep(60)
    """
    wt = make_worktree(tmp_path / "wt", on_batch=on_batch)
    m = measure_in_child(wt, tmp_path / "run")
    assert m["status"] == "invalid" and "header" in m["reason"], m
    assert m["maxrss_mb"] < SMALL_MB, m


def test_a_run_folder_nested_past_the_recursion_limit_is_invalid(stdlib, tmp_path):
    """Folders 1,200 deep: a recursive walk of the run folder raised RecursionError in the daemon."""
    attack = """
    os.chdir(run_dir)
    for _ in range(1200):
        os.mkdir("d")
        os.chdir("d")
    """
    try:
        m = measure_in_child(make_worktree(tmp_path / "wt", attack=attack), tmp_path / "run")
    finally:
        remove_nested(tmp_path / "run")
    assert m["status"] == "invalid" and "deep" in m["reason"], m


def remove_nested(top: Path) -> None:
    """Take the nested folders down from the bottom: pytest's clean-up (a recursive rmtree) cannot."""
    cwd, depth = os.getcwd(), 0
    try:
        os.chdir(top)
        while os.path.isdir("d"):
            os.chdir("d")
            depth += 1
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(cwd)
