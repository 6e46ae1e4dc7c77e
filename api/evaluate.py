"""POST /evaluate and POST /evaluate/batch: enqueue prompts given in the request."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from api.parsing import JSON_PARSER
from api.errors import Unprocessable
from api.job_submission import check_models, settings_for_app, submit_job
from api.schemas import BatchSchema, EvaluateSchema, JobAcceptedSchema

blueprint = Blueprint(
    "evaluate", __name__, url_prefix="/evaluate", description="Evaluate prompts given inline"
)
# Set before the routes, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER


@blueprint.route("")
class EvaluateView(MethodView):
    @blueprint.arguments(EvaluateSchema)
    @blueprint.response(202, JobAcceptedSchema)
    def post(self, body: dict[str, Any]):
        """Evaluate one prompt `runs` times; runs > 1 gives variance statistics."""
        settings = settings_for_app()
        check_models(settings, {"model": body["model"], "judge_model": body["judge_model"]})

        item = {"id": body["prompt"].get("id", "prompt"), **body["prompt"]}
        job = submit_job(
            settings,
            kind="evaluation",
            request_document=body,
            items=[item],
            models=[body["model"]],
            repetitions=body["runs"],
            judge_model=body["judge_model"],
        )
        return accepted(job)


@blueprint.route("/batch")
class BatchView(MethodView):
    @blueprint.arguments(BatchSchema)
    @blueprint.response(202, JobAcceptedSchema)
    def post(self, body: dict[str, Any]):
        """Evaluate many prompts in one job, with a summary per model."""
        settings = settings_for_app()
        check_models(settings, {"model": body["model"], "judge_model": body["judge_model"]})

        items = number_items(body["prompts"])
        job = submit_job(
            settings,
            kind="batch",
            request_document=body,
            items=items,
            models=[body["model"]],
            repetitions=body["runs"],
            judge_model=body["judge_model"],
        )
        return accepted(job)


def number_items(prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give prompts without an id their 1-based position, and reject duplicate ids."""
    items = []
    seen: dict[str, int] = {}
    for position, prompt in enumerate(prompts, start=1):
        item_id = prompt.get("id") or str(position)
        if item_id in seen:
            raise Unprocessable(
                f"duplicate id {item_id!r} on prompts[{seen[item_id] - 1}] and "
                f"prompts[{position - 1}]; ids must be unique",
                field=f"prompts.{position - 1}.id",
            )
        seen[item_id] = position
        items.append({**prompt, "id": item_id})
    return items


def accepted(job) -> tuple[dict[str, Any], int, dict[str, str]]:
    location = url_for("jobs.JobView", job_id=job.id)
    body = {
        "job_id": str(job.id),
        "status": job.status,
        "location": location,
        "total_runs": job.total_runs,
    }
    return body, 202, {"Location": location}
