"""POST /compare: two models on the same prompts, with pairwise verdicts from a third."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.parsing import JSON_PARSER
from api.datasets import resolve_dataset_items
from api.evaluate import accepted
from api.job_submission import check_models, settings_for_app, submit_job
from api.schemas import CompareSchema, JobAcceptedSchema

blueprint = Blueprint(
    "compare", __name__, url_prefix="/compare", description="Compare two models"
)
# Set before the routes, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER


@blueprint.route("")
class CompareView(MethodView):
    @blueprint.arguments(CompareSchema)
    @blueprint.response(202, JobAcceptedSchema)
    def post(self, body: dict[str, Any]):
        """Run both models `runs` times per prompt; the judge sees each pair in both orders."""
        settings = settings_for_app()
        check_models(
            settings,
            {
                "model_a": body["model_a"],
                "model_b": body["model_b"],
                "judge_model": body["judge_model"],
            },
        )

        dataset_name = dataset_version = None
        if "prompt" in body:
            items = [{"id": body["prompt"].get("id", "prompt"), **body["prompt"]}]
        else:
            dataset_name, dataset_version, items = resolve_dataset_items(
                settings, body["dataset"], body.get("version"), body.get("limit")
            )

        job = submit_job(
            settings,
            kind="comparison",
            request_document={**body, "version": dataset_version},
            items=items,
            models=[body["model_a"], body["model_b"]],
            repetitions=body["runs"],
            judge_model=body["judge_model"],
            dataset_name=dataset_name,
            dataset_version=dataset_version,
        )
        return accepted(job)
