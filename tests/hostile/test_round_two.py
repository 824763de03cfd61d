"""Sealed, round two (issue 17): the attacks that got through the first seal, as hostile proposals through the real
daemon (real campaign loop, sandbox, MLX trainer and scorer), one campaign per program.

Model program: model processes that talk through their logs; a seq_len as long as the held-out split with a model
process that answers the next token; a logits header made of held-out tokens; a sparse 6 GiB train.json, a nested
model_config.json, 400 MiB of stdout without a newline; page-cache probes; reading the list of held-out files from
the mount table. Data program: weights appended to train.bin and swapped in by data_sources.py from inside the
trainer; held-out text carried in data_sources.py for its loader to mix in. (Weights kept for a later run, and the
rest of each class: the fast tests beside this one.)

Each must end failed with a reason that quotes nothing a model process chose, or honest; the campaign must go on.
"""

from __future__ import annotations

import re
from pathlib import Path

import payloads as p
import pytest
from attack_kit import SECRET, append, chain, data_dir, files_with, inject, replace, run_campaign, survivors

from orchestrator.campaign.policy import Policy
from orchestrator.scoring import corpus

pytestmark = pytest.mark.slow
__all__ = ["data_dir"]  # the fixture, imported
TRAIN, PREPARE, SOURCES = "trainer/train.py", "trainer/prepare.py", "trainer/data_sources.py"
END_OF_MAIN = '    return 0 if status == "ok" else 3\n'
PREPARE_MAIN = 'if __name__ == "__main__":\n    sys.exit(main())'
FAILED = ("invalid", "crash", "timeout", "rejected")
HONEST_MARGIN = 0.85  # a run may score at most 15% below the baseline: far wider than seed and load noise at 2 s

MODEL_ATTACKS = {
    "model processes talk through their logs": inject(p.LOG_CHANNEL),
    "seq_len as long as the split": chain(replace(TRAIN, *p.LONG_ROWS_SAVE), inject(p.NEXT_TOKEN_ORACLE)),
    "held-out tokens in the logits header": inject(p.ECHO_HEADER),
    "a sparse 6 GiB train.json": replace(TRAIN, END_OF_MAIN, p.SPARSE_TRAIN_JSON + END_OF_MAIN),
    "a nested model_config.json": replace(TRAIN, END_OF_MAIN, p.NESTED_CONFIG + END_OF_MAIN),
    "no newline, page-cache probes, the held-out list": chain(
        replace(TRAIN, END_OF_MAIN, p.NO_NEWLINE + END_OF_MAIN), inject(p.PAGE_CACHE), inject(p.HELD_OUT_NAMES)
    ),
}
# every run judged on its one pair, whatever the load: these campaigns test the seal, not the keep rule
POLICY = Policy(baseline_runs=1, max_pairs=1, cpu_tolerance=1.0)


def memorised(path: str):
    """data_sources.py carrying the longest held-out document, as an LLM that remembers it would write it, with a
    loader that mixes it in (the loader it replaces is no longer the one the trainer uses)."""

    def edit(wt: Path) -> None:
        text = max(corpus.materialize("stdlib").heldout("val"), key=len)
        loader = "\n\ndef batches(*args, **kwargs):\n    raise SystemExit('ATTACK the memorised text was mixed in')\n"
        (wt / path).write_text((wt / path).read_text() + f"\nMEMORISED = {text!r}\n" + loader)

    return edit


DATA_ATTACKS = {
    "weights appended to train.bin, swapped in at save": chain(
        replace(PREPARE, PREPARE_MAIN, p.WEIGHTS_IN_TRAIN_BIN + PREPARE_MAIN), append(SOURCES, p.SWAP_AT_SAVE)
    ),
    "data_sources.py swaps at save, train.bin untouched": append(SOURCES, p.SWAP_AT_SAVE),
    "held-out text carried in data_sources.py": memorised(SOURCES),
}


@pytest.fixture(scope="module")
def model_campaign(tmp_path_factory, data_dir):
    return run_campaign(
        tmp_path_factory.mktemp("round-two-model"), "model", MODEL_ATTACKS, eval_timeout_s=180, policy=POLICY
    )


@pytest.fixture(scope="module")
def data_campaign(tmp_path_factory, data_dir):
    return run_campaign(tmp_path_factory.mktemp("round-two-data"), "data", DATA_ATTACKS, policy=POLICY)


def log(run, name: str) -> str:
    path = Path(run.run_dir) / name
    return path.read_text(errors="replace") if path.exists() else ""


def numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text))


def assert_honest(campaign, run) -> None:
    if run.status in FAILED:
        assert run.val_bpb is None
        return
    assert run.val_bpb >= HONEST_MARGIN * campaign.baseline.val_bpb, (run.description, run.val_bpb)


def test_the_model_campaign_ran_every_attack_and_went_on(model_campaign):
    c = model_campaign
    assert c.reason.startswith("reached --max-experiments"), c.reason
    assert set(c.runs) == set(MODEL_ATTACKS), sorted(c.runs)
    assert c.changed == [], "changed: " + ", ".join(c.changed)
    assert files_with(c.state, SECRET) == [] and survivors() == []


def test_model_processes_that_talk_through_their_logs_hear_nothing(model_campaign):
    r = model_campaign.runs["model processes talk through their logs"]
    assert r.status == "invalid" and "causality" in r.decision_reason, (r.status, r.decision_reason)
    heard = re.findall(r"log channel: (\d+) rows from earlier processes", log(r, "eval.log"))
    assert heard and set(heard) == {"0"}, heard  # the earlier processes' logs were out of reach


def test_a_seq_len_as_long_as_the_split_is_invalid_before_any_model_process(model_campaign):
    r = model_campaign.runs["seq_len as long as the split"]
    assert r.status == "invalid" and "seq_len" in r.decision_reason, (r.status, r.decision_reason)


def test_held_out_tokens_in_a_header_never_reach_the_reason(model_campaign):
    r = model_campaign.runs["held-out tokens in the logits header"]
    sent = [v for line in log(r, "eval.log").splitlines() if line.startswith("SENT") for v in line.split()[1:]]
    assert r.status == "invalid" and sent, (r.status, r.decision_reason)
    assert not numbers(r.decision_reason or "") & set(sent), r.decision_reason
    assert "\\x" not in (r.decision_reason or "") and "b'" not in (r.decision_reason or "")


@pytest.mark.parametrize("name", ["a sparse 6 GiB train.json", "a nested model_config.json"])
def test_candidate_files_that_took_the_daemon_down_are_invalid_runs(model_campaign, name):
    r = model_campaign.runs[name]
    assert r.status == "invalid", (r.status, r.decision_reason)


COMBINED = "no newline, page-cache probes, the held-out list"


def test_output_without_a_newline_is_kept_capped(model_campaign):
    r = model_campaign.runs[COMBINED]
    assert Path(r.run_dir, "train.log").stat().st_size < 80 << 20
    assert_honest(model_campaign, r)


def test_the_page_cache_cannot_be_probed(model_campaign):
    r = model_campaign.runs[COMBINED]
    seen = re.findall(r"ATTACK page cache (\{.*\})", log(r, "eval.log"))
    assert seen and all('"allowed"' not in s for s in seen), seen
    assert_honest(model_campaign, r)


def test_nothing_in_the_jail_names_a_held_out_file(model_campaign):
    r = model_campaign.runs[COMBINED]
    assert "ATTACK 0 stdlib files named" in log(r, "train.log"), log(r, "train.log")[-2000:]


def test_the_data_campaign_ran_every_attack_and_went_on(data_campaign):
    c = data_campaign
    assert c.reason.startswith("reached --max-experiments"), c.reason
    assert set(c.runs) == set(DATA_ATTACKS), sorted(c.runs)
    assert c.changed == [] and files_with(c.state, SECRET) == [] and survivors() == []


def test_weights_appended_to_train_bin_are_refused(data_campaign):
    r = data_campaign.runs["weights appended to train.bin, swapped in at save"]
    assert r.status == "invalid" and "train.bin" in r.decision_reason, (r.status, r.decision_reason)


def test_data_program_code_never_runs_in_the_trainer(data_campaign):
    r = data_campaign.runs["data_sources.py swaps at save, train.bin untouched"]
    assert "runs inside the trainer" not in log(r, "train.log") + log(r, "eval.log")
    assert_honest(data_campaign, r)


def test_held_out_text_in_the_data_programs_code_is_a_leak(data_campaign):
    r = data_campaign.runs["held-out text carried in data_sources.py"]
    assert r.status == "invalid" and "leak" in r.decision_reason, (r.status, r.decision_reason)
    assert "memorised text was mixed in" not in log(r, "train.log")
