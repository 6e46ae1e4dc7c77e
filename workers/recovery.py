"""Find unfinished jobs whose tasks the broker lost, and the work that must be sent again.

kombu's Redis transport takes a message off the queue (BRPOP) and then records it as
unacknowledged in a second command. A Redis that stops between the two loses the task, and
its run is never written. Such a job is recognised from two facts: no run was written for
`recovery_stall_s` seconds, and the broker contains no task of the job, queued or delivered.
Runs are written idempotently, so a task sent again for a run that does get written costs a
repeated model call but never a second row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mistralmeter.settings import Settings
from models.db import session_scope
from models.jobs import Job
from models.run_writes import pending_pair_keys
from models.runs import Run

UNFINISHED_STATUSES = ("queued", "running")


@dataclass(frozen=True)
class RecoveryPlan:
    """The work one stalled job needs: run tasks sent again, or only its result stored."""

    job_id: uuid.UUID
    # (item_id, model, repetition) of each run task to send again.
    run_keys: tuple[tuple[str, str, int], ...]
    finalize: bool

    @property
    def is_empty(self) -> bool:
        return not self.run_keys and not self.finalize


def plan_recovery(
    settings: Settings, job_ids_in_broker: set[str], now: datetime | None = None
) -> list[RecoveryPlan]:
    """Return a plan for every stalled job that has no task left in the broker."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(seconds=settings.recovery_stall_s)

    with session_scope(settings.database_url) as session:
        plans = []
        for job in stalled_jobs(session, cutoff):
            if str(job.id) in job_ids_in_broker:
                continue
            plan = _plan_for(session, job)
            if not plan.is_empty:
                plans.append(plan)
        return plans


def stalled_jobs(session: Session, cutoff: datetime) -> list[Job]:
    """Return unfinished jobs with no submission, start or run write after `cutoff`."""
    last_run_at = (
        select(func.max(Run.created_at)).where(Run.job_id == Job.id).scalar_subquery()
    )
    last_activity = func.greatest(
        Job.created_at,
        func.coalesce(Job.started_at, Job.created_at),
        func.coalesce(last_run_at, Job.created_at),
    )
    statement = (
        select(Job)
        .where(Job.status.in_(UNFINISHED_STATUSES), last_activity < cutoff)
        .order_by(Job.created_at)
    )
    return list(session.execute(statement).scalars())


def _plan_for(session: Session, job: Job) -> RecoveryPlan:
    written = {
        tuple(row)
        for row in session.execute(
            select(Run.item_id, Run.model, Run.repetition).where(Run.job_id == job.id)
        )
    }
    missing = tuple(
        (item["id"], model, repetition)
        for item in job.items
        for model in job.models
        for repetition in range(job.repetitions)
        if (item["id"], model, repetition) not in written
    )
    if missing:
        return RecoveryPlan(job.id, run_keys=missing, finalize=False)

    if job.kind == "comparison":
        # A run task judges its pair after the run, so sending model A's task again judges it.
        pairs = pending_pair_keys(session, job)
        if pairs:
            model_a = job.models[0]
            keys = tuple((item_id, model_a, repetition) for item_id, repetition in pairs)
            return RecoveryPlan(job.id, run_keys=keys, finalize=False)

    # Every run is written, so only the task that stores the result went missing.
    return RecoveryPlan(job.id, run_keys=(), finalize=True)
