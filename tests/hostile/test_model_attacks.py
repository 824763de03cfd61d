"""Hostile model-program proposals through the real daemon: one campaign, one attack per experiment.

Each attack must end `invalid`, `crash`, `timeout` or `rejected`, or with the honest score of its own
checkpoint (re-scored by the test with the unchanged trainer's build_model); and after the campaign no
file outside the run directories has changed, no planted secret is in anything the daemon wrote, and no
process the attacks started is alive.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
from pathlib import Path

import payloads as p
import pytest
from attack_kit import (
    KEEP_A_COPY,
    MARKER,
    ROOT,
    SECRET,
    append,
    chain,
    data_dir,
    files_with,
    git_status,
    honest_scores,
    inject,
    replace,
    run_campaign,
    survivors,
)

pytestmark = pytest.mark.slow
__all__ = ["data_dir"]  # the fixture, imported
TRAIN = "trainer/train.py"
END_OF_MAIN = '    return 0 if status == "ok" else 3\n'
FAILED = ("invalid", "crash", "timeout", "rejected")
EVAL_TIMEOUT_S = 75  # an honest evaluation: 9-13 s here, about 40 s loaded; a sleeper waits it out
SCORE_TOLERANCE = 1e-3  # relative: float32 logits on CPU, same weights, same rows


class Listeners:
    """A TCP server on 127.0.0.1 and a unix socket in /var/tmp, recording whatever reaches them."""

    def __init__(self):
        self.received: list[bytes] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="arx-hostile-"))
        self.unix_path = str(self.folder / "listen.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        self.unix.listen(8)
        for server in (self.tcp, self.unix):
            threading.Thread(target=self.serve, args=(server,), daemon=True).start()

    def serve(self, server) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                self.received.append(conn.recv(1000))

    def close(self) -> None:
        self.tcp.close()
        self.unix.close()
        Path(self.unix_path).unlink(missing_ok=True)
        self.folder.rmdir()


def attacks(repo: Path, listeners: Listeners) -> dict:
    state = repo / "state"
    wt = state / "worktrees" / "model-hostile"
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    targets = [
        str(ROOT / "inside/__pycache__/evaluate.cpython-311.pyc"),
        str(ROOT / "orchestrator/scoring/scorer.py"),
        str(site / "sitecustomize.py"),
        str(site / "zz_hostile.pth"),
        str(Path(sys.base_prefix) / "lib/python3.11/sitecustomize.py"),
        str(repo / "orchestrator/scoring/scorer.py"),
        str(repo / "inside/__pycache__/evaluate.cpython-311.pyc"),
        str(repo / ".git/hooks/post-commit"),
        str(wt / "inside/evaluate.py"),
        str(wt / "inside/__pycache__/evaluate.cpython-311.pyc"),
        str(state / "runs/hostile-note.txt"),
    ]
    dbs = [str(state / "experiments.db")]
    return {
        name: chain(edit, replace(TRAIN, END_OF_MAIN, KEEP_A_COPY + END_OF_MAIN))
        for name, edit in {
            "patch scorer helpers, escape and steal": chain(inject(p.PATCH_SCORER), inject(p.escape(targets, dbs))),
            "replace serve": inject(p.PATCH_SERVE),
            "outlive the trainer": replace(TRAIN, END_OF_MAIN, p.outlive(MARKER, dbs) + END_OF_MAIN),
            "peek when batched": inject(p.peek("B > 1", "np.arange(T)")),
            "peek at the last positions": inject(p.peek("True", "np.arange(T - 3, T - 1)")),
            "prefix cache across processes": inject(p.PREFIX_CACHE),
            "call home, fifty sleepers": chain(
                inject(p.network(listeners.tcp.getsockname()[1], listeners.unix_path)), inject(p.sleepers(MARKER))
            ),
            "symlinked checkpoint": replace(TRAIN, END_OF_MAIN, p.SYMLINK_CHECKPOINT + END_OF_MAIN),
            "symlinked log": replace(
                TRAIN, END_OF_MAIN, p.symlink_log(str(repo / "orchestrator/campaign/campaign.py")) + END_OF_MAIN
            ),
            "edit blas.py": chain(append("inside/blas.py", "FAST = True\n"), append(TRAIN, "# faster\n")),
            "model process sleeps": inject(p.MODEL_SLEEPS),
        }.items()
    }


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, data_dir):
    listeners = Listeners()
    tmp = tmp_path_factory.mktemp("hostile-model")
    try:
        out = run_campaign(tmp, "model", attacks(tmp / "repo", listeners), eval_timeout_s=EVAL_TIMEOUT_S)
    finally:
        listeners.close()
    out.received = listeners.received
    return out


def run(campaign, name: str):
    return campaign.runs[name]


def assert_failed_or_honest(campaign, name: str, tmp: Path) -> None:
    r = run(campaign, name)
    if r.status in FAILED:
        assert r.val_bpb is None, f"{name}: {r.status} but a score was recorded"
        return
    assert r.status in ("keep", "discard"), f"{name}: {r.status} {r.decision_reason}"
    honest = honest_scores(campaign, r, tmp)
    for split, recorded, truth in (("val", r.val_bpb, honest.val_bpb), ("test", r.test_bpb, honest.test_bpb)):
        assert abs(recorded - truth) <= SCORE_TOLERANCE * truth, (
            f"{name}: {split}_bpb {recorded:.4f} recorded, honest {truth:.4f}"
        )


def test_the_campaign_ran_every_attack(campaign):
    assert campaign.reason.startswith("reached --max-experiments"), campaign.reason
    assert campaign.baseline.val_bpb, campaign.baseline.decision_reason
    assert len(campaign.runs) == 11, sorted(campaign.runs)


def test_nothing_outside_the_run_directories_changed(campaign):
    assert campaign.changed == [], "changed: " + ", ".join(campaign.changed)
    assert [line for line in git_status(ROOT).splitlines() if "tests/hostile" not in line] == []
    assert git_status(campaign.repo) == ""


def test_no_secret_reached_anything_the_daemon_wrote(campaign):
    assert files_with(campaign.state, SECRET) == []
    worktrees = campaign.state / "worktrees"

    def checked_out(path: str) -> bool:
        """A file of the campaign's worktree exactly as the repository holds it (doctor.py's hint names the key's
        prefix): git wrote it, not the daemon or a candidate."""
        inside = Path(path).relative_to(worktrees).parts[1:]
        original = campaign.repo.joinpath(*inside)
        return original.is_file() and original.read_bytes() == Path(path).read_bytes()

    hits = files_with(campaign.state, "sk-ant-")
    written = [p for p in hits if not (worktrees in Path(p).parents and checked_out(p))]
    assert written == []


def test_no_process_outlived_its_phase(campaign):
    assert survivors() == []


def test_the_ledger_was_not_updated_from_inside(campaign):
    assert all(r.val_bpb is None or r.val_bpb > 0.1 for r in campaign.runs.values())
    assert campaign.baseline.val_bpb > 0.1


@pytest.mark.parametrize("name", ["patch scorer helpers, escape and steal", "call home, fifty sleepers"])
def test_attacks_that_cannot_touch_the_score_get_the_honest_score(campaign, name, tmp_path):
    assert_failed_or_honest(campaign, name, tmp_path)
    assert "ATTACK" in (Path(run(campaign, name).run_dir) / "train.log").read_text()  # the attack did run


def test_replaced_serve_loop_is_invalid(campaign):
    r = run(campaign, "replace serve")
    assert r.status == "invalid" and "causality" in r.decision_reason


def test_a_child_that_outlives_the_trainer_forges_nothing(campaign, tmp_path):
    assert_failed_or_honest(campaign, "outlive the trainer", tmp_path)
    run_dir = Path(run(campaign, "outlive the trainer").run_dir)
    assert "forged" not in (run_dir / "train.json").read_text()
    assert "FORGED" not in (run_dir / "eval.log").read_text()


def test_a_model_that_peeks_only_in_batches_is_invalid(campaign):
    r = run(campaign, "peek when batched")
    assert r.status == "invalid" and "causality" in r.decision_reason


def test_a_model_that_peeks_only_at_the_last_positions_is_caught_or_honest(campaign, tmp_path):
    """Probabilistic by nature: 16 probes with uniform cuts catch a peek at 2 of 256 positions about 12% of the
    time. When it is not caught the recorded score is below the honest one, and this test fails."""
    assert_failed_or_honest(campaign, "peek at the last positions", tmp_path)


def test_a_prefix_cache_shared_between_model_processes_finds_nothing_to_share(campaign):
    r = run(campaign, "prefix cache across processes")
    assert r.status == "invalid" and "causality" in r.decision_reason
    assert "0 rows from earlier processes" in Path(r.run_dir, "eval.log").read_text()


def test_the_sandbox_has_no_network(campaign):
    log = (Path(run(campaign, "call home, fifty sleepers").run_dir) / "train.log").read_text()
    assert "'tcp': 'SENT'" not in log
    assert campaign.received == [], f"the listeners received {campaign.received}"


def test_unix_sockets_outside_the_jail_are_unreachable(campaign):
    """HOLE (see the report): the network namespace does not cover path-named unix sockets on the host."""
    log = (Path(run(campaign, "call home, fifty sleepers").run_dir) / "train.log").read_text()
    assert "'unix': 'SENT'" not in log


def test_symlinked_checkpoint_is_invalid(campaign):
    r = run(campaign, "symlinked checkpoint")
    assert r.status == "invalid" and "not a regular file" in r.decision_reason, (r.status, r.decision_reason)


def test_a_symlinked_log_writes_nothing_outside(campaign):
    r = run(campaign, "symlinked log")
    assert r.status == "invalid" and "not a regular file" in r.decision_reason, (r.status, r.decision_reason)
    assert "model loaded" not in (campaign.repo / "orchestrator/campaign/campaign.py").read_text()


def test_editing_a_locked_file_is_rejected(campaign):
    r = run(campaign, "edit blas.py")
    assert r.status == "rejected" and "inside/blas.py" in r.decision_reason


def test_a_model_process_that_sleeps_forever_times_out(campaign):
    r = run(campaign, "model process sleeps")
    assert r.status == "timeout" and "evaluation" in r.decision_reason
