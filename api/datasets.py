"""Dataset routes: list, show versions, upload, and evaluate a dataset."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import ValidationError

from api.errors import NotFound, PayloadTooLarge, Unprocessable
from api.evaluate import accepted
from api.job_submission import check_models, settings_for_app, submit_job
from api.parsing import JSON_PARSER, parse_json_body
from api.schemas import (
    DatasetEvaluateBodySchema,
    DatasetEvaluateQuerySchema,
    JobAcceptedSchema,
)
from mistralmeter.dataset_files import (
    DatasetFileError,
    DatasetTooLargeError,
    parse_dataset,
    validate_dataset_name,
)
from models.dataset_store import (
    get_latest,
    get_version,
    list_datasets,
    list_versions,
    store_upload,
    sync_builtin_datasets,
)
from models.datasets import Dataset
from models.db import session_scope

blueprint = Blueprint("datasets", __name__, url_prefix="/datasets", description="Prompt sets")
# Set before the routes, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER

MAX_DESCRIPTION_CHARS = 2_000


@blueprint.route("")
class DatasetListView(MethodView):
    @blueprint.response(200)
    def get(self):
        """List datasets with their latest version and item count."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            sync_builtin_datasets(session, settings.database_url)
            return [
                {
                    "name": summary.name,
                    "latest_version": summary.latest_version,
                    "items": summary.item_count,
                    "versions": summary.versions,
                    "description": summary.description,
                    "source": summary.source,
                    "license": summary.license,
                }
                for summary in list_datasets(session)
            ]

    @blueprint.response(201)
    def post(self):
        """Upload a dataset version as JSON, JSONL or CSV (multipart `file`, or the raw body).

        The name comes from the `name` form field or query parameter. A bad file is rejected
        with the line and the reason, and nothing is stored.
        """
        settings = settings_for_app()
        name, description, data, filename, file_format = _read_upload()
        try:
            validate_dataset_name(name)
            items = parse_dataset(
                data,
                filename=filename,
                format=file_format,
                max_bytes=settings.max_upload_bytes,
                max_prompt_chars=settings.max_prompt_chars,
            )
        except DatasetTooLargeError as exc:
            raise PayloadTooLarge(f"{exc}; send a smaller file or split the dataset",
                                  field="file") from exc
        except DatasetFileError as exc:
            message = str(exc)
            if exc.field == "format":
                message += (
                    "; over HTTP, pass ?format=json|jsonl|csv, the `format` form field, or a "
                    "Content-Type of application/json, application/x-ndjson or text/csv"
                )
            raise Unprocessable(message, field=exc.field or "file") from exc
        except ValueError as exc:
            raise Unprocessable(str(exc), field="name") from exc

        with session_scope(settings.database_url) as session:
            sync_builtin_datasets(session, settings.database_url)
            latest = get_latest(session, name)
            if latest is not None and latest.source == "builtin":
                raise Unprocessable(
                    f"{name!r} is a builtin dataset; upload under another name",
                    field="name",
                )
            dataset, created = store_upload(
                session, name=name, items=items, description=description
            )
            document = dataset_document(dataset, include_items=False)
            document["created"] = created
        return document, 201 if created else 200


@blueprint.route("/<name>")
class DatasetView(MethodView):
    @blueprint.response(200)
    def get(self, name: str):
        """Show a dataset's latest version, its items, and every stored version."""
        settings = settings_for_app()
        with session_scope(settings.database_url) as session:
            sync_builtin_datasets(session, settings.database_url)
            versions = list_versions(session, name)
            if not versions:
                raise NotFound(_unknown_dataset_message(session, name))
            document = dataset_document(versions[0], include_items=True)
            document["versions"] = [
                {"version": v.version, "items": v.item_count, "created_at": v.created_at.isoformat()}
                for v in versions
            ]
            return document


@blueprint.route("/<name>/evaluate")
class DatasetEvaluateView(MethodView):
    @blueprint.arguments(DatasetEvaluateQuerySchema, location="query")
    @blueprint.response(202, JobAcceptedSchema)
    def post(self, query: dict[str, Any], name: str):
        """Evaluate every item of a dataset (or the first `limit`) with one model."""
        settings = settings_for_app()
        options = _merge_query_and_body(query)
        check_models(settings, {"model": options["model"], "judge_model": options["judge_model"]})

        dataset_name, dataset_version, items = resolve_dataset_items(
            settings, name, options.get("version"), options.get("limit")
        )
        request_document = {**options, "dataset": dataset_name, "version": dataset_version}
        job = submit_job(
            settings,
            kind="dataset",
            request_document=request_document,
            items=items,
            models=[options["model"]],
            repetitions=options["runs"],
            judge_model=options["judge_model"],
            dataset_name=dataset_name,
            dataset_version=dataset_version,
        )
        return accepted(job)


def _merge_query_and_body(query: dict[str, Any]) -> dict[str, Any]:
    """Combine query parameters and an optional JSON body, which must not contradict each other."""
    raw = request.get_data(cache=True)
    body: Any = parse_json_body(raw) if raw else {}
    if not isinstance(body, dict):
        raise Unprocessable("request body must be a JSON object", field="body")

    conflicting = sorted(key for key in set(query) & set(body) if query[key] != body[key])
    if conflicting:
        raise Unprocessable(
            f"{', '.join(conflicting)} given in both the query string and the JSON body with "
            "different values; give each option once",
            field=conflicting[0],
        )

    merged = {**query, **body}
    try:
        options = DatasetEvaluateBodySchema().load(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {' '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                             for field, msgs in exc.messages.items())
        raise Unprocessable(f"invalid request: {problems}", errors=exc.messages) from exc
    if not options.get("model"):
        raise Unprocessable(
            "missing model: pass ?model=NAME or a JSON body with \"model\"", field="model"
        )
    return options


def resolve_dataset_items(
    settings, name: str, version: str | None, limit: int | None
) -> tuple[str, str, list[dict[str, Any]]]:
    """Return the dataset's name, version and items (the first `limit` when given)."""
    with session_scope(settings.database_url) as session:
        sync_builtin_datasets(session, settings.database_url)
        dataset = _resolve_version(session, name, version)
        items = list(dataset.items)
        resolved = (dataset.name, dataset.version)
    if limit:
        items = items[:limit]
    return resolved[0], resolved[1], items


def _resolve_version(session, name: str, version: str | None) -> Dataset:
    if version:
        dataset = get_version(session, name, version)
        if dataset is None:
            raise NotFound(
                f"dataset {name!r} has no version {version!r}; GET /datasets/{name} lists them"
            )
        return dataset
    dataset = get_latest(session, name)
    if dataset is None:
        raise NotFound(_unknown_dataset_message(session, name))
    return dataset


def _unknown_dataset_message(session, name: str) -> str:
    known = ", ".join(summary.name for summary in list_datasets(session)) or "none"
    return f"dataset {name!r} not found; known datasets: {known}"


def _read_upload() -> tuple[str, str, bytes, str | None, str | None]:
    upload = request.files.get("file")
    name = request.form.get("name") or request.args.get("name") or ""
    description = request.form.get("description") or request.args.get("description") or ""
    file_format = request.form.get("format") or request.args.get("format")

    if upload is not None:
        data, filename = upload.read(), upload.filename
    else:
        data, filename = request.get_data(cache=False), None
        if file_format is None:
            file_format = _format_from_content_type(request.mimetype)

    if not name and filename:
        name = filename.rsplit("/", 1)[-1].split(".", 1)[0].lower()
    if not name:
        raise Unprocessable(
            "missing dataset name: pass it as the `name` form field or query parameter",
            field="name",
        )
    if not data and request.mimetype == "application/x-www-form-urlencoded":
        raise Unprocessable(
            "the body was sent as an HTML form (Content-Type application/x-www-form-urlencoded, "
            "the default of curl -d); send the file as the body with its own Content-Type "
            "(curl --data-binary @FILE -H 'Content-Type: application/x-ndjson') or as the "
            "multipart field `file`",
            field="file",
        )
    if not data:
        raise Unprocessable(
            "no file: send the dataset as the multipart field `file` or as the request body",
            field="file",
        )
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise Unprocessable(
            f"description is {len(description)} characters; the limit is {MAX_DESCRIPTION_CHARS}",
            field="description",
        )
    return name, description, data, filename, file_format


def _format_from_content_type(mimetype: str) -> str | None:
    return {
        "application/json": "json",
        "application/x-ndjson": "jsonl",
        "application/jsonl": "jsonl",
        "text/csv": "csv",
    }.get(mimetype)


def dataset_document(dataset: Dataset, *, include_items: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": dataset.name,
        "version": dataset.version,
        "items_count": dataset.item_count,
        "description": dataset.description,
        "source": dataset.source,
        "license": dataset.license,
        "created_at": dataset.created_at.isoformat(),
    }
    if include_items:
        document["items"] = dataset.items
    return document
