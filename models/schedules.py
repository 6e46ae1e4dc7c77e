"""Schedules: a benchmark (dataset, models, judge, runs) that Celery beat starts on a cron."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, DateTime, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column, uuid_primary_key


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    dataset_name: Mapped[str] = mapped_column(String(64), nullable=False)

    # Null follows the dataset's latest version; a regression check never spans two versions.
    dataset_version: Mapped[str | None] = mapped_column(String(80))
    limit: Mapped[int | None] = mapped_column(Integer)
    models: Mapped[list[str]] = mapped_column(JSONB, nullable=False)
    judge_model: Mapped[str | None] = mapped_column(String(128))
    runs: Mapped[int] = mapped_column(Integer, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    judge: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cron: Mapped[str] = mapped_column(String(120), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    alpha: Mapped[float] = mapped_column(nullable=False, default=0.05)

    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("runs BETWEEN 1 AND 100", name="runs"),
        CheckConstraint("alpha > 0 AND alpha < 1", name="alpha"),
        Index("ix_schedules_due", "enabled", "next_run_at"),
    )
