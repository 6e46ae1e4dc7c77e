"""Human ratings of runs (1 to 5) and human preferences between two runs of the same prompt."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at_column, uuid_primary_key
from models.judgements import CRITERIA

# "overall" rates the whole response, and the others match the judge's criteria scores.
RATING_CRITERIA = ("overall", *CRITERIA)
PREFERENCES = ("a", "b", "tie")
MIN_RATING = 1
MAX_RATING = 5
MAX_COMMENT_CHARS = 2_000
MAX_RATER_CHARS = 200
DEFAULT_RATER = "anonymous"
DEFAULT_CRITERION = "overall"


def _updated_at_column() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class Rating(Base):
    """One person's 1-5 rating of one run on one criterion, replaced when they rate again."""

    __tablename__ = "ratings"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    rater: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text(f"'{DEFAULT_RATER}'")
    )
    criterion: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text(f"'{DEFAULT_CRITERION}'")
    )
    rating: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = _updated_at_column()

    __table_args__ = (
        # The upsert target: one rating per run, rater and criterion.
        UniqueConstraint("run_id", "rater", "criterion"),
        CheckConstraint(f"rating BETWEEN {MIN_RATING} AND {MAX_RATING}", name="rating"),
        CheckConstraint(f"criterion IN {RATING_CRITERIA!r}", name="criterion"),
        CheckConstraint(
            f"char_length(rater) BETWEEN 1 AND {MAX_RATER_CHARS}", name="rater_length"
        ),
        CheckConstraint(
            f"comment IS NULL OR char_length(comment) <= {MAX_COMMENT_CHARS}",
            name="comment_length",
        ),
        Index("ix_ratings_created_at", "created_at"),
        Index("ix_ratings_rater", "rater"),
    )


class PairwisePreference(Base):
    """One person's preference between two runs of the same prompt: "a", "b" or "tie"."""

    __tablename__ = "pairwise_preferences"

    id: Mapped[uuid.UUID] = uuid_primary_key()
    run_a_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    run_b_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    preference: Mapped[str] = mapped_column(String(8), nullable=False)
    rater: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text(f"'{DEFAULT_RATER}'")
    )
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = _updated_at_column()

    __table_args__ = (
        UniqueConstraint("run_a_id", "run_b_id", "rater"),
        CheckConstraint(f"preference IN {PREFERENCES!r}", name="preference"),
        CheckConstraint("run_a_id <> run_b_id", name="distinct_runs"),
        CheckConstraint(
            f"char_length(rater) BETWEEN 1 AND {MAX_RATER_CHARS}", name="rater_length"
        ),
        CheckConstraint(
            f"comment IS NULL OR char_length(comment) <= {MAX_COMMENT_CHARS}",
            name="comment_length",
        ),
        # Lookups by run_a_id use the unique index, and this one serves lookups by run_b_id.
        Index("ix_pairwise_preferences_run_b_id", "run_b_id"),
        Index("ix_pairwise_preferences_created_at", "created_at"),
    )
