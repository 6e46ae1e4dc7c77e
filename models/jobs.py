"""Jobs: one submitted unit of work and its progress."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, DateTime, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column, uuid_primary_key

JOB_KINDS = ("evaluation", "batch", "comparison", "dataset", "scheduled", "import")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued")

    # The request as sent, after validation; the API key is never part of it.
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)

    # The prompts the job runs, frozen at submission so a later upload cannot change them.
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    models: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    repetitions: Mapped[int] = mapped_column(Integer, nullable=False)
    total_runs: Mapped[int] = mapped_column(Integer, nullable=False)

    dataset_name: Mapped[str | None] = mapped_column(String(64))
    dataset_version: Mapped[str | None] = mapped_column(String(80))
    judge_model: Mapped[str | None] = mapped_column(String(128))
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    simulated: Mapped[bool] = mapped_column(Boolean, nullable=False)

    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"kind IN {JOB_KINDS!r}", name="kind"),
        CheckConstraint(f"status IN {JOB_STATUSES!r}", name="status"),
        CheckConstraint("total_runs >= 0", name="total_runs"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_schedule_id_created_at", "schedule_id", "created_at"),
    )

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES
