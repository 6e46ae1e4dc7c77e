"""Compare a scheduled job with the previous one of its schedule and flag significant changes."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from mistralmeter.comparison_statistics import paired_difference
from models.jobs import Job
from models.schedules import Schedule
from workers.job_results import RunRow, load_run_rows


def regression_report(session: Session, job: Job, rows: list[RunRow]) -> dict[str, Any]:
    """Per model: the paired change in quality and latency against the previous job.

    Prompts are paired by item id; each side is the mean over that prompt's repetitions. A drop
    in quality or a rise in latency is flagged when its 95% bootstrap interval excludes zero
    and the Wilcoxon signed-rank p-value is below the schedule's alpha.
    """
    schedule = session.get(Schedule, job.schedule_id)
    alpha = schedule.alpha if schedule is not None else 0.05
    previous = _previous_job(session, job)
    if previous is None:
        return {"compared_with": None, "flags": [], "note": "first run of this schedule"}
    if previous.dataset_version != job.dataset_version:
        return {
            "compared_with": str(previous.id),
            "flags": [],
            "note": "the dataset version changed since the previous run; nothing was compared",
        }

    previous_rows = load_run_rows(session, previous.id)
    models: dict[str, Any] = {}
    flags: list[dict[str, Any]] = []
    for model in job.models:
        quality = _change(rows, previous_rows, model, _quality)
        latency = _change(rows, previous_rows, model, _latency)
        models[model] = {"quality_score": quality, "total_ms": latency}
        if _significant(quality, alpha) and quality["mean_difference"] < 0:
            flags.append({"model": model, "metric": "quality_score", "change": "drop", **quality})
        if _significant(latency, alpha) and latency["mean_difference"] > 0:
            flags.append({"model": model, "metric": "total_ms", "change": "rise", **latency})

    return {"compared_with": str(previous.id), "alpha": alpha, "models": models, "flags": flags}


def _previous_job(session: Session, job: Job) -> Job | None:
    statement = (
        select(Job)
        .where(
            Job.schedule_id == job.schedule_id,
            Job.id != job.id,
            Job.status == "succeeded",
            Job.created_at < job.created_at,
        )
        .order_by(Job.created_at.desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


def _quality(row: RunRow) -> float | None:
    judgement = row.judgement
    if row.run.status != "succeeded" or judgement is None or judgement.status != "scored":
        return None
    return judgement.overall_score


def _latency(row: RunRow) -> float | None:
    return row.run.total_ms if row.run.status == "succeeded" else None


def _per_item_means(rows: list[RunRow], model: str, metric) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.run.model != model:
            continue
        value = metric(row)
        if value is not None:
            values[row.run.item_id].append(value)
    return {item: float(np.mean(item_values)) for item, item_values in values.items()}


def _change(current: list[RunRow], previous: list[RunRow], model: str, metric) -> dict[str, Any]:
    """Current minus previous, paired by prompt."""
    now = _per_item_means(current, model, metric)
    before = _per_item_means(previous, model, metric)
    common = sorted(set(now) & set(before))
    return paired_difference([now[item] for item in common], [before[item] for item in common])


def _significant(change: dict[str, Any], alpha: float) -> bool:
    if change["ci_low"] is None or change["p_value"] is None:
        return False
    interval_excludes_zero = change["ci_low"] > 0 or change["ci_high"] < 0
    return interval_excludes_zero and change["p_value"] < alpha
