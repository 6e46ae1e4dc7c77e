"""Agreement statistics between people's 1-5 ratings and the judge's 0-10 scores.

Pure functions: no database and no HTTP. Every figure comes with its ``n``. Below the minimum
``n`` in ``MIN_N``, or when the figure is undefined for the data (all ratings equal, a single
category), the figure is None and ``reason`` states why. Results contain only Python floats,
ints, strings and None, so they serialise to JSON as they are.

Krippendorff's alpha and agreement among people are in ``mistralmeter.rater_agreement``, and
pairwise verdicts (A/B/tie) in ``mistralmeter.pairwise_agreement``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score

# Minimum number of runs (units, pairs) below which a figure is None with a reason.
MIN_N: dict[str, int] = {
    "correlation": 3,  # Spearman and Pearson: with 2 points any non-constant pair gives +-1
    "kappa": 2,
    "offset": 2,  # the t-interval needs a sample standard deviation
    "alpha": 2,  # units rated by at least 2 raters
    "pairwise": 1,
}

FIVE_POINT_LABELS = [1, 2, 3, 4, 5]
CONFIDENCE = 0.95
BOTH_RATED = "runs rated by both people and the judge"

# Judge score buckets for calibration_buckets: [0, 2), [2, 4), [4, 6), [6, 8), [8, 10].
BUCKET_EDGES = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def too_few_reason(
    need: int, have: int, plural: str = BOTH_RATED, singular: str | None = None
) -> str:
    """Return the reason text for a figure with fewer than ``need`` observations.

    ``plural`` and ``singular`` name the observations, for example "runs rated by both
    people and the judge". ``singular`` is used when ``need`` is 1.
    """
    noun = singular if need == 1 and singular is not None else plural
    return f"need at least {need} {noun}; have {have}"


def _round_half_up(value: float) -> int:
    # Python's round() rounds half to even (round(2.5) == 2), but ratings need 2.5 -> 3.
    return math.floor(value + 0.5)


def _check_finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _check_range(value: Any, low: float, high: float, name: str) -> float:
    value = _check_finite(value, name)
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g}; got {value!r}")
    return float(value)


def judge_to_five_point(score: float) -> int:
    """Map a judge score from 0 to 10 onto the 1-5 rating scale.

    The mapping is 1 + round(score * 4 / 10) with halves rounded up, so 0 -> 1, 2.5 -> 2,
    5 -> 3, 7.5 -> 4 and 10 -> 5. Raises ValueError outside 0..10.
    """
    score = _check_range(score, 0.0, 10.0, "judge score")
    return 1 + _round_half_up(score * 4 / 10)


def judge_to_five_point_continuous(score: float) -> float:
    """Map a judge score from 0 to 10 linearly onto 1.0-5.0 (1 + score * 0.4), without rounding."""
    score = _check_range(score, 0.0, 10.0, "judge score")
    return 1 + score * 4 / 10


def five_point_to_judge_scale(rating: float) -> float:
    """Map a 1-5 rating onto the judge's 0-10 scale: (rating - 1) * 2.5."""
    rating = _check_range(rating, 1.0, 5.0, "rating")
    return (rating - 1) * 2.5


def _check_paired(
    human: Sequence[float], judge: Sequence[float]
) -> tuple[list[float], list[float]]:
    if len(human) != len(judge):
        raise ValueError(
            "human and judge must have one value per run; "
            f"got {len(human)} human and {len(judge)} judge values"
        )
    human_values = [
        _check_range(value, 1.0, 5.0, f"human rating at index {i}") for i, value in enumerate(human)
    ]
    judge_values = [
        _check_range(value, 0.0, 10.0, f"judge score at index {i}") for i, value in enumerate(judge)
    ]
    return human_values, judge_values


def _constant_reason(human: list[float], judge: list[float]) -> str | None:
    if len(set(human)) == 1:
        return f"all human ratings are equal ({human[0]:g})"
    if len(set(judge)) == 1:
        return f"all judge scores are equal ({judge[0]:g})"
    return None


def _correlation(human: list[float], judge: list[float], method: str) -> dict[str, Any]:
    """Compute Spearman's rho or Pearson's r and its two-sided p-value with scipy.stats."""
    key = "rho" if method == "spearman" else "r"
    n = len(human)
    result: dict[str, Any] = {"n": n, key: None, "p_value": None, "reason": None}

    if n < MIN_N["correlation"]:
        result["reason"] = too_few_reason(MIN_N["correlation"], n)
        return result

    reason = _constant_reason(human, judge)
    if reason is not None:
        result["reason"] = reason
        return result

    test = stats.spearmanr(human, judge) if method == "spearman" else stats.pearsonr(human, judge)
    coefficient, p_value = float(test.statistic), float(test.pvalue)
    if not (math.isfinite(coefficient) and math.isfinite(p_value)):
        result["reason"] = f"scipy returned a non-finite {method} correlation"
        return result

    result[key] = coefficient
    result["p_value"] = p_value
    return result


def _quadratic_weighted_kappa(human: list[float], judge: list[float]) -> dict[str, Any]:
    """Compute Cohen's kappa with quadratic weights on the common 1-5 scale with scikit-learn."""
    n = len(human)
    result: dict[str, Any] = {"n": n, "kappa": None, "reason": None}
    if n < MIN_N["kappa"]:
        result["reason"] = too_few_reason(MIN_N["kappa"], n)
        return result

    human_labels = [_round_half_up(value) for value in human]
    judge_labels = [judge_to_five_point(score) for score in judge]

    # The expected weighted disagreement is 0 only when both sides use one and the same
    # category, which leaves kappa as 0/0.
    categories = set(human_labels) | set(judge_labels)
    if len(categories) == 1:
        result["reason"] = f"people and the judge used only one category ({categories.pop()})"
        return result

    kappa = cohen_kappa_score(
        human_labels, judge_labels, weights="quadratic", labels=FIVE_POINT_LABELS
    )
    result["kappa"] = float(kappa)
    return result


def mean_with_t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Return the mean and its 95% Student's t confidence interval (needs at least 2 values).

    The interval is mean +- t(0.975, n - 1) * s / sqrt(n), with s the sample standard
    deviation (ddof=1). Identical values give an interval of zero width.
    """
    if len(values) < 2:
        raise ValueError(f"a t-interval needs at least 2 values; got {len(values)}")
    array = np.asarray(values, dtype=float)
    if np.all(array == array[0]):
        # Summation could put the mean one ulp away from the common value, outside its own interval.
        return float(array[0]), float(array[0]), float(array[0])
    mean = float(array.mean())
    standard_error = float(array.std(ddof=1)) / math.sqrt(len(array))
    half_width = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(array) - 1)) * standard_error
    return mean, mean - half_width, mean + half_width


def _mean_offset(differences: list[float], scale: str) -> dict[str, Any]:
    n = len(differences)
    result: dict[str, Any] = {
        "n": n,
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "scale": scale,
        "reason": None,
    }
    if n < MIN_N["offset"]:
        result["reason"] = too_few_reason(MIN_N["offset"], n)
        return result
    result["mean"], result["ci_low"], result["ci_high"] = mean_with_t_interval(differences)
    return result


def _describe_correlations(spearman: dict[str, Any], pearson: dict[str, Any]) -> str:
    if spearman["rho"] is None and pearson["r"] is None and spearman["reason"] == pearson["reason"]:
        return f"Spearman rho and Pearson r are undefined because {spearman['reason']}"

    parts = []
    for name, figure, key in (("Spearman rho", spearman, "rho"), ("Pearson r", pearson, "r")):
        if figure[key] is None:
            parts.append(f"{name} is undefined because {figure['reason']}")
        else:
            parts.append(f"{name} is {figure[key]:.2f} (p = {figure['p_value']:.3f})")
    return " and ".join(parts)


def _describe_offset(offset: dict[str, Any]) -> str:
    mean, low, high = offset["mean"], offset["ci_low"], offset["ci_high"]
    interval = f"95% CI {low:.2f} to {high:.2f}"
    if low > 0:
        return (
            f"The judge scores {mean:.2f} points higher than people on the 1-5 scale ({interval})."
        )
    if high < 0:
        return (
            f"The judge scores {-mean:.2f} points lower than people on the 1-5 scale ({interval})."
        )
    return (
        f"The judge differs from people by {mean:+.2f} points on average on the 1-5 scale "
        f"({interval}), and the interval includes 0, so no systematic offset is shown."
    )


def _statement(n: int, spearman: dict, pearson: dict, kappa: dict, offset: dict) -> str:
    if n < MIN_N["correlation"]:
        return (
            f"not enough {BOTH_RATED} to say anything (n={n}; need at least {MIN_N['correlation']})"
        )

    if kappa["kappa"] is None:
        kappa_text = f"Quadratic-weighted kappa is undefined because {kappa['reason']}."
    else:
        kappa_text = f"Quadratic-weighted kappa is {kappa['kappa']:.2f}."
    return (
        f"On {n} {BOTH_RATED}, {_describe_correlations(spearman, pearson)}. "
        f"{kappa_text} {_describe_offset(offset)}"
    )


def score_agreement(human: Sequence[float], judge: Sequence[float]) -> dict[str, Any]:
    """Compute the agreement between people's ratings and the judge's scores on the same runs.

    ``human[i]`` is the 1-5 rating of run i (the mean over its raters) and ``judge[i]`` the
    judge's 0-10 overall score for that run. Returns Spearman and Pearson correlations,
    the quadratic-weighted kappa on the 1-5 scale, the mean judge-minus-people offset on
    the 1-5 scale and on the 0-10 scale, and a one-sentence statement.
    Raises ValueError when the lengths differ or a value is out of range.
    """
    human_values, judge_values = _check_paired(human, judge)
    n = len(human_values)

    spearman = _correlation(human_values, judge_values, "spearman")
    pearson = _correlation(human_values, judge_values, "pearson")
    kappa = _quadratic_weighted_kappa(human_values, judge_values)

    offsets = [judge_to_five_point_continuous(j) - h for h, j in zip(human_values, judge_values)]
    offset = _mean_offset(offsets, "1-5")
    offsets_judge_scale = [
        j - five_point_to_judge_scale(h) for h, j in zip(human_values, judge_values)
    ]
    offset_judge_scale = _mean_offset(offsets_judge_scale, "0-10")

    return {
        "n": n,
        "spearman": spearman,
        "pearson": pearson,
        "quadratic_weighted_kappa": kappa,
        "mean_offset": offset,
        "mean_offset_judge_scale": offset_judge_scale,
        "statement": _statement(n, spearman, pearson, kappa, offset),
    }


def _bucket_index(score: float) -> int:
    # Each bucket contains its lower edge, and the last one, [8, 10], also contains 10.
    for index in range(len(BUCKET_EDGES) - 2):
        if score < BUCKET_EDGES[index + 1]:
            return index
    return len(BUCKET_EDGES) - 2


def calibration_buckets(judge: Sequence[float], human: Sequence[float]) -> list[dict[str, Any]]:
    """Group runs by judge score and compare people's mean rating with what the judge implies.

    Buckets are [0, 2), [2, 4), [4, 6), [6, 8) and [8, 10]. ``expected_human`` is the bucket
    midpoint mapped onto 1-5 as 1 + midpoint * 0.4, and ``gap`` is human_mean minus it, so a
    negative gap means people rate those runs lower than the judge's score implies.
    Empty buckets are included with n=0.
    """
    human_values, judge_values = _check_paired(human, judge)
    grouped: dict[int, list[float]] = defaultdict(list)
    for score, rating in zip(judge_values, human_values):
        grouped[_bucket_index(score)].append(rating)

    buckets = []
    for index in range(len(BUCKET_EDGES) - 1):
        low, high = BUCKET_EDGES[index], BUCKET_EDGES[index + 1]
        closing = "]" if index == len(BUCKET_EDGES) - 2 else ")"
        expected = judge_to_five_point_continuous((low + high) / 2)
        ratings = grouped[index]
        bucket: dict[str, Any] = {
            "bucket": f"[{low:g}, {high:g}{closing}",
            "judge_low": low,
            "judge_high": high,
            "n": len(ratings),
            "human_mean": None,
            "human_ci_low": None,
            "human_ci_high": None,
            "expected_human": expected,
            "gap": None,
            "reason": None,
        }
        if ratings:
            bucket["human_mean"] = float(np.mean(ratings))
            bucket["gap"] = bucket["human_mean"] - expected
        if len(ratings) >= MIN_N["offset"]:
            _, bucket["human_ci_low"], bucket["human_ci_high"] = mean_with_t_interval(ratings)
        else:
            bucket["reason"] = too_few_reason(
                MIN_N["offset"], len(ratings), "rated runs in this bucket"
            )
        buckets.append(bucket)
    return buckets


def rating_distribution(ratings: Sequence[int]) -> dict[str, int]:
    """Count the ratings of each value, as {"1": count, ..., "5": count}.

    Raises ValueError on a rating that is not a whole number from 1 to 5.
    """
    counts = {str(label): 0 for label in FIVE_POINT_LABELS}
    for index, rating in enumerate(ratings):
        if isinstance(rating, bool) or not isinstance(rating, Integral) or not 1 <= rating <= 5:
            raise ValueError(
                f"rating at index {index} must be a whole number from 1 to 5; got {rating!r}"
            )
        counts[str(int(rating))] += 1
    return counts


def mean_by_group(rows: Iterable[tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """Summarise values per group (for example ratings per model), groups sorted by name.

    Returns group -> {"n", "mean", "std_dev"}. std_dev is the sample standard deviation
    (ddof=1), and None when the group has a single value.
    """
    grouped: dict[str, list[float]] = defaultdict(list)
    for group, value in rows:
        grouped[group].append(_check_finite(value, f"value for group {group!r}"))

    summary = {}
    for group in sorted(grouped):
        values = np.asarray(grouped[group], dtype=float)
        summary[group] = {
            "n": int(values.size),
            "mean": float(values.mean()),
            "std_dev": float(values.std(ddof=1)) if values.size >= 2 else None,
        }
    return summary
