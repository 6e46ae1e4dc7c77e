"""The comparison section of a result: paired metric differences and pairwise verdicts."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from mistralmeter.comparison_statistics import paired_difference, pairwise_outcome
from mistralmeter.statistics import rate_with_interval
from models.jobs import Job
from models.judgements import PairwiseJudgement
from workers.job_results import LATENCY_FIELDS, RunRow

OUTCOME_POINTS = {"a": 1.0, "tie": 0.5, "b": 0.0}

# Metrics compared prompt by prompt. quality_score comes from the single-answer judgements.
PAIRED_METRICS = (*LATENCY_FIELDS, "output_tokens", "cost_usd", "quality_score")


def load_pairwise(session: Session, job_id: Any) -> list[PairwiseJudgement]:
    statement = select(PairwiseJudgement).where(PairwiseJudgement.job_id == job_id)
    return list(session.execute(statement).scalars())


def comparison_section(
    job: Job, rows: list[RunRow], verdicts: list[PairwiseJudgement]
) -> dict[str, Any]:
    model_a, model_b = job.models

    return {
        "model_a": model_a,
        "model_b": model_b,
        "judge_model": job.judge_model,
        "pairs": _count_run_pairs(rows, model_a, model_b),
        "differences": {
            name: _prompt_difference(rows, model_a, model_b, name) for name in PAIRED_METRICS
        },
        "latency_ratio_p95": _p95_ratio(rows, model_a, model_b),
        "pairwise": pairwise_summary(verdicts, _item_of_runs(rows)),
    }


def _item_of_runs(rows: list[RunRow]) -> dict[Any, str]:
    return {row.run.id: row.run.item_id for row in rows}


def _count_run_pairs(rows: list[RunRow], model_a: str, model_b: str) -> int:
    """Count (prompt, repetition) slots with a stored run of both models, failed runs included."""
    models_by_slot: dict[tuple[str, int], set[str]] = defaultdict(set)
    for row in rows:
        models_by_slot[(row.run.item_id, row.run.repetition)].add(row.run.model)
    return sum(1 for models in models_by_slot.values() if {model_a, model_b} <= models)


def _metric(row: RunRow, name: str) -> float | None:
    if row.run.status != "succeeded":
        return None
    if name == "quality_score":
        judgement = row.judgement
        if judgement is None or judgement.status != "scored":
            return None
        return judgement.overall_score
    value = getattr(row.run, name)
    return float(value) if value is not None else None


def _prompt_difference(
    rows: list[RunRow], model_a: str, model_b: str, name: str
) -> dict[str, Any]:
    """Compare model_a with model_b prompt by prompt, as a paired difference of prompt means.

    Each side of a prompt is the mean of that model's values on it: succeeded runs only, and
    for quality_score only runs with a scored judgement. A prompt is a pair when both sides
    have at least one value, and is left out otherwise. Repetitions are not matched across
    models, because repetition i of model_a and repetition i of model_b are independent calls.
    The prompt is the unit of the bootstrap and of the Wilcoxon test, because repetitions of
    one prompt are not independent samples.
    """
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        value = _metric(row, name)
        if value is not None:
            values[(row.run.item_id, row.run.model)].append(value)

    # Sorted by prompt id, so the seeded bootstrap resamples the same order on every call.
    prompts = sorted(
        {
            item_id
            for item_id, _ in values
            if (item_id, model_a) in values and (item_id, model_b) in values
        }
    )
    means_a = [float(np.mean(values[(item_id, model_a)])) for item_id in prompts]
    means_b = [float(np.mean(values[(item_id, model_b)])) for item_id in prompts]
    return paired_difference(means_a, means_b)


def _p95_ratio(rows: list[RunRow], model_a: str, model_b: str) -> float | None:
    """Return model_b's p95 total time divided by model_a's; above 1 means a is faster."""

    def p95(model: str) -> float | None:
        values = [r.run.total_ms for r in rows if r.run.model == model and r.run.total_ms]
        return float(np.percentile(values, 95)) if values else None

    p95_a, p95_b = p95(model_a), p95(model_b)
    if not p95_a or p95_b is None:
        return None
    return p95_b / p95_a


def pairwise_summary(
    verdicts: list[PairwiseJudgement], item_of_run: dict[Any, str]
) -> dict[str, Any]:
    """Wins, ties and losses of model_a per prompt, with the win rate, interval and sign test.

    With several repetitions a prompt's outcome is the mean of its verdicts (a = 1, tie = 0.5,
    b = 0): above 0.5 is a win for model_a, below a loss, exactly 0.5 a tie. Counting each
    repetition as its own sample would overstate the evidence.
    """
    scored = [verdict for verdict in verdicts if verdict.outcome is not None]
    per_prompt: dict[str, list[float]] = defaultdict(list)
    for verdict in scored:
        per_prompt[item_of_run[verdict.run_a_id]].append(OUTCOME_POINTS[verdict.outcome])
    prompt_points = [float(np.mean(points)) for points in per_prompt.values()]
    wins = sum(1 for points in prompt_points if points > 0.5)
    losses = sum(1 for points in prompt_points if points < 0.5)
    ties = len(prompt_points) - wins - losses

    consistent = sum(1 for verdict in scored if verdict.consistent)
    # In the original order model_a is shown first; in the swapped order model_b is.
    first_shown_wins = sum(
        (verdict.verdict_original == "a") + (verdict.verdict_swapped == "b") for verdict in scored
    )
    decided_orders = sum(
        (verdict.verdict_original in ("a", "b")) + (verdict.verdict_swapped in ("a", "b"))
        for verdict in scored
    )

    outcome = pairwise_outcome(wins, ties, losses)
    outcome["unit"] = "prompt"
    outcome["verdicts"] = len(scored)
    outcome["unscored"] = len(verdicts) - len(scored)
    outcome["unscored_reasons"] = sorted(
        {v.unscored_reason.split(":")[0] for v in verdicts if v.unscored_reason}
    )
    outcome["position_consistency"] = rate_with_interval(consistent, len(scored))
    outcome["first_shown_win_rate"] = rate_with_interval(first_shown_wins, decided_orders)
    return outcome
