"""The `ray` executor: each measurement's sandboxed phases on a Ray node holding an exclusive slot.

Per measurement the daemon starts one `Slot` actor, asking Ray for the slot's resources
(`--slot-resources`, e.g. {"CPU": 1} or {"GPU": 1}), so no two runs share what they are timed on;
with a CPU count the actor also pins its phases to its own CPUs (a node-local lock picks which).
On the node, trusted arx code (the node's own installation, never the shipped files) runs
`experiment.train`: prepare and train in the same sandbox, under the same deadline, stall and
memory limits, timed by the node's clock. Then the daemon scores: `experiment.score` runs HERE,
with the held-out documents, and the node only serves logits from a sandboxed `inside/evaluate.py`
(`RemoteModel`, a `scorer.ModelProcess`). The actor, and with it every process it started, ends
with the measurement.

What travels, and what a hostile candidate could do with it:
- to the node: `git archive` of the candidate's `trainer/` at its commit (no shared filesystem),
  and the spec's plain fields. The candidate wrote those files; they run only in the node's sandbox.
- back: the run's train.json, model_config.json, the prepared tokenizer.json and the logs, under
  fixed names, read only if regular files (opened without following links, type checked on the
  open file: a phase may swap its log for a link to a node secret at any moment), each capped at
  MAX_FILE_BYTES (logs keep their tail). The scorer treats model_config and the tokenizer as
  hostile already; the logs are shown to people and to the agent, as locally.
- logits, batch by batch: parsed from the sandbox's pipe by trusted code on the node, then checked
  by the scorer (shape, finiteness, causality probes) exactly as locally.
- the Ray cluster itself is a new surface: a phase that could reach the raylet, the GCS or the
  object store could forge another run's result. In the sandbox it cannot: no network interface,
  a private /tmp (Ray's sockets) and /dev/shm (its object store). `--unsafe-no-sandbox` removes
  that, so the CLI refuses it with `--executor ray`. From the network, Ray 2.60 listens on every
  interface: its token authentication keeps others out (on by itself for `local`; docs/guide.md
  turns it on for `ray start`), and the token, in the home folder, is hidden in every jail.
- a worker node is trusted like the daemon's machine: it runs arx's code and its clock times the
  run. A compromised node could forge timings or logits; of the model program's held-out text it
  gets only what a local model process gets, shuffled token rows mixed with probes, never the
  documents or their scores (the data program's leak check runs on the node, against its own copy).
"""

from __future__ import annotations

import collections
import functools
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers use this environment, not one uv rebuilds

import ray  # noqa: E402  (after the environment above)
import ray.exceptions as rex  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from .. import capped, fingerprint
from ..programs import ROOT  # noqa: E402
from ..scoring import corpus, scorer  # noqa: E402
from . import experiment, slots  # noqa: E402
from .executor import LOST, Unavailable  # noqa: E402

MAX_FILE_BYTES = 16 << 20
RETURNED = ("train.json", "model_config.json", "train.log", "prepare.log", "eval.log")
LOGS = ("prepare.log", "train.log")  # streamed back while the phase runs
POLL_S = 1.0
STOP_GRACE_S = 30.0  # after a stop, how long a slot may take to end its phase (or to start, if still queued)
CONNECT_S = 5.0
FIRST_SLOT_S = 120.0  # at start, how long the cluster may take to grant a first slot (else: no node offers one)
LOST_ERRORS = (
    rex.RayActorError,
    rex.WorkerCrashedError,
    rex.ObjectLostError,
    rex.NodeDiedError,
    rex.OwnerDiedError,
    rex.LocalRayletDiedError,
    rex.ActorUnavailableError,
)
SPEC_FIELDS = (
    "program",
    "budget_s",
    "seed",
    "train_deadline_s",
    "stall_s",
    "memory_mb",
    "eval_timeout_s",
    "tokenizer_sha256",
    "prepare_timeout_s",
    "unsafe_no_sandbox",
)


def node_root() -> Path:
    """Where a node keeps its runs: under the node's data root, which every sandbox on it hides."""
    return Path(os.environ.get("ARX_NODE_DIR") or corpus.data_root() / "node").resolve()


def parse_slot(resources: dict) -> tuple[dict, int | None]:
    """Ray actor options for one slot, and the CPUs to pin it to (None: no pinning)."""
    extra = {k: float(v) for k, v in resources.items() if k not in ("CPU", "GPU")}
    cpus = resources.get("CPU")
    options = {"num_cpus": float(cpus or 0), "num_gpus": float(resources.get("GPU", 0))}
    return options | ({"resources": extra} if extra else {}), int(cpus) if cpus else None


class Slot:
    """One exclusive slot on a node: trusted arx code running one measurement's sandboxed phases."""

    def __init__(self, cpus: int | None):
        if str(ROOT) not in sys.path:  # inside.blas and the sealed evaluator come from the node's checkout
            sys.path.insert(0, str(ROOT))
        self.cpus: list[int] | None = None
        self.lock = None
        if cpus:
            have = sorted(os.sched_getaffinity(0))
            for i in range(max(1, len(have) // cpus)):
                self.lock = slots.try_lock(node_root() / "slots" / f"cpu{cpus}-{i}.lock")
                if self.lock is not None:
                    self.cpus = have[i * cpus : (i + 1) * cpus]
                    break
        self.stop = threading.Event()
        self.model_lock = threading.Lock()
        self.spec: experiment.Spec | None = None
        self.model: experiment.SandboxedModel | None = None
        self.root = node_root() / "runs" / uuid.uuid4().hex[:16]

    def enter(self) -> None:
        """Pin the calling thread (and so every process it starts) to this slot's CPUs."""
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def whoami(self) -> tuple[str, dict]:
        self.enter()
        node = f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:8]}"
        return node, fingerprint.current()

    def train(self, fields: dict, dataset: str, code: bytes):
        """Unpack the candidate's files and run prepare and train in the sandbox, as `experiment.train`.

        Compiled MLX kernels are cached on the node per trainer code version, by the same compile phase and
        checks as locally (orchestrator/measure/kernels.py)."""
        self.enter()
        node, fp = self.whoami()
        shutil.rmtree(self.root, ignore_errors=True)
        (self.root / "code").mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(code)) as tar:
            tar.extractall(self.root / "code", filter="data")
        self.spec = experiment.Spec(
            worktree=self.root / "code",
            run_dir=self.root / "run",
            corpus=corpus.materialize(dataset),
            state_dir=node_root(),
            kernels=node_root() / "kernels",
            **fields,
        )
        try:
            trained = experiment.train(self.spec, self.stop.is_set, lambda phase, pid: None)
            failed, tokenizer = None, read_capped(trained.prepared / "tokenizer.json") or b""
        except experiment.Failed as f:
            trained, failed, tokenizer = None, f.measurement(), None
        return node, fp, trained, failed, tokenizer, self.files()

    def files(self) -> dict[str, bytes]:
        found = {name: read_capped(self.root / "run" / name) for name in RETURNED}
        return {name: data for name, data in found.items() if data is not None}

    def read_log(self, name: str, offset: int) -> bytes:
        """New bytes of a log the phase is writing (its run directory is the candidate's: see `open_regular`)."""
        f = open_regular(self.root / "run" / name) if name in LOGS else None
        if f is None:
            return b""
        with f:
            f.seek(offset)
            return f.read(MAX_FILE_BYTES)

    def stop_now(self) -> None:
        self.stop.set()

    def open_model(self, vocab: int) -> None:
        self.enter()
        self.model = experiment.SandboxedModel(self.spec, self.stop.is_set, lambda phase, pid: None, vocab)

    def logits(self, batch):
        """One batch in, its logits out (send and receive under one lock: each answer belongs to its batch)."""
        with self.model_lock:
            try:
                self.model.send(batch)
                return "logits", self.model.receive()
            except scorer.Invalid as e:
                return "invalid", str(e)
            except (BrokenPipeError, EOFError, OSError):
                self.model.proc.wait()
                return self.model.died()

    def close_model(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None

    def cleanup(self) -> None:
        self.close_model()
        shutil.rmtree(self.root, ignore_errors=True)


def answered(who) -> str:
    """The node a slot named in its first answer, if it answered before it was lost or stopped."""
    try:
        return ray.get(who, timeout=0)[0]
    except (rex.GetTimeoutError, *LOST_ERRORS):
        return "unknown node"


def reachable(address: str) -> None:
    """Fail at once on a head nobody answers at (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"nothing answers at {address} ({e})") from None


def open_regular(path: Path):
    """`path` opened for reading if it is a regular file, else None. The phase may swap a file of its run
    directory for a link (to a secret of the node's, which this trusted process could read) or a FIFO (a read
    that never returns) at any moment: the link is not followed and the type is checked on the open file."""
    try:
        return capped.open_regular(path)
    except capped.Refused:
        return None


def read_capped(path: Path) -> bytes | None:
    """A regular file's bytes, at most MAX_FILE_BYTES (the tail of a longer one); None if it is not one."""
    f = open_regular(path)
    if f is None:
        return None
    with f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - MAX_FILE_BYTES))
        return f.read()


class RemoteModel:
    """A `scorer.ModelProcess` whose sandboxed model runs in the slot on its node; one batch kept in flight
    ahead so the node computes while the scorer reduces."""

    def __init__(self, actor, should_stop, vocab: int):
        self.actor, self.should_stop = actor, should_stop
        ray.get(actor.open_model.remote(vocab))

    def logits(self, batches):
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append(self.actor.logits.remote(batch))
            if len(pending) == 2:
                yield self.take(pending.popleft())
        while pending:
            yield self.take(pending.popleft())

    def take(self, ref):
        if self.should_stop():
            raise experiment.ModelDied("interrupted", "stopped during evaluation")
        kind, value = ray.get(ref)
        if kind == "logits":
            return value
        if kind == "invalid":
            raise scorer.Invalid(value)
        raise experiment.ModelDied(kind, value)

    def close(self) -> None:
        ray.get(self.actor.close_model.remote())


class RayExecutor:
    """Measurements as Ray actors on slots; the trusted scorer stays in the daemon."""

    name = "ray"
    holds_slots = True

    def __init__(self, address: str, slot: dict, parallel: int):
        self.options, self.cpus = parse_slot(slot)
        try:
            if address == "local":  # one machine, `parallel` slots of `slot` each
                extra = self.options.get("resources", {})
                ray.init(
                    num_cpus=int(self.options["num_cpus"] * parallel) or 1,
                    num_gpus=int(self.options["num_gpus"] * parallel),
                    resources={k: v * parallel for k, v in extra.items()},
                    include_dashboard=False,
                    log_to_driver=False,
                    # Ray 2.60 still listens on every interface; ray.init turns its token authentication on
                    _node_ip_address="127.0.0.1",
                )
            else:
                if address != "auto":
                    reachable(address)
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise Unavailable(f"cannot start or reach Ray at {address}: {str(e).splitlines()[0]}") from None
        self.actor_class = ray.remote(max_concurrency=4)(Slot)
        self.latest_fp: dict | None = None
        try:
            self.latest_fp = self.probe()
        except rex.GetTimeoutError:
            ray.shutdown()
            raise Unavailable(
                f"no node of the Ray cluster at {address} granted a slot of {slot} within {FIRST_SLOT_S:.0f}s "
                "(`ray status` shows what each node offers)"
            ) from None

    def start_slot(self, avoid: str | None = None, near: str | None = None):
        """A slot anywhere; on the node `near` names (a Measurement.node, "host:id8") when it is alive; else off
        the node `avoid` names when another can hold a slot. Both are soft: should the chosen node die, anywhere.
        A chosen node that is busy is waited for (Ray's soft label rules do not keep a run off a node reliably)."""
        fits = self.nodes_with_room()
        if near:
            fits = [n for n in fits if n.startswith(near.rsplit(":", 1)[-1])]
        elif avoid:
            fits = [n for n in fits if not n.startswith(avoid.rsplit(":", 1)[-1])]
        options = self.options
        if (near or avoid) and fits:
            strategy = NodeAffinitySchedulingStrategy(random.choice(fits), soft=True)
            options = {**options, "scheduling_strategy": strategy}
        return self.actor_class.options(**options).remote(self.cpus)

    def nodes_with_room(self) -> list[str]:
        """The ids of the live nodes big enough for one slot."""
        need = {"CPU": self.options.get("num_cpus", 0), "GPU": self.options.get("num_gpus", 0)}
        need = {k: v for k, v in {**need, **self.options.get("resources", {})}.items() if v}
        return [
            n["NodeID"]
            for n in ray.nodes()
            if n["Alive"] and all(n["Resources"].get(k, 0) >= v for k, v in need.items())
        ]

    def probe(self) -> dict:
        """The fingerprint of a fresh slot (and proof that the cluster grants one)."""
        return self.landed(self.start_slot())[1]

    @staticmethod
    def landed(actor) -> tuple[str, dict]:
        """Where a slot landed (as Measurement.node) and that node's fingerprint; the slot ends."""
        try:
            return ray.get(actor.whoami.remote(), timeout=FIRST_SLOT_S)
        finally:
            ray.kill(actor)

    def fingerprint(self) -> dict:
        """The fingerprint of the slot that measured last (the first: of the probe at start)."""
        return self.latest_fp

    def measure(self, spec, should_stop, on_phase, avoid=None, near=None) -> experiment.Measurement:
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        spec.run_dir.mkdir(parents=True)
        code = subprocess.run(
            ["git", "archive", "--format=tar", spec.commit or "HEAD", "--", "trainer"],
            cwd=spec.worktree,
            capture_output=True,
            check=True,
        ).stdout
        fields = {k: getattr(spec, k) for k in SPEC_FIELDS}
        fields["also_hidden"] = (spec.state_dir, *spec.also_hidden)  # a slot on the daemon's machine must not read it
        on_phase("training", None)
        actor = self.start_slot(avoid, near)
        who = actor.whoami.remote()  # answered as soon as the slot starts: where a lost run was lost
        try:
            ref = actor.train.remote(fields, spec.corpus.dataset, code)
            node, fp, trained, failed, tokenizer, files = self.wait(actor, ref, should_stop, spec.run_dir)
            self.latest_fp = fp
            self.write(spec.run_dir, files)
            if failed is not None:
                return replace(failed, node=node, fingerprint=fp)
            prepared = spec.run_dir / "prepared"  # the candidate's tokenizer, for the scorer here
            prepared.mkdir()
            (prepared / "tokenizer.json").write_bytes(tokenizer)
            launch = functools.partial(RemoteModel, actor, should_stop)  # called with the tokenizer's vocabulary
            m = experiment.score(spec, replace(trained, prepared=prepared), launch, on_phase)
            self.write(spec.run_dir, ray.get(actor.files.remote()))
            return replace(m, node=node, fingerprint=fp)
        except LOST_ERRORS as e:
            node = answered(who)
            return experiment.Measurement(LOST, f"the Ray worker was lost ({node}): {type(e).__name__}", node=node)
        except experiment.Failed as f:
            return replace(f.measurement(), node=answered(who))
        finally:
            try:
                ray.get(actor.cleanup.remote(), timeout=30)
            except (rex.RayError, TimeoutError):
                pass
            ray.kill(actor)

    def wait(self, actor, ref, should_stop, run_dir: Path):
        """Wait for the node's training, streaming its logs into the run directory and passing a stop on."""
        offsets = dict.fromkeys(LOGS, 0)
        stopping: float | None = None
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_S)
            for name in LOGS:
                try:
                    chunk = ray.get(actor.read_log.remote(name, offsets[name]), timeout=POLL_S * 5)
                except (rex.GetTimeoutError, *LOST_ERRORS):
                    chunk = b""
                if chunk:
                    with open(run_dir / name, "ab") as f:
                        f.write(chunk)
                    offsets[name] += len(chunk)
            if ready:
                return ray.get(ref)
            if should_stop() and stopping is None:
                actor.stop_now.remote()
                stopping = time.time()
            if stopping is not None and time.time() - stopping > STOP_GRACE_S:
                raise experiment.Failed("interrupted", "stopped before the slot finished its phase")

    @staticmethod
    def write(run_dir: Path, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            if name in RETURNED:  # fixed names only: nothing the candidate names reaches the daemon's disk
                (run_dir / name).write_bytes(data)

    def close(self) -> None:
        ray.shutdown()
