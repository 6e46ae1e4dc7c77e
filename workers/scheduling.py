"""Start due schedules: one job each, created in the same transaction that moves next_run_at."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from croniter import croniter
from sqlalchemy import select

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings
from models.dataset_store import get_latest, get_version, sync_builtin_datasets
from models.db import session_scope
from models.jobs import Job
from models.schedules import Schedule

logger = logging.getLogger(__name__)


def next_fire_time(cron: str, after: datetime) -> datetime:
    """Return the first time strictly after `after` that matches the cron expression (UTC)."""
    return croniter(cron, after).get_next(datetime)


def fire_due_schedules(settings: Settings, now: datetime | None = None) -> list[uuid.UUID]:
    """Create a job for every enabled schedule whose next_run_at has passed; return the job ids.

    Rows are locked with SKIP LOCKED, so several beat or worker processes ticking at once
    never start one schedule twice.
    """
    now = now or datetime.now(timezone.utc)
    created: list[uuid.UUID] = []

    with session_scope(settings.database_url) as session:
        sync_builtin_datasets(session, settings.database_url)
        due = session.execute(
            select(Schedule)
            .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
            .with_for_update(skip_locked=True)
        ).scalars().all()

        for schedule in due:
            job = _job_for(session, settings, schedule)
            schedule.next_run_at = next_fire_time(schedule.cron, now)
            schedule.last_run_at = now
            if job is None:
                continue
            session.add(job)
            session.flush()
            schedule.last_job_id = job.id
            created.append(job.id)

    # Enqueued after commit, so a worker never looks for a job that is not visible yet.
    from workers.tasks import start_job

    for job_id in created:
        start_job.apply_async(args=[str(job_id)])
        logger.info("scheduled job started", extra=log_fields(job_id=str(job_id)))
    return created


def _job_for(session, settings: Settings, schedule: Schedule) -> Job | None:
    if schedule.dataset_version:
        dataset = get_version(session, schedule.dataset_name, schedule.dataset_version)
    else:
        dataset = get_latest(session, schedule.dataset_name)
    if dataset is None:
        logger.error(
            "schedule skipped: dataset not found",
            extra=log_fields(schedule_id=str(schedule.id), dataset=schedule.dataset_name),
        )
        return None

    items = list(dataset.items)[: schedule.limit] if schedule.limit else list(dataset.items)
    total_runs = len(items) * len(schedule.models) * schedule.runs
    # The API checks this at create and update time, but a newer version of an unpinned
    # dataset can grow past it later without any request on the schedule.
    if total_runs > settings.max_runs_per_job:
        logger.error(
            "schedule skipped: job would exceed max_runs_per_job",
            extra=log_fields(
                schedule_id=str(schedule.id),
                dataset=dataset.name,
                version=dataset.version,
                runs=total_runs,
                max_runs_per_job=settings.max_runs_per_job,
            ),
        )
        return None

    request = {
        "schedule": schedule.name,
        "dataset": dataset.name,
        "version": dataset.version,
        "models": schedule.models,
        "judge_model": schedule.judge_model,
        "runs": schedule.runs,
        "params": schedule.params,
        "judge": schedule.judge,
    }
    return Job(
        kind="scheduled",
        status="queued",
        request=request,
        items=items,
        models=list(schedule.models),
        repetitions=schedule.runs,
        total_runs=total_runs,
        judge_model=schedule.judge_model,
        dataset_name=dataset.name,
        dataset_version=dataset.version,
        schedule_id=schedule.id,
        simulated=settings.uses_simulator,
    )
