"""Keep or discard on seed-paired differences: each branch of the rule and its boundaries, with its reason."""

from __future__ import annotations

import math

import pytest

from orchestrator.policy import Noise, Policy, band, decide, multiplier, pooled, t_cdf, t_quantile

P = Policy(min_delta=0.001, sigma_multiple=2.0, max_reruns=2)
NOISE = Noise(sigma=0.01, dof=20)


def test_clear_improvement_is_kept_and_says_how_the_band_was_computed():
    d = decide(P, [3.90], [4.00], NOISE)
    assert d.verdict == "keep" and "beyond noise" in d.reason
    assert d.band == pytest.approx(multiplier(2.0, 20) * 0.01 * math.sqrt(2))
    for part in (
        "band 0.0302",
        "min_delta 0.001",
        "t 2.13",
        "k=2",
        "dof 20",
        "sigma 0.0100",
        "sqrt(2/1)",
        "same 1 seed",
    ):
        assert part in d.reason, part


def test_gain_equal_to_the_band_is_not_kept():
    at = Policy(min_delta=0.25, max_reruns=2)  # a band of exactly 0.25 (binary-exact), whatever sigma
    assert decide(at, [3.75], [4.00], NOISE).verdict == "rerun"
    final = decide(at, [3.75] * 3, [4.00] * 3, NOISE)
    assert final.band == 0.25 and final.verdict == "discard" and "inside the band after 3 paired runs" in final.reason
    assert decide(at, [3.7499], [4.00], NOISE).verdict == "keep"


def test_worse_but_faster_is_discarded():
    """There is no speed input at all: tok/s comes from the untrusted trainer."""
    d = decide(P, [4.01], [4.00], NOISE)
    assert d.verdict == "discard" and "not better" in d.reason


def test_slower_tie_is_discarded_not_rerun():
    d = decide(P, [4.00, 3.98], [4.00, 3.98], NOISE)
    assert d.verdict == "discard" and "not better" in d.reason and "mean paired gain +0.0000" in d.reason


def test_pairs_decide_not_levels():
    """Seed luck cancels: the candidate is worse than the champion's mean over all its seeds, but better
    than the champion on the very seeds it was measured on."""
    assert decide(P, [3.95, 3.96], [4.00, 4.01], NOISE).verdict == "keep"
    with pytest.raises(ValueError):
        decide(P, [3.95, 3.96], [4.00], NOISE)


def test_sigma_from_few_runs_widens_the_band():
    widths = [band(P, Noise(0.01, dof), 1)[0] for dof in (1, 2, 4, 10, 1000)]
    assert widths == sorted(widths, reverse=True)
    assert widths[1] / widths[-1] == pytest.approx(4.527 / 2.0, rel=0.01)  # t(0.977, 2) against k
    assert band(P, Noise(0.0, 0), 3)[0] == math.inf and "band unknown" in band(P, Noise(0.0, 0), 3)[1]
    assert decide(P, [3.0], [4.0], Noise(0.0, 0)).verdict == "rerun"  # a huge gain still needs a second seed
    assert decide(P, [3.0] * 3, [4.0] * 3, Noise(0.0, 0)).verdict == "discard"


def test_more_pairs_narrow_the_band_and_min_delta_floors_it():
    assert band(P, NOISE, 4)[0] == pytest.approx(band(P, NOISE, 1)[0] / 2)
    assert band(Policy(min_delta=0.05), NOISE, 1)[0] == 0.05


def test_t_distribution_matches_tables():
    for dof, q975 in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert t_quantile(0.975, dof) == pytest.approx(q975, abs=1e-3)
    assert t_cdf(0.0, 7) == pytest.approx(0.5) and t_cdf(1e9, 3) == pytest.approx(1.0)
    assert multiplier(2.0, 100_000) == pytest.approx(2.0, abs=1e-3)


def test_pooled_sigma_counts_degrees_of_freedom():
    assert pooled([[1.0], [2.0]]) == Noise(0.0, 0)
    noise = pooled([[1.0, 1.2], [3.0, 3.2, 3.1]])
    assert noise.dof == 3 and noise.sigma == pytest.approx(math.sqrt((0.02 + 0.02) / 3), rel=1e-6)


def test_policy_fields_are_documented():
    assert set(Policy.help()) == set(Policy().to_dict()) and all(Policy.help().values())
    assert Policy().baseline_runs >= 3
