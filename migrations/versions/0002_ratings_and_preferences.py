"""Create ratings and pairwise_preferences, and allow the job kind "import".

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:15:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KINDS_0001 = "kind IN ('evaluation', 'batch', 'comparison', 'dataset', 'scheduled')"
KINDS_0002 = "kind IN ('evaluation', 'batch', 'comparison', 'dataset', 'scheduled', 'import')"
RATING_CRITERIA = (
    "criterion IN ('overall', 'clarity', 'accuracy', 'completeness', 'relevance', 'style_match')"
)


def upgrade() -> None:
    # Imported human-labelled data (mistralmeter import-llmbar) is stored as a job of kind
    # "import". PostgreSQL cannot alter a CHECK constraint, so it is dropped and recreated.
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", KINDS_0002)

    op.create_table(
        "ratings",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("rater", sa.Text(), server_default=sa.text("'anonymous'"), nullable=False),
        sa.Column("criterion", sa.Text(), server_default=sa.text("'overall'"), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_ratings_rating")),
        sa.CheckConstraint(RATING_CRITERIA, name=op.f("ck_ratings_criterion")),
        sa.CheckConstraint(
            "char_length(rater) BETWEEN 1 AND 200", name=op.f("ck_ratings_rater_length")
        ),
        sa.CheckConstraint(
            "comment IS NULL OR char_length(comment) <= 2000",
            name=op.f("ck_ratings_comment_length"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_ratings_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ratings")),
        sa.UniqueConstraint(
            "run_id", "rater", "criterion", name=op.f("uq_ratings_run_id_rater_criterion")
        ),
    )
    op.create_index("ix_ratings_created_at", "ratings", ["created_at"], unique=False)
    op.create_index("ix_ratings_rater", "ratings", ["rater"], unique=False)

    op.create_table(
        "pairwise_preferences",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("run_a_id", sa.UUID(), nullable=False),
        sa.Column("run_b_id", sa.UUID(), nullable=False),
        sa.Column("preference", sa.String(length=8), nullable=False),
        sa.Column("rater", sa.Text(), server_default=sa.text("'anonymous'"), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "preference IN ('a', 'b', 'tie')", name=op.f("ck_pairwise_preferences_preference")
        ),
        sa.CheckConstraint(
            "run_a_id <> run_b_id", name=op.f("ck_pairwise_preferences_distinct_runs")
        ),
        sa.CheckConstraint(
            "char_length(rater) BETWEEN 1 AND 200",
            name=op.f("ck_pairwise_preferences_rater_length"),
        ),
        sa.CheckConstraint(
            "comment IS NULL OR char_length(comment) <= 2000",
            name=op.f("ck_pairwise_preferences_comment_length"),
        ),
        sa.ForeignKeyConstraint(
            ["run_a_id"],
            ["runs.id"],
            name=op.f("fk_pairwise_preferences_run_a_id_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_b_id"],
            ["runs.id"],
            name=op.f("fk_pairwise_preferences_run_b_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairwise_preferences")),
        sa.UniqueConstraint(
            "run_a_id",
            "run_b_id",
            "rater",
            name=op.f("uq_pairwise_preferences_run_a_id_run_b_id_rater"),
        ),
    )
    op.create_index(
        "ix_pairwise_preferences_run_b_id", "pairwise_preferences", ["run_b_id"], unique=False
    )
    op.create_index(
        "ix_pairwise_preferences_created_at", "pairwise_preferences", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_pairwise_preferences_created_at", table_name="pairwise_preferences")
    op.drop_index("ix_pairwise_preferences_run_b_id", table_name="pairwise_preferences")
    op.drop_table("pairwise_preferences")
    op.drop_index("ix_ratings_rater", table_name="ratings")
    op.drop_index("ix_ratings_created_at", table_name="ratings")
    op.drop_table("ratings")

    # Revision 0001 has no "import" kind. Imported jobs (with their runs and pairwise
    # judgements, by ON DELETE CASCADE) are deleted so that the old constraint holds; they can
    # be imported again from their files after upgrading.
    op.execute("DELETE FROM jobs WHERE kind = 'import'")
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", KINDS_0001)
