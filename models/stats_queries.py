"""Aggregate statistics over stored runs, computed by PostgreSQL aggregate queries.

Each metric is summarised with count, avg, stddev_samp, min, max and percentile_cont inside
the database, so a request transfers one row per group, never one row per run. The confidence
interval of the mean is a Student t interval built from n, mean and standard deviation,
because the bootstrap interval of mistralmeter.statistics.describe() needs every value. The
choice is explained in docs/statistics.md.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scipy import stats as scipy_stats
from sqlalchemy import Float, and_, case, cast, distinct, func, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mistralmeter.statistics import DEFAULT_CONFIDENCE, empty_statistics
from models.jobs import Job
from models.judgements import CRITERIA, Judgement
from models.runs import Run

LATENCY_METRICS = (
    "total_ms",
    "time_to_first_token_ms",
    "tokens_per_second",
    "decode_tokens_per_second",
    "inter_token_latency_ms",
)
TOKEN_METRICS = ("input_tokens", "output_tokens", "total_tokens")
SCORE_METRIC = "score"
QUALITY_METRICS = (SCORE_METRIC, *CRITERIA)
CI_METHOD = "t"

PERCENTILES = (0.5, 0.95, 0.99)
VERSION_PREFIX = "sha256:"


@dataclass(frozen=True)
class StatsFilters:
    """Restrictions on the runs to aggregate; None means none. The window is since <= t < until."""

    model: str | None = None
    judge_model: str | None = None
    dataset: str | None = None
    dataset_version: str | None = None
    job_id: uuid.UUID | None = None
    schedule_id: uuid.UUID | None = None
    simulated: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class GroupStats:
    """Aggregates of one group of runs: one model, one simulated flag and one dataset version.

    With pool_versions the group spans every version of a dataset: `dataset_version` is None
    and `dataset_versions` lists the pooled versions.
    """

    model: str
    simulated: bool
    dataset_name: str | None
    dataset_version: str | None
    dataset_versions: list[str]
    total: int
    succeeded: int
    judged: int
    scored: int
    candidate_cost_usd: float
    judge_cost_usd: float
    priced_runs: int
    judge_models: list[str]
    first_run_at: datetime
    last_run_at: datetime
    metrics: dict[str, dict[str, Any]]
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.total - self.succeeded

    @property
    def unscored(self) -> int:
        return self.judged - self.scored


def aggregate_runs(
    session: Session,
    filters: StatsFilters,
    *,
    pool_versions: bool = False,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[GroupStats]:
    """Aggregate the runs that match `filters`, one GroupStats per group, ordered by group key.

    Runs of different dataset versions are separate groups unless pool_versions is True.
    """
    conditions = filter_conditions(filters)
    keys = _group_columns(pool_versions)

    statement = (
        select(*keys, *_count_columns(pool_versions), *_metric_columns())
        .select_from(Run)
        .join(Job, Job.id == Run.job_id)
        .outerjoin(Judgement, Judgement.run_id == Run.id)
        .where(*conditions)
        .group_by(*keys)
        .order_by(*keys)
    )
    rows = session.execute(statement).mappings().all()
    errors = _error_counts(session, conditions, keys)
    prompt_scores = _prompt_score_statistics(session, conditions, pool_versions, confidence)

    groups = []
    for row in rows:
        group = _group_from_row(row, pool_versions, confidence)
        group.errors = errors.get(_key_of(row), {})
        group.metrics["score_by_prompt"] = prompt_scores.get(_key_of(row), empty_statistics())
        groups.append(group)
    return groups


def _prompt_score_statistics(
    session: Session,
    conditions: list[ColumnElement[bool]],
    pool_versions: bool,
    confidence: float,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Statistics over per-prompt mean scores: a prompt's repetitions in one job count once."""
    keys = _group_columns(pool_versions)
    per_prompt = (
        select(*keys, func.avg(Judgement.overall_score).label("prompt_mean"))
        .select_from(Run)
        .join(Job, Job.id == Run.job_id)
        .join(Judgement, Judgement.run_id == Run.id)
        .where(*conditions, Run.status == "succeeded", Judgement.status == "scored")
        .group_by(*keys, Run.job_id, Run.item_id)
        .subquery()
    )
    outer_keys = [per_prompt.c[column.key] for column in keys]
    value = per_prompt.c.prompt_mean
    statement = select(
        *outer_keys,
        func.count(value).label("n"),
        func.avg(value).label("mean"),
        func.stddev_samp(value).label("std_dev"),
        func.min(value).label("minimum"),
        func.max(value).label("maximum"),
        func.percentile_cont(array([*PERCENTILES], type_=Float)).within_group(value).label("percentiles"),
    ).group_by(*outer_keys)

    results = {}
    for row in session.execute(statement).mappings():
        results[_key_of(row)] = statistics_from_aggregates(
            n=int(row["n"]),
            mean=row["mean"],
            std_dev=row["std_dev"],
            minimum=row["minimum"],
            maximum=row["maximum"],
            percentiles=row["percentiles"],
            confidence=confidence,
        )
    return results


def filter_conditions(filters: StatsFilters) -> list[ColumnElement[bool]]:
    """Build the WHERE conditions for `filters`; the query joins runs to jobs."""
    conditions: list[ColumnElement[bool]] = []
    if filters.model is not None:
        conditions.append(Run.model == filters.model)
    if filters.judge_model is not None:
        # The job's judge, not the judgement's: failed runs have no judgement but must still
        # count in the error rate of "runs judged by X".
        conditions.append(Job.judge_model == filters.judge_model)
    if filters.dataset is not None:
        conditions.append(Run.dataset_name == filters.dataset)
    if filters.dataset_version is not None:
        conditions.append(
            Run.dataset_version.startswith(
                normalise_version(filters.dataset_version), autoescape=True
            )
        )
    if filters.job_id is not None:
        conditions.append(Run.job_id == filters.job_id)
    if filters.schedule_id is not None:
        conditions.append(Job.schedule_id == filters.schedule_id)
    if filters.simulated is not None:
        conditions.append(Run.simulated.is_(filters.simulated))
    if filters.since is not None:
        conditions.append(Run.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(Run.created_at < filters.until)
    return conditions


def normalise_version(version: str) -> str:
    """Add the "sha256:" prefix that users often leave out; a shorter hex string is a prefix."""
    return version if version.startswith(VERSION_PREFIX) else VERSION_PREFIX + version


def _group_columns(pool_versions: bool) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = [Run.model, Run.simulated, Run.dataset_name]
    if not pool_versions:
        columns.append(Run.dataset_version)
    return columns


def _count_columns(pool_versions: bool) -> list[ColumnElement[Any]]:
    succeeded = Run.status == "succeeded"
    columns = [
        func.count().label("total"),
        func.count().filter(succeeded).label("succeeded"),
        func.count(Judgement.id).filter(succeeded).label("judged"),
        func.count(Judgement.id).filter(and_(succeeded, Judgement.status == "scored")).label(
            "scored"
        ),
        func.coalesce(func.sum(Run.cost_usd), 0.0).label("candidate_cost_usd"),
        func.coalesce(func.sum(Judgement.cost_usd), 0.0).label("judge_cost_usd"),
        func.count(Run.cost_usd).label("priced_runs"),
        func.array_agg(distinct(Judgement.judge_model))
        .filter(Judgement.judge_model.is_not(None))
        .label("judge_models"),
        func.min(Run.created_at).label("first_run_at"),
        func.max(Run.created_at).label("last_run_at"),
    ]
    if pool_versions:
        columns.append(
            func.array_agg(distinct(Run.dataset_version))
            .filter(Run.dataset_version.is_not(None))
            .label("dataset_versions")
        )
    return columns


def _metric_sources() -> dict[str, ColumnElement[Any]]:
    """Each metric as a float8 expression that is NULL for runs it must not count.

    Latency and tokens count succeeded runs only; quality counts scored judgements only,
    because an unparsed verdict is not a low score.
    """
    succeeded = Run.status == "succeeded"
    scored = and_(succeeded, Judgement.status == "scored")
    sources: dict[str, ColumnElement[Any]] = {}
    for name in (*LATENCY_METRICS, *TOKEN_METRICS):
        sources[name] = case((succeeded, cast(getattr(Run, name), Float)))
    sources[SCORE_METRIC] = case((scored, cast(Judgement.overall_score, Float)))
    for name in CRITERIA:
        sources[name] = case((scored, cast(getattr(Judgement, name), Float)))
    return sources


def _metric_columns() -> list[ColumnElement[Any]]:
    # Every aggregate ignores NULL, so the CASE expressions above act as per-metric filters.
    percentiles = array([*PERCENTILES], type_=Float)
    columns = []
    for name, value in _metric_sources().items():
        columns.extend(
            [
                func.count(value).label(f"{name}__n"),
                func.avg(value).label(f"{name}__mean"),
                func.stddev_samp(value).label(f"{name}__std_dev"),
                func.min(value).label(f"{name}__min"),
                func.max(value).label(f"{name}__max"),
                func.percentile_cont(percentiles)
                .within_group(value)
                .label(f"{name}__percentiles"),
            ]
        )
    return columns


def _error_counts(
    session: Session, conditions: list[ColumnElement[bool]], keys: list[ColumnElement[Any]]
) -> dict[tuple[Any, ...], dict[str, int]]:
    reason = func.coalesce(Run.error_reason, "unknown").label("reason")
    statement = (
        select(*keys, reason, func.count().label("count"))
        .select_from(Run)
        .join(Job, Job.id == Run.job_id)
        .where(*conditions, Run.status == "failed")
        .group_by(*keys, reason)
    )
    counts: dict[tuple[Any, ...], dict[str, int]] = {}
    for row in session.execute(statement).mappings():
        counts.setdefault(_key_of(row), {})[row["reason"]] = int(row["count"])
    return counts


def _key_of(row: Any) -> tuple[Any, ...]:
    return (row["model"], row["simulated"], row["dataset_name"], row.get("dataset_version"))


def _group_from_row(row: Any, pool_versions: bool, confidence: float) -> GroupStats:
    versions = sorted(row["dataset_versions"] or []) if pool_versions else []
    if not pool_versions and row["dataset_version"] is not None:
        versions = [row["dataset_version"]]
    return GroupStats(
        model=row["model"],
        simulated=row["simulated"],
        dataset_name=row["dataset_name"],
        dataset_version=None if pool_versions else row["dataset_version"],
        dataset_versions=versions,
        total=int(row["total"]),
        succeeded=int(row["succeeded"]),
        judged=int(row["judged"]),
        scored=int(row["scored"]),
        candidate_cost_usd=float(row["candidate_cost_usd"]),
        judge_cost_usd=float(row["judge_cost_usd"]),
        priced_runs=int(row["priced_runs"]),
        judge_models=sorted(row["judge_models"] or []),
        first_run_at=row["first_run_at"],
        last_run_at=row["last_run_at"],
        metrics={
            name: statistics_from_aggregates(
                n=int(row[f"{name}__n"]),
                mean=row[f"{name}__mean"],
                std_dev=row[f"{name}__std_dev"],
                minimum=row[f"{name}__min"],
                maximum=row[f"{name}__max"],
                percentiles=row[f"{name}__percentiles"],
                confidence=confidence,
            )
            for name in _metric_sources()
        },
    )


def statistics_from_aggregates(
    *,
    n: int,
    mean: float | None,
    std_dev: float | None,
    minimum: float | None,
    maximum: float | None,
    percentiles: list[float] | None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Build the statistics object of mistralmeter.statistics.describe() from SQL aggregates.

    Follows describe()'s rules for small and constant samples: n = 0 gives empty_statistics(),
    n = 1 has no std_dev and no interval, and constant data has mean v, std_dev 0 and the
    interval [v, v]. The interval is the t interval of mean_t_interval().
    """
    if n == 0 or mean is None or minimum is None or maximum is None or percentiles is None:
        return empty_statistics()

    mean, minimum, maximum = float(mean), float(minimum), float(maximum)
    p50, p95, p99 = (float(value) for value in percentiles)
    if n >= 2 and minimum == maximum:
        # avg() and stddev_samp() can be an ulp off for constant data; describe() is exact here.
        mean, std, interval = minimum, 0.0, (minimum, minimum)
    elif n >= 2:
        std = float(std_dev) if std_dev is not None else 0.0
        interval = mean_t_interval(n, mean, std, confidence)
    else:
        std, interval = None, (None, None)

    return {
        "n": n,
        "mean": mean,
        "std_dev": std,
        "min": minimum,
        "max": maximum,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "ci_low": interval[0],
        "ci_high": interval[1],
    }


def mean_t_interval(
    n: int, mean: float, std_dev: float, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Compute the Student t confidence interval of a mean: mean +- t(n-1) * std_dev / sqrt(n).

    Requires n >= 2. Its coverage is exact for normally distributed values. For small, skewed
    samples it differs from describe()'s bootstrap interval, which is not symmetric.
    """
    if n < 2:
        raise ValueError(f"a t interval needs n >= 2, got n={n}")
    critical = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    half_width = critical * std_dev / math.sqrt(n)
    return mean - half_width, mean + half_width
