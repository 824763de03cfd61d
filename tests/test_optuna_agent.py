"""The Optuna agent: its search space, its proposals, its trial bookkeeping, a campaign on scripted scores (real git,
worktrees, ledger, judge and Optuna's SQLite storage; only training is a formula, tests/knob_scores.py) resumed
by a new daemon, and the CLI's choice of agent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from agents.base import Abandoned, ProposalContext
from agents.offline import FROZEN, UNIT_INTERVAL, tunables
from agents.optuna_search import KNOBS, MIN_RATIO, MIN_STEP, OptunaAgent, search_space
from conftest import ROOT, copy_trainer, make_repo
from knob_scores import OPTIMUM, KnobExecutor, penalty
from orchestrator.campaign.facts import judged_value
from orchestrator.cli import app, make_agent
from orchestrator.ledger import ledger
from orchestrator.ledger.statuses import Kind, Status
from scripted import Setup

TRAIN = "trainer/train.py"
SOURCES = {p: (ROOT / p).read_text() for p in (TRAIN, "trainer/prepare.py", "trainer/data_sources.py")}
NAMES = {name for text in SOURCES.values() for gpu in (False, True) for _, name, _, _ in tunables(text, gpu)}


def only(*names: str) -> frozenset[str]:
    """A `frozen` argument that leaves only `names` to search."""
    return frozenset(NAMES - set(names))


def test_ranges_follow_each_constants_kind_and_value():
    cpu = search_space(SOURCES, gpu=False)
    lr = cpu["MATRIX_LR"].distribution  # a rate: log scale around 0.04
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (0.01, 0.16)
    assert cpu["ROPE_BASE"].distribution.log and cpu["ROPE_BASE"].distribution.high == 40000.0
    frac = cpu["WARMDOWN_FRAC"].distribution  # a fraction: [0, 1), linear
    assert isinstance(frac, FloatDistribution) and not frac.log and frac.low == 0.0 and frac.high < 1
    assert cpu["WARMUP_FRAC"].distribution.low == 0.0 and cpu["ADAM_BETA2"].distribution.high < 1  # 0.0 and betas
    assert isinstance(cpu["MLP_RATIO"].distribution, CategoricalDistribution)  # shapes: powers of two
    assert cpu["MLP_RATIO"].distribution.choices == (1, 2, 4, 8, 16)
    assert cpu["KV_HEAD_RATIO"].distribution.choices == (1, 2, 4)
    count = cpu["DOC_MAX_CHARS"].distribution  # an integer that is no power of two: a log-scale count
    assert isinstance(count, IntDistribution) and count.log and (count.low, count.high) == (500, 8000)
    assert not {"PRINT_EVERY_S", "COMPILE", "MIX_SEED", "BOS", "GPU"} & set(cpu)  # offline.FROZEN
    assert "MATRIX_LR" not in search_space(SOURCES, gpu=False, frozen=frozenset({"MATRIX_LR"}))


def test_a_two_branch_constant_is_searched_on_this_machines_branch():
    cpu, gpu = search_space(SOURCES, gpu=False), search_space(SOURCES, gpu=True)
    assert "MODEL_DIM" not in cpu and cpu["MODEL_DIM@cpu"].distribution.choices == (32, 64, 128, 256, 512)
    assert gpu["MODEL_DIM@gpu"].distribution.choices == (64, 128, 256, 512, 1024) and "MODEL_DIM@cpu" not in gpu
    assert cpu["SEQ_LEN@cpu"].base == 256 and gpu["SEQ_LEN@gpu"].base == 2048
    assert "VOCAB_SIZE_CPU" in cpu and "VOCAB_SIZE_GPU" not in cpu  # a knob of the other backend changes nothing
    assert "VOCAB_SIZE_GPU" in gpu and "VOCAB_SIZE_CPU" not in gpu
    assert cpu["MATRIX_LR"].base == gpu["MATRIX_LR"].base == 0.04  # one value for both: one parameter


def test_constants_the_search_cannot_scale_are_left_out():
    space = search_space(
        {TRAIN: "ZERO_LR = 0.0\nNEGATIVE = -3\nTOO_FULL_FRAC = 1.0\nSTEPS = 0\nFLOOR_FRAC = 0\n"}, False
    )
    assert set(space) == {"FLOOR_FRAC"}  # a fraction at 0 is a point of [0, 1); the others have no scale


def context(wt: Path, state: Path, seq: int, history=(), backend="cpu", seed=0) -> ProposalContext:
    return ProposalContext(
        program="model",
        worktree=wt,
        editable=[TRAIN],
        readable=[],
        history=list(history),
        best=None,
        last_failure_tail=None,
        budget_s=60,
        hardware={"backend": backend},
        seq=seq,
        seed=seed,
        base_files={TRAIN: SOURCES[TRAIN]},
        agent_state=state / "optuna" / "model-t",
    )


BASELINES = [{"seq": s, "kind": Kind.BASELINE, "status": Status.MEASURED, "val_bpb": v} for s, v in
             ((1, 3.0), (2, 3.2), (3, 3.1))]  # fmt: skip


def verdict(seq: int, status: str, val: float | None = None, judged: float | None = None, description="") -> dict:
    return {
        "seq": seq,
        "kind": Kind.EXPERIMENT,
        "status": status,
        "val_bpb": val,
        "judged_val_bpb": judged,
        "description": description,
    }


def changed_lines(before: str, after: str) -> dict[str, tuple[str, str]]:
    return {a.split(" = ")[0]: (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b}


def test_a_proposal_moves_several_constants_and_names_each_with_old_and_new_values(tmp_path):
    wt = copy_trainer(tmp_path / "wt")
    frozen = frozenset({"MATRIX_LR", "ADAM_BETA1"})
    agent, history, proposals = OptunaAgent(seed=5, frozen=frozen), list(BASELINES), []
    for seq in range(4, 11):  # each from the base (every one discarded): random draws, then TPE's
        shutil.copy(ROOT / TRAIN, wt / TRAIN)
        p = agent.propose(context(wt, tmp_path, seq, history))
        history.append(verdict(seq, Status.DISCARD, 3.3, 3.3, p.description))
        lines = changed_lines(SOURCES[TRAIN], (wt / TRAIN).read_text())
        changes = [c.split(" ") for c in p.description.split(", ")]
        assert {name for name, *_ in changes} == set(lines) and 1 <= len(lines) <= KNOBS
        for name, old, arrow, new in changes:
            assert arrow == "->" and old != new and not FROZEN.match(name) and name not in frozen
            assert lines[name][1].startswith(f"{name} = {new}") or f"if GPU else {new}" in lines[name][1]
            assert lines[name][0].startswith(f"{name} = {old}") or f"if GPU else {old}" in lines[name][0]
            before, after = float(eval(old)), float(eval(new))
            if UNIT_INTERVAL.search(name):
                assert abs(after - before) >= MIN_STEP - 1e-12 and 0 <= after < 1
            elif isinstance(eval(old), float):
                assert max(before, after) / min(before, after) >= MIN_RATIO
        assert "sampler seed" in p.hypothesis
        proposals.append(len(lines))
    assert max(proposals) > 1  # several knobs per proposal, not one


def test_on_a_gpu_only_the_gpu_branch_changes(tmp_path):
    wt = copy_trainer(tmp_path / "wt")
    p = OptunaAgent(frozen=only("MODEL_DIM")).propose(context(wt, tmp_path, 4, BASELINES, backend="cuda"))
    ((before, after),) = changed_lines(SOURCES[TRAIN], (wt / TRAIN).read_text()).values()
    assert before.startswith("MODEL_DIM = 256 if GPU else 128") and after.startswith("MODEL_DIM = ")
    assert after.split(" if GPU else ")[1].startswith("128") and p.description.startswith("MODEL_DIM 256 -> ")


def test_a_change_already_tried_is_never_proposed_again(tmp_path):
    wt = copy_trainer(tmp_path / "wt")
    agent = OptunaAgent(frozen=only("KV_HEAD_RATIO"))  # choices 1, 2, 4 from 1: two possible changes
    first = agent.propose(context(wt, tmp_path, 4, BASELINES)).description
    shutil.copy(ROOT / TRAIN, wt / TRAIN)
    second = agent.propose(context(wt, tmp_path, 5, [*BASELINES, verdict(4, Status.DISCARD, 3.3, 3.3, first)]))
    second = second.description
    assert {first, second} == {"KV_HEAD_RATIO 1 -> 2", "KV_HEAD_RATIO 1 -> 4"}
    shutil.copy(ROOT / TRAIN, wt / TRAIN)
    history = [*BASELINES, verdict(4, Status.DISCARD, 3.3, 3.3, first), verdict(5, Status.DISCARD, 3.4, 3.4, second)]
    with pytest.raises(Abandoned, match="repeated a tried change"):
        agent.propose(context(wt, tmp_path, 6, history))


def study(state: Path) -> optuna.Study:
    return optuna.load_study(study_name="model-t", storage=f"sqlite:///{state / 'optuna' / 'model-t.db'}")


def test_each_verdict_is_told_once_with_the_value_it_was_judged_on(tmp_path):
    wt, agent, history = copy_trainer(tmp_path / "wt"), OptunaAgent(seed=7), list(BASELINES)

    def propose(seq: int, *rows: dict) -> None:
        history.extend(rows)
        shutil.copy(ROOT / TRAIN, wt / TRAIN)
        agent.propose(context(wt, tmp_path, seq, history))

    propose(4)
    trials = study(tmp_path).get_trials()
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == pytest.approx(3.1)  # the base: baselines
    assert trials[0].user_attrs["seq"] == [1, 2, 3] and trials[1].user_attrs["seq"] == 4
    assert trials[1].state == TrialState.RUNNING
    # a keep judged on the mean of its pairs (not its first run's val_bpb); a re-run row is no verdict
    propose(6, verdict(4, Status.KEEP, 3.05, 2.98), {"seq": 5, "kind": Kind.RERUN, "status": Status.MEASURED})
    propose(7, verdict(6, Status.CRASH))
    propose(8, verdict(7, Status.WAITING, 3.0))  # still being judged (--parallel)
    propose(9, verdict(8, Status.REJECTED))  # the daemon rejected it (a duplicate diff): nothing was learned
    propose(9)  # asked again for the same run (no edits the first time): the first trial of #9 failed
    trials = study(tmp_path).get_trials()
    states = {t.user_attrs["seq"]: (t.state, t.value) for t in trials[1:]}
    assert states[4] == (TrialState.COMPLETE, 2.98)
    assert states[6] == (TrialState.PRUNED, None)
    assert states[7] == (TrialState.RUNNING, None)
    assert states[8] == (TrialState.FAIL, None)
    assert [t.state for t in trials if t.user_attrs["seq"] == 9] == [TrialState.FAIL, TrialState.RUNNING]
    ended = {t.number: t.datetime_complete for t in trials if t.state != TrialState.RUNNING}
    propose(10, verdict(7, Status.DISCARD, 3.2, 3.25), verdict(9, Status.DISCARD, 3.3, 3.3))
    again = study(tmp_path).get_trials()
    assert {t.number: t.datetime_complete for t in again if t.number in ended} == ended  # told once, not again
    assert {t.user_attrs["seq"]: t.value for t in again[1:] if t.state == TrialState.COMPLETE} == {
        4: 2.98,
        7: 3.25,
        9: 3.3,
    }


def test_a_resumed_agent_continues_the_study_with_its_seed_and_proposes_as_if_never_stopped(tmp_path):
    wt = copy_trainer(tmp_path / "wt")
    first = OptunaAgent(seed=3)  # lives on in "a"; "b" is a copy of its state folder after proposal #4
    first.propose(context(wt, tmp_path / "a", 4, BASELINES))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    history = [*BASELINES, verdict(4, Status.DISCARD, 3.3, 3.3, "x")]
    proposals = []
    for agent, state in ((first, "a"), (OptunaAgent(seed=99), "b")):  # b: a new daemon, another --seed
        shutil.copy(ROOT / TRAIN, wt / TRAIN)
        proposals.append(agent.propose(context(wt, tmp_path / state, 5, history)))
    assert proposals[0] == proposals[1] and "sampler seed 3" in proposals[1].hypothesis
    resumed = study(tmp_path / "b")
    assert resumed.user_attrs["sampler_seed"] == 3
    assert [(t.user_attrs["seq"], t.state, t.value) for t in resumed.get_trials()[1:]] == [
        (4, TrialState.COMPLETE, 3.3),
        (5, TrialState.RUNNING, None),
    ]


@pytest.fixture
def no_fast_blas(monkeypatch):
    monkeypatch.setenv("ARX_NO_FAST_BLAS", "1")


def test_a_campaign_with_the_optuna_agent_improves_and_a_resumed_daemon_continues_its_study(tmp_path, no_fast_blas):
    """Four constants free, three of them in the scripted bowl (tests/knob_scores.py); the daemon stops after 4
    experiments and a new one (a new agent object, another seed) runs to 8 on the same study."""
    setup = Setup(make_repo(tmp_path / "repo"))
    frozen = only(*OPTIMUM, "ADAM_BETA1")
    setup.loop(OptunaAgent(seed=1, frozen=frozen), max_experiments=4, executor=KnobExecutor()).run()
    db = setup.repo / "state" / "optuna" / "model-t.db"
    first = optuna.load_study(study_name="model-t", storage=f"sqlite:///{db}").get_trials()
    assert [t.state for t in first[1:]] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING]  # the last: no verdict yet
    loop = setup.loop(OptunaAgent(seed=2, frozen=frozen), max_experiments=8, executor=KnobExecutor())
    loop.run()
    runs = ledger.campaign_runs(loop.db, loop.campaign.id)
    experiments = [r for r in runs if r.kind == Kind.EXPERIMENT]
    trials = optuna.load_study(study_name="model-t", storage=f"sqlite:///{db}").get_trials()
    assert trials[0].user_attrs["seq"] == [r.seq for r in runs if r.kind == Kind.BASELINE]
    assert [t.user_attrs["seq"] for t in trials[1:]] == [r.seq for r in experiments]  # one trial per proposal
    assert [t.params for t in first] == [t.params for t in trials[: len(first)]]  # the same study, continued
    for run, trial in zip(experiments[:-1], trials[1:]):  # every verdict but the last, told with its judged value
        assert run.status in (Status.KEEP, Status.DISCARD) and trial.value == judged_value(run)
        assert "sampler seed 1" in run.hypothesis and trial.user_attrs["description"] == run.description
        diff = [line for line in run.diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        assert {line[1:].split(" = ")[0] for line in diff} == {c.split(" ")[0] for c in run.description.split(", ")}
        assert all(line[1:].split(" = ")[0] in (*OPTIMUM, "ADAM_BETA1") for line in diff)  # nothing frozen moved
    champion = next(r for r in runs if r.id == loop.campaign.best_run_id)
    base_text = (ROOT / TRAIN).read_text()
    kept_text = subprocess.run(
        ["git", "show", f"{champion.commit}:{TRAIN}"], cwd=setup.repo, capture_output=True, text=True, check=True
    ).stdout
    assert champion.kind == Kind.EXPERIMENT and penalty(kept_text) < penalty(base_text)  # it found a better place


def test_the_cli_makes_the_agent_asked_for(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    agent = make_agent("optuna", 7)
    assert isinstance(agent, OptunaAgent) and agent.seed == 7 and agent.frozen == frozenset()
    assert make_agent("auto", 7).name == "optuna"  # the default without a key: it beat local search (docs/results.md)
    assert make_agent("offline", 7).name == "offline"
    args = ["start", "--program", "model", "--tag", "x", "--agent", "gpt", "--state-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "choose auto, claude, offline or optuna" in result.output
    assert "optuna (a TPE study" in CliRunner().invoke(app, ["start", "--help"]).output
