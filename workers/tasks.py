"""Celery tasks: thin wrappers that load by id and call plain functions."""

from __future__ import annotations

import logging
import uuid

import redis
from sqlalchemy import select

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings, get_settings
from models.db import session_scope
from models.jobs import FINISHED_STATUSES, Job
from workers.broker_queue import job_ids_with_tasks
from workers.calls import redis_client
from workers.celery_app import SERVICE_ERRORS, EvaluationTask, celery_app
from workers.evaluation import RunKey, execute_run
from workers.job_completion import finalize_if_complete
from workers.pairwise import ensure_pair_judged
from workers.recovery import RecoveryPlan, plan_recovery
from workers.scheduling import fire_due_schedules
from workers.webhooks import WebhookFailed, send_alert

logger = logging.getLogger(__name__)

# NOTE: Celery's threads pool does not enforce soft_time_limit (it needs prefork or gevent).
# What bounds a run there is the HTTP timeout per attempt and the rate-limit wait timeout.
SOFT_TIME_LIMIT_S = get_settings().task_soft_time_limit_s

# Run tasks start_job sends between two checks that the job was not cancelled meanwhile.
FAN_OUT_CHECK_EVERY = 500

# Kinds of the jobs this process ran tasks for, so that a run costs no extra database session.
JOB_KINDS_CACHED = 1024
_job_kinds: dict[tuple[str, uuid.UUID], str] = {}


@celery_app.task(
    name="mistralmeter.start_job", base=EvaluationTask, soft_time_limit=SOFT_TIME_LIMIT_S
)
def start_job(job_id: str) -> int:
    """Send one run task per (item, model, repetition); a redelivery re-sends harmlessly."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = session.get(Job, uuid.UUID(job_id))
        if job is None or job.is_finished:
            return 0
        keys = [
            (item["id"], model, repetition)
            for item in job.items
            for model in job.models
            for repetition in range(job.repetitions)
        ]

    for sent, (item_id, model, repetition) in enumerate(keys):
        # A cancel during a large fan-out stops it, instead of queueing thousands of tasks that
        # workers would only skip.
        if sent and sent % FAN_OUT_CHECK_EVERY == 0 and _is_finished(settings, job_id):
            logger.info("job fan-out stopped: job finished", extra=log_fields(job_id=job_id,
                                                                           sent=sent))
            return sent
        run_task.apply_async(
            kwargs={"job_id": job_id, "item_id": item_id, "model": model, "repetition": repetition}
        )
    logger.info("job fanned out", extra=log_fields(job_id=job_id, runs=len(keys)))

    if not keys:
        finalize_if_complete(settings, uuid.UUID(job_id))
    return len(keys)


def _is_finished(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.database_url) as session:
        status = session.execute(
            select(Job.status).where(Job.id == uuid.UUID(job_id))
        ).scalar_one_or_none()
    return status is None or status in FINISHED_STATUSES


@celery_app.task(name="mistralmeter.run", base=EvaluationTask, soft_time_limit=SOFT_TIME_LIMIT_S)
def run_task(*, job_id: str, item_id: str, model: str, repetition: int) -> str:
    settings = get_settings()
    key = RunKey(uuid.UUID(job_id), item_id, model, repetition)
    outcome = execute_run(settings, key)
    if outcome == "job_finished":
        return outcome
    if job_kind(settings, key.job_id) == "comparison":
        ensure_pair_judged(settings, key.job_id, item_id, repetition)

    # Also after a skipped run: the delivery that wrote the last run may have died before this.
    finalize_if_complete(settings, key.job_id)
    return outcome


def job_kind(settings: Settings, job_id: uuid.UUID) -> str | None:
    """Return the job's kind, read once per process because a job's kind never changes."""
    key = (settings.database_url, job_id)
    kind = _job_kinds.get(key)
    if kind is not None:
        return kind

    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        kind = job.kind
    if len(_job_kinds) >= JOB_KINDS_CACHED:
        _job_kinds.clear()
    _job_kinds[key] = kind
    return kind


@celery_app.task(name="mistralmeter.finalize_job", base=EvaluationTask, soft_time_limit=120)
def finalize_job(job_id: str) -> bool:
    return finalize_if_complete(get_settings(), uuid.UUID(job_id))


@celery_app.task(name="mistralmeter.tick_schedules", base=EvaluationTask, soft_time_limit=120)
def tick_schedules() -> int:
    """Start every due schedule; beat sends this every SCHEDULE_TICK_S seconds."""
    return len(fire_due_schedules(get_settings()))


@celery_app.task(name="mistralmeter.recover_lost_tasks", base=EvaluationTask, soft_time_limit=120)
def recover_lost_tasks() -> int:
    """Send again the work of stalled jobs whose tasks the broker lost; return the tasks sent.

    Beat sends this every recovery_interval_s. A call that finds another one running returns
    at once, so two beats never send one job's tasks twice.
    """
    settings = get_settings()
    client = redis_client(settings.redis_url)
    lock = client.lock(f"mistralmeter:recovery:{settings.queue_name}", timeout=300)
    if not lock.acquire(blocking=False):
        return 0
    try:
        plans = plan_recovery(settings, job_ids_with_tasks(client, settings.queue_name))
        return sum(_recover_one(settings, plan) for plan in plans)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            # The lock expired during a very long scan; the next call takes it again.
            logger.warning("recovery lock expired before release")


def _recover_one(settings: Settings, plan: RecoveryPlan) -> int:
    """Recover one job; an error is logged, so that it cannot stop the others' recovery."""
    try:
        return _send_again(settings, plan)
    except SERVICE_ERRORS:
        raise
    except Exception:
        logger.exception("recovery of a stalled job failed", extra=log_fields(job_id=str(plan.job_id)))
        return 0


def _send_again(settings: Settings, plan: RecoveryPlan) -> int:
    job_id = str(plan.job_id)
    if plan.finalize:
        logger.warning("job stalled with every run written, storing its result",
                       extra=log_fields(job_id=job_id))
        finalize_if_complete(settings, plan.job_id)
        return 0

    logger.warning(
        "job stalled and the broker contains none of its tasks, sending them again",
        extra=log_fields(job_id=job_id, tasks=len(plan.run_keys)),
    )
    for item_id, model, repetition in plan.run_keys:
        run_task.apply_async(
            kwargs={"job_id": job_id, "item_id": item_id, "model": model, "repetition": repetition}
        )
    return len(plan.run_keys)


@celery_app.task(
    name="mistralmeter.notify_webhook",
    base=EvaluationTask,
    soft_time_limit=60,
    autoretry_for=(WebhookFailed,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=6,
)
def notify_webhook(job_id: str) -> bool:
    return send_alert(get_settings(), uuid.UUID(job_id))
