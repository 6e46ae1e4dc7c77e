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

# Metrics compared pair by pair; quality comes from the single-answer judgements.
PAIRED_METRICS = (*LATENCY_FIELDS, "output_tokens", "cost_usd", "quality_score")


def load_pairwise(session: Session, job_id: Any) -> list[PairwiseJudgement]:
    statement = select(PairwiseJudgement).where(PairwiseJudgement.job_id == job_id)
    return list(session.execute(statement).scalars())


def comparison_section(
    job: Job, rows: list[RunRow], verdicts: list[PairwiseJudgement]
) -> dict[str, Any]:
    model_a, model_b = job.models
    pairs = _paired_rows(rows, model_a, model_b)

    return {
        "model_a": model_a,
        "model_b": model_b,
        "judge_model": job.judge_model,
        "pairs": len(pairs),
        # Each difference is model_a minus model_b over the pairs where both values exist.
        "differences": {name: _paired(pairs, name) for name in PAIRED_METRICS},
        "latency_ratio_p95": _p95_ratio(rows, model_a, model_b),
        "pairwise": pairwise_summary(verdicts, _item_of_runs(rows)),
    }


def _item_of_runs(rows: list[RunRow]) -> dict[Any, str]:
    return {row.run.id: row.run.item_id for row in rows}


def _paired_rows(rows: list[RunRow], model_a: str, model_b: str) -> list[tuple[RunRow, RunRow]]:
    by_key: dict[tuple[str, int], dict[str, RunRow]] = {}
    for row in rows:
        by_key.setdefault((row.run.item_id, row.run.repetition), {})[row.run.model] = row
    pairs = []
    for key in sorted(by_key):
        group = by_key[key]
        if model_a in group and model_b in group:
            pairs.append((group[model_a], group[model_b]))
    return pairs


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


def _paired(pairs: list[tuple[RunRow, RunRow]], name: str) -> dict[str, Any]:
    """Paired difference over prompts: each side is the prompt's mean over its repetitions.

    Repetitions of one prompt are not independent, so the prompt is the unit of the bootstrap
    and of the Wilcoxon test.
    """
    by_item: dict[str, tuple[list[float], list[float]]] = {}
    for row_a, row_b in pairs:
        value_a, value_b = _metric(row_a, name), _metric(row_b, name)
        if value_a is not None and value_b is not None:
            a_values, b_values = by_item.setdefault(row_a.run.item_id, ([], []))
            a_values.append(value_a)
            b_values.append(value_b)
    means_a = [float(np.mean(a)) for a, _ in by_item.values()]
    means_b = [float(np.mean(b)) for _, b in by_item.values()]
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
