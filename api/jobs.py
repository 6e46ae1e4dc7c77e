"""GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel and the results export."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import kombu.exceptions
import redis
from flask import Response, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import func, select, update

from api.errors import Conflict, NotFound
from api.job_submission import settings_for_app
from api.parsing import JSON_PARSER
from api.results_export import CONTENT_TYPES, export_rows
from api.schemas import JobListQuerySchema, JobSchema, ResultsQuerySchema
from mistralmeter.logging_setup import log_fields
from models.db import session_scope
from models.jobs import FINISHED_STATUSES, Job
from models.run_writes import job_progress

logger = logging.getLogger(__name__)

blueprint = Blueprint("jobs", __name__, url_prefix="/jobs", description="Jobs and their results")
# Set before the routes, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER


def parse_job_id(job_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise NotFound(f"job {job_id!r} not found: job ids are UUIDs") from None


def job_document(session, job: Job) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "progress": job_progress(session, job).as_dict(),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "request": job.request,
        "simulated": job.simulated,
        "dataset": {"name": job.dataset_name, "version": job.dataset_version}
        if job.dataset_name
        else None,
        "result": job.result,
        "error": {"message": job.error} if job.error else None,
    }
    return document


@blueprint.route("")
class JobListView(MethodView):
    @blueprint.arguments(JobListQuerySchema, location="query")
    @blueprint.response(200, JobSchema(many=True, exclude=("result", "request")))
    def get(self, query: dict[str, Any]):
        """List jobs, newest first."""
        settings = settings_for_app()
        statement = select(Job).order_by(Job.created_at.desc())
        if query.get("status"):
            statement = statement.where(Job.status == query["status"])
        if query.get("kind"):
            statement = statement.where(Job.kind == query["kind"])
        statement = statement.limit(query["limit"]).offset(query["offset"])

        with session_scope(settings.database_url) as session:
            jobs = session.execute(statement).scalars().all()
            return [job_document(session, job) for job in jobs]


@blueprint.route("/<job_id>")
class JobView(MethodView):
    @blueprint.response(200, JobSchema)
    def get(self, job_id: str):
        """Status, progress (done, failed, total) and, once finished, the result."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            job = session.get(Job, parse_job_id(job_id))
            if job is None:
                raise NotFound(f"job {job_id} not found")
            return job_document(session, job)


@blueprint.route("/<job_id>/cancel")
class CancelView(MethodView):
    @blueprint.response(200, JobSchema(exclude=("result",)))
    def post(self, job_id: str):
        """Cancel a queued or running job; runs already written are kept."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            job = session.get(Job, parse_job_id(job_id), with_for_update=True)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            if job.status in FINISHED_STATUSES:
                raise Conflict(f"job {job_id} is already {job.status}; nothing to cancel")
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(status="cancelled", finished_at=func.now())
            )
            session.refresh(job)
            document = job_document(session, job)

        _remove_queued_tasks(settings, job.id)
        _queue_partial_result(job.id)
        return document


def _remove_queued_tasks(settings, job_id: uuid.UUID) -> None:
    """Drop the job's queued run tasks, so that jobs queued behind them start at once.

    Without this, every task of a cancelled job of 20,000 runs still passes through a worker.
    A failure here leaves the job cancelled, and the workers skip its tasks instead.
    """
    from workers.broker_queue import remove_job_tasks

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=30)
        removed = remove_job_tasks(client, settings.queue_name, str(job_id))
    except redis.RedisError as error:
        logger.warning(
            "queued tasks of cancelled job not removed",
            extra=log_fields(job_id=str(job_id), error=str(error)),
        )
        return
    logger.info("queued tasks of cancelled job removed", extra=log_fields(job_id=str(job_id),
                                                                           tasks=removed))


def _queue_partial_result(job_id: uuid.UUID) -> None:
    """Send a task that summarises the runs written so far. A failure here leaves the job cancelled."""
    from workers.tasks import finalize_job

    try:
        finalize_job.apply_async(args=[str(job_id)], retry=False)
    except (kombu.exceptions.KombuError, redis.RedisError, OSError) as error:
        logger.warning(
            "partial result of cancelled job not queued",
            extra=log_fields(job_id=str(job_id), error=str(error)),
        )


@blueprint.route("/<job_id>/results")
class ResultsView(MethodView):
    @blueprint.arguments(ResultsQuerySchema, location="query")
    @blueprint.response(200)
    def get(self, query: dict[str, Any], job_id: str):
        """Export every run of the job as JSON, JSONL or CSV, streamed row by row."""
        settings = settings_for_app()
        parsed_id = parse_job_id(job_id)
        with session_scope(settings.database_url) as session:
            if session.get(Job, parsed_id) is None:
                raise NotFound(f"job {job_id} not found")

        export_format = query["format"]
        body = stream_with_context(export_rows(settings.database_url, parsed_id, export_format))
        filename = f"mistralmeter-{job_id}.{export_format}"
        return Response(
            body,
            mimetype=CONTENT_TYPES[export_format],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
