"""Statistics that compare two models, or two measurements of the same runs.

Paired differences over the same prompts, pairwise win rates from judge verdicts with a sign
test and a sample-size estimate, and Spearman rank correlation (used for the judge's length
bias). Results are plain JSON-ready dicts. Each has a "note" that explains why a value is None,
and the note is None when nothing is missing. See ``docs/statistics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from mistralmeter.statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    describe,
    to_finite_array,
    validate_count,
    validate_probability,
    wilson_interval,
)

# A win rate of 0.5 means the two models tie on average.
_NO_PREFERENCE = 0.5


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Compare two measurements of the same items, a[i] paired with b[i].

    Returns {"n", "mean_difference", "ci_low", "ci_high", "p_value", "note"}. mean_difference
    is the mean of a - b. The interval is a percentile bootstrap that resamples whole pairs,
    which for the mean of a - b is the same as resampling the differences. p_value is the
    two-sided Wilcoxon signed-rank test (scipy defaults: zero differences dropped, exact or
    permutation p-value for small n). The interval and p_value are None when n < 2, and
    p_value is None when every difference is zero. Raises ValueError when the lengths differ
    or a value is None, NaN or infinite.
    """
    validate_probability(confidence, "confidence")
    first = to_finite_array(a, "a")
    second = to_finite_array(b, "b")
    if first.size != second.size:
        raise ValueError(
            f"a and b must pair up item by item, got {first.size} and {second.size} values"
        )

    n = int(first.size)
    result: dict[str, Any] = {
        "n": n,
        "mean_difference": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
        "note": None,
    }
    if n == 0:
        result["note"] = "No pairs to compare."
        return result

    differences = first - second
    summary = describe(differences, confidence=confidence, n_resamples=n_resamples, seed=seed)
    result["mean_difference"] = summary["mean"]
    result["ci_low"] = summary["ci_low"]
    result["ci_high"] = summary["ci_high"]
    if n < 2:
        result["note"] = "Fewer than 2 pairs: no interval or p-value."
    elif not np.any(differences):
        result["note"] = "Every difference is zero, so the Wilcoxon signed-rank test is undefined."
    else:
        result["p_value"] = float(scipy_stats.wilcoxon(differences).pvalue)
    return result


def pairwise_outcome(
    wins: int,
    ties: int,
    losses: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, Any]:
    """Summarise pairwise judge verdicts of model A against model B, one verdict per prompt.

    win_rate = (wins + 0.5 * ties) / n is A's rate. Its interval is the Wilson score interval
    with each tie counted as half a win. p_value is the two-sided sign test on wins against
    losses, with ties dropped. winner is "a" when the interval lies entirely above 0.5 and the
    sign test gives p < alpha, "b" when the interval lies entirely below 0.5 and p < alpha, and
    None otherwise with verdict "no significant difference". With n = 0 the verdict is
    "not compared".
    prompts_needed estimates how many prompts would detect the observed win rate at the given
    alpha and power. It is None when n = 0, when the win rate is exactly 0.5, or when a winner
    was named. Raises ValueError for a negative or non-integer count.
    """
    for name, count in (("wins", wins), ("ties", ties), ("losses", losses)):
        validate_count(count, name)
    validate_probability(confidence, "confidence")
    validate_probability(alpha, "alpha")
    validate_probability(power, "power")

    n = int(wins + ties + losses)
    result: dict[str, Any] = {
        "wins": int(wins),
        "ties": int(ties),
        "losses": int(losses),
        "n": n,
        "win_rate": None,
        "ci_low": None,
        "ci_high": None,
        "method": "wilson",
        "p_value": None,
        "test": "sign",
        "winner": None,
        "verdict": "no significant difference",
        "prompts_needed": None,
        "note": None,
    }
    if n == 0:
        # Nothing was tested, so no verdict: "no significant difference" would read as a result.
        result["verdict"] = "not compared"
        result["note"] = "No prompts were compared."
        return result

    notes = []
    win_rate = (wins + 0.5 * ties) / n
    ci_low, ci_high = wilson_interval(wins + 0.5 * ties, n, confidence)
    result.update(win_rate=win_rate, ci_low=ci_low, ci_high=ci_high)

    decided = wins + losses
    if decided:
        result["p_value"] = float(scipy_stats.binomtest(int(wins), int(decided), 0.5).pvalue)
    else:
        notes.append("Every prompt was a tie, so the sign test has no wins or losses to use.")

    # Wilson alone is not exact: with no real difference it would name a winner with probability
    # 0.125 at n = 4 (4 of 4 wins give (0.51, 1.0)). The exact sign test must agree as well.
    significant = result["p_value"] is not None and result["p_value"] < alpha
    if ci_low > _NO_PREFERENCE and significant:
        result.update(winner="a", verdict="a is significantly better")
    elif ci_high < _NO_PREFERENCE and significant:
        result.update(winner="b", verdict="b is significantly better")

    if result["winner"] is not None:
        notes.append("The difference is already significant, so prompts_needed is not computed.")
    elif win_rate == _NO_PREFERENCE:
        notes.append("The win rate is exactly 0.5, so there is no effect to size a sample for.")
    else:
        # At small n the approximation can fall below the prompts already used. More prompts
        # are needed in any case, so the result is never fewer than n + 1.
        needed = prompts_needed(win_rate, alpha=alpha, power=power)
        result["prompts_needed"] = max(needed, n + 1)
        if needed <= n:
            notes.append(
                "The normal approximation is poor at this n; prompts_needed is a lower bound."
            )

    result["note"] = " ".join(notes) or None
    return result


def prompts_needed(win_rate: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Estimate the prompts needed to tell win_rate from 0.5 with a two-sided test.

    Normal-approximation sample size for a one-sample proportion test against p0 = 0.5:
    n = ((z[1 - alpha/2] * 0.5 + z[power] * sqrt(p (1 - p))) / (p - 0.5))^2, rounded up.
    Using the Bernoulli variance p (1 - p) overestimates n when there are ties, because an
    outcome of 1, 0.5 or 0 varies less. Raises ValueError when win_rate is 0.5.
    """
    validate_probability(alpha, "alpha")
    validate_probability(power, "power")
    if not 0.0 <= win_rate <= 1.0 or win_rate == _NO_PREFERENCE:
        raise ValueError(f"win_rate must be in [0, 1] and differ from 0.5, got {win_rate!r}")

    z_alpha = float(scipy_stats.norm.ppf(1.0 - alpha / 2.0))
    z_power = float(scipy_stats.norm.ppf(power))
    spread = z_alpha * _NO_PREFERENCE + z_power * math.sqrt(win_rate * (1.0 - win_rate))
    sample_size = (spread / (win_rate - _NO_PREFERENCE)) ** 2
    # Rounded first so that a value like 24.000000000000004 from float error does not become 25.
    return math.ceil(round(sample_size, 9))


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Compute Spearman's rank correlation of paired values with scipy.stats.spearmanr.

    Returns {"n", "rho", "p_value", "note"}. The p-value is scipy's two-sided test based on the
    t distribution. rho and p_value are None when n < 3 or when x or y is constant.
    Raises ValueError when the lengths differ or a value is None, NaN or infinite.
    """
    first = to_finite_array(x, "x")
    second = to_finite_array(y, "y")
    if first.size != second.size:
        raise ValueError(
            f"x and y must pair up item by item, got {first.size} and {second.size} values"
        )

    n = int(first.size)
    result: dict[str, Any] = {"n": n, "rho": None, "p_value": None, "note": None}
    if n < 3:
        result["note"] = "Fewer than 3 pairs: no rank correlation."
        return result
    constant = [name for name, values in (("x", first), ("y", second)) if np.ptp(values) == 0]
    if constant:
        subject = "x and y are" if len(constant) == 2 else f"{constant[0]} is"
        result["note"] = f"{subject} constant, so the rank correlation is undefined."
        return result

    correlation = scipy_stats.spearmanr(first, second)
    result["rho"] = float(correlation.statistic)
    result["p_value"] = float(correlation.pvalue)
    return result
