"""Idempotent writes of runs and their judgements, and job progress counted from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from models.jobs import Job
from models.judgements import Judgement, PairwiseJudgement
from models.runs import Run


@dataclass(frozen=True)
class Progress:
    done: int
    failed: int
    total: int

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def as_dict(self) -> dict[str, int]:
        return {"done": self.done, "failed": self.failed, "total": self.total}


def run_exists(session: Session, job_id: uuid.UUID, item_id: str, model: str, repetition: int) -> bool:
    statement = select(Run.id).where(
        Run.job_id == job_id,
        Run.item_id == item_id,
        Run.model == model,
        Run.repetition == repetition,
    )
    return session.execute(statement).first() is not None


def insert_run(
    session: Session, run_values: dict[str, Any], judgement_values: dict[str, Any] | None
) -> uuid.UUID | None:
    """Insert a run and its judgement once; return None when the run was already written."""
    statement = (
        insert(Run)
        .values(**run_values)
        .on_conflict_do_nothing(constraint="uq_runs_job_id_item_id_model_repetition")
        .returning(Run.id)
    )
    run_id = session.execute(statement).scalar_one_or_none()
    if run_id is None:
        return None
    if judgement_values is not None:
        session.execute(insert(Judgement).values(run_id=run_id, **judgement_values))
    return run_id


def job_progress(session: Session, job: Job) -> Progress:
    counts = dict(
        session.execute(
            select(Run.status, func.count()).where(Run.job_id == job.id).group_by(Run.status)
        ).all()
    )
    return Progress(
        done=counts.get("succeeded", 0), failed=counts.get("failed", 0), total=job.total_runs
    )


def mark_job_running(session: Session, job_id: uuid.UUID) -> None:
    """Move a queued job to running; a job in any other state is left as it is."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="running", started_at=func.now())
    )


def lock_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """Load a job with a row lock, so exactly one task finalises it."""
    return session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()


def pairs_pending(session: Session, job: Job) -> int:
    """Count (item, repetition) pairs of a comparison whose runs both succeeded but are unjudged."""
    pending = _pending_pairs(job).subquery()
    return session.execute(select(func.count()).select_from(pending)).scalar_one()


def pending_pair_keys(session: Session, job: Job) -> list[tuple[str, int]]:
    """List the (item, repetition) pairs that pairs_pending counts."""
    return [(item_id, repetition) for item_id, repetition in session.execute(_pending_pairs(job))]


def _pending_pairs(job: Job):
    model_a, model_b = job.models
    run_a = aliased(Run)
    run_b = aliased(Run)
    return (
        select(run_a.item_id, run_a.repetition)
        .join(
            run_b,
            (run_b.job_id == run_a.job_id)
            & (run_b.item_id == run_a.item_id)
            & (run_b.repetition == run_a.repetition),
        )
        .outerjoin(
            PairwiseJudgement,
            (PairwiseJudgement.run_a_id == run_a.id) & (PairwiseJudgement.run_b_id == run_b.id),
        )
        .where(
            run_a.job_id == job.id,
            run_a.model == model_a,
            run_b.model == model_b,
            run_a.status == "succeeded",
            run_b.status == "succeeded",
            PairwiseJudgement.id.is_(None),
        )
    )
