"""Schemas for scheduled benchmarks."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from croniter import CroniterBadDateError, croniter
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from api.schemas import (
    MAX_DATASET_ITEMS,
    MAX_RUNS,
    MAX_VERSION_CHARS,
    JudgeOptionsSchema,
    ModelName,
    ParamsSchema,
    StrictSchema,
)
from workers.scheduling import next_fire_time

MAX_SCHEDULE_MODELS = 4

# Length of the schedules.cron column.
MAX_CRON_CHARS = 120

# Aliases that croniter 7 expands to five fields, compared in lower case as croniter does.
# croniter reads a sixth field as seconds and a seventh as years, which would start a job
# every second, so only five fields or one of these aliases are accepted.
CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
CRON_FIELDS = 5


def _check_cron(value: str) -> None:
    if len(value) > MAX_CRON_CHARS:
        raise ValidationError(f"must be at most {MAX_CRON_CHARS} characters long")

    field_count = len(value.split())
    if value.lower() not in CRON_ALIASES and field_count != CRON_FIELDS:
        counted = f"{field_count} field" if field_count == 1 else f"{field_count} fields"
        unsupported = " (seconds and years are not supported)" if field_count > CRON_FIELDS else ""
        raise ValidationError(
            f"has {counted}{unsupported}; use five fields (minute hour day-of-month "
            f"month day-of-week) such as '0 3 * * *', or one of {', '.join(CRON_ALIASES)}"
        )
    if not croniter.is_valid(value):
        raise ValidationError(
            "is not a valid cron expression; use five fields such as '0 3 * * *' (03:00 UTC daily)"
        )

    # croniter raises CroniterBadDateError when no time matches within 50 years (its default
    # max_years_between_matches). For five fields that means never, as with '0 3 31 2 *'.
    try:
        next_fire_time(value, datetime.now(timezone.utc))
    except CroniterBadDateError:
        raise ValidationError(
            f"never fires: no date matches {value!r}; check that the day-of-month exists in "
            "the months given"
        ) from None


def _check_webhook(value: str | None) -> None:
    if value is None:
        return
    if not value.startswith(("http://", "https://")):
        raise ValidationError("must be an http:// or https:// URL")
    try:
        host = urlsplit(value).hostname
    except ValueError as error:
        raise ValidationError(f"is not a valid URL: {error}") from None
    if not host:
        raise ValidationError("must name a host, such as https://hooks.example.com/path")


class ScheduleCreateSchema(StrictSchema):
    name = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[a-z0-9][a-z0-9._-]{0,63}$",
            error="must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        ),
    )
    dataset = fields.String(required=True, validate=validate.Length(min=1, max=64))
    version = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=MAX_VERSION_CHARS)
    )
    # Bounded like the limit of a direct request, which also keeps it within the integer column.
    limit = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=MAX_DATASET_ITEMS)
    )
    models = fields.List(
        ModelName(),
        required=True,
        validate=validate.Length(
            min=1, max=MAX_SCHEDULE_MODELS, error="must list 1 to {max} models"
        ),
    )
    judge_model = ModelName(load_default=None, allow_none=True)
    runs = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_RUNS))
    params = fields.Nested(ParamsSchema, load_default=dict)
    judge = fields.Nested(JudgeOptionsSchema, load_default=None, allow_none=True)
    cron = fields.String(
        required=True,
        validate=_check_cron,
        metadata={"description": "five fields in UTC, such as '0 3 * * *', or an alias such as @daily"},
    )
    enabled = fields.Boolean(load_default=True)
    webhook_url = fields.String(load_default=None, allow_none=True, validate=_check_webhook)
    alpha = fields.Float(
        load_default=0.05,
        validate=validate.Range(min=0, max=1, min_inclusive=False, max_inclusive=False),
    )

    @validates("models")
    def _distinct_models(self, models: list[str], **_: Any) -> None:
        if len(set(models)) != len(models):
            raise ValidationError("must not list a model twice")

    @validates_schema
    def _judge_is_separate(self, data: dict[str, Any], **_: Any) -> None:
        judge = data.get("judge_model")
        if judge and judge in data.get("models", []):
            raise ValidationError(
                f"judge_model {judge!r} is also in models; the judge must be a separate model",
                field_name="judge_model",
            )


class ScheduleUpdateSchema(StrictSchema):
    enabled = fields.Boolean()
    cron = fields.String(validate=_check_cron)
    webhook_url = fields.String(allow_none=True, validate=_check_webhook)
    alpha = fields.Float(
        validate=validate.Range(min=0, max=1, min_inclusive=False, max_inclusive=False)
    )


class ScheduleSchema(Schema):
    id = fields.String()
    name = fields.String()
    dataset = fields.String()
    version = fields.String(allow_none=True)
    limit = fields.Integer(allow_none=True)
    models = fields.List(fields.String())
    judge_model = fields.String(allow_none=True)
    runs = fields.Integer()
    params = fields.Dict()
    judge = fields.Dict(allow_none=True)
    cron = fields.String()
    enabled = fields.Boolean()
    webhook_url = fields.String(
        allow_none=True, metadata={"description": "scheme and host only; the rest may hold a token"}
    )
    alpha = fields.Float()
    next_run_at = fields.DateTime()
    last_run_at = fields.DateTime(allow_none=True)
    last_job_id = fields.String(allow_none=True)
    recent_jobs = fields.List(fields.Dict())
