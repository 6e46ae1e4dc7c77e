"""Scheduled benchmarks: create, list, show with regression flags, update, delete."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.parsing import JSON_PARSER
from sqlalchemy import select

from api.errors import Conflict, NotFound
from api.job_submission import check_models, check_run_budget, settings_for_app
from api.datasets import resolve_dataset_items
from api.schedule_schemas import ScheduleCreateSchema, ScheduleSchema, ScheduleUpdateSchema
from models.db import session_scope
from models.jobs import Job
from models.schedules import Schedule
from workers.scheduling import next_fire_time
from workers.webhooks import redact_url

blueprint = Blueprint(
    "schedules", __name__, url_prefix="/schedules", description="Scheduled benchmarks"
)
# Set before the routes, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER

RECENT_JOBS = 10


def schedule_document(session, schedule: Schedule, *, with_jobs: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": str(schedule.id),
        "name": schedule.name,
        "dataset": schedule.dataset_name,
        "version": schedule.dataset_version,
        "limit": schedule.limit,
        "models": schedule.models,
        "judge_model": schedule.judge_model,
        "runs": schedule.runs,
        "params": schedule.params,
        "judge": schedule.judge,
        "cron": schedule.cron,
        "enabled": schedule.enabled,
        "webhook_url": redact_url(schedule.webhook_url),
        "alpha": schedule.alpha,
        "next_run_at": schedule.next_run_at,
        "last_run_at": schedule.last_run_at,
        "last_job_id": str(schedule.last_job_id) if schedule.last_job_id else None,
    }
    if with_jobs:
        document["recent_jobs"] = _recent_jobs(session, schedule.id)
    return document


def _recent_jobs(session, schedule_id: uuid.UUID) -> list[dict[str, Any]]:
    jobs = session.execute(
        select(Job)
        .where(Job.schedule_id == schedule_id)
        .order_by(Job.created_at.desc())
        .limit(RECENT_JOBS)
    ).scalars()
    return [
        {
            "job_id": str(job.id),
            "status": job.status,
            "created_at": job.created_at.isoformat(),
            "dataset_version": job.dataset_version,
            "regression_flags": ((job.result or {}).get("regression") or {}).get("flags", []),
        }
        for job in jobs
    ]


def check_schedule_budget(
    settings, dataset: str, version: str | None, limit: int | None, models: list[str], runs: int
) -> None:
    """Raise Unprocessable when each job of a schedule would exceed max_runs_per_job.

    The count uses the dataset version the next job would use, which for a schedule without a
    pinned version is the latest one. Raises NotFound for an unknown dataset or version.
    """
    _, _, items = resolve_dataset_items(settings, dataset, version, limit)
    check_run_budget(settings, len(items) * len(models) * runs)


def find_schedule(session, key: str) -> Schedule:
    """Look a schedule up by id or by name."""
    try:
        schedule = session.get(Schedule, uuid.UUID(key))
    except ValueError:
        schedule = session.execute(select(Schedule).where(Schedule.name == key)).scalar_one_or_none()
    if schedule is None:
        raise NotFound(f"schedule {key!r} not found")
    return schedule


@blueprint.route("")
class ScheduleListView(MethodView):
    @blueprint.response(200, ScheduleSchema(many=True, exclude=("recent_jobs",)))
    def get(self):
        """List schedules."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            schedules = session.execute(select(Schedule).order_by(Schedule.name)).scalars()
            return [schedule_document(session, schedule) for schedule in schedules]

    @blueprint.arguments(ScheduleCreateSchema)
    @blueprint.response(201, ScheduleSchema)
    def post(self, body: dict[str, Any]):
        """Create a schedule; Celery beat starts a job each time the cron expression fires."""
        settings = settings_for_app()
        fields = {f"models.{index}": model for index, model in enumerate(body["models"])}
        check_models(settings, {**fields, "judge_model": body["judge_model"]})

        # Rejects an unknown dataset or version and a job over the run limit before storing.
        check_schedule_budget(
            settings, body["dataset"], body["version"], body["limit"], body["models"], body["runs"]
        )

        with session_scope(settings.database_url) as session:
            if session.execute(
                select(Schedule.id).where(Schedule.name == body["name"])
            ).first():
                raise Conflict(f"a schedule named {body['name']!r} exists; choose another name")
            schedule = Schedule(
                name=body["name"],
                dataset_name=body["dataset"],
                dataset_version=body["version"],
                limit=body["limit"],
                models=body["models"],
                judge_model=body["judge_model"],
                runs=body["runs"],
                params=body["params"],
                judge=body["judge"],
                cron=body["cron"],
                enabled=body["enabled"],
                webhook_url=body["webhook_url"],
                alpha=body["alpha"],
                next_run_at=next_fire_time(body["cron"], datetime.now(timezone.utc)),
            )
            session.add(schedule)
            session.flush()
            return schedule_document(session, schedule, with_jobs=True), 201


@blueprint.route("/<key>")
class ScheduleView(MethodView):
    @blueprint.response(200, ScheduleSchema)
    def get(self, key: str):
        """Show a schedule (by id or name) with its recent jobs and their regression flags."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            return schedule_document(session, find_schedule(session, key), with_jobs=True)

    @blueprint.arguments(ScheduleUpdateSchema)
    @blueprint.response(200, ScheduleSchema)
    def patch(self, body: dict[str, Any], key: str):
        """Enable or disable a schedule, or change its cron expression, webhook or alpha.

        A schedule that is enabled after the change must fit max_runs_per_job on the dataset's
        current version, because a newer version of an unpinned dataset may have more prompts
        than when the schedule was created. The limit never rejects disabling.
        """
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            schedule = find_schedule(session, key)
            for name, value in body.items():
                setattr(schedule, name, value)
            if schedule.enabled:
                check_schedule_budget(
                    settings,
                    schedule.dataset_name,
                    schedule.dataset_version,
                    schedule.limit,
                    schedule.models,
                    schedule.runs,
                )
            if "cron" in body or body.get("enabled"):
                schedule.next_run_at = next_fire_time(schedule.cron, datetime.now(timezone.utc))
            session.flush()
            return schedule_document(session, schedule, with_jobs=True)

    @blueprint.response(204)
    def delete(self, key: str):
        """Delete a schedule; its past jobs and runs are kept."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            session.delete(find_schedule(session, key))
        return None
