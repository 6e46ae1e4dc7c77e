"""Agreement among several raters of the same runs: Krippendorff's alpha and exact agreement.

Pure functions: no database and no HTTP. Like ``mistralmeter.agreement``, every figure comes
with its ``n``, and below the minimum ``n`` in ``MIN_N`` it is None with a ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import krippendorff
import numpy as np

from mistralmeter.agreement import FIVE_POINT_LABELS, MIN_N, _check_range, too_few_reason

ALPHA_LEVELS = ("nominal", "ordinal", "interval")


def _check_unit_value(value: Any, level: str, run_id: str, rater: str) -> float:
    number = _check_range(value, 1.0, 5.0, f"rating of run {run_id!r} by {rater!r}")
    if level != "interval" and number != int(number):
        raise ValueError(
            f"{level} alpha needs whole ratings 1-5; run {run_id!r} by {rater!r} has {value!r}"
        )
    return number


def krippendorff_alpha(
    units: Mapping[str, Mapping[str, float]], *, level: str = "ordinal"
) -> dict[str, Any]:
    """Compute Krippendorff's alpha over runs rated by several raters (krippendorff package).

    ``units`` maps run id -> {rater name: value on 1..5}. The judge can take part as one more
    rater, with its score mapped to 1..5 by the caller. Only runs with at least 2 values
    count (``n_units``), because a single value has nothing to agree with.
    ``level`` is "ordinal" (the default), "interval" or "nominal".
    """
    if level not in ALPHA_LEVELS:
        raise ValueError(f"level must be one of {', '.join(ALPHA_LEVELS)}; got {level!r}")

    checked = {
        run_id: {
            rater: _check_unit_value(value, level, run_id, rater)
            for rater, value in ratings.items()
        }
        for run_id, ratings in units.items()
    }
    pairable = {run_id: ratings for run_id, ratings in checked.items() if len(ratings) >= 2}
    all_raters = sorted({rater for ratings in checked.values() for rater in ratings})
    raters = sorted({rater for ratings in pairable.values() for rater in ratings})
    result: dict[str, Any] = {
        "n_units": len(pairable),
        "n_raters": len(raters),
        "level": level,
        "alpha": None,
        "reason": None,
    }

    if len(all_raters) < 2:
        result["n_raters"] = len(all_raters)
        result["reason"] = too_few_reason(2, len(all_raters), "raters")
        return result
    if len(pairable) < MIN_N["alpha"]:
        result["reason"] = too_few_reason(
            MIN_N["alpha"], len(pairable), "runs rated by at least 2 raters each"
        )
        return result

    values = {value for ratings in pairable.values() for value in ratings.values()}
    if len(values) == 1:
        result["reason"] = "all values identical"
        return result

    # Rows are raters and columns are runs. NaN marks a run that the rater did not rate.
    matrix = np.full((len(raters), len(pairable)), np.nan)
    for column, ratings in enumerate(pairable.values()):
        for rater, value in ratings.items():
            matrix[raters.index(rater), column] = value

    domain = FIVE_POINT_LABELS if level == "ordinal" else None
    alpha = float(
        krippendorff.alpha(reliability_data=matrix, value_domain=domain, level_of_measurement=level)
    )
    if not math.isfinite(alpha):
        result["reason"] = "the krippendorff package returned a non-finite alpha"
        return result
    result["alpha"] = alpha
    return result


def _exact_agreement(ratings: Iterable[float]) -> float:
    """Return the fraction of rater pairs on one run that gave the same rating."""
    values = list(ratings)
    pairs = len(values) * (len(values) - 1) / 2
    agreeing = sum(
        values[i] == values[j] for i in range(len(values)) for j in range(i + 1, len(values))
    )
    return agreeing / pairs


def inter_rater_agreement(units: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Measure agreement among people only, on the runs that several people rated.

    ``units`` maps run id -> {rater name: rating 1..5}, without the judge. Returns ordinal
    Krippendorff's alpha and the mean pairwise exact agreement: for each run, the fraction
    of rater pairs with equal ratings, averaged over runs with equal weight per run.
    """
    shared = {run_id: ratings for run_id, ratings in units.items() if len(ratings) >= 2}
    alpha = krippendorff_alpha(shared, level="ordinal")
    result: dict[str, Any] = {
        "n_units": len(shared),
        "n_raters": alpha["n_raters"],
        "alpha": alpha["alpha"],
        "mean_pairwise_exact_agreement": None,
        "reason": alpha["reason"],
    }
    if not shared:
        result["reason"] = too_few_reason(
            1, 0, "runs rated by at least 2 people", "run rated by at least 2 people"
        )
        return result

    per_run = [_exact_agreement(ratings.values()) for ratings in shared.values()]
    result["mean_pairwise_exact_agreement"] = float(np.mean(per_run))
    return result
