"""Keep or discard against noise: each branch of the rule, with its reason."""

from __future__ import annotations

import pytest

from orchestrator.policy import Policy, decide, pooled_sigma

P = Policy(min_delta=0.001, max_reruns=2)


def test_clear_improvement_is_kept():
    d = decide(P, [3.90], 1000, best=4.00, best_tok_s=1000, sigma=0.01)
    assert d.verdict == "keep" and "beyond noise" in d.reason


def test_worse_is_discarded():
    d = decide(P, [4.10], 1000, best=4.00, best_tok_s=1000, sigma=0.01)
    assert d.verdict == "discard" and "not better" in d.reason


def test_marginal_gain_is_rerun_then_decided_on_the_mean():
    assert decide(P, [3.99], 1000, 4.00, 1000, sigma=0.01).verdict == "rerun"
    assert decide(P, [3.99, 3.995], 1000, 4.00, 1000, sigma=0.01).verdict == "rerun"
    final = decide(P, [3.99, 3.995, 4.0], 1000, 4.00, 1000, sigma=0.01)
    assert final.verdict == "discard" and "mean of 3 runs" in final.reason


def test_tie_with_more_throughput_is_kept():
    d = decide(P, [4.005], 1200, best=4.00, best_tok_s=1000, sigma=0.01)
    assert d.verdict == "keep" and "tok/s" in d.reason


def test_band_never_below_min_delta():
    assert decide(Policy(min_delta=0.05), [3.96], None, 4.00, None, sigma=0.0).verdict == "rerun"


def test_pooled_sigma():
    assert pooled_sigma([[1.0], [2.0]]) == 0.0
    assert pooled_sigma([[1.0, 1.2], [3.0, 3.2]]) == pytest.approx(0.1414, rel=1e-3)
