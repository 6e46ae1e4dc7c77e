"""Create a job row, commit it, then enqueue it: the order that never leaves a half-written job."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app

from api.errors import ServiceUnavailable, Unprocessable
from api.model_catalog import CatalogUnavailable, known_models
from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings
from models.db import session_scope
from models.jobs import Job

logger = logging.getLogger(__name__)


def settings_for_app() -> Settings:
    return current_app.config["MISTRALMETER_SETTINGS"]


def check_models(settings: Settings, fields_and_models: dict[str, str | None]) -> None:
    """Reject model names the server does not offer, naming the field that held them."""
    wanted = {field: model for field, model in fields_and_models.items() if model}
    try:
        available = known_models(settings)
    except CatalogUnavailable as exc:
        raise ServiceUnavailable(f"{exc}; check that the model server is running") from exc

    for field, model in wanted.items():
        if model not in available:
            choices = ", ".join(sorted(available)) or "none"
            detail = f"unknown model {model!r}; the server offers: {choices}"
            raise Unprocessable(f"{field}: {detail}", errors={"json": {field: [detail]}})


def check_run_budget(settings: Settings, total_runs: int) -> None:
    if total_runs > settings.max_runs_per_job:
        raise Unprocessable(
            f"this job would make {total_runs} runs; the limit is {settings.max_runs_per_job} "
            "(lower runs or use fewer prompts or models; dataset evaluations, comparisons and "
            "schedules also take limit, which keeps the first N items)",
            field="runs",
        )


def submit_job(
    settings: Settings,
    *,
    kind: str,
    request_document: dict[str, Any],
    items: list[dict[str, Any]],
    models: list[str],
    repetitions: int,
    judge_model: str | None,
    dataset_name: str | None = None,
    dataset_version: str | None = None,
) -> Job:
    total_runs = len(items) * len(models) * repetitions
    check_run_budget(settings, total_runs)

    with session_scope(settings.database_url) as session:
        job = Job(
            kind=kind,
            status="queued",
            request=request_document,
            items=items,
            models=models,
            repetitions=repetitions,
            total_runs=total_runs,
            judge_model=judge_model,
            dataset_name=dataset_name,
            dataset_version=dataset_version,
            simulated=settings.uses_simulator,
        )
        session.add(job)
        session.flush()
        job_id = job.id

    _enqueue(settings, job)
    logger.info(
        "job submitted",
        extra=log_fields(job_id=str(job_id), kind=kind, runs=total_runs, models=",".join(models)),
    )
    return job


def _enqueue(settings: Settings, job: Job) -> None:
    # Imported here so that importing the API does not connect to the broker.
    from workers.tasks import start_job

    try:
        start_job.apply_async(args=[str(job.id)], retry=False)
    except Exception as exc:  # kombu raises several connection error types
        with session_scope(settings.database_url) as session:
            session.query(Job).filter(Job.id == job.id).delete()
        logger.error("enqueue failed", extra=log_fields(job_id=str(job.id), error=str(exc)))
        raise ServiceUnavailable(
            "the job queue (Redis) is unavailable; nothing was stored, try again"
        ) from exc
