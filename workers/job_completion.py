"""Decide from the database whether a job is complete, and store its result exactly once."""

from __future__ import annotations

import logging
import uuid
from collections import Counter

from sqlalchemy import func

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings
from models.db import session_scope
from workers.celery_app import SERVICE_ERRORS
from models.jobs import Job
from models.run_writes import Progress, job_progress, lock_job, pairs_pending
from workers.comparison_results import comparison_section, load_pairwise
from workers.job_results import build_result, load_run_rows
from workers.regression import regression_report

logger = logging.getLogger(__name__)


def finalize_if_complete(settings: Settings, job_id: uuid.UUID) -> bool:
    """Store the result when every run is written; return True if this call finished the job.

    For a cancelled job, store a partial result instead whenever runs were written since the
    last one, because runs that were calling the model at cancel time still finish.
    """
    step = _next_step(settings, job_id)
    if step == "summarize_cancelled":
        _store_partial_result(settings, job_id)
        return False
    if step != "finalize":
        return False

    with session_scope(settings.database_url) as session:
        job = lock_job(session, job_id)
        if job is None or job.is_finished:
            return False

        progress = job_progress(session, job)
        if progress.finished < progress.total:
            return False
        if job.kind == "comparison" and pairs_pending(session, job) > 0:
            return False

        rows = load_run_rows(session, job.id)
        job.finished_at = func.now()
        try:
            result = _job_result(session, job, rows)
        except SERVICE_ERRORS:
            raise
        except Exception as error:
            # A result that cannot be computed is a bug. Failing the job shows it, where a
            # raised error would leave the job running and every later run retrying it.
            logger.exception("job result failed", extra=log_fields(job_id=str(job_id)))
            result = {}
            job.status = "failed"
            job.error = f"the result could not be computed: {type(error).__name__}: {error}"
        else:
            job.result = result
            if progress.total > 0 and progress.failed == progress.total:
                job.status = "failed"
                job.error = _all_failed_message(rows)
            else:
                job.status = "succeeded"

    logger.info(
        "job finished",
        extra=log_fields(job_id=str(job_id), status=job.status, **progress.as_dict()),
    )
    if result.get("regression", {}).get("flags"):
        _queue_alert(job_id)
    return True


def _job_result(session, job: Job, rows: list) -> dict:
    result = build_result(job, rows)
    if job.kind == "comparison":
        result["comparison"] = comparison_section(job, rows, load_pairwise(session, job.id))
    if job.schedule_id is not None:
        result["regression"] = regression_report(session, job, rows)
    return result


def _queue_alert(job_id: uuid.UUID) -> None:
    from workers.tasks import notify_webhook

    notify_webhook.apply_async(args=[str(job_id)])


def _next_step(settings: Settings, job_id: uuid.UUID) -> str:
    """Return "finalize", "summarize_cancelled" or "wait", from counts read without a lock.

    Most calls come from runs that are not the last one, so they take no lock.
    """
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            return "wait"
        if job.status == "cancelled":
            progress = job_progress(session, job)
            return "summarize_cancelled" if _partial_is_stale(job, progress) else "wait"
        if job.is_finished:
            return "wait"
        progress = job_progress(session, job)
        return "finalize" if progress.finished >= progress.total else "wait"


def _partial_is_stale(job: Job, progress: Progress) -> bool:
    partial = (job.result or {}).get("partial") or {}
    return partial.get("runs_written") != progress.finished


def _store_partial_result(settings: Settings, job_id: uuid.UUID) -> None:
    """Summarise the runs a cancelled job wrote, marked partial, unless that is already stored."""
    with session_scope(settings.database_url) as session:
        job = lock_job(session, job_id)
        if job is None or job.status != "cancelled":
            return
        progress = job_progress(session, job)
        if not _partial_is_stale(job, progress):
            return

        rows = load_run_rows(session, job.id)
        result = build_result(job, rows)
        if job.kind == "comparison":
            result["comparison"] = comparison_section(job, rows, load_pairwise(session, job.id))
        result["partial"] = {
            "reason": "cancelled",
            "runs_written": progress.finished,
            "total": progress.total,
        }
        job.result = result

    logger.info(
        "partial result stored for cancelled job",
        extra=log_fields(job_id=str(job_id), **progress.as_dict()),
    )


def _all_failed_message(rows: list) -> str:
    reasons = Counter(row.run.error_reason or "unknown" for row in rows)
    reason, count = reasons.most_common(1)[0]
    example = next(row.run.error_message for row in rows if row.run.error_reason == reason)
    return f"all {len(rows)} runs failed; most common error {reason} ({count} runs): {example}"
