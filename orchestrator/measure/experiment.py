"""One experiment as one function: `measure(spec) -> Measurement` prepares, trains and scores one
commit of a worktree. No database, no events: the campaign loop records what it returns.

Every phase that runs candidate code (prepare for the data program, train, the model process of
evaluation) runs in a sandbox (orchestrator/measure/sandbox.py) under the watchdog (orchestrator/measure/runner.py):

    phase      may write                 may read (besides the system, read-only)
    prepare    its new prepared folder   the worktree, the dataset's training material
    compile    a fresh scratch folder    the worktree, the vocabulary size (once per trainer version, CPU only)
    train      the run directory         the worktree, the prepared folder (its TMPDIR: a copy of the kernels)
    evaluate   nothing (private /tmp)    the worktree, model.safetensors and model_config.json of the run

The data program's code runs in prepare only, under its own deadline (PREPARE_TIMEOUT_S); the trainer reads the
prepared folder through the trusted loader (inside/loader.py). Before anything runs, the candidate's files are
checked for held-out text (leakcheck.check_sources); whatever a phase wrote is read back capped (capped.py).

Hidden in all of them: the state directory (ledger, other runs, locks, other worktrees), the data
cache (downloads and held-out documents), every copy of a held-out stdlib file, the user's home
(secrets). The scores come from orchestrator/scoring/scorer.py in the daemon's own process; the training
time that counts is the daemon's clock, not what the trainer reports.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import capped, fingerprint
from ..programs import PROGRAMS, ROOT, default_state_dir
from ..scoring import scorer
from ..scoring.corpus import Corpus, data_root, file_sha256
from . import kernels, runner, sandbox

COMPILE_DEADLINE_S = 300.0  # the compile phase of one trainer version (the default: about 10 s here, 30 s loaded)
TRACE_DEADLINE_S = 60.0  # the compile phase's trace of the evaluation's forward (2-5 s here, 15 s loaded)
COMPILE_LOG_CAP = 1 << 20  # of the compile phase's log, the first this many bytes reach the run folder (held
# in memory while the run trains: the phase chose what it printed)
PREPARE_TIMEOUT_S = 600.0  # the data program's prepare, on its own clock (an honest stdlib prepare takes under a
# minute here); what it computes can only reach training as the four checked files of the prepared folder
FIRST_LOGITS_S = 30.0  # an honest model process answers its first batch in 1-3 s here (about 10 s loaded): time
# it spends before that is time a hostile one could train in, identically in both processes, unseen by the probes
CLAIMED_FIELDS = {  # what train.json may claim, and the range a number the ledger stores must lie in
    "steps": (True, 2**53),
    "tokens": (True, 2**53),
    "tok_per_sec": (False, 1e15),
    "training_seconds": (False, 1e9),
    "startup_seconds": (False, 1e9),
    "peak_memory_mb": (False, 1e12),
    "num_params": (True, 2**53),
}
CHECKPOINT = ("model.safetensors", "model_config.json")  # all of a run folder a model process sees
EVAL_LOG_CAP = 1 << 20  # of each model process's output, the first this many bytes go to eval.log (for people)
MAX_ENTRIES, MAX_DEPTH = 100_000, 64  # what a run or prepared folder may hold (an honest run: a few dozen, 3 deep)


@dataclass(frozen=True)
class Spec:
    """Everything one measurement needs; built by the campaign loop, read-only here."""

    program: str  # model or data
    worktree: Path
    run_dir: Path
    corpus: Corpus
    budget_s: float
    seed: int
    state_dir: Path
    train_deadline_s: float  # budget + the start-up/save allowance the daemon measured
    stall_s: float = 120.0
    memory_mb: float | None = None
    eval_timeout_s: float = 600.0
    prepare_timeout_s: float | None = None  # None: PREPARE_TIMEOUT_S
    tokenizer_sha256: str | None = None  # pinned: the model program must score with this tokenizer
    kernels: Path | None = None  # the kernel cache root (measure/kernels.py); None: each run compiles its own
    unsafe_no_sandbox: bool = False
    commit: str | None = None  # what a remote executor ships from `worktree`'s repository (None: its HEAD)
    also_hidden: tuple[Path, ...] = ()  # on a remote node: the daemon's state folder (a slot may share its machine)


@dataclass(frozen=True)
class Measurement:
    status: str  # measured, crash, timeout, invalid, interrupted
    reason: str = ""
    log_tail: str = ""
    exit_code: int | None = None
    scores: scorer.Scores | None = None
    claimed: dict = field(default_factory=dict)  # what train.json says (the trainer's word, for the record)
    train_wall_s: float | None = None  # the daemon's clock, start of the trainer to its exit
    cpu_share: float | None = None  # CPU time of the training tree / (wall time x cores): how much of the machine used
    cpu_free: float | None = None  # how much of the machine other processes left free while it trained
    eval_seconds: float | None = None
    prepared_dir: Path | None = None
    node: str | None = None  # where it ran (set by the executor)
    fingerprint: dict | None = None  # the machine fingerprint where it ran, when not the daemon's (set by the executor)

    @property
    def ok(self) -> bool:
        return self.status == "measured"


class Failed(Exception):
    """Ends a measurement early; carries the verdict (and what the training phase measured, if it ran)."""

    def __init__(
        self,
        status: str,
        reason: str,
        log_tail: str = "",
        exit_code: int | None = None,
        claimed: dict | None = None,
        train_wall_s: float | None = None,
        cpu_share: float | None = None,
        cpu_free: float | None = None,
    ):
        super().__init__(reason)
        self.status, self.reason, self.log_tail, self.exit_code = status, reason, log_tail, exit_code
        self.claimed, self.train_wall_s = claimed or {}, train_wall_s
        self.cpu_share, self.cpu_free = cpu_share, cpu_free

    def measurement(self) -> Measurement:
        return Measurement(
            self.status,
            self.reason,
            self.log_tail,
            self.exit_code,
            claimed=self.claimed,
            train_wall_s=self.train_wall_s,
            cpu_share=self.cpu_share,
            cpu_free=self.cpu_free,
        )


def measure(
    spec: Spec,
    should_stop: Callable[[], bool] = lambda: False,
    on_phase: Callable[[str, int | None], None] = lambda phase, pid: None,
) -> Measurement:
    """Prepare (if needed), train and score `spec.worktree` as it is now."""
    try:
        trained = train(spec, should_stop, on_phase)
    except Failed as f:
        return f.measurement()
    return score(spec, trained, lambda vocab: SandboxedModel(spec, should_stop, on_phase, vocab), on_phase)


@dataclass(frozen=True)
class Trained:
    """What the sandboxed phases left for the scorer: where the tokenizer is, and the daemon's timings."""

    prepared: Path
    claimed: dict
    train_wall_s: float
    cpu_share: float | None
    cpu_free: float | None = None


def train(spec: Spec, should_stop: Callable[[], bool], on_phase: Callable[[str, int | None], None]) -> Trained:
    """Prepare (if needed) and train in the sandbox; `Failed` carries any verdict short of a checkpoint."""
    shutil.rmtree(spec.run_dir, ignore_errors=True)
    spec.run_dir.mkdir(parents=True)
    from ..scoring.leakcheck import check_sources  # numpy work

    editable = sorted({f for program in PROGRAMS.values() for f in program.editable})
    if problem := check_sources([spec.worktree / f for f in editable], spec.corpus):
        raise Failed("invalid", problem)
    if spec.kernels is not None:
        spec.kernels.mkdir(parents=True, exist_ok=True)  # hidden in every jail: it must exist when the first starts
    prepared = prepare(spec, should_stop, on_phase)
    if spec.tokenizer_sha256 and file_sha256(prepared / "tokenizer.json") != spec.tokenizer_sha256:
        raise Failed("invalid", "the tokenizer differs from the one pinned at campaign start")
    cache, compile_log = compile_kernels(spec, prepared, should_stop, on_phase)
    try:
        return train_phase(spec, prepared, cache, should_stop, on_phase)
    finally:  # only now: what the compile phase printed is what it computed, and this candidate's training is over
        if compile_log:
            keep_log(spec.run_dir / "compile.log", compile_log, fresh=True)


def train_phase(spec: Spec, prepared: Path, cache: Path | None, should_stop, on_phase) -> Trained:
    on_phase("training", None)
    scratch = spec.run_dir / "tmp"  # MLX looks for (and writes) compiled kernels under $TMPDIR: this run's own copy
    if cache is not None:
        shutil.copytree(cache / "mlx", scratch / "mlx", symlinks=False)
    else:
        scratch.mkdir()
    env = {
        "ARX_RUN_DIR": str(spec.run_dir),
        "ARX_PREPARED_DIR": str(prepared),
        "ARX_BUDGET_S": f"{spec.budget_s:g}",
        "ARX_DATASET": spec.corpus.dataset,
        "ARX_SEED": str(spec.seed),
        "TMPDIR": str(scratch),
    }
    limits = runner.Limits(spec.train_deadline_s, spec.stall_s, spec.memory_mb)
    out = run_phase(
        spec,
        [sys.executable, "-m", "trainer.train"],
        jail(spec, writable=(spec.run_dir,), visible=(spec.worktree, prepared)),
        env,
        spec.run_dir / "train.log",
        limits,
        should_stop,
        on_phase,
        "training",
    )
    wall, cpu, free = round(out.seconds, 3), out.cpu_share, out.cpu_free
    try:
        check_regular(spec.run_dir, "the run directory")
        claimed = read_claims(spec.run_dir / "train.json")
    except Failed as f:
        f.train_wall_s, f.cpu_share, f.cpu_free = wall, cpu, free
        raise
    if not (spec.run_dir / "model.safetensors").exists():
        message = "training exited 0 without writing model.safetensors"
        raise Failed("crash", message, out.log_tail, None, claimed, wall, cpu, free)
    return Trained(prepared, claimed, wall, cpu, free)


def score(
    spec: Spec,
    trained: Trained,
    launch: Callable[[int], scorer.ModelProcess],
    on_phase: Callable[[str, int | None], None] = lambda phase, pid: None,
) -> Measurement:
    """The trusted scorer on the trained checkpoint, its logits from `launch(vocab)` (a sandboxed model process,
    here or on another node, told the tokenizer's vocabulary): the held-out documents never leave this process."""
    on_phase("evaluating", None)
    started = time.time()
    try:
        try:
            scores = scorer.evaluate(spec.run_dir, trained.prepared, spec.corpus, launch)
        except scorer.Invalid as e:
            raise Failed("invalid", str(e)) from None  # never eval.log's tail: see below
        except ModelDied as e:
            # The model process saw held-out rows and may print them: its log is kept in the run folder for people,
            # never in the run's error, which the agent reads (and could write into the training data). For the
            # same reason no reason quotes anything the model process chose (its exit status, its header's fields).
            raise Failed(e.status, str(e)) from None
    except Failed as f:
        timings = {"train_wall_s": trained.train_wall_s, "cpu_share": trained.cpu_share, "cpu_free": trained.cpu_free}
        return replace(f.measurement(), claimed=trained.claimed, **timings)
    return Measurement(
        "measured",
        "",
        scores=scores,
        claimed=trained.claimed,
        train_wall_s=trained.train_wall_s,
        cpu_share=trained.cpu_share,
        cpu_free=trained.cpu_free,
        eval_seconds=round(time.time() - started, 3),
        prepared_dir=trained.prepared,
    )


def check_regular(folder: Path, what: str) -> None:
    """After a sandboxed phase, before the daemon reads anything the phase wrote: a link (to /proc/self/environ,
    another run's checkpoint, a file of the daemon's to append a log to) or a FIFO (a read that never returns)
    would make the daemon's own reads and writes do the candidate's bidding. Only folders and regular files pass,
    at most MAX_ENTRIES of them, at most MAX_DEPTH deep (a walk of millions of files, or of folders nested past
    Python's recursion limit, would take the daemon down instead), walked without recursion or a list of them all."""
    count, stack = 0, [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                count += 1
                if count > MAX_ENTRIES or depth >= MAX_DEPTH:
                    raise Failed("invalid", f"{what} holds over {MAX_ENTRIES:,} entries or is over {MAX_DEPTH} deep")
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    stack.append((Path(entry.path), depth + 1))
                elif not stat.S_ISREG(mode):
                    name = Path(entry.path).relative_to(folder)
                    raise Failed("invalid", f"{what} holds {name}, which is not a regular file")


def read_claims(path: Path) -> dict:
    """What train.json claims, each number checked to be one the ledger can hold; none when there is no train.json.
    Anything malformed (not a JSON object, too large, nested too deep, a claim of the wrong type or out of range)
    makes the run invalid: the daemon never stores or acts on it."""
    if not os.path.lexists(path):
        return {}
    try:
        info = capped.read_json_object(path)
        claims = {
            k: capped.number(info, k, "train.json", 0, high, integer)
            for k, (integer, high) in CLAIMED_FIELDS.items()
            if k in info
        }
        return claims | {"backend": capped.text(info, "backend", "train.json")}
    except capped.Refused as e:
        raise Failed("invalid", str(e)) from None


# ---------------------------------------------------------------------------------------------
# Sandboxed phases
# ---------------------------------------------------------------------------------------------
def jail(spec: Spec, writable: tuple[Path, ...] = (), visible: tuple[Path, ...] = ()) -> sandbox.Jail:
    """The jail of one phase of `spec`: these paths, and everything `hidden_paths` names hidden."""
    return sandbox.Jail(writable, visible, hidden_paths(spec), mask_roots=spec.corpus.mask_roots)


def hidden_paths(spec: Spec) -> tuple[Path, ...]:
    state_dirs = {spec.state_dir, default_state_dir(), *spec.also_hidden, *([spec.kernels] if spec.kernels else [])}
    return (*(p.resolve() for p in state_dirs), data_root().resolve(), Path.home().resolve(), *spec.corpus.masked)


def wrap(spec: Spec, cmd: list[str], phase_jail: sandbox.Jail, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    from inside import blas  # stdlib only: the orchestrator never imports MLX

    full_env = sandbox.environment(blas.fast_env() | env | {"PYTHONUNBUFFERED": "1"})
    if spec.unsafe_no_sandbox:
        return cmd, full_env
    return sandbox.command(cmd, replace(phase_jail, visible=(ROOT, *phase_jail.visible))), full_env


def run_phase(
    spec: Spec, cmd, phase_jail, env, log: Path, limits: runner.Limits, should_stop, on_phase, phase: str
) -> runner.Outcome:
    argv, full_env = wrap(spec, cmd, phase_jail, env)
    out = runner.run_watched(argv, spec.worktree, full_env, log, limits, should_stop, lambda pid: on_phase(phase, pid))
    if out.ok:
        return out
    if out.reason == "stopped":
        raise Failed("interrupted", f"stopped during {phase}")
    if out.reason in ("deadline", "stall"):
        raise Failed("timeout", f"{phase} {out.detail}", out.log_tail, out.exit_code)
    if out.reason == "memory":
        raise Failed("crash", f"{phase} {out.detail}", out.log_tail, out.exit_code)
    if phase == "training" and out.exit_code == 3:
        raise Failed("crash", "training stopped on a non-finite loss (exit 3)", out.log_tail, 3)
    raise Failed("crash", f"{phase} exited with code {out.exit_code}", out.log_tail, out.exit_code)


def prepared_key(spec: Spec) -> str:
    """Names the prepared folder: the data code's bytes, the training material, the backend, and the
    trusted code's version (a folder checked by an older leak check or jail is never reused)."""
    h = hashlib.sha256()
    for name in ("prepare.py", "data_sources.py"):
        h.update((spec.worktree / "trainer" / name).read_bytes())
    h.update(f"|{spec.corpus.id}|{fingerprint.backend()}|{fingerprint.arx_version()}".encode())
    return h.hexdigest()[:16]


def prepare(spec: Spec, should_stop, on_phase) -> Path:
    """The prepared folder for the worktree's data code: reused when it exists, else built in a sandbox
    into a fresh folder, checked for held-out leaks, and only then published under its key."""
    final = data_root() / "prepared" / f"{spec.corpus.dataset}-{prepared_key(spec)}"
    if (final / "meta.json").exists():
        return final
    on_phase("preparing", None)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{spec.run_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        env = {
            "ARX_CORPUS_DIR": str(spec.corpus.train_dir),
            "ARX_PREPARED_DIR": str(tmp),
            "ARX_DATASET": spec.corpus.dataset,
        }
        limits = runner.Limits(spec.prepare_timeout_s or PREPARE_TIMEOUT_S, spec.stall_s * 5, spec.memory_mb)
        run_phase(
            spec,
            [sys.executable, "-m", "trainer.prepare"],
            jail(spec, writable=(tmp,), visible=(spec.worktree, spec.corpus.train_dir)),
            env,
            spec.run_dir / "prepare.log",
            limits,
            should_stop,
            on_phase,
            "prepare",
        )
        from ..scoring.leakcheck import check_prepared  # numpy work, only when data was prepared

        check_regular(tmp, "the prepared folder")
        problem = check_prepared(tmp, spec.corpus)
        if problem:
            raise Failed("invalid", problem)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compile_kernels(spec: Spec, prepared: Path, should_stop, on_phase) -> tuple[Path | None, bytes]:
    """The published kernel cache of the worktree's trainer code (orchestrator/measure/kernels.py explains the rules),
    and the compile phase's log: reused when it exists (no log), else made now. A sandboxed compile phase runs the
    trainer with ARX_COMPILE_ONLY=1, seeing no training data (a meta.json with the vocabulary size alone), under its
    own deadline, outside the training budget; of what it leaves, only kernel sources that parse as MLX writes them
    are kept, and they are compiled here, in a sandbox with no candidate code. None where nothing is cached (no
    cache root, not CPU). The log is the phase's own output, so it reaches the run folder only after training (a
    training run that could read it would get the phase's unbudgeted compute), or at once if the phase failed."""
    if spec.kernels is None or kernels.backend() != "cpu":
        return None, b""
    vocab = json.loads((prepared / "meta.json").read_text()).get("vocab_size")
    if not isinstance(vocab, int) or not 0 < vocab <= 1 << 24:
        raise Failed("crash", f"the prepared meta.json gives no usable vocab_size ({vocab!r})")
    if final := published_kernels(spec, vocab):
        return final, b""
    key = kernels.cache_key(spec.worktree, vocab, fingerprint.arx_version())
    final = spec.kernels / key
    on_phase("compiling", None)
    started = time.time()
    kernels.ensure_pch()  # for what runs still compile themselves
    work = spec.kernels / f"{key}.tmp-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("prepared", "tmp", "run", "src", "out"):
        (work / sub).mkdir(parents=True)
    try:
        (work / "prepared" / "meta.json").write_text(json.dumps({"vocab_size": vocab}))
        env = {
            "ARX_RUN_DIR": str(work / "run"),
            "ARX_PREPARED_DIR": str(work / "prepared"),
            "ARX_BUDGET_S": f"{spec.budget_s:g}",
            "ARX_DATASET": spec.corpus.dataset,
            "ARX_SEED": "0",
            "ARX_COMPILE_ONLY": "1",
            "TMPDIR": str(work / "tmp"),
            "PATH": f"{kernels.STUB_COMPILER}:{os.environ.get('PATH', os.defpath)}",  # sources only: stub libraries
        }
        compile_jail = jail(spec, writable=(work / "tmp", work / "run"), visible=(spec.worktree, work / "prepared"))
        limits = runner.Limits(COMPILE_DEADLINE_S, COMPILE_DEADLINE_S, spec.memory_mb)
        log = work / "compile.log"  # in the kernel root, which every jail hides
        cmd = [sys.executable, "-m", "trainer.train"]
        run_phase(spec, cmd, compile_jail, env, log, limits, should_stop, on_phase, "compile phase")
        # then the forward a model process compiles (inside/evaluate.py), in the same jail; a failure (an older
        # inside/evaluate.py in the worktree, a forward that does not trace) costs only speed: the model processes
        # then run the forward uncompiled
        rows = str(scorer.BATCH_ROWS)
        cmd = [sys.executable, "-m", "inside.evaluate", "--compile-only", rows, "--run-dir", str(work / "run")]
        cmd += ["--worktree", str(spec.worktree)]
        limits = runner.Limits(TRACE_DEADLINE_S, TRACE_DEADLINE_S, spec.memory_mb)
        try:
            run_phase(spec, cmd, compile_jail, env, log, limits, should_stop, on_phase, "trace of the forward")
            traced = True
        except Failed as f:
            if f.status == "interrupted":
                raise
            traced = False
            with open(log, "a") as out:
                out.write(f"the forward was not traced ({f.reason}): model processes will run it uncompiled\n")

        def trusted(cmd: list[str], visible: tuple[Path, ...], out: Path) -> dict[str, str]:
            return compile_trusted(spec, cmd, sandbox.Jail(writable=(out,), visible=visible))

        manifest = kernels.publish(work / "tmp", work / "src", work / "out", spec.kernels, trusted)
        manifest |= {"key": key, "seconds": round(time.time() - started, 2), "forward_traced": traced}
        (work / "out" / kernels.MANIFEST).write_text(json.dumps(manifest, indent=2))
        with open(log, "a") as f:
            f.write(f"kernel cache {key}: {len(manifest['kernels'])} kernels, refused: {manifest['refused']}\n")
        try:
            (work / "out").rename(final)
        except OSError:  # another measurement published the same key first: same code, same sources
            pass
        return final, head(log)
    except Failed:
        if (work / "compile.log").exists():
            keep_log(spec.run_dir / "compile.log", head(work / "compile.log"), fresh=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def head(log: Path) -> bytes:
    """The first COMPILE_LOG_CAP bytes of a log the daemon wrote."""
    with open(log, "rb") as f:
        return f.read(COMPILE_LOG_CAP)


def published_kernels(spec: Spec, vocab: int) -> Path | None:
    """The published kernel cache of the worktree's trainer code for a vocabulary of `vocab`, if there is one."""
    if spec.kernels is None or kernels.backend() != "cpu":
        return None
    final = spec.kernels / kernels.cache_key(spec.worktree, vocab, fingerprint.arx_version())
    return final if (final / kernels.MANIFEST).exists() else None


def forward_kernels(spec: Spec, vocab: int) -> Path | None:
    """The kernels a model process compiles its forward with (the `mlx` folder of the published cache, never its
    manifest, which names what the compile phase left): only where the compile phase traced the forward, and only
    in a sandbox, where the process sees them read-only."""
    cache = published_kernels(spec, vocab)
    if cache is None or spec.unsafe_no_sandbox:
        return None
    return cache / "mlx" if json.loads((cache / kernels.MANIFEST).read_text()).get("forward_traced") else None


def compile_trusted(spec: Spec, cmd: list[str], trusted_jail: sandbox.Jail) -> dict[str, str]:
    """Run the trusted kernel compile (no candidate code) in a sandbox; {source: error} of what failed."""
    argv, env = wrap(spec, cmd, trusted_jail, {})
    try:
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMPILE_DEADLINE_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise Failed("timeout", f"the trusted kernel compile ran past {COMPILE_DEADLINE_S:.0f}s") from None
    if done.returncode:
        raise Failed("crash", f"the trusted kernel compile failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class ModelDied(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class SandboxedModel:
    """A `scorer.ModelProcess`: inside/evaluate.py in a sandbox, spoken to over its stdin/stdout.

    Its jail shows it the worktree and the run's checkpoint (CHECKPOINT), nothing else of the run folder, and it can
    write nowhere that outlives it; its stderr comes to the daemon through a pipe (the first EVAL_LOG_CAP bytes are
    appended to eval.log when it ends), so nothing one model process writes is readable by the next. A guard thread
    enforces the deadline, the memory cap and a stop request by killing the process group; the scorer then sees the
    pipe close and the run fails with the reason.
    """

    def __init__(
        self,
        spec: Spec,
        should_stop: Callable[[], bool],
        on_phase: Callable[[str, int | None], None],
        vocab: int,
    ):
        checkpoint = tuple(spec.run_dir / name for name in CHECKPOINT)
        cmd = [sys.executable, "-m", "inside.evaluate", "--run-dir", str(spec.run_dir)]
        cmd += ["--worktree", str(spec.worktree)]
        cache = forward_kernels(spec, vocab)  # read-only here; the process copies it into its private TMPDIR
        if cache:
            cmd += ["--kernels", str(cache)]
        visible = (spec.worktree, *checkpoint, *([cache] if cache else []))
        argv, env = wrap(spec, cmd, jail(spec, visible=visible), {})
        self.log_path = spec.run_dir / "eval.log"
        self.proc = subprocess.Popen(
            argv,
            cwd=spec.worktree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=runner.child_setup,
        )
        on_phase("evaluating", self.proc.pid)
        self.limits, self.should_stop, self.started = (
            runner.Limits(spec.eval_timeout_s, 0, spec.memory_mb),
            should_stop,
            time.time(),
        )
        self.widths = (vocab, scorer.max_vocab(vocab))  # the logits it may answer: the tokenizer's, a little more
        self.sent: collections.deque[tuple[int, int]] = collections.deque()  # shapes of the batches not yet answered
        self.reason: tuple[str, str] | None = None
        self.answered = False  # the first batch of logits has arrived
        self.done = threading.Event()
        self.output = io.BytesIO()
        pumped = (self.proc.stderr, self.output, lambda: None, EVAL_LOG_CAP)
        self.reader = threading.Thread(target=runner.pump, args=pumped)
        self.reader.daemon = True
        self.reader.start()
        threading.Thread(target=self.guard, daemon=True).start()

    def guard(self) -> None:
        while not self.done.wait(runner.POLL_S):
            if time.time() - self.started > self.limits.deadline_s:
                self.reason = ("timeout", f"evaluation ran past its deadline of {self.limits.deadline_s:.0f}s")
            elif not self.answered and time.time() - self.started > FIRST_LOGITS_S:
                self.reason = ("timeout", f"the evaluation model process sent no logits within {FIRST_LOGITS_S:.0f}s")
            elif self.limits.rss_mb and (rss := runner.tree_rss_mb(self.proc.pid)) > self.limits.rss_mb:
                self.reason = (
                    "crash",
                    f"evaluation process tree RSS+swap {rss:.0f} MB passed the cap of {self.limits.rss_mb:.0f} MB",
                )
            elif self.should_stop():
                self.reason = ("interrupted", "stopped during evaluation")
            if self.reason:
                runner.kill_group(self.proc.pid, grace_s=0.5)
                return

    def logits(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Each batch's logits in turn. The next batch is sent as soon as an answer has been read, so the model
        computes it while the scorer reduces that answer; never before: a model process writing an answer reads no
        request, so a second request larger than a pipe's buffer (16 rows of 1,024 tokens, or the GPU's 2,048) would
        wait for it while it waited for the scorer to read."""
        try:
            batches = iter(batches)
            batch = next(batches, None)
            if batch is None:
                return
            self.send(batch)
            for batch in batches:
                answer = self.receive()
                self.send(batch)
                yield answer
            yield self.receive()
        except (BrokenPipeError, EOFError, OSError):
            self.proc.wait()
            raise ModelDied(*self.died()) from None

    def died(self) -> tuple[str, str]:
        """The verdict on a model process that stopped answering: the guard's reason, else a crash. Never its exit
        status: the process chose it, after reading held-out rows."""
        return self.reason or ("crash", "the evaluation model process died before it answered every batch")

    def send(self, batch: np.ndarray) -> None:
        from inside.evaluate import REQUEST

        self.proc.stdin.write(
            REQUEST.pack(b"ROWS", *batch.shape) + np.ascontiguousarray(batch, dtype=np.int32).tobytes()
        )
        self.proc.stdin.flush()
        self.sent.append(batch.shape)

    def receive(self) -> np.ndarray:
        """The logits of the oldest batch not yet answered; the header must describe exactly that batch, with a
        vocabulary in `widths`, before a byte of the logits is read (nothing is allocated on the process's word)."""
        from inside.evaluate import RESPONSE

        rows, cols = self.sent.popleft()
        head = self.proc.stdout.read(RESPONSE.size)
        if len(head) != RESPONSE.size:
            raise EOFError
        magic, got_rows, got_cols, vocab = RESPONSE.unpack(head)
        low, high = self.widths
        if magic != b"LOGT" or (got_rows, got_cols) != (rows, cols) or not low <= vocab <= high:
            raise scorer.Invalid(
                "the model process answered a header that does not describe logits of the batch it was sent"
            )
        data = self.proc.stdout.read(rows * cols * vocab * 4)
        if len(data) != rows * cols * vocab * 4:
            raise EOFError
        self.answered = True
        return np.frombuffer(data, dtype=np.float32).reshape(rows, cols, vocab)

    def close(self) -> None:
        self.done.set()
        try:
            self.send(np.zeros((0, 0), dtype=np.int32))
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        runner.kill_group(self.proc.pid, grace_s=0.5)
        self.reader.join(timeout=5)
        keep_log(self.log_path, self.output.getvalue())


def keep_log(path: Path, data: bytes, fresh: bool = False) -> None:
    """Append a log to `path` in the run folder, for people (never for the agent), or with `fresh` create it, unless
    anything is there: the folder is the trainer's, and a link or a FIFO left under that name would make this write
    go where the candidate chose (or never return), so links are not followed and FIFOs not waited on."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | (os.O_EXCL if fresh else os.O_APPEND), 0o644)
    except OSError:
        return
    with os.fdopen(fd, "ab") as f:
        f.write(data)
