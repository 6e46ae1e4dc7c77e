"""Tests for mistralmeter.comparison_statistics against hand arithmetic and against scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mistralmeter.comparison_statistics import (
    paired_difference,
    pairwise_outcome,
    prompts_needed,
    spearman,
)
from mistralmeter.statistics import bootstrap_mean_ci

Z_975 = 1.959963984540054  # standard normal quantile at 0.975 (two-sided alpha = 0.05)
Z_80 = 0.8416212335729143  # standard normal quantile at 0.8 (power = 0.8)

# Judge scores of two models on the same five prompts.
SCORES_A = [7, 5, 8, 6, 9]
SCORES_B = [6, 5, 6, 7, 6]


# paired_difference


def test_paired_difference_fixed_table_by_hand():
    # Differences a - b: 1, 0, 2, -1, 3. Their sum is 5, so the mean is 5 / 5 = 1.
    result = paired_difference(SCORES_A, SCORES_B)

    assert result["n"] == 5
    assert result["mean_difference"] == 1.0
    assert result["ci_low"] < 1.0 < result["ci_high"]
    # A resampled mean lies between the smallest and the largest difference.
    assert -1.0 <= result["ci_low"]
    assert result["ci_high"] <= 3.0
    assert result["note"] is None


def test_paired_difference_p_value_matches_wilcoxon():
    expected = scipy_stats.wilcoxon([1, 0, 2, -1, 3]).pvalue

    result = paired_difference(SCORES_A, SCORES_B)

    assert result["p_value"] == pytest.approx(expected, rel=1e-12)
    assert type(result["p_value"]) is float


def test_paired_difference_bootstraps_differences():
    rng = np.random.default_rng(4)
    a = rng.normal(10.0, 2.0, size=60)
    b = a - 0.5 + rng.normal(0.0, 1.0, size=60)

    result = paired_difference(a, b, seed=99)

    assert (result["ci_low"], result["ci_high"]) == bootstrap_mean_ci(a - b, seed=99)
    assert result["mean_difference"] == pytest.approx(np.mean(a - b), rel=1e-12)
    assert result["p_value"] == pytest.approx(scipy_stats.wilcoxon(a - b).pvalue, rel=1e-12)


def test_paired_difference_deterministic():
    first = paired_difference(SCORES_A, SCORES_B)
    second = paired_difference(SCORES_A, SCORES_B)

    assert first == second


def test_paired_difference_detects_shift():
    rng = np.random.default_rng(8)
    b = rng.normal(5.0, 1.0, size=80)
    a = b + 1.0 + rng.normal(0.0, 0.3, size=80)

    result = paired_difference(a, b)

    assert result["ci_low"] > 0.8
    assert result["ci_high"] < 1.2
    assert result["p_value"] < 1e-10


def test_paired_difference_empty():
    result = paired_difference([], [])

    assert result["n"] == 0
    assert result["mean_difference"] is None
    assert result["ci_low"] is None
    assert result["ci_high"] is None
    assert result["p_value"] is None
    assert result["note"] == "No pairs to compare."


def test_paired_difference_single_pair():
    result = paired_difference([8.0], [6.5])

    assert result["n"] == 1
    assert result["mean_difference"] == 1.5
    assert result["ci_low"] is None
    assert result["ci_high"] is None
    assert result["p_value"] is None
    assert "Fewer than 2 pairs" in result["note"]


def test_paired_difference_two_pairs_matches_wilcoxon():
    result = paired_difference([3.0, 5.0], [1.0, 4.0])

    assert result["mean_difference"] == 1.5
    # Resampled means of differences [2, 1] are 1, 1.5 or 2, as in describe([1, 2]).
    assert result["ci_low"] == 1.0
    assert result["ci_high"] == 2.0
    assert result["p_value"] == scipy_stats.wilcoxon([2.0, 1.0]).pvalue
    assert result["p_value"] == 0.5


def test_paired_difference_all_zero_differences():
    result = paired_difference([4, 5, 6], [4, 5, 6])

    assert result["mean_difference"] == 0.0
    assert result["ci_low"] == 0.0
    assert result["ci_high"] == 0.0
    assert result["p_value"] is None
    assert "Every difference is zero" in result["note"]


def test_paired_difference_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="got 3 and 2 values"):
        paired_difference([1, 2, 3], [1, 2])


def test_paired_difference_rejects_nan():
    with pytest.raises(ValueError, match=r"b\[1\]"):
        paired_difference([1.0, 2.0], [1.0, float("nan")])


# pairwise_outcome


def test_pairwise_outcome_counts_and_rate():
    result = pairwise_outcome(5, 2, 3)

    assert result["wins"] == 5
    assert result["ties"] == 2
    assert result["losses"] == 3
    assert result["n"] == 10
    # (5 + 0.5 * 2) / 10
    assert result["win_rate"] == 0.6
    assert json.loads(json.dumps(result)) == result


def test_pairwise_outcome_wilson_half_ties():
    # 8 wins and 1 tie in 10 count as 8.5 successes: p = 0.85.
    p, n, z = 0.85, 10, Z_975
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))

    result = pairwise_outcome(8, 1, 1)

    assert result["win_rate"] == 0.85
    assert result["ci_low"] == pytest.approx(center - half, rel=1e-12)
    assert result["ci_high"] == pytest.approx(center + half, rel=1e-12)
    assert result["method"] == "wilson"


def test_pairwise_outcome_sign_test_by_hand():
    # Ties dropped: 9 wins in 10. Two-sided P = 2 * (C(10,9) + C(10,10)) / 2^10 = 22 / 1024.
    result = pairwise_outcome(9, 4, 1)

    assert result["p_value"] == pytest.approx(22 / 1024, rel=1e-12)
    assert result["test"] == "sign"


@pytest.mark.parametrize("wins, ties, losses", [(9, 0, 1), (3, 7, 12), (40, 5, 25), (0, 1, 4)])
def test_pairwise_outcome_sign_test_matches_binomtest(wins, ties, losses):
    expected = scipy_stats.binomtest(wins, wins + losses, 0.5).pvalue

    result = pairwise_outcome(wins, ties, losses)

    assert result["p_value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "wins, ties, losses, winner",
    [
        # 9 of 10: Wilson interval (0.596, 0.982) lies above 0.5.
        (9, 0, 1, "a"),
        # 8 of 10: Wilson interval (0.490, 0.943) contains 0.5.
        (8, 0, 2, None),
        # 1 of 10: Wilson interval (0.018, 0.404) lies below 0.5.
        (1, 0, 9, "b"),
        # 2 of 10: Wilson interval (0.057, 0.510) contains 0.5.
        (2, 0, 8, None),
        # 8 wins and 2 ties score 9 of 10, the same interval as 9 wins.
        (8, 2, 0, "a"),
        # 2 of 2: interval (0.34, 1) is too wide for a winner.
        (2, 0, 0, None),
    ],
)
def test_pairwise_outcome_winner_edges(wins, ties, losses, winner):
    result = pairwise_outcome(wins, ties, losses)

    assert result["winner"] == winner
    if winner == "a":
        assert result["ci_low"] > 0.5
        assert result["verdict"] == "a is significantly better"
    elif winner == "b":
        assert result["ci_high"] < 0.5
        assert result["verdict"] == "b is significantly better"
    else:
        assert result["ci_low"] <= 0.5 <= result["ci_high"]
        assert result["verdict"] == "no significant difference"


def test_prompts_needed_by_hand():
    # p = 0.6: (1.95996 * 0.5 + 0.84162 * sqrt(0.24)) / 0.1 = 13.9229, squared 193.85, so 194.
    p = 0.6
    expected = math.ceil(((Z_975 * 0.5 + Z_80 * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2)
    assert expected == 194

    result = pairwise_outcome(6, 0, 4)

    assert result["winner"] is None
    assert result["prompts_needed"] == 194
    assert result["note"] is None


def test_prompts_needed_symmetric():
    # p = 0.8 and p = 0.2 are the same distance from 0.5 with the same variance:
    # (0.97998 + 0.84162 * 0.4) / 0.3 = 4.3888, squared 19.26, so 20.
    assert pairwise_outcome(8, 0, 2)["prompts_needed"] == 20
    assert pairwise_outcome(2, 0, 8)["prompts_needed"] == 20


def test_prompts_needed_none_when_significant():
    result = pairwise_outcome(9, 0, 1)

    assert result["prompts_needed"] is None
    assert "already significant" in result["note"]


def test_prompts_needed_none_at_half():
    result = pairwise_outcome(3, 2, 3)

    assert result["win_rate"] == 0.5
    assert result["prompts_needed"] is None
    assert "exactly 0.5" in result["note"]
    assert result["p_value"] == 1.0


def test_pairwise_outcome_only_ties():
    result = pairwise_outcome(0, 5, 0)

    assert result["win_rate"] == 0.5
    assert result["p_value"] is None
    assert result["winner"] is None
    assert "Every prompt was a tie" in result["note"]


def test_pairwise_outcome_empty():
    result = pairwise_outcome(0, 0, 0)

    assert result["n"] == 0
    assert result["win_rate"] is None
    assert result["ci_low"] is None
    assert result["ci_high"] is None
    assert result["p_value"] is None
    assert result["winner"] is None
    assert result["verdict"] == "not compared"
    assert result["prompts_needed"] is None
    assert result["note"] == "No prompts were compared."


@pytest.mark.parametrize("counts", [(-1, 0, 0), (1.5, 0, 0), (0, None, 0), (True, 0, 0)])
def test_pairwise_outcome_rejects_invalid_counts(counts):
    with pytest.raises(ValueError):
        pairwise_outcome(*counts)


@pytest.mark.parametrize("option", ["confidence", "alpha", "power"])
def test_pairwise_outcome_rejects_invalid_probabilities(option):
    with pytest.raises(ValueError, match=option):
        pairwise_outcome(5, 0, 5, **{option: 1.0})


# prompts_needed


def test_prompts_needed_extreme_rate_by_hand():
    # p = 1: the variance term is 0, so n = (1.95996 * 0.5 / 0.5)^2 = 3.84, rounded up to 4.
    assert prompts_needed(1.0) == 4
    assert prompts_needed(0.0) == 4


def test_prompts_needed_grows_with_power():
    assert prompts_needed(0.6, power=0.9) > prompts_needed(0.6, power=0.8)


@pytest.mark.parametrize("win_rate", [0.5, -0.1, 1.2])
def test_prompts_needed_rejects_invalid_rate(win_rate):
    with pytest.raises(ValueError, match="win_rate"):
        prompts_needed(win_rate)


# spearman


def test_spearman_by_hand():
    # Ranks are the values. d = -1, 1, -1, 1, 0 and sum d^2 = 4, so
    # rho = 1 - 6 * 4 / (5 * (25 - 1)) = 1 - 24 / 120 = 0.8.
    result = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])

    assert result["n"] == 5
    assert result["rho"] == pytest.approx(0.8, rel=1e-12)
    assert result["note"] is None


def test_spearman_matches_scipy():
    rng = np.random.default_rng(12)
    lengths = rng.integers(50, 2000, size=120)
    scores = np.clip(lengths / 300 + rng.normal(0, 2, size=120), 0, 10)
    expected = scipy_stats.spearmanr(lengths, scores)

    result = spearman(lengths, scores)

    assert result["n"] == 120
    assert result["rho"] == pytest.approx(expected.statistic, rel=1e-12)
    assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert type(result["rho"]) is float
    assert type(result["p_value"]) is float


@pytest.mark.parametrize("n", [0, 1, 2])
def test_spearman_too_few_pairs(n):
    result = spearman(list(range(n)), list(range(n)))

    assert result == {
        "n": n,
        "rho": None,
        "p_value": None,
        "note": "Fewer than 3 pairs: no rank correlation.",
    }


@pytest.mark.parametrize(
    "x, y, subject",
    [
        ([1, 2, 3], [4, 4, 4], "y is"),
        ([7, 7, 7], [1, 2, 3], "x is"),
        ([1, 1, 1], [2, 2, 2], "x and y are"),
    ],
)
def test_spearman_constant_input(x, y, subject):
    result = spearman(x, y)

    assert result["rho"] is None
    assert result["p_value"] is None
    assert result["note"] == f"{subject} constant, so the rank correlation is undefined."


def test_spearman_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="got 3 and 4 values"):
        spearman([1, 2, 3], [1, 2, 3, 4])


def test_pairwise_outcome_needs_sign_test_for_winner():
    """4 wins of 4: Wilson gives (0.51, 1.0) but the exact sign test gives p = 0.125."""
    result = pairwise_outcome(4, 0, 0)

    assert result["ci_low"] > 0.5
    assert result["p_value"] == 0.125
    assert result["winner"] is None
    assert result["verdict"] == "no significant difference"


def test_pairwise_outcome_prompts_needed_exceeds_prompts_used():
    """5 of 5 wins: the normal approximation gives 4 prompts, but 5 were not enough."""
    result = pairwise_outcome(5, 0, 0)

    assert result["winner"] is None
    assert result["p_value"] == 0.0625
    assert result["prompts_needed"] == 6
    assert "lower bound" in result["note"]
