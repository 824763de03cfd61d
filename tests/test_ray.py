"""The `ray` executor and parallel campaigns: on a local Ray instance of this machine (2 slots of 1 CPU), and on
a cluster of two nodes of two machine classes started with `ray start`, as docs/guide.md does for two machines.

The local path never imports Ray (fast test); the rest is slow: the real CLI, real training runs of 2 s,
scored in the daemon from logits served by the slots."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import git
import psutil
import pytest

from conftest import HANG_S, ROOT
from test_daemon import arx, rows, wait_for


def test_the_local_path_never_imports_ray():
    code = (
        "import sys; import orchestrator.cli, orchestrator.daemon, orchestrator.campaign.campaign, "
        "orchestrator.measure.executor; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_files_a_slot_sends_back_are_regular_and_capped(tmp_path, monkeypatch):
    """The run directory is the candidate's: a log swapped for a link to a node secret, or for a FIFO, is not
    read by the slot's trusted process; a huge log comes back as its tail."""
    from orchestrator.measure import ray_executor

    monkeypatch.setattr(ray_executor, "MAX_FILE_BYTES", 8)
    secret = tmp_path / "secret"
    secret.write_text("node secret")
    (tmp_path / "train.log").symlink_to(secret)
    os.mkfifo(tmp_path / "prepare.log")
    (tmp_path / "train.json").write_text("0123456789abcdef")
    assert ray_executor.read_capped(tmp_path / "train.log") is None
    assert ray_executor.read_capped(tmp_path / "prepare.log") is None
    assert ray_executor.read_capped(tmp_path / "train.json") == b"89abcdef"
    assert ray_executor.read_capped(tmp_path / "missing.log") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parallel", "2"], "--parallel above 1 needs --executor ray"),
        (["--executor", "ray", "--parallel", "0"], "--parallel must be at least 1"),
        (["--executor", "ray", "--slot-resources", '{"CPU": 0}'], "--slot-resources must be a JSON object"),
        (["--executor", "ray", "--slot-resources", "gpu"], "--slot-resources must be a JSON object"),
        (["--executor", "ray", "--slot-resources", '{"CPU": 1.5}'], "CPU must be a whole number"),
        (["--executor", "ray", "--ray-address", "nowhere"], "--ray-address must be local, auto or HOST:PORT"),
        (["--executor", "ray", "--unsafe-no-sandbox"], "--executor ray cannot run unsandboxed"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot start or reach Ray at 127.0.0.1:1"),
    ],
)
def test_bad_executor_flags_are_one_clear_line(repo, data_dir, args, message):
    result = arx(repo, "start", "--program", "model", "--tag", "x", "--foreground", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def ray_worker_of_a_trainer(slow_blas: bool | None = None) -> psutil.Process | None:
    """The Ray worker process whose slot is running a trainer right now (its trainer descends from it); with
    `slow_blas`, one of the node of `two_nodes` whose workers have (True) or lack (False) ARX_NO_FAST_BLAS."""
    for proc in psutil.process_iter(["cmdline"]):
        if "trainer.train" in " ".join(proc.info["cmdline"] or []):
            try:
                worker = next(p for p in proc.parents() if " ".join(p.cmdline()).startswith("ray::"))
                if slow_blas is None or slow_blas == ("ARX_NO_FAST_BLAS" in worker.environ()):
                    return worker
            except (StopIteration, psutil.Error):
                continue
    return None


def no_ray_left() -> bool:
    return not any(p.info["name"].startswith(("raylet", "gcs_server")) for p in psutil.process_iter(["name"]))


PARALLEL_START = (
    "start",
    "--program",
    "model",
    "--budget",
    "2",
    "--baseline-runs",
    "1",
    "--max-pairs",
    "1",
    "--cpu-tolerance",
    "1",  # 2 runs on 2 cores beside the daemon's scorer: contention is not what these tests are about
    "--executor",
    "ray",
    "--ray-address",
    "local",
    "--parallel",
    "2",
)


def ray_cli(*args: str, env: dict, cwd: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture
def two_nodes(repo, tmp_path):
    """A head and a second node of 1 CPU each, on this machine, started with the commands docs/guide.md gives
    for two machines: token authentication on (Ray 2.60 listens on every interface), the token in a file.
    The second node trains with MLX's own BLAS (ARX_NO_FAST_BLAS=1): another machine class, as a node with
    another CPU or GPU would be, whose runs are never compared with the head's."""
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="arx-ray-"))  # short: Ray's socket paths live below it
    node = ("--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats")
    try:
        head = ("--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp / "a"))
        ray_cli("start", *head, *node, env=env, cwd=repo)
        slow_blas = env | {"ARX_NO_FAST_BLAS": "1"}
        ray_cli(
            "start", "--address", f"127.0.0.1:{port}", "--temp-dir", str(temp / "b"), *node, env=slow_blas, cwd=repo
        )
        yield f"127.0.0.1:{port}", env
    finally:  # not `ray stop`, which stops every Ray on the machine: the processes of these two nodes only
        doomed = []
        for proc in psutil.process_iter(["cmdline"]):
            if str(temp) in " ".join(proc.info["cmdline"] or []):
                try:  # with its children: agents and workers name themselves `ray::...`
                    doomed += [proc, *proc.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
        for proc in doomed:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(doomed, timeout=HANG_S)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_two_candidates_in_flight_on_two_nodes_of_two_classes_and_a_worker_killed(
    repo, data_dir, two_nodes, tmp_path, monkeypatch
):
    """Two candidates in flight fill both nodes, so one lands on the class the champion was never measured on:
    the champion is measured there, on that candidate's node, and the pair judged within the class. A worker
    killed mid-run is measured again on the other node."""
    address, env = two_nodes
    start = [*PARALLEL_START[: PARALLEL_START.index("--ray-address")], "--ray-address", address, "--parallel", "2"]
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                *start,
                "--tag",
                "two",
                "--max-experiments",
                "2",
                "--foreground",
            ],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: len(rows(repo, "SELECT 1 FROM run WHERE kind = 'experiment' AND status = 'training'")) == 2)
        (baseline_fp,) = rows(repo, "SELECT fingerprint FROM run WHERE kind = 'baseline'")[0]
        on_slow_node = "reference" in json.loads(baseline_fp)["blas"]
        # the candidate on the champion's class loses its worker and is retried on the other class
        wait_for(lambda: ray_worker_of_a_trainer(slow_blas=on_slow_node)).kill()
        assert daemon.wait(HANG_S) == 0, log.read_text()[-3000:]
    finally:
        daemon.kill()
    runs = rows(
        repo,
        "SELECT id, kind, status, val_bpb, node, rerun_of, decision_reason, fingerprint_hash, seed, description, "
        'ended_at, started_at, "commit", parent_commit FROM run ORDER BY seq',
    )
    lost = next(r for r in runs if r[1] == "lost")
    retried = next(r for r in runs if r[0] == lost[5])
    assert lost[2] == "interrupted" and "Ray worker was lost" in lost[6]
    assert retried[3] is not None and retried[4] and lost[4], "measured once more, on a node it names"
    assert retried[4] != lost[4], "measured again on the other node, not where it was lost"
    scored = [r for r in runs if r[3] is not None]
    assert len({r[7] for r in scored}) == 2, "runs landed on both machine classes"
    assert not [r for r in runs if "not comparable" in (r[6] or "")], "every candidate was paired within its class"
    champion = [r for r in scored if r[1] in ("baseline", "remeasure")]
    placed = [r for r in champion if r[7] != next(c[7] for c in champion if c[1] == "baseline")]
    assert len(placed) == 1, "the champion was measured on the second class, once for both its candidates"
    assert placed[0][1] == "remeasure" and "re-measure champion" in placed[0][9], placed[0]
    for r in scored:
        if r[1] == "experiment":
            assert any(c[7] == r[7] and c[8] == r[8] for c in champion), f"#{r[0]} has no champion run to pair with"
    assert "reached --max-experiments 2" in log.read_text()
    assert sum(r[1] == "experiment" for r in runs) == 2
    for r in runs:
        assert r[6] and r[10], f"run {r[0]} ({r[2]}) has no reason or end"
    for run_dir, fp in rows(repo, "SELECT run_dir, fingerprint FROM run WHERE val_bpb IS NOT NULL"):
        assert json.loads(fp)["cores"] == 1, "each run is pinned to its slot's one CPU, and stamped so"
        assert "step" in (Path(run_dir) / "train.log").read_text(), "the node's log came back"
        assert (Path(run_dir) / "eval.log").exists() and not (Path(run_dir) / "model.safetensors").exists()
    measured = sorted((r[11], r[10]) for r in scored if r[1] != "baseline")
    assert any(a[1] > b[0] for a, b in zip(measured, measured[1:])), "no two runs were in flight at once"
    kept = [r for r in runs if r[2] == "keep" and r[1] in ("experiment", "rebase")]
    branch = git.Repo(repo)
    chain = [c.hexsha for c in reversed(list(branch.iter_commits("main..autoresearch/two")))]
    assert chain == [k[12] for k in kept], "the branch holds exactly the kept commits, in order"
    for k, before in zip(kept, [branch.commit("main").hexsha, *chain]):
        assert k[13] == before, "each kept commit was judged against the champion it sits on"
    # one retry can land elsewhere by chance: asked to avoid (or to join) each node three times, a slot obeys
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(name, env[name])
    from orchestrator.measure.ray_executor import RayExecutor, ray

    executor = RayExecutor(address, {"CPU": 1}, 1)
    try:
        nodes = {f"{socket.gethostname()}:{n['NodeID'][:8]}" for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2 and lost[4] in nodes, nodes
        for one in sorted(nodes):
            assert {executor.landed(executor.start_slot(avoid=one))[0] for _ in range(3)} == nodes - {one}
            assert {executor.landed(executor.start_slot(near=one))[0] for _ in range(3)} == {one}
    finally:
        executor.close()


@pytest.mark.slow
def test_daemon_killed_with_two_runs_in_flight_then_restarted(repo, data_dir):
    started = arx(repo, *PARALLEL_START, "--tag", "k9")
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: len(rows(repo, "SELECT 1 FROM run WHERE kind = 'experiment' AND status = 'training'")) == 2)
    in_flight = {r[0] for r in rows(repo, "SELECT id FROM run WHERE kind = 'experiment' AND status = 'training'")}
    os.kill(rows(repo, "SELECT pid FROM campaign WHERE tag = 'k9'")[0][0], signal.SIGKILL)
    wait_for(lambda: ray_worker_of_a_trainer() is None and no_ray_left())  # the local cluster ends with its driver
    again = arx(repo, *PARALLEL_START, "--tag", "k9", "--max-experiments", "2", "--foreground")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = rows(repo, "SELECT id, seq, status, decision_reason FROM run ORDER BY seq")
    for run_id in in_flight:
        status, reason = next((r[2], r[3]) for r in runs if r[0] == run_id)
        assert status == "interrupted" and "daemon restarted" in reason
    assert [r[1] for r in runs] == list(range(1, len(runs) + 1)), "no run lost or duplicated"
    assert not rows(repo, "SELECT 1 FROM run WHERE status IN ('proposed', 'training', 'evaluating')")
    assert wait_for(no_ray_left)


def test_a_slot_hides_the_daemons_state_folder(tmp_path):
    """A Ray slot may run on the daemon's own machine: its sandbox hides the node's folder and the daemon's
    state folder (the ledger, every run's checkpoint and logs), which the node's Spec names in `also_hidden`."""
    from dataclasses import replace

    from orchestrator.measure import experiment, sandbox
    from orchestrator.scoring.corpus import Corpus

    daemon_state, node = tmp_path / "daemon-state", tmp_path / "node"
    (daemon_state / "runs").mkdir(parents=True)
    (daemon_state / "experiments.db").write_text("ledger")
    run_dir = node / "run"
    run_dir.mkdir(parents=True)
    corpus = Corpus("stdlib", "x", tmp_path / "train", tmp_path / "heldout", ())
    spec = experiment.Spec(
        program="model",
        worktree=ROOT,
        run_dir=run_dir,
        corpus=corpus,
        budget_s=1,
        seed=1,
        state_dir=node,
        train_deadline_s=10,
    )
    probe = [sys.executable, "-c", f"import os; print(sorted(os.listdir({str(daemon_state)!r})))"]

    def listing(spec: experiment.Spec) -> str:
        jail = sandbox.Jail(writable=(run_dir,), visible=(tmp_path,), hidden=experiment.hidden_paths(spec))
        argv, env = experiment.wrap(spec, probe, jail, {})
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=HANG_S)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert listing(spec) == "['experiments.db', 'runs']"  # what a slot saw before `also_hidden`
    assert listing(replace(spec, also_hidden=(daemon_state,))) == "[]"
