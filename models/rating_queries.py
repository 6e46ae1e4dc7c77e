"""Reads and idempotent writes of human ratings and pairwise preferences."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from mistralmeter.rating_stats import JudgeScore, PreferenceVerdicts, RatingRow
from models.judgements import Judgement, PairwiseJudgement
from models.ratings import DEFAULT_CRITERION, PairwisePreference, Rating
from models.runs import Run

# Swapping the runs of a pair turns a verdict for run a into one for run b. Any other stored
# value (None for a failed judgement) counts as no verdict.
SWAP_SIDES = {"a": "b", "b": "a", "tie": "tie"}


@dataclass(frozen=True)
class RatingFilters:
    """Filters of the rating statistics, where None means no restriction.

    ``since`` is inclusive and ``until`` exclusive, both on created_at. ``judge_model``
    selects the judge to compare with and does not restrict the ratings.
    """

    criterion: str = DEFAULT_CRITERION
    model: str | None = None
    judge_model: str | None = None
    dataset: str | None = None
    rater: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    job_id: uuid.UUID | None = None


def _verdict(value: str | None) -> str | None:
    return value if value in SWAP_SIDES else None


def lock_run(session: Session, run_id: uuid.UUID) -> Run | None:
    """Load a run with FOR SHARE, so it cannot be deleted before the rating is written."""
    return session.execute(
        select(Run).where(Run.id == run_id).with_for_update(read=True)
    ).scalar_one_or_none()


def upsert_rating(session: Session, values: dict[str, Any]) -> tuple[Rating, bool]:
    """Insert a rating, or replace the rating and comment of the same run, rater and criterion.

    Returns the stored row and True when it was inserted, False when it replaced one.
    """
    statement = insert(Rating).values(**values)
    statement = statement.on_conflict_do_update(
        constraint="uq_ratings_run_id_rater_criterion",
        set_={
            "rating": statement.excluded.rating,
            "comment": statement.excluded.comment,
            "updated_at": func.now(),
        },
    ).returning(Rating.id, _inserted_flag())
    rating_id, inserted = session.execute(statement).one()
    return _reload(session, Rating, rating_id), bool(inserted)


def upsert_preference(session: Session, values: dict[str, Any]) -> tuple[PairwisePreference, bool]:
    """Insert a preference, or replace the one by the same rater on the same (a, b) pair."""
    statement = insert(PairwisePreference).values(**values)
    statement = statement.on_conflict_do_update(
        constraint="uq_pairwise_preferences_run_a_id_run_b_id_rater",
        set_={
            "preference": statement.excluded.preference,
            "comment": statement.excluded.comment,
            "updated_at": func.now(),
        },
    ).returning(PairwisePreference.id, _inserted_flag())
    preference_id, inserted = session.execute(statement).one()
    return _reload(session, PairwisePreference, preference_id), bool(inserted)


def _inserted_flag():
    # xmax is 0 on a row version that an INSERT created and set when ON CONFLICT updated it.
    # This is the usual PostgreSQL idiom to tell the two apart in RETURNING.
    return literal_column("(xmax = 0)").label("inserted")


def _reload(session: Session, model: type, row_id: uuid.UUID):
    return session.execute(
        select(model).where(model.id == row_id).execution_options(populate_existing=True)
    ).scalar_one()


def find_preference(
    session: Session, run_a_id: uuid.UUID, run_b_id: uuid.UUID, rater: str
) -> PairwisePreference | None:
    return session.execute(
        select(PairwisePreference).where(
            PairwisePreference.run_a_id == run_a_id,
            PairwisePreference.run_b_id == run_b_id,
            PairwisePreference.rater == rater,
        )
    ).scalar_one_or_none()


def ratings_of_run(session: Session, run_id: uuid.UUID) -> list[Rating]:
    statement = (
        select(Rating)
        .where(Rating.run_id == run_id)
        .order_by(Rating.criterion, Rating.rater)
    )
    return list(session.execute(statement).scalars())


def judgement_of_run(session: Session, run_id: uuid.UUID) -> Judgement | None:
    return session.execute(
        select(Judgement).where(Judgement.run_id == run_id)
    ).scalar_one_or_none()


def list_preferences(
    session: Session,
    *,
    run_id: uuid.UUID | None,
    rater: str | None,
    limit: int,
    offset: int,
) -> list[PairwisePreference]:
    """List preferences, oldest first, optionally those involving one run or by one rater."""
    statement = select(PairwisePreference)
    if run_id is not None:
        statement = statement.where(
            or_(PairwisePreference.run_a_id == run_id, PairwisePreference.run_b_id == run_id)
        )
    if rater is not None:
        statement = statement.where(PairwisePreference.rater == rater)
    statement = statement.order_by(PairwisePreference.created_at, PairwisePreference.id)
    return list(session.execute(statement.limit(limit).offset(offset)).scalars())


def _rated_runs(filters: RatingFilters) -> Select:
    """Select (rating, run) pairs that match every filter except the judge model."""
    statement = (
        select(Rating.run_id, Run.model, Rating.rater, Rating.rating)
        .join(Run, Run.id == Rating.run_id)
        .where(Rating.criterion == filters.criterion)
    )
    if filters.model is not None:
        statement = statement.where(Run.model == filters.model)
    if filters.dataset is not None:
        statement = statement.where(Run.dataset_name == filters.dataset)
    if filters.job_id is not None:
        statement = statement.where(Run.job_id == filters.job_id)
    if filters.rater is not None:
        statement = statement.where(Rating.rater == filters.rater)
    if filters.since is not None:
        statement = statement.where(Rating.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(Rating.created_at < filters.until)
    return statement


def rating_rows(session: Session, filters: RatingFilters) -> list[RatingRow]:
    statement = _rated_runs(filters).order_by(Rating.run_id, Rating.rater)
    return [
        RatingRow(run_id=str(run_id), model=model, rater=rater, rating=rating)
        for run_id, model, rater, rating in session.execute(statement)
    ]


def judge_scores(session: Session, filters: RatingFilters) -> list[JudgeScore]:
    """Return the judges' scores on the filtered criterion for the runs that people rated.

    Unscored judgements, and scored ones without the criterion, are left out.
    """
    column = (
        Judgement.overall_score
        if filters.criterion == DEFAULT_CRITERION
        else getattr(Judgement, filters.criterion)
    )
    rated = _rated_runs(filters).with_only_columns(Rating.run_id).distinct().subquery()
    statement = select(Judgement.run_id, Judgement.judge_model, column).where(
        Judgement.run_id.in_(select(rated.c.run_id)),
        Judgement.status == "scored",
        column.is_not(None),
    )
    if filters.judge_model is not None:
        statement = statement.where(Judgement.judge_model == filters.judge_model)
    return [
        JudgeScore(run_id=str(run_id), judge_model=judge_model, score=float(score))
        for run_id, judge_model, score in session.execute(statement)
    ]


def preference_verdicts(session: Session, filters: RatingFilters) -> list[PreferenceVerdicts]:
    """Return the filtered preferences, each with every judge's verdicts on the same pair.

    A pairwise judgement stored with the runs the other way round is turned to this
    preference's orientation: its swapped order showed this preference's run a first.
    The criterion filter does not apply, because a preference has no criterion.
    """
    run_a = aliased(Run)
    run_b = aliased(Run)
    same_pair = and_(
        PairwiseJudgement.run_a_id == PairwisePreference.run_a_id,
        PairwiseJudgement.run_b_id == PairwisePreference.run_b_id,
    )
    reversed_pair = and_(
        PairwiseJudgement.run_a_id == PairwisePreference.run_b_id,
        PairwiseJudgement.run_b_id == PairwisePreference.run_a_id,
    )
    join_condition = or_(same_pair, reversed_pair)
    if filters.judge_model is not None:
        join_condition = and_(join_condition, PairwiseJudgement.judge_model == filters.judge_model)

    statement = (
        select(
            PairwisePreference.id,
            PairwisePreference.preference,
            PairwisePreference.run_a_id,
            PairwiseJudgement.judge_model,
            PairwiseJudgement.run_a_id,
            PairwiseJudgement.verdict_original,
            PairwiseJudgement.verdict_swapped,
        )
        .join(run_a, run_a.id == PairwisePreference.run_a_id)
        .join(run_b, run_b.id == PairwisePreference.run_b_id)
        .outerjoin(PairwiseJudgement, join_condition)
        .order_by(PairwisePreference.created_at, PairwisePreference.id)
    )
    if filters.model is not None:
        statement = statement.where(or_(run_a.model == filters.model, run_b.model == filters.model))
    if filters.dataset is not None:
        statement = statement.where(run_a.dataset_name == filters.dataset)
    if filters.job_id is not None:
        statement = statement.where(run_a.job_id == filters.job_id)
    if filters.rater is not None:
        statement = statement.where(PairwisePreference.rater == filters.rater)
    if filters.since is not None:
        statement = statement.where(PairwisePreference.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(PairwisePreference.created_at < filters.until)

    preferences: dict[uuid.UUID, PreferenceVerdicts] = {}
    for row in session.execute(statement):
        pref_id, human, pref_run_a, judge_model, judged_run_a, original, swapped = row
        preference = preferences.setdefault(
            pref_id, PreferenceVerdicts(preference_id=str(pref_id), human=human, verdicts={})
        )
        if judge_model is None:
            continue
        if judged_run_a == pref_run_a:
            preference.verdicts[judge_model] = (_verdict(original), _verdict(swapped))
        else:
            preference.verdicts[judge_model] = (
                SWAP_SIDES.get(swapped),
                SWAP_SIDES.get(original),
            )
    return list(preferences.values())
