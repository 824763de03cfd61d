"""Hostile candidates without MLX, measured through the daemon's real `experiment.measure` in a stand-in daemon.

A candidate is whatever sits in a worktree's trainer/ (and here its model process, the worktree's
inside/evaluate.py): these trainers and model processes are plain Python (numpy at most), so each attack costs a few
sandbox starts, not a training run. They follow the contracts exactly where the attack does not need to break them:
the trainer writes train.json, model_config.json and a checkpoint; the model process answers the wire format of
inside/evaluate.py with uniform logits.

`measure_in_child` runs `measure` in a child process whose data segment is capped (RLIMIT_DATA, inherited by the
sandboxed phases it starts): an attack that makes the daemon read something whole kills the stand-in with a
MemoryError instead of the machine, and the test sees the failure. It returns the Measurement as JSON with the
stand-in's peak RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 600  # a guard against a hung stand-in, never a speed requirement
STAND_IN_DATA_MB = 1024  # the stand-in daemon's data segment: ample for an honest measurement of these fakes

# The trainer: writes the outputs of the trainer contract; `ATTACK` lines run just before it exits.
TRAINER = """
import json, os, sys
from pathlib import Path

run_dir = Path(os.environ["ARX_RUN_DIR"])
meta = json.loads((Path(os.environ["ARX_PREPARED_DIR"]) / "meta.json").read_text())
print("step 1 | loss 1.000 | lr 0.0100 | tok/s 1 | 0.1/1s", flush=True)
(run_dir / "model.safetensors").write_bytes(b"not a real checkpoint")
(run_dir / "model_config.json").write_text(json.dumps({{"seq_len": {seq_len}, "vocab_size": meta["vocab_size"]}}))
(run_dir / "train.json").write_text(json.dumps({{"status": "ok", "steps": 1, "tokens": 1, "tok_per_sec": 1.0,
    "training_seconds": 0.1, "startup_seconds": 0.1, "peak_memory_mb": 1.0, "num_params": 1}}))
{attack}
"""

# The model process: rows in, uniform logits out. `ON_BATCH` runs on every request with `tokens` ([rows, cols]
# int32) and may write its own answer and `continue`; `AT_START` runs once before the first request.
MODEL = """
import json, os, struct, sys
import numpy as np

REQUEST, RESPONSE = struct.Struct("<4sii"), struct.Struct("<4siii")
args = sys.argv[1:]
run_dir = args[args.index("--run-dir") + 1]
config = json.load(open(os.path.join(run_dir, "model_config.json")))
vocab = config["vocab_size"]
requests, responses = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
print("model loaded; serving logits", file=sys.stderr, flush=True)
{at_start}
while True:
    head = requests.read(REQUEST.size)
    if len(head) < REQUEST.size:
        break
    magic, rows, cols = REQUEST.unpack(head)
    if rows == 0:
        break
    tokens = np.frombuffer(requests.read(rows * cols * 4), dtype=np.int32).reshape(rows, cols)
{on_batch}
    responses.write(RESPONSE.pack(b"LOGT", rows, cols, vocab) + np.zeros((rows, cols, vocab), np.float32).tobytes())
    responses.flush()
"""


def make_worktree(dest: Path, attack: str = "", on_batch: str = "", at_start: str = "", seq_len: int = 64) -> Path:
    """A worktree whose trainer and model process are the fakes above with the attack spliced in; prepare.py,
    data_sources.py and inside/ are the checkout's, so the session's prepared folder is reused."""
    trainer = dest / "trainer"
    trainer.mkdir(parents=True)
    for name in ("__init__.py", "prepare.py", "data_sources.py"):
        shutil.copy(ROOT / "trainer" / name, trainer / name)
    shutil.copytree(ROOT / "inside", dest / "inside", ignore=shutil.ignore_patterns("__pycache__"))
    (trainer / "train.py").write_text(TRAINER.format(seq_len=seq_len, attack=textwrap.dedent(attack)))
    (dest / "inside" / "evaluate.py").write_text(
        MODEL.format(
            at_start=textwrap.dedent(at_start),
            on_batch=textwrap.indent(textwrap.dedent(on_batch), "    "),
        )
    )
    return dest


# The data program: a byte-level tokenizer (every byte a rank, BOS after them) and a token cache of the first
# DOCS training documents, in seconds; `ATTACK` lines run last, with `out` the folder it writes.
PREPARE = """
import base64, json, os, sys
from pathlib import Path
import numpy as np

corpus, out = Path(os.environ["ARX_CORPUS_DIR"]), Path(os.environ["ARX_PREPARED_DIR"])
ranks = [base64.b64encode(bytes([b])).decode() for b in range(256)]
spec = {{"pattern": r"\\S+|\\s+", "ranks": ranks, "bos": "<|bos|>", "bos_id": 256, "vocab_size": 257}}
(out / "tokenizer.json").write_text(json.dumps(spec))
shard = sorted(corpus.glob("docs-*.jsonl"))[0]
docs = [json.loads(line)["text"].encode() for line in shard.read_text().splitlines()[:{docs}]]
np.array([t for d in docs for t in (256, *d)], np.uint16).tofile(out / "train.bin")
lengths = [len(d) + 1 for d in docs]
np.save(out / "train_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
meta = {{"dtype": "uint16", "vocab_size": 257, "bos_id": 256, "train_docs": len(docs), "train_tokens": sum(lengths)}}
(out / "meta.json").write_text(json.dumps(meta))
print("prepared", len(docs), "documents", flush=True)
{attack}
"""


def make_data_worktree(dest: Path, attack: str = "", docs: int = 100, **model) -> Path:
    """`make_worktree` with the fake data program above (its own prepared folder, made in the sandbox)."""
    make_worktree(dest, **model)
    (dest / "trainer" / "prepare.py").write_text(PREPARE.format(docs=docs, attack=textwrap.dedent(attack)))
    return dest


STAND_IN = """
import json, resource, sys
cap = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
sys.path[:0] = [sys.argv[2]]
from pathlib import Path
from orchestrator.measure import experiment, sandbox
from orchestrator.scoring import corpus
fields = json.loads(sys.argv[3])

def peak_rss_mb():
    # VmHWM: this image's own peak. ru_maxrss also counts the parent's RSS when it was spawned by vfork + exec
    # (the kernel records the shared image's high-water mark at exec): pytest's, hundreds of MB of it
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

for name, value in json.loads(sys.argv[4]).items():
    setattr(experiment, name, value)
spec = experiment.Spec(
    program=fields.pop("program", "model"),
    worktree=Path(fields.pop("worktree")),
    run_dir=Path(fields.pop("run_dir")),
    corpus=corpus.materialize("stdlib"),
    budget_s=1.0,
    seed=0,
    state_dir=Path(fields.pop("state_dir")),
    train_deadline_s=fields.pop("train_deadline_s", 300.0),
    stall_s=fields.pop("stall_s", 300.0),
    eval_timeout_s=fields.pop("eval_timeout_s", 300.0),
    unsafe_no_sandbox=sandbox.backend().name == "none",
    **fields,
)
m = experiment.measure(spec)
print(json.dumps({"status": m.status, "reason": m.reason, "log_tail": m.log_tail, "exit_code": m.exit_code,
                  "claimed": m.claimed, "val_bpb": m.scores.val_bpb if m.scores else None,
                  "detail": m.scores.detail if m.scores else None,
                  "maxrss_mb": peak_rss_mb()}))
"""


def measure_in_child(
    worktree: Path, run_dir: Path, data_mb: int = STAND_IN_DATA_MB, constants: dict | None = None, **fields
) -> dict:
    """`experiment.measure` of `worktree` in a stand-in daemon with a capped data segment; its result as a dict,
    or {"status": "stand-in died", ...} when the stand-in itself did not survive the candidate."""
    spec = {"worktree": str(worktree), "run_dir": str(run_dir), "state_dir": str(run_dir.parent / "state")} | fields
    done = subprocess.run(
        [sys.executable, "-c", STAND_IN, str(data_mb), str(ROOT), json.dumps(spec), json.dumps(constants or {})],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    if done.returncode != 0:
        return {"status": "stand-in died", "reason": done.stderr[-3000:], "returncode": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])
