"""Assemble the human rating statistics from stored rows: no database and no HTTP.

The figures come from ``mistralmeter.agreement``, ``mistralmeter.rater_agreement`` and
``mistralmeter.pairwise_agreement``, so each has its ``n`` and, below the minimum ``n``, is
None with a ``reason``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mistralmeter.agreement import (
    calibration_buckets,
    judge_to_five_point,
    mean_by_group,
    rating_distribution,
    score_agreement,
)
from mistralmeter.pairwise_agreement import PairRecord, pairwise_agreement
from mistralmeter.rater_agreement import inter_rater_agreement, krippendorff_alpha

# Prefix of the judge's rater name in Krippendorff's alpha. The API rejects it for people.
JUDGE_RATER_PREFIX = "judge:"


@dataclass(frozen=True)
class RatingRow:
    """One person's rating of one run on the criterion being analysed."""

    run_id: str
    model: str
    rater: str
    rating: int


@dataclass(frozen=True)
class JudgeScore:
    """The judge's 0-10 score of one run on the criterion being analysed."""

    run_id: str
    judge_model: str
    score: float


@dataclass(frozen=True)
class PreferenceVerdicts:
    """One person's pairwise preference and each judge's verdicts on the same pair of runs.

    ``verdicts`` maps judge model -> (verdict with run a shown first, verdict with run b
    shown first), both naming the runs of this preference ("a", "b", "tie" or None).
    """

    preference_id: str
    human: str
    verdicts: dict[str, tuple[str | None, str | None]]


def human_mean_per_run(ratings: Iterable[RatingRow]) -> dict[str, float]:
    """Return run id -> the mean of its raters' ratings."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for row in ratings:
        grouped[row.run_id].append(row.rating)
    return {run_id: float(np.mean(values)) for run_id, values in grouped.items()}


def people_units(ratings: Iterable[RatingRow]) -> dict[str, dict[str, int]]:
    """Return run id -> {rater: rating}, the units of Krippendorff's alpha."""
    units: dict[str, dict[str, int]] = defaultdict(dict)
    for row in ratings:
        units[row.run_id][row.rater] = row.rating
    return dict(units)


def _scores_by_judge(judge_scores: Iterable[JudgeScore]) -> dict[str, dict[str, float]]:
    by_judge: dict[str, dict[str, float]] = defaultdict(dict)
    for score in judge_scores:
        by_judge[score.judge_model][score.run_id] = score.score
    return by_judge


def _paired(
    human_means: dict[str, float], scores: dict[str, float]
) -> tuple[list[float], list[float]]:
    """Return the human means and judge scores of the runs that both scored, in run id order."""
    both = sorted(set(human_means) & set(scores))
    return [human_means[run_id] for run_id in both], [scores[run_id] for run_id in both]


def _alpha_with_judge(
    units: dict[str, dict[str, int]], judge_model: str, scores: dict[str, float]
) -> dict[str, Any]:
    """Compute ordinal Krippendorff's alpha over every person plus the judge as one rater."""
    judge_rater = f"{JUDGE_RATER_PREFIX}{judge_model}"
    with_judge = {run_id: dict(ratings) for run_id, ratings in units.items()}
    for run_id, ratings in with_judge.items():
        if run_id in scores:
            ratings[judge_rater] = judge_to_five_point(scores[run_id])
    result = krippendorff_alpha(with_judge, level="ordinal")
    result["judge_rater"] = judge_rater
    return result


def _pair_records(preferences: Sequence[PreferenceVerdicts], judge_model: str) -> list[PairRecord]:
    records = []
    for preference in preferences:
        original, swapped = preference.verdicts.get(judge_model, (None, None))
        records.append(
            PairRecord(
                pair_id=preference.preference_id,
                human=preference.human,
                judge_original=original,
                judge_swapped=swapped,
            )
        )
    return records


def judge_models_in(
    judge_scores: Iterable[JudgeScore], preferences: Iterable[PreferenceVerdicts]
) -> list[str]:
    """Return the sorted judge models that scored a rated run or judged a preferred pair."""
    names = {score.judge_model for score in judge_scores}
    for preference in preferences:
        names.update(preference.verdicts)
    return sorted(names)


def rating_statistics(
    ratings: Sequence[RatingRow],
    judge_scores: Sequence[JudgeScore],
    preferences: Sequence[PreferenceVerdicts],
    judge_models: Sequence[str],
) -> dict[str, Any]:
    """Summarise people's ratings and compare them with each judge model in ``judge_models``.

    ``ratings`` are for one criterion, and ``judge_scores`` are the judges' scores on the
    same criterion for the rated runs. A judge without data still gets its figures, with n=0.
    """
    units = people_units(ratings)
    human_means = human_mean_per_run(ratings)
    scores_by_judge = _scores_by_judge(judge_scores)

    per_model_and_rater: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for row in ratings:
        per_model_and_rater[row.model].append((row.rater, row.rating))

    judges = {}
    for judge_model in judge_models:
        scores = scores_by_judge.get(judge_model, {})
        human, judge = _paired(human_means, scores)
        judges[judge_model] = {
            "agreement": score_agreement(human, judge),
            "krippendorff_alpha": _alpha_with_judge(units, judge_model, scores),
            "pairwise": pairwise_agreement(_pair_records(preferences, judge_model)),
        }

    return {
        "count": len(ratings),
        "runs": len(units),
        "raters": len({row.rater for row in ratings}),
        "distribution": rating_distribution([row.rating for row in ratings]),
        "mean_per_model": mean_by_group((row.model, row.rating) for row in ratings),
        "mean_per_model_and_rater": {
            model: mean_by_group(rows) for model, rows in sorted(per_model_and_rater.items())
        },
        "inter_rater": inter_rater_agreement(units),
        "preferences": len(preferences),
        "judges": judges,
    }


def calibration_by_judge(
    ratings: Sequence[RatingRow], judge_scores: Sequence[JudgeScore], judge_models: Sequence[str]
) -> dict[str, Any]:
    """Return judge model -> {n, buckets}: people's mean rating per judge score bucket."""
    human_means = human_mean_per_run(ratings)
    scores_by_judge = _scores_by_judge(judge_scores)
    result = {}
    for judge_model in judge_models:
        human, judge = _paired(human_means, scores_by_judge.get(judge_model, {}))
        result[judge_model] = {"n": len(human), "buckets": calibration_buckets(judge, human)}
    return result
