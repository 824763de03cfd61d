"""The campaign's decisions with scripted scores (tests/scripted.py): seeds and pairing, the decision each verdict
row records, statuses while a verdict waits, noise from baselines and re-runs, the fingerprint re-baseline, fair
conditions both ways, the sibling merge. Everything but the trainer is real: git, worktrees, ledger, judge,
fingerprint; the loop is handed a scripted executor instead of the local one."""

from __future__ import annotations

import json
import platform
import sqlite3
import threading

import pytest

from conftest import HANG_S, make_repo
from orchestrator.campaign import facts
from orchestrator.campaign.policy import Policy
from orchestrator.ledger import ledger
from orchestrator.measure import slots
from scripted import BASE, FAST_BLAS_GAIN, SEED_LUCK, GainAgent, ScriptedExecutor, Setup


def rows(loop):
    return ledger.campaign_runs(loop.db, loop.campaign.id)


@pytest.fixture(autouse=True)
def no_fast_blas(monkeypatch):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")


def test_seeds_are_paired_with_the_champion_and_each_verdict_names_its_runs(tmp_path):
    setup = Setup(make_repo(tmp_path / "repo"))
    loop = setup.loop(GainAgent([0.01, 1.0, "0 seeds 0.05:-0.06"]), max_experiments=3)
    assert loop.run() == "reached --max-experiments 3"
    runs = rows(loop)
    assert [(r.kind, r.seed, r.status) for r in runs] == [
        ("baseline", 1, "measured"),
        ("baseline", 2, "measured"),
        ("baseline", 3, "measured"),
        ("experiment", 1, "keep"),  # 0.01 on every seed: tight pairs, kept by its own spread after 3
        ("rerun", 2, "measured"),
        ("rerun", 3, "measured"),
        ("experiment", 1, "keep"),  # 1.0: kept on two pairs by the pooled test
        ("rerun", 2, "measured"),
        ("experiment", 1, "discard"),  # +0.05 then -0.06: not better after two pairs
        ("rerun", 2, "measured"),
    ]
    tight, big, tie = runs[3], runs[6], runs[8]
    decision = json.loads(tight.decision)
    assert [(p["seed"], p["champion_seq"], p["candidate_seq"]) for p in decision["pairs"]] == [
        (1, 1, 4),
        (2, 2, 5),
        (3, 3, 6),
    ]
    assert decision["assessment"]["test"] == "own pairs" and decision["assessment"]["mean_gain"] == pytest.approx(0.01)
    assert "improved (own pairs test)" in tight.decision_reason and "over 3 seeds" in tight.decision_reason
    assert json.loads(big.decision)["assessment"]["test"] == "pooled"
    assert [p["champion_seq"] for p in json.loads(big.decision)["pairs"]] == [4, 5]  # the new champion's own runs
    assert "not better" in tie.decision_reason
    campaign = ledger.find_campaign(loop.db, "model", "t")
    assert campaign.best_run_id == big.id and campaign.noise_dof >= 4
    view = sqlite3.connect(loop.db).execute("SELECT seed, band, decision FROM experiments WHERE seq = 4").fetchone()
    assert view == (1, tight.band, tight.decision)


def test_a_worse_candidate_goes_after_one_run(tmp_path):
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([-0.1]), max_experiments=1)
    loop.run()
    assert [(r.kind, r.status) for r in rows(loop)[3:]] == [("experiment", "discard")]


def test_a_candidate_that_needs_more_seeds_gets_the_champion_measured_on_them(tmp_path):
    spread = ":".join(["0.006", "-0.006", "0.004", "-0.004", "0.005", "-0.005", "0.003"])
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([f"0.02 seeds {spread}"]), max_experiments=1)
    loop.run()
    runs = rows(loop)
    exp = runs[3]
    pairs = json.loads(exp.decision)["pairs"]
    assert exp.status == "keep" and len(pairs) > 3
    for p in pairs[3:]:  # beyond the baselines' seeds: the champion measured on each new seed, then paired
        champ = next(r for r in runs if r.seq == p["champion_seq"])
        assert champ.kind == "remeasure" and champ.seed == p["seed"] and champ.commit == exp.parent_commit
    assert len({p["seed"] for p in pairs}) == len(pairs)


def test_a_verdict_that_waits_says_so(tmp_path):
    """While its re-runs are measured, a candidate's own (measured) row says it waits for its verdict."""
    seen = []

    def look():
        con = sqlite3.connect(loop.db)
        seen.append(con.execute("SELECT status FROM run WHERE seq = 4").fetchone()[0])
        con.close()

    ex = ScriptedExecutor(after={5: look, 6: look})
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([0.01]), max_experiments=1, executor=ex)
    loop.run()
    assert seen == ["waiting", "waiting"] and rows(loop)[3].status == "keep"


def test_few_baselines_never_keep_on_luck(tmp_path):
    """One baseline: the seed noise is unknown, so the candidate's own pairs must show it."""
    setup = Setup(make_repo(tmp_path / "repo"), policy=Policy(baseline_runs=1))
    loop = setup.loop(GainAgent([0.5]), max_experiments=1)
    loop.run()
    runs = rows(loop)
    assert [(r.kind, r.seed) for r in runs[:4]] == [("baseline", 1), ("experiment", 1), ("rerun", 2), ("remeasure", 2)]
    assert runs[1].status in ("keep", "discard") and json.loads(runs[1].decision)["assessment"]["n"] >= 2


def test_a_failed_re_run_discards_the_candidate(tmp_path):
    ex = ScriptedExecutor(fail={5: "crash"})
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([0.01]), max_experiments=1, executor=ex)
    loop.run()
    runs = rows(loop)
    assert [(r.kind, r.status) for r in runs[3:]] == [("experiment", "discard"), ("rerun", "crash")]
    assert "a re-run failed (seed 2)" in runs[3].decision_reason


def test_a_changed_blas_forces_a_remeasurement(tmp_path, monkeypatch):
    """The newcomer's case: baselines on the reference BLAS, then OpenBLAS appears. A change that does
    nothing must not be kept for the speed-up; the champion is re-measured first, visibly."""
    if platform.system() != "Linux":
        pytest.skip("the BLAS switch is Linux-only")
    library = (
        tmp_path / "libopenblas.so.0"
    )  # what find_openblas() reports once enabled (the scripted trainer loads nothing)
    library.write_bytes(b"")
    monkeypatch.setenv("ARX_BLAS_LIB", str(library))
    setup = Setup(make_repo(tmp_path / "repo"))
    ex = ScriptedExecutor()
    loop = setup.loop(GainAgent([0.0, 0.0]), max_experiments=1, executor=ex)
    loop.run()
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "0")
    loop = setup.loop(loop.agent, max_experiments=2, executor=ex)
    loop.run()
    runs = rows(loop)
    assert [(r.kind, r.status) for r in runs[-4:]] == [("rebaseline", "measured")] * 3 + [("experiment", "discard")]
    old, new = runs[0].fingerprint_hash, runs[-1].fingerprint_hash
    assert old != new and all(r.fingerprint_hash == new for r in runs[-4:])
    assert json.loads(runs[-2].fingerprint)["blas"] == str(library)
    assert [r.seed for r in runs[-4:-1]] == [1, 2, 3]  # the champion's seeds again
    assert runs[-3].val_bpb == pytest.approx(BASE + 0.04 - FAST_BLAS_GAIN)  # faster under the new BLAS ...
    assert "not better" in runs[-1].decision_reason  # ... but the do-nothing change is compared only with that
    events = sqlite3.connect(loop.db).execute("SELECT kind, message FROM event ORDER BY id").fetchall()
    assert any(k == "fingerprint" and "blas: reference" in m and f"-> {library}" in m for k, m in events)
    assert any(n and n.startswith("re-baselining 1/3: machine changed (blas:") for n in ex.notes)  # `status` showed
    assert ledger.find_campaign(loop.db, "model", "t").note is None  # cleared once the champion is known again


def test_a_machine_change_during_a_judgment_pairs_only_within_one_fingerprint(tmp_path, monkeypatch):
    if platform.system() != "Linux":
        pytest.skip("the BLAS switch is Linux-only")
    library = tmp_path / "libopenblas.so.0"
    library.write_bytes(b"")
    monkeypatch.setenv("ARX_BLAS_LIB", str(library))
    ex = ScriptedExecutor(after={4: lambda: monkeypatch.setenv("ARX_NO_FAST_BLAS", "0")})
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([0.01]), max_experiments=1, executor=ex)
    loop.run()
    runs = rows(loop)
    exp = runs[3]
    pairs = json.loads(exp.decision)["pairs"]
    assert exp.status == "keep" and len({p["fingerprint"] for p in pairs}) == 1
    assert pairs[0]["fingerprint"] != runs[0].fingerprint_hash  # the pairs after the change, not the one before
    assert all(p["gain"] == pytest.approx(0.01) for p in pairs)  # never the -0.5 of a cross-machine pair


def test_a_candidate_run_that_got_less_of_the_machine_is_measured_again(tmp_path):
    ex = ScriptedExecutor(cpu={4: 0.3})  # run #4 got a third of the machine
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([1.0]), max_experiments=1, executor=ex)
    loop.run()
    runs = rows(loop)
    assert [(r.kind, r.seed, r.contended) for r in runs[3:6]] == [
        ("experiment", 1, True),
        ("rerun", 1, False),
        ("rerun", 2, False),
    ]
    decision = json.loads(runs[3].decision)
    assert runs[3].status == "keep" and [p["candidate_seq"] for p in decision["pairs"]] == [5, 6]
    assert decision["set_aside"][0]["seq"] == 4 and "got 0.30 of the machine" in decision["set_aside"][0]["why"]
    events = sqlite3.connect(loop.db).execute("SELECT message FROM event WHERE kind = 'unfair'").fetchall()
    assert len(events) == 1 and "#4 set aside" in events[0][0]


def test_a_champion_measured_under_load_is_measured_again_and_never_used(tmp_path):
    """Fair both ways: the champion's seed-1 baseline got less of the machine than the candidate, so the champion
    is measured again on seed 1, and the loaded baseline leaves the champion's estimate for good."""
    ex = ScriptedExecutor(cpu={1: 0.5})
    loop = Setup(make_repo(tmp_path / "repo")).loop(GainAgent([1.0]), max_experiments=1, executor=ex)
    loop.run()
    runs = rows(loop)
    assert runs[0].contended and [(r.kind, r.seed) for r in runs[3:5]] == [("experiment", 1), ("remeasure", 1)]
    assert json.loads(runs[3].decision)["pairs"][0]["champion_seq"] == 5
    assert not facts.usable(runs[0])


@pytest.mark.parametrize("fair", [True, False])
def test_an_aa_campaign_under_changing_load_keeps_nothing_because_of_the_load(tmp_path, fair):
    """At a time budget load decides val_bpb (others' CPU, fewer steps). The champion's first measurements ran on a
    busy machine, every later run on a quiet one, and the changes only move the random stream. With fair conditions
    the loaded runs are set aside and the champion measured again, and nothing is kept; without them (the check
    switched off) the quiet A/A changes win on the load alone."""
    aa = [f"0 seeds {a}:{-a}:{a / 2}:{-a / 2}" for a in (0.01, 0.012, 0.008)]
    seen: set[int] = set()

    def busy_first(spec):  # each seed's first measurement of the base is taken under load
        if spec.commit != loop.campaign.base_commit:
            return 0.95
        first = spec.seed not in seen
        seen.add(spec.seed)
        return 0.5 if first else 0.95

    ex = ScriptedExecutor(load=busy_first, load_cost=0.3)
    policy = Policy() if fair else Policy(cpu_tolerance=1.0)
    loop = Setup(make_repo(tmp_path / "repo"), policy=policy).loop(GainAgent(aa), max_experiments=3, executor=ex)
    loop.run()
    verdicts = [r.status for r in rows(loop) if r.kind == "experiment"]
    if fair:
        assert verdicts == ["discard"] * 3 and all(r.contended for r in rows(loop)[:3])
    else:
        assert verdicts[0] == "keep"  # the test can fail: load alone is a "gain" of 0.135 on every seed


def test_the_champion_is_remeasured_on_schedule(tmp_path):
    setup = Setup(make_repo(tmp_path / "repo"), policy=Policy(remeasure_every=1))
    loop = setup.loop(GainAgent([1.0, -1.0]), max_experiments=2)
    loop.run()
    kinds = [(r.kind, r.status) for r in rows(loop)[3:]]
    assert kinds[:3] == [("experiment", "keep"), ("rerun", "measured"), ("remeasure", "measured")]


def test_sibling_keeps_are_merged_and_rebaselined(tmp_path):
    repo = make_repo(tmp_path / "repo")
    data = Setup(repo, program="data", policy=Policy(baseline_runs=2)).loop(GainAgent([1.0]), max_experiments=1)
    data.run()
    data_keep = next(r for r in rows(data) if r.kind == "experiment")
    assert data_keep.status == "keep"
    model = Setup(repo, program="model", policy=Policy(baseline_runs=2)).loop(GainAgent([1.0]), max_experiments=1)
    model.run()
    runs = rows(model)
    assert [r.kind for r in runs[:3]] == ["rebaseline", "rebaseline", "experiment"]  # merged before its first baseline
    assert "merged data/t #" in runs[0].description and runs[0].sibling_commit == data_keep.commit
    assert model.repo.is_ancestor(data_keep.commit, runs[0].commit)
    assert runs[0].val_bpb == pytest.approx(BASE + SEED_LUCK[1] - 1.0)  # the data champion's data code
    assert ledger.find_campaign(model.db, "model", "t").sibling_commit == data_keep.commit
    model_keep = runs[2]
    # the data campaign, resumed, picks up the model branch (its train.py) and re-baselines before judging
    data = Setup(repo, program="data", policy=Policy(baseline_runs=2)).loop(GainAgent([0.0]), max_experiments=2)
    data.run()
    druns = rows(data)
    merged = [r for r in druns if r.kind == "rebaseline"]
    assert model_keep.status == "keep" and merged[0].commit == model_keep.commit  # fast-forward to the model's keep
    assert merged[0].sibling_commit == model_keep.commit and "trainer/train.py" in data.wt.git.diff(
        data_keep.commit, merged[0].commit, "--name-only"
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
