"""Judgements: the judge model's scores for one run, or its verdicts on a pair of runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
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

CRITERIA = ("clarity", "accuracy", "completeness", "relevance", "style_match")
JUDGEMENT_STATUSES = ("scored", "unscored")
PAIR_OUTCOMES = ("a", "b", "tie")


class Judgement(Base):
    __tablename__ = "judgements"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    judge_model: Mapped[str] = mapped_column(String(128), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)

    # Null unless status is "scored": an unparsed verdict is never a low score.
    overall_score: Mapped[float | None] = mapped_column(Float)
    clarity: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    completeness: Mapped[float | None] = mapped_column(Float)
    relevance: Mapped[float | None] = mapped_column(Float)
    style_match: Mapped[float | None] = mapped_column(Float)
    feedback: Mapped[str | None] = mapped_column(Text)

    # Spread of the overall score over several judge samples; null with one sample.
    score_std_dev: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, default=list)

    parsed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    unscored_reason: Mapped[str | None] = mapped_column(Text)
    raw_output: Mapped[str | None] = mapped_column(Text)
    repairs: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("run_id"),
        CheckConstraint(f"status IN {JUDGEMENT_STATUSES!r}", name="status"),
        CheckConstraint(
            "status = 'unscored' OR overall_score BETWEEN 0 AND 10", name="overall_score"
        ),
        Index("ix_judgements_judge_model", "judge_model"),
    )


class PairwiseJudgement(Base):
    """The judge's verdicts on two runs of the same prompt, shown in both orders."""

    __tablename__ = "pairwise_judgements"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    run_a_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    run_b_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    judge_model: Mapped[str] = mapped_column(String(128), nullable=False)

    # Verdicts name the runs ("a" or "b"), not the position they were shown in.
    verdict_original: Mapped[str | None] = mapped_column(String(8))
    verdict_swapped: Mapped[str | None] = mapped_column(String(8))
    outcome: Mapped[str | None] = mapped_column(String(8))
    consistent: Mapped[bool | None] = mapped_column(Boolean)
    raw_original: Mapped[str | None] = mapped_column(Text)
    raw_swapped: Mapped[str | None] = mapped_column(Text)
    unscored_reason: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("run_a_id", "run_b_id", "judge_model"),
        CheckConstraint(f"outcome IS NULL OR outcome IN {PAIR_OUTCOMES!r}", name="outcome"),
    )
