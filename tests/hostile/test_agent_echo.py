"""Held-out bytes that would reach the agent: a model process is sent held-out rows, so whatever of its own it gets
echoed into a run's reason (which the next prompt quotes, and the agent could write into its training data) is a
channel for held-out text. A malformed logits header, an exit status, the size of a causality violation: each is
the model process's to choose. The reason gives sizes and types, never such content.

The model processes are fakes (fake_candidate.py) that print what they smuggle to their log, for the test to look
for; the measurement is the daemon's real one.
"""

from __future__ import annotations

import re

from fake_candidate import make_worktree, measure_in_child

from orchestrator.scoring import scorer


def smuggled(run, tag: str) -> list[int]:
    """The numbers a fake model process printed after `tag` in its log (kept for people in the run folder)."""
    log = (run / "eval.log").read_text()
    return [int(v) for line in log.splitlines() if line.startswith(tag) for v in line.split()[1:]]


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", text))


def test_a_malformed_logits_header_echoes_nothing(stdlib, tmp_path):
    on_batch = """
    row = tokens[0]
    print("SENT", *row[:7].tolist(), file=sys.stderr, flush=True)
    responses.write(RESPONSE.pack(row[:4].astype(np.uint8).tobytes(), int(row[4]), int(row[5]), int(row[6])))
    responses.flush()
    continue
    """
    m = measure_in_child(make_worktree(tmp_path / "wt", on_batch=on_batch), tmp_path / "run")
    sent = smuggled(tmp_path / "run", "SENT")
    assert m["status"] == "invalid" and len(sent) >= 7, m  # one line per batch it was sent
    assert not numbers_in(m["reason"]) & {str(v) for v in sent}, m["reason"]
    assert "b'" not in m["reason"] and "\\x" not in m["reason"], m["reason"]


def test_an_exit_status_echoes_nothing(stdlib, tmp_path):
    on_batch = """
    code = int(tokens[0, 0]) % 200 + 17
    print("EXIT", code, file=sys.stderr, flush=True)
    os._exit(code)
    """
    m = measure_in_child(make_worktree(tmp_path / "wt", on_batch=on_batch), tmp_path / "run")
    (code,) = smuggled(tmp_path / "run", "EXIT")
    assert m["status"] == "crash", m
    assert str(code) not in numbers_in(m["reason"] + m["log_tail"]), m["reason"]


def test_the_size_of_a_causality_violation_echoes_nothing(stdlib, tmp_path):
    """Every position's first logit is the row's last token (the future): a probe moves it by the difference of
    two held-out token ids, which a reason that quotes the largest change would print."""
    on_batch = """
    out = np.zeros((rows, cols, vocab), np.float32)
    out[:, :, 0] = tokens[:, -1:]
    responses.write(RESPONSE.pack(b"LOGT", rows, cols, vocab) + out.tobytes())
    responses.flush()
    continue
    """
    m = measure_in_child(make_worktree(tmp_path / "wt", on_batch=on_batch), tmp_path / "run")
    assert m["status"] == "invalid" and "causality" in m["reason"], m
    allowed = numbers_in(f"{scorer.CAUSALITY_TOLERANCE:g}")
    assert numbers_in(m["reason"]) <= allowed, m["reason"]


def test_a_tokenizer_that_drops_text_learns_nothing_of_which_document(tmp_path):
    """A data program's pattern can drop text on a condition of its own: the reason must not say which held-out
    document failed (that would answer the condition about its text), only that one did."""
    from conftest import tiny_texts, write_corpus, write_model_config, write_tokenizer

    prepared = write_tokenizer(tmp_path / "prepared", pattern=r"[^\n]+|\n(?!\n)")  # drops the second of two newlines
    corpus = write_corpus(tmp_path / "data", *tiny_texts())
    run_dir = write_model_config(tmp_path / "run", 37)
    try:
        scorer.evaluate(run_dir, prepared, corpus, lambda vocab: None)
    except scorer.Invalid as e:
        reason = str(e)
    assert "round-trip" in reason and not numbers_in(reason), reason
