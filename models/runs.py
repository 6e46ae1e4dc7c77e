"""Runs: one call of one model on one prompt, written exactly once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column, uuid_primary_key

RUN_STATUSES = ("succeeded", "failed")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    item_id: Mapped[str] = mapped_column(String(200), nullable=False)
    repetition: Mapped[int] = mapped_column(Integer, nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)

    dataset_name: Mapped[str | None] = mapped_column(String(64))
    dataset_version: Mapped[str | None] = mapped_column(String(80))
    category: Mapped[str | None] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)

    response: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)

    # True when the stream carried no usage and the counts are estimates from the text.
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    # Timings in milliseconds, measured from just before the request was sent.
    total_ms: Mapped[float | None] = mapped_column(Float)
    time_to_first_token_ms: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    decode_tokens_per_second: Mapped[float | None] = mapped_column(Float)
    inter_token_latency_ms: Mapped[float | None] = mapped_column(Float)

    # Waiting that is not latency: for a rate-limit slot, and in backoff between attempts.
    rate_limit_wait_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    retry_wait_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    # Streams the worker process had open when this call started; high values inflate timings.
    concurrent_streams: Mapped[int | None] = mapped_column(Integer)
    # Max ms the worker process's threads waited for the GIL or the OS scheduler during the
    # call, so timings may be late by about this much. Null when not measured.
    client_lag_ms: Mapped[float | None] = mapped_column(Float)

    cost_usd: Mapped[float | None] = mapped_column(Float)
    error_reason: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    simulated: Mapped[bool] = mapped_column(Boolean, nullable=False)
    injected: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        # The idempotency key: a redelivered task finds its run here and writes nothing.
        UniqueConstraint("job_id", "item_id", "model", "repetition"),
        CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
        CheckConstraint("repetition >= 0", name="repetition"),
        Index("ix_runs_model_created_at", "model", "created_at"),
        Index("ix_runs_dataset", "dataset_name", "dataset_version"),
        # Progress counts per job and status read only this index.
        Index("ix_runs_job_id_status", "job_id", "status"),
    )
