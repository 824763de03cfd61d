"""The daemon's own reads of what a sandboxed phase left behind: links and FIFOs planted in a run directory.

Inside the sandbox they are harmless; the danger is the daemon (unsandboxed, holding the API key) following
them afterwards: a train.log that points at /proc/self/environ puts the key into the ledger and the next
prompt; a FIFO named train.json hangs the daemon; an eval.log that points at the daemon's code gets the
model's output appended to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.measure import experiment, runner

EVENT_TIMEOUT_S = 30
ROOT = Path(__file__).resolve().parents[2]


def finishes(fn) -> bool:
    """Whether fn() returns (or raises) within EVENT_TIMEOUT_S: a FIFO read would block forever."""
    done = threading.Event()

    def target():
        try:
            fn()
        finally:
            done.set()

    threading.Thread(target=target, daemon=True).start()
    return done.wait(EVENT_TIMEOUT_S)


def test_a_log_tail_does_not_follow_a_link_to_the_daemons_environment(tmp_path):
    os.symlink("/proc/self/environ", tmp_path / "train.log")
    code = f"from orchestrator.measure import runner; print(runner.tail({str(tmp_path / 'train.log')!r}))"
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-daemon-secret")  # in the daemon's environment from its start
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EVENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sk-ant-daemon-secret" not in done.stdout


def test_a_log_tail_of_a_fifo_returns_at_once(tmp_path):
    os.mkfifo(tmp_path / "train.log")
    assert finishes(lambda: runner.tail(tmp_path / "train.log"))


def test_a_log_tail_still_reads_a_real_log(tmp_path):
    (tmp_path / "train.log").write_text("".join(f"step {i}\n" for i in range(100)))
    assert runner.tail(tmp_path / "train.log", 2) == "step 98\nstep 99"


@pytest.mark.parametrize("plant", ["fifo", "link"])
def test_a_run_directory_with_anything_but_files_is_invalid(tmp_path, plant):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    if plant == "fifo":
        os.mkfifo(tmp_path / "sub" / "train.json")
    else:
        os.symlink("/proc/self/environ", tmp_path / "model_config.json")
    with pytest.raises(experiment.Failed) as e:
        experiment.check_regular(tmp_path, "the run directory")
    assert e.value.status == "invalid" and "not a regular file" in e.value.reason


def test_a_clean_run_directory_passes(tmp_path):
    for name in ("model.safetensors", "model_config.json", "train.json", "train.log"):
        (tmp_path / name).write_text("{}")
    experiment.check_regular(tmp_path, "the run directory")


def test_a_tokenizer_without_every_single_byte_is_invalid_not_a_panic(tmp_path):
    """tiktoken panics (a BaseException, past every `except Exception`) on text holding a byte with no rank: a data
    program that drops b"\\n" from its ranks would otherwise end the daemon's loop."""
    import base64
    import json

    from orchestrator.scoring import scorer

    ranks = [base64.b64encode(bytes([b])).decode() for b in range(256) if b != 10]
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"pattern": r"\S+|\s+", "ranks": ranks, "bos": "<|bos|>", "bos_id": len(ranks)})
    )
    with pytest.raises(scorer.Invalid, match="single bytes"):
        scorer.load_tokenizer(tmp_path / "tokenizer.json")


def test_what_the_model_process_prints_never_reaches_the_agent(tmp_path, stdlib):
    """The model process is sent held-out rows; one that prints them and dies must not get them into the run's
    error, which the next prompt quotes (the agent could write them into the training data)."""
    from conftest import make_spec, write_model_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_model_config(run_dir, 256)
    spec = make_spec(ROOT, run_dir, stdlib)

    class Printer:  # a scorer.ModelProcess that logs every row it is sent, then dies
        def __init__(self, vocab: int):
            self.vocab = vocab

        def logits(self, batches):
            with open(run_dir / "eval.log", "a") as log:
                for batch in batches:
                    log.write(f"HELD-OUT ROW {batch[0].tolist()}\n")
                    raise experiment.ModelDied("crash", "the evaluation model process died (exit 1)")
            yield from ()

        def close(self):
            pass

    trained = experiment.Trained(stdlib.prepared, {}, 1.0, None)
    m = experiment.score(spec, trained, Printer)
    assert m.status == "crash" and "HELD-OUT ROW" in (run_dir / "eval.log").read_text()
    assert "HELD-OUT" not in m.reason + m.log_tail
