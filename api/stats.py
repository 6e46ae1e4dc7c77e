"""GET /stats: statistics over stored runs, aggregated by PostgreSQL, grouped by model."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from api.job_submission import settings_for_app
from api.schemas import ModelName
from mistralmeter.pricing import PRICES_AS_OF
from mistralmeter.statistics import DEFAULT_CONFIDENCE
from models.db import session_scope
from models.judgements import CRITERIA
from models.stats_queries import (
    CI_METHOD,
    LATENCY_METRICS,
    SCORE_METRIC,
    TOKEN_METRICS,
    GroupStats,
    StatsFilters,
    aggregate_runs,
)

blueprint = Blueprint(
    "stats", __name__, url_prefix="/stats", description="Statistics over stored runs"
)

FILTER_FIELDS = (
    "model", "judge_model", "dataset", "dataset_version", "job_id", "schedule", "simulated",
    "since", "until",
)


class StatsQuerySchema(Schema):
    """Filters of GET /stats. Unknown parameters are rejected, so a typo never widens the query."""

    class Meta:
        unknown = RAISE

    model = ModelName()
    judge_model = ModelName()
    dataset = fields.String(validate=validate.Length(min=1, max=64))
    dataset_version = fields.String(
        validate=validate.Regexp(
            r"^(sha256:)?[0-9a-f]{8,64}$",
            error="must be a dataset version (sha256:<hex>) or at least its first 8 hex digits",
        )
    )
    job_id = fields.UUID()
    schedule = fields.UUID(metadata={"description": "the schedule id (jobs.schedule_id)"})
    simulated = fields.Boolean()
    since = fields.AwareDateTime(
        default_timezone=timezone.utc,
        metadata={"description": "ISO 8601; runs created at or after it (UTC when no offset)"},
    )
    until = fields.AwareDateTime(
        default_timezone=timezone.utc,
        metadata={"description": "ISO 8601; runs created before it (UTC when no offset)"},
    )
    pool_versions = fields.Boolean(
        load_default=False,
        metadata={"description": "pool the versions of a dataset into one group"},
    )

    @validates_schema
    def _window_is_ordered(self, data: dict[str, Any], **_: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since > until:
            raise ValidationError(
                f"since ({since.isoformat()}) is after until ({until.isoformat()}); "
                "swap them or widen the window",
                field_name="since",
            )


@blueprint.route("")
class StatsView(MethodView):
    @blueprint.arguments(StatsQuerySchema, location="query", unknown=RAISE)
    @blueprint.response(200)
    def get(self, query: dict[str, Any]):
        """Aggregate stored runs per model and dataset version: latency, tokens, quality, cost.

        Runs of different dataset versions are separate groups unless pool_versions=true.
        Every metric is a statistics object whose interval is a t interval (`ci_method`).
        """
        settings = settings_for_app()
        filters = filters_from_query(query)
        with session_scope(settings.database_url) as session:
            groups = aggregate_runs(session, filters, pool_versions=query["pool_versions"])

        return {
            "filters": _applied_filters(query),
            "pool_versions": query["pool_versions"],
            "ci_method": CI_METHOD,
            "confidence": DEFAULT_CONFIDENCE,
            "simulated": any(group.simulated for group in groups),
            "groups": [group_document(group) for group in groups],
        }


def filters_from_query(query: dict[str, Any]) -> StatsFilters:
    return StatsFilters(
        model=query.get("model"),
        judge_model=query.get("judge_model"),
        dataset=query.get("dataset"),
        dataset_version=query.get("dataset_version"),
        job_id=query.get("job_id"),
        schedule_id=query.get("schedule"),
        simulated=query.get("simulated"),
        since=query.get("since"),
        until=query.get("until"),
    )


def _applied_filters(query: dict[str, Any]) -> dict[str, Any]:
    applied = {}
    for name in FILTER_FIELDS:
        value = query.get(name)
        if value is None:
            continue
        applied[name] = value.isoformat() if isinstance(value, datetime) else value
        if name in ("job_id", "schedule"):
            applied[name] = str(value)
    return applied


def group_document(group: GroupStats) -> dict[str, Any]:
    """Build one group in the names that job summaries use: runs, latency, tokens, quality, cost."""
    return {
        "model": group.model,
        "simulated": group.simulated,
        "dataset": _dataset_document(group),
        "runs": {"total": group.total, "succeeded": group.succeeded, "failed": group.failed},
        "error_rate": group.failed / group.total if group.total else None,
        "errors": group.errors,
        "latency": {name: group.metrics[name] for name in LATENCY_METRICS},
        "tokens": {name: group.metrics[name] for name in TOKEN_METRICS},
        "quality": {
            "score": group.metrics[SCORE_METRIC],
            # Over per-prompt means (repetitions of a prompt in one job count once).
            "score_by_prompt": group.metrics["score_by_prompt"],
            "criteria_scores": {name: group.metrics[name] for name in CRITERIA},
            "judged": group.judged,
            "unscored": group.unscored,
            "unscored_rate": group.unscored / group.judged if group.judged else None,
            "judge_models": group.judge_models,
        },
        "cost": {
            "candidate_usd": group.candidate_cost_usd,
            "judge_usd": group.judge_cost_usd,
            "total_usd": group.candidate_cost_usd + group.judge_cost_usd,
            "unpriced_runs": group.succeeded - group.priced_runs,
            "estimate": True,
            "prices_as_of": PRICES_AS_OF,
        },
        "first_run_at": group.first_run_at.isoformat(),
        "last_run_at": group.last_run_at.isoformat(),
    }


def _dataset_document(group: GroupStats) -> dict[str, Any] | None:
    if group.dataset_name is None:
        return None
    return {
        "name": group.dataset_name,
        "version": group.dataset_version,
        "versions": group.dataset_versions,
    }
