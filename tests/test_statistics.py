"""Tests for mistralmeter.statistics against hand arithmetic and against numpy and scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mistralmeter import statistics
from mistralmeter.statistics import (
    EMPTY_STATISTICS,
    STATISTICS_KEYS,
    bootstrap_mean_ci,
    describe,
    empty_statistics,
    error_rate,
    rate_with_interval,
    wilson_interval,
)

Z_975 = 1.959963984540054  # standard normal quantile at 0.975


def normal_sample(n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc=100.0, scale=15.0, size=n)


# describe: hand-computed values


def test_describe_two_values_by_hand():
    result = describe([1, 2])

    assert result["n"] == 2
    assert result["mean"] == 1.5
    # Deviations -0.5 and 0.5: (0.25 + 0.25) / (2 - 1) = 0.5.
    assert result["std_dev"] == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert result["min"] == 1.0
    assert result["max"] == 2.0
    # Linear interpolation: position (n - 1) * q = q, so the value is 1 + q * (2 - 1).
    assert result["p50"] == pytest.approx(1.5)
    assert result["p95"] == pytest.approx(1.95)
    assert result["p99"] == pytest.approx(1.99)


def test_describe_two_values_bootstrap_interval_by_hand():
    # A resample of [1, 2] has mean 1 (probability 1/4), 1.5 (1/2) or 2 (1/4). About 500 of
    # 2000 resample means are 1 and 500 are 2, so the 2.5% and 97.5% quantiles are 1 and 2.
    result = describe([1, 2])

    assert result["ci_low"] == 1.0
    assert result["ci_high"] == 2.0


def test_describe_eight_values_by_hand():
    values = [2, 4, 4, 4, 5, 5, 7, 9]

    result = describe(values)

    assert result["n"] == 8
    # Sum 40 over 8 values.
    assert result["mean"] == 5.0
    # Squared deviations 9 + 1 + 1 + 1 + 0 + 0 + 4 + 16 = 32, over n - 1 = 7.
    assert result["std_dev"] == pytest.approx(math.sqrt(32 / 7), rel=1e-15)
    assert result["min"] == 2.0
    assert result["max"] == 9.0
    # Position 7 * 0.5 = 3.5: halfway between sorted[3] = 4 and sorted[4] = 5.
    assert result["p50"] == pytest.approx(4.5)
    # Position 7 * 0.95 = 6.65: sorted[6] = 7 plus 0.65 * (9 - 7).
    assert result["p95"] == pytest.approx(8.3)
    # Position 7 * 0.99 = 6.93: 7 plus 0.93 * (9 - 7).
    assert result["p99"] == pytest.approx(8.86)


def test_describe_one_to_ten_percentiles_by_hand():
    result = describe(list(range(1, 11)))

    # Position 9 * 0.95 = 8.55: sorted[8] = 9 plus 0.55 * (10 - 9).
    assert result["p95"] == pytest.approx(9.55)
    # Position 9 * 0.5 = 4.5: halfway between 5 and 6.
    assert result["p50"] == pytest.approx(5.5)
    # Position 9 * 0.99 = 8.91: 9 plus 0.91.
    assert result["p99"] == pytest.approx(9.91)
    assert result["mean"] == 5.5


# describe: edge sizes


def test_describe_empty_is_all_none_but_n():
    result = describe([])

    assert result == {key: (0 if key == "n" else None) for key in STATISTICS_KEYS}


def test_describe_single_value_fills_location_only():
    result = describe([42.25])

    assert result["n"] == 1
    for key in ("mean", "min", "max", "p50", "p95", "p99"):
        assert result[key] == 42.25, key
    assert result["std_dev"] is None
    assert result["ci_low"] is None
    assert result["ci_high"] is None


def test_describe_constant_values_have_zero_spread():
    result = describe([0.1, 0.1, 0.1])

    assert result["mean"] == 0.1
    assert result["std_dev"] == 0.0
    assert result["ci_low"] == 0.1
    assert result["ci_high"] == 0.1


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 57, 500])
def test_describe_keys_and_plain_types(n):
    result = describe(normal_sample(n))

    assert tuple(result) == STATISTICS_KEYS
    assert type(result["n"]) is int
    for key in STATISTICS_KEYS[1:]:
        assert result[key] is None or type(result[key]) is float, key
    assert json.loads(json.dumps(result)) == result


# describe: against numpy and scipy


@pytest.mark.parametrize("n", [2, 3, 10, 57, 500])
def test_describe_matches_numpy_and_scipy(n):
    values = normal_sample(n, seed=n)

    result = describe(values)

    assert result["n"] == n
    assert result["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert result["std_dev"] == pytest.approx(scipy_stats.tstd(values), rel=1e-12)
    assert result["min"] == np.min(values)
    assert result["max"] == np.max(values)
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert result[key] == pytest.approx(np.percentile(values, q, method="linear")), key


def test_describe_accepts_integers_and_arrays():
    from_list = describe([3, 1, 2])
    from_array = describe(np.array([3, 1, 2], dtype=np.int32))

    assert from_list == from_array
    assert from_list["mean"] == 2.0


# describe: rejected input


@pytest.mark.parametrize(
    "values, index",
    [([1.0, float("nan"), 2.0], 1), ([1.0, 2.0, None], 2), ([float("inf")], 0)],
)
def test_describe_rejects_missing_values(values, index):
    with pytest.raises(ValueError, match=rf"values\[{index}\].*Exclude failed runs"):
        describe(values)


def test_describe_rejects_numpy_nan():
    with pytest.raises(ValueError, match="nan"):
        describe(np.array([1.0, np.nan]))


@pytest.mark.parametrize("values", [["1.5", "2"], [True, False], [1.0, "2"]])
def test_describe_rejects_non_numbers(values):
    with pytest.raises(TypeError):
        describe(values)


def test_describe_rejects_two_dimensional_input():
    with pytest.raises(ValueError, match="one-dimensional"):
        describe([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.1, True])
def test_describe_rejects_invalid_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        describe([1.0, 2.0], confidence=confidence)


@pytest.mark.parametrize("n_resamples", [0, -5, 2.5])
def test_describe_rejects_invalid_resample_count(n_resamples):
    with pytest.raises(ValueError, match="n_resamples"):
        describe([1.0, 2.0], n_resamples=n_resamples)


# empty statistics


def test_empty_statistics_matches_describe_of_nothing():
    assert empty_statistics() == describe([])
    assert dict(EMPTY_STATISTICS) == describe([])


def test_empty_statistics_returns_independent_copies():
    first = empty_statistics()
    first["n"] = 99

    assert empty_statistics()["n"] == 0
    with pytest.raises(TypeError):
        EMPTY_STATISTICS["n"] = 99  # type: ignore[index]


# bootstrap_mean_ci


def test_bootstrap_same_seed_same_interval():
    values = normal_sample(40)

    assert bootstrap_mean_ci(values, seed=5) == bootstrap_mean_ci(values, seed=5)
    assert bootstrap_mean_ci(values) == (describe(values)["ci_low"], describe(values)["ci_high"])


def test_bootstrap_other_seed_other_interval():
    values = normal_sample(40)

    assert bootstrap_mean_ci(values, seed=5) != bootstrap_mean_ci(values, seed=6)


@pytest.mark.parametrize("n", [2, 5, 30, 300])
def test_bootstrap_interval_contains_mean(n):
    values = normal_sample(n, seed=n)

    low, high = bootstrap_mean_ci(values)

    assert low <= np.mean(values) <= high
    assert low < high


def test_bootstrap_interval_narrows_with_n():
    population = normal_sample(2000, seed=11)

    widths = []
    for n in (20, 200, 2000):
        low, high = bootstrap_mean_ci(population[:n])
        widths.append(high - low)

    assert widths[0] > widths[1] > widths[2]
    # The width scales with 1 / sqrt(n), so 10 times the data is about 3.2 times narrower.
    assert widths[1] / widths[2] == pytest.approx(math.sqrt(10), rel=0.25)


@pytest.mark.parametrize("values", [[7.0, 7.0], [3, 3, 3, 3, 3], [0.1] * 50])
def test_bootstrap_constant_data_gives_point(values):
    low, high = bootstrap_mean_ci(values)

    assert low == values[0]
    assert high == values[0]


@pytest.mark.parametrize("values", [[], [4.0]])
def test_bootstrap_fewer_than_two_gives_none(values):
    assert bootstrap_mean_ci(values) == (None, None)


def test_bootstrap_matches_t_interval():
    values = normal_sample(200, seed=3)
    mean = float(np.mean(values))
    t_low, t_high = scipy_stats.t.interval(
        0.95, df=len(values) - 1, loc=mean, scale=scipy_stats.sem(values)
    )
    t_half_width = (t_high - t_low) / 2

    low, high = bootstrap_mean_ci(values)

    assert (high - low) == pytest.approx(t_high - t_low, rel=0.10)
    assert abs(low - t_low) < 0.10 * t_half_width
    assert abs(high - t_high) < 0.10 * t_half_width


def test_bootstrap_wider_at_higher_confidence():
    values = normal_sample(50)

    low_90, high_90 = bootstrap_mean_ci(values, confidence=0.90)
    low_99, high_99 = bootstrap_mean_ci(values, confidence=0.99)

    assert low_99 < low_90
    assert high_99 > high_90


def test_bootstrap_rejects_nan():
    with pytest.raises(ValueError, match="Exclude failed runs"):
        bootstrap_mean_ci([1.0, float("nan"), 3.0])


def test_bootstrap_many_blocks_same_interval(monkeypatch):
    values = normal_sample(300, seed=2)
    one_block = bootstrap_mean_ci(values)
    width = one_block[1] - one_block[0]
    # Blocks of 1000 indices hold 3 resamples of 300, so the 2000 resamples take 667 blocks.
    monkeypatch.setattr(statistics, "_BOOTSTRAP_BLOCK_ELEMENTS", 1000)

    first = bootstrap_mean_ci(values)
    second = bootstrap_mean_ci(values)

    assert first == second
    assert first[0] < np.mean(values) < first[1]
    # Another random stream, so only close: endpoints move by a few percent of the width.
    assert abs(first[0] - one_block[0]) < 0.1 * width
    assert abs(first[1] - one_block[1]) < 0.1 * width


# error_rate


@pytest.mark.parametrize(
    "succeeded, failed, expected",
    [(9, 1, 0.1), (0, 3, 1.0), (5, 0, 0.0), (1, 2, 2 / 3), (0, 0, None)],
)
def test_error_rate_values(succeeded, failed, expected):
    assert error_rate(succeeded, failed) == expected


@pytest.mark.parametrize("succeeded, failed", [(-1, 2), (1.5, 2), (2, None)])
def test_error_rate_rejects_invalid_counts(succeeded, failed):
    with pytest.raises(ValueError):
        error_rate(succeeded, failed)


# rate_with_interval and wilson_interval


def test_rate_with_interval_by_hand():
    # Wilson score interval for 8 of 10:
    # center = (p + z^2 / 2n) / (1 + z^2 / n), half = z / (1 + z^2 / n) * sqrt(p(1-p)/n + z^2/4n^2)
    p, n, z = 0.8, 10, Z_975
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))

    result = rate_with_interval(8, 10)

    assert result["n"] == 10
    assert result["rate"] == 0.8
    assert result["ci_low"] == pytest.approx(center - half, rel=1e-12)
    assert result["ci_high"] == pytest.approx(center + half, rel=1e-12)
    assert result["method"] == "wilson"


@pytest.mark.parametrize("successes, n", [(0, 1), (1, 1), (0, 20), (20, 20), (3, 7), (50, 120)])
def test_rate_with_interval_matches_binomtest(successes, n):
    expected = scipy_stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")

    result = rate_with_interval(successes, n)

    assert result["rate"] == successes / n
    assert result["ci_low"] == pytest.approx(expected.low, abs=1e-12)
    assert result["ci_high"] == pytest.approx(expected.high, abs=1e-12)
    assert type(result["ci_low"]) is float


def test_rate_with_interval_empty_is_none():
    assert rate_with_interval(0, 0) == {
        "n": 0,
        "rate": None,
        "ci_low": None,
        "ci_high": None,
        "method": "wilson",
    }


def test_rate_with_interval_rejects_more_successes_than_n():
    with pytest.raises(ValueError, match="must not exceed"):
        rate_with_interval(5, 4)


@pytest.mark.parametrize("successes, n", [(0, 1), (1, 1), (3, 7), (50, 120), (9, 10)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_binomtest(successes, n, confidence):
    expected = scipy_stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")

    low, high = wilson_interval(successes, n, confidence)

    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_fractional_count_by_hand():
    # 8.5 successes in 10 (8 wins and a tie counted as half): p = 0.85.
    p, n, z = 0.85, 10, Z_975
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))

    low, high = wilson_interval(8.5, 10)

    assert low == pytest.approx(center - half, rel=1e-12)
    assert high == pytest.approx(center + half, rel=1e-12)


@pytest.mark.parametrize("successes, n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


def test_statistics_reexports_comparison_functions():
    from mistralmeter import comparison_statistics
    from mistralmeter.statistics import paired_difference, pairwise_outcome, spearman

    assert paired_difference is comparison_statistics.paired_difference
    assert pairwise_outcome is comparison_statistics.pairwise_outcome
    assert spearman is comparison_statistics.spearman
    with pytest.raises(AttributeError):
        statistics.no_such_function  # noqa: B018
