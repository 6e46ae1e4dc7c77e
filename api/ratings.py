"""Human ratings: POST/GET /rate/{run_id}, /preferences, /ratings/stats, /ratings/calibration."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from api.parsing import JSON_PARSER
from api.errors import Conflict, NotFound, Unprocessable
from api.job_submission import settings_for_app
from api.rating_schemas import (
    PreferenceBodySchema,
    PreferenceListQuerySchema,
    PreferenceSchema,
    RateBodySchema,
    RateQuerySchema,
    RatingSchema,
    RatingStatsQuerySchema,
    RunRatingsSchema,
)
from mistralmeter.rating_stats import calibration_by_judge, judge_models_in, rating_statistics
from models.db import session_scope
from models.judgements import CRITERIA, Judgement
from models.rating_queries import (
    RatingFilters,
    find_preference,
    judge_scores,
    judgement_of_run,
    list_preferences,
    lock_run,
    preference_verdicts,
    rating_rows,
    ratings_of_run,
    upsert_preference,
    upsert_rating,
)
from models.ratings import DEFAULT_CRITERION, DEFAULT_RATER, PairwisePreference, Rating
from models.runs import Run


blueprint = Blueprint(
    "ratings", __name__, description="Human ratings and their agreement with the judge"
)
# Set before the routes below, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER

JSON_MIMETYPES = ("application/json",)


def parse_run_id(run_id: str, field: str | None = None) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        raise NotFound(f"run {run_id!r} not found: run ids are UUIDs", field=field) from None


def load_rateable_run(session, run_id: uuid.UUID, field: str | None = None) -> Run:
    """Load and share-lock a run that people can rate: it exists and has a response."""
    run = lock_run(session, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found", field=field)
    if run.status == "failed":
        raise Conflict(
            f"run {run_id} failed; there is no response to rate", field=field or "run_id"
        )
    return run


def rating_document(rating: Rating) -> dict[str, Any]:
    return {
        "id": str(rating.id),
        "run_id": str(rating.run_id),
        "rater": rating.rater,
        "criterion": rating.criterion,
        "rating": rating.rating,
        "comment": rating.comment,
        "created_at": rating.created_at,
        "updated_at": rating.updated_at,
    }


def preference_document(preference: PairwisePreference) -> dict[str, Any]:
    return {
        "id": str(preference.id),
        "run_a_id": str(preference.run_a_id),
        "run_b_id": str(preference.run_b_id),
        "preference": preference.preference,
        "rater": preference.rater,
        "comment": preference.comment,
        "created_at": preference.created_at,
        "updated_at": preference.updated_at,
    }


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "job_id": str(run.job_id),
        "item_id": run.item_id,
        "repetition": run.repetition,
        "model": run.model,
        "status": run.status,
        "dataset": {"name": run.dataset_name, "version": run.dataset_version}
        if run.dataset_name
        else None,
        "simulated": run.simulated,
    }


def judge_summary(judgement: Judgement | None) -> dict[str, Any] | None:
    if judgement is None:
        return None
    return {
        "judge_model": judgement.judge_model,
        "status": judgement.status,
        "overall_score": judgement.overall_score,
        "criteria_scores": {name: getattr(judgement, name) for name in CRITERIA},
        "feedback": judgement.feedback,
        "unscored_reason": judgement.unscored_reason,
    }


def _reject_non_json_body() -> None:
    """Reject a body that is not JSON, which webargs would otherwise ignore silently."""
    if request.get_data(cache=True) and request.mimetype not in JSON_MIMETYPES:
        raise Unprocessable(
            "request body must be JSON: send Content-Type: application/json, "
            "or pass the fields as query parameters"
        )


def merge_rating_fields(query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Merge query parameters and JSON body fields; a field given twice must agree."""
    conflicts = sorted(
        name for name in set(query) & set(body) if query[name] != body[name]
    )
    if conflicts:
        raise Unprocessable(
            f"{', '.join(conflicts)} given in both the query string and the JSON body with "
            "different values; send each field once",
            field=conflicts[0],
        )
    merged = {**query, **body}
    if merged.get("rating") is None:
        raise Unprocessable(
            'rating is required: pass ?rating=N or a JSON body {"rating": N}, '
            "with N a whole number from 1 to 5",
            field="rating",
        )
    return {
        "rating": merged["rating"],
        "comment": merged.get("comment"),
        "rater": merged.get("rater") or DEFAULT_RATER,
        "criterion": merged.get("criterion") or DEFAULT_CRITERION,
    }


@blueprint.route("/rate/<run_id>")
class RateView(MethodView):
    @blueprint.arguments(RateQuerySchema, location="query", unknown=RAISE)
    @blueprint.arguments(RateBodySchema, location="json", required=False)
    @blueprint.response(201, RatingSchema, description="Rating stored")
    @blueprint.alt_response(200, schema=RatingSchema, description="Rating replaced")
    def post(self, query: dict[str, Any], body: dict[str, Any], run_id: str):
        """Rate a run from 1 to 5, in query parameters or a JSON body (or both, if they agree).

        The same rater rating the same run on the same criterion again replaces the rating
        and its comment and returns 200. A new rating returns 201.
        """
        _reject_non_json_body()
        fields = merge_rating_fields(query, body)
        parsed_id = parse_run_id(run_id)
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            load_rateable_run(session, parsed_id)
            rating, created = upsert_rating(session, {"run_id": parsed_id, **fields})
            document = rating_document(rating)
        return document, 201 if created else 200

    @blueprint.response(200, RunRatingsSchema)
    def get(self, run_id: str):
        """Return every rating of a run (all raters and criteria) beside the judge's scores."""
        parsed_id = parse_run_id(run_id)
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            run = session.get(Run, parsed_id)
            if run is None:
                raise NotFound(f"run {run_id} not found")
            return {
                "run": run_summary(run),
                "judge": judge_summary(judgement_of_run(session, parsed_id)),
                "ratings": [rating_document(r) for r in ratings_of_run(session, parsed_id)],
            }


def check_same_prompt(run_a: Run, run_b: Run) -> None:
    """Reject two runs that do not answer the same prompt.

    Runs of one job answer the same prompt when they share the item id. Runs of different
    jobs, imported ones included, must have the same prompt text.
    """
    same_item = run_a.job_id == run_b.job_id and run_a.item_id == run_b.item_id
    if not same_item and run_a.prompt != run_b.prompt:
        raise Unprocessable(
            f"runs {run_a.id} and {run_b.id} answer different prompts; "
            "a preference compares two answers to the same prompt",
            field="run_b_id",
        )


@blueprint.route("/preferences")
class PreferencesView(MethodView):
    @blueprint.arguments(PreferenceBodySchema)
    @blueprint.response(201, PreferenceSchema, description="Preference stored")
    @blueprint.alt_response(200, schema=PreferenceSchema, description="Preference replaced")
    def post(self, body: dict[str, Any]):
        """Store which of two runs of the same prompt a person prefers: a, b or tie.

        The same rater on the same (run_a_id, run_b_id) again replaces the preference and
        returns 200.
        """
        rater = body.get("rater") or DEFAULT_RATER
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            run_a = load_rateable_run(session, body["run_a_id"], field="run_a_id")
            run_b = load_rateable_run(session, body["run_b_id"], field="run_b_id")
            check_same_prompt(run_a, run_b)
            if find_preference(session, run_b.id, run_a.id, rater) is not None:
                raise Conflict(
                    f"{rater} already stated a preference on these runs with run_a_id="
                    f"{run_b.id} and run_b_id={run_a.id}; post it in that order to replace it",
                    field="run_a_id",
                )
            preference, created = upsert_preference(
                session,
                {
                    "run_a_id": run_a.id,
                    "run_b_id": run_b.id,
                    "preference": body["preference"],
                    "rater": rater,
                    "comment": body.get("comment"),
                },
            )
            document = preference_document(preference)
        return document, 201 if created else 200

    @blueprint.arguments(PreferenceListQuerySchema, location="query", unknown=RAISE)
    @blueprint.response(200, PreferenceSchema(many=True))
    def get(self, query: dict[str, Any]):
        """List preferences, oldest first: those of one run (as a or b), of one rater, or all."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            run_id = query.get("run_id")
            if run_id is not None and session.get(Run, run_id) is None:
                raise NotFound(f"run {run_id} not found", field="run_id")
            preferences = list_preferences(
                session,
                run_id=run_id,
                rater=query.get("rater"),
                limit=query["limit"],
                offset=query["offset"],
            )
            return [preference_document(p) for p in preferences]


def _filters(query: dict[str, Any]) -> RatingFilters:
    return RatingFilters(**query)


def _echo_filters(query: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.isoformat() if hasattr(value, "isoformat") else str(value)
        for name, value in sorted(query.items())
    }


@blueprint.route("/ratings/stats")
class RatingStatsView(MethodView):
    @blueprint.arguments(RatingStatsQuerySchema, location="query", unknown=RAISE)
    @blueprint.response(200)
    def get(self, query: dict[str, Any]):
        """Summarise people's ratings and measure their agreement with each judge.

        Per judge model: score agreement (Spearman, Pearson, quadratic-weighted kappa, mean
        offset) on runs both rated, Krippendorff's alpha with the judge as one more rater,
        and pairwise agreement between people's preferences and the judge's verdicts in
        both orders. Each figure has its n and is null with a reason below the minimum n.
        """
        filters = _filters(query)
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            ratings = rating_rows(session, filters)
            scores = judge_scores(session, filters)
            preferences = preference_verdicts(session, filters)

        judge_models = (
            [filters.judge_model]
            if filters.judge_model is not None
            else judge_models_in(scores, preferences)
        )
        return {
            "filters": _echo_filters(query),
            "criterion": filters.criterion,
            **rating_statistics(ratings, scores, preferences, judge_models),
        }


@blueprint.route("/ratings/calibration")
class CalibrationView(MethodView):
    @blueprint.arguments(RatingStatsQuerySchema, location="query", unknown=RAISE)
    @blueprint.response(200)
    def get(self, query: dict[str, Any]):
        """Return people's mean rating for each judge score bucket, per judge model."""
        filters = _filters(query)
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            ratings = rating_rows(session, filters)
            scores = judge_scores(session, filters)

        judge_models = (
            [filters.judge_model]
            if filters.judge_model is not None
            else judge_models_in(scores, [])
        )
        return {
            "filters": _echo_filters(query),
            "criterion": filters.criterion,
            "judges": calibration_by_judge(ratings, scores, judge_models),
        }
