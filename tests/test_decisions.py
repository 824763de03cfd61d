"""The campaign's decisions with scripted scores (tests/scripted.py): seeds and pairing, noise from
baselines and re-runs, the fingerprint re-baseline, contention, the sibling merge. Everything but
the trainer is real: git, worktrees, ledger, policy, fingerprint."""

from __future__ import annotations

import json
import platform
import sqlite3
import threading

import pytest

from conftest import HANG_S, make_repo
from orchestrator import ledger, slots
from orchestrator.policy import Policy
from scripted import BASE, FAST_BLAS_GAIN, GainAgent, Setup


def rows(db, campaign_id):
    return ledger.campaign_runs(db, campaign_id)


def test_seeds_are_paired_with_the_champion(tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    setup = Setup(make_repo(tmp_path / "repo"))
    loop = setup.loop(GainAgent([0.01, 1.0, 0.01]), max_experiments=3)
    assert loop.run() == "reached --max-experiments 3"
    runs = rows(loop.db, loop.campaign.id)
    assert [(r.kind, r.seed, r.status) for r in runs] == [
        ("baseline", 1, "keep"),
        ("baseline", 2, "keep"),
        ("baseline", 3, "keep"),
        ("experiment", 1, "discard"),
        ("rerun", 2, "discard"),
        ("rerun", 3, "discard"),  # marginal: the champion's seeds in order
        ("experiment", 1, "keep"),  # clear: kept on one paired run, so the new champion is known on seed 1 only
        ("experiment", 1, "discard"),
        ("remeasure", 4, "keep"),
        ("rerun", 4, "discard"),
        ("remeasure", 5, "keep"),
        ("rerun", 5, "discard"),  # new seeds
    ]
    for r in runs:  # every candidate measurement has a champion measurement on its seed and fingerprint
        if r.kind in ("experiment", "rerun"):
            assert any(
                c.commit == r.parent_commit and c.seed == r.seed and c.fingerprint_hash == r.fingerprint_hash
                for c in runs
                if c.status == "keep"
            )
    first, last = runs[3], runs[7]
    assert "after 3 paired runs" in first.decision_reason and "mean paired gain +0.0100" in first.decision_reason
    assert (
        "dof 4" in first.decision_reason
        and "sqrt(2/3)" in first.decision_reason
        and first.band == pytest.approx(2.869 * 0.04 * (2 / 3) ** 0.5, rel=1e-3)
    )
    assert "improved beyond noise" in runs[6].decision_reason and "sqrt(2/1)" in runs[6].decision_reason
    assert "after 3 paired runs" in last.decision_reason
    campaign = ledger.find_campaign(loop.db, "model", "t")
    assert campaign.best_run_id == runs[6].id and campaign.noise_dof >= 6
    view = (
        sqlite3.connect(loop.db)
        .execute("SELECT seed, band, fingerprint_hash FROM experiments WHERE seq = 4")
        .fetchone()
    )
    assert view == (1, first.band, first.fingerprint_hash)


def test_few_baselines_never_keep_on_luck(tmp_path, monkeypatch):
    """One baseline: sigma has no degrees of freedom, so a candidate is re-run (its own seeds measure
    the noise) before anything can be kept."""
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    setup = Setup(make_repo(tmp_path / "repo"), policy=Policy(baseline_runs=1))
    loop = setup.loop(GainAgent([0.5]), max_experiments=1)
    loop.run()
    runs = rows(loop.db, loop.campaign.id)
    assert [(r.kind, r.seed) for r in runs] == [("baseline", 1), ("experiment", 1), ("remeasure", 2), ("rerun", 2)]
    assert "band unknown" in runs[3].decision_reason or runs[1].status == "keep"
    assert runs[1].status == "keep" and "dof 2" in runs[1].decision_reason  # champion and candidate, 2 seeds each


def test_a_changed_blas_forces_a_remeasurement(tmp_path, monkeypatch):
    """The issue's newcomer: baselines on the reference BLAS, then OpenBLAS appears. A change that does
    nothing must not be kept for the speed-up; the champion is re-measured first, visibly."""
    if platform.system() != "Linux":
        pytest.skip("the BLAS switch is Linux-only")
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    library = (
        tmp_path / "libopenblas.so.0"
    )  # what find_openblas() reports once enabled (the scripted trainer loads nothing)
    library.write_bytes(b"")
    monkeypatch.setenv("ARX_BLAS_LIB", str(library))
    setup = Setup(make_repo(tmp_path / "repo"))
    loop = setup.loop(GainAgent([0.0, 0.0]), max_experiments=1)
    loop.run()
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "0")
    loop = setup.loop(loop.agent, max_experiments=2)
    loop.run()
    runs = rows(loop.db, loop.campaign.id)
    kinds = [(r.kind, r.status) for r in runs]
    assert kinds[-4:] == [("rebaseline", "keep")] * 3 + [("experiment", "discard")]
    old, new = runs[0].fingerprint_hash, runs[-1].fingerprint_hash
    assert old != new and all(r.fingerprint_hash == new for r in runs[-4:])
    assert json.loads(runs[-2].fingerprint)["blas"] == str(library)
    assert [r.seed for r in runs[-4:-1]] == [1, 2, 3]  # the champion's seeds again
    assert runs[-3].val_bpb == pytest.approx(BASE + 0.04 - FAST_BLAS_GAIN)  # faster under the new BLAS ...
    assert "not better" in runs[-1].decision_reason  # ... but the do-nothing change is compared only with that
    events = sqlite3.connect(loop.db).execute("SELECT kind, message FROM event ORDER BY id").fetchall()
    assert any(k == "fingerprint" and "blas: reference" in m and f"-> {library}" in m for k, m in events)
    assert any(
        n and n.startswith("re-baselining 1/3: machine changed (blas:") for n in loop.notes
    )  # what `status` showed
    assert ledger.find_campaign(loop.db, "model", "t").note is None  # cleared once the champion is known again


def test_a_machine_change_during_a_judgment_restarts_the_pairing(tmp_path, monkeypatch):
    if platform.system() != "Linux":
        pytest.skip("the BLAS switch is Linux-only")
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    library = (
        tmp_path / "libopenblas.so.0"
    )  # found once ARX_NO_FAST_BLAS is lifted (the scripted trainer loads nothing)
    library.write_bytes(b"")
    monkeypatch.setenv("ARX_BLAS_LIB", str(library))
    setup = Setup(make_repo(tmp_path / "repo"))
    loop = setup.loop(
        GainAgent([0.01]), max_experiments=1, after={4: lambda: monkeypatch.setenv("ARX_NO_FAST_BLAS", "0")}
    )
    loop.run()
    runs = rows(loop.db, loop.campaign.id)
    assert [(r.kind, r.seed) for r in runs[3:]] == [
        ("experiment", 1),
        ("rebaseline", 1),
        ("rebaseline", 2),
        ("rebaseline", 3),
        ("rerun", 1),
        ("rerun", 2),
        ("rerun", 3),
    ]
    assert runs[3].fingerprint_hash != runs[-1].fingerprint_hash and "on the same 3 seeds" in runs[3].decision_reason
    assert (
        runs[3].status == "discard" and "mean paired gain +0.0100" in runs[3].decision_reason
    )  # never the -0.5 of a cross-machine pair


def test_contended_run_is_rerun_not_judged(tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    setup = Setup(make_repo(tmp_path / "repo"))
    loop = setup.loop(GainAgent([1.0]), max_experiments=1, cpu={4: 0.3})  # run #4 got a third of the machine
    loop.run()
    runs = rows(loop.db, loop.campaign.id)
    assert [(r.kind, r.seed, r.contended) for r in runs[3:]] == [("experiment", 1, True), ("rerun", 1, False)]
    assert runs[3].status == "keep" and "on the same 1 seed" in runs[3].decision_reason  # judged on the fair run only
    assert "own measurement got too little CPU" in runs[3].decision_reason and "too little CPU" in runs[4].description
    events = sqlite3.connect(loop.db).execute("SELECT message FROM event WHERE kind = 'contended'").fetchall()
    assert len(events) == 1 and "CPU share of 0.30" in events[0][0]


def test_a_machine_that_stays_busy_remeasures_the_champion(tmp_path, monkeypatch):
    """Contention that does not pass: after max_contended re-runs the champion is measured again under
    the new load and the candidate is judged against that, rather than discarded for the machine's sake."""
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    setup = Setup(make_repo(tmp_path / "repo"), policy=Policy(max_reruns=2, max_contended=1))
    loop = setup.loop(GainAgent([1.0]), max_experiments=1, cpu={4: 0.3, 5: 0.3, 6: 0.3})
    loop.run()
    runs = rows(loop.db, loop.campaign.id)
    assert [(r.kind, r.seed, r.contended) for r in runs[3:]] == [
        ("experiment", 1, True),
        ("rerun", 1, False),
        ("remeasure", 1, False),
    ]
    assert (
        runs[3].status == "keep" and runs[5].cpu_share == 0.3 and "stayed busy for 2 runs" in runs[5].description
    )  # under the same load


def test_sibling_keeps_are_merged_and_rebaselined(tmp_path, monkeypatch):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")
    repo = make_repo(tmp_path / "repo")
    data = Setup(repo, program="data", policy=Policy(baseline_runs=2)).loop(GainAgent([1.0]), max_experiments=1)
    data.run()
    data_keep = ledger.campaign_runs(data.db, data.campaign.id)[-1]
    assert data_keep.status == "keep"
    model = Setup(repo, program="model", policy=Policy(baseline_runs=2)).loop(GainAgent([1.0]), max_experiments=1)
    model.run()
    runs = rows(model.db, model.campaign.id)
    assert [r.kind for r in runs] == ["rebaseline", "rebaseline", "experiment"]  # merged before its first baseline
    assert "merged data/t #" in runs[0].description and runs[0].sibling_commit == data_keep.commit
    assert model.repo.is_ancestor(data_keep.commit, runs[0].commit)
    assert runs[0].val_bpb == pytest.approx(BASE + 0.0 - 1.0)  # the model campaign trains the data champion's data code
    assert ledger.find_campaign(model.db, "model", "t").sibling_commit == data_keep.commit
    # the data campaign, resumed, picks up the model branch (its train.py) and re-baselines before judging
    data = Setup(repo, program="data", policy=Policy(baseline_runs=2)).loop(GainAgent([0.0]), max_experiments=2)
    data.run()
    druns = rows(data.db, data.campaign.id)
    assert [r.kind for r in druns[-3:]] == ["rebaseline", "rebaseline", "experiment"]
    assert runs[-1].status == "keep" and druns[-3].commit == runs[-1].commit  # fast-forward to the model's keep
    assert druns[-3].sibling_commit == runs[-1].commit and "trainer/train.py" in data.wt.git.diff(
        data_keep.commit, druns[-3].commit, "--name-only"
    )
    events = sqlite3.connect(data.db).execute("SELECT message FROM event WHERE kind = 'merge'").fetchall()
    assert len(events) == 2


def test_trainer_slots_are_shared(tmp_path):
    held = slots.try_lock(tmp_path / "slots" / "slot0.lock")
    got = []
    with slots.trainer_slot(tmp_path, 2) as i:
        got.append(i)
    assert got == [1]  # slot 0 is taken, a second slot is free
    waited = threading.Event()

    def later():
        with slots.trainer_slot(tmp_path, 1, on_wait=waited.set) as i:
            got.append(i)

    t = threading.Thread(target=later)
    t.start()
    assert waited.wait(HANG_S) and len(got) == 1  # it waits while slot 0 is held
    held.close()
    t.join(HANG_S)
    assert got == [1, 0]
    with pytest.raises(slots.Stopped):
        blocker = slots.try_lock(tmp_path / "slots" / "slot0.lock")
        with slots.trainer_slot(tmp_path, 1, should_stop=lambda: True):
            pass
    blocker.close()
