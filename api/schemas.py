"""Request and response schemas (marshmallow), shared by the routes and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from mistralmeter.dataset_files import MAX_ITEMS
from models.jobs import JOB_KINDS
from workers.judge_parsing import CRITERIA

MAX_PROMPT_CHARS = 100_000
MAX_DATASET_ITEMS = MAX_ITEMS
MAX_BATCH_PROMPTS = 1_000
MAX_RUNS = 100
MAX_JUDGE_SAMPLES = 5
MAX_WEIGHT = 1_000.0
# Largest offset a list route accepts; PostgreSQL's OFFSET is a bigint, and no list is this long.
MAX_OFFSET = 1_000_000_000
# Maximum length of a dataset version: the column stores "sha256:" and a 64-character hex digest.
MAX_VERSION_CHARS = 80


class StrictSchema(Schema):
    """Reject unknown keys, so a typo such as "judge_modle" is an error, not a silent default."""

    error_messages = {"type": "must be a JSON object"}

    class Meta:
        unknown = RAISE


def check_storable_text(value: str) -> None:
    """Reject text PostgreSQL cannot store: NUL characters and unpaired surrogates."""
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"contains an unpaired surrogate at character {exc.start}; send valid UTF-8 text"
        ) from None


def check_not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be empty or only whitespace")


def check_storable_json(value: Any, path: str = "metadata") -> None:
    """Apply check_storable_text to every key and string inside a JSON value."""
    if isinstance(value, str):
        check_storable_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable_text(str(key))
            check_storable_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_storable_json(item, f"{path}.{index}")


class Text(fields.String):
    """A string that PostgreSQL can store, with a maximum length."""

    def __init__(self, *, max_length: int, min_length: int = 0, **kwargs: Any) -> None:
        validators = [
            validate.Length(min=min_length, max=max_length, error="must be {min} to {max} characters long"),
            check_storable_text,
        ]
        super().__init__(validate=validators, **kwargs)


class PromptSchema(StrictSchema):
    error_messages = {"type": 'must be a JSON object such as {"prompt": "Explain TCP slow start."}'}

    id = Text(min_length=1, max_length=200)
    prompt = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=MAX_PROMPT_CHARS, error="must be 1 to {max} characters long"),
            check_not_blank,
            check_storable_text,
        ],
    )
    system = Text(max_length=MAX_PROMPT_CHARS)
    expected_style = Text(max_length=2_000)
    reference = Text(max_length=MAX_PROMPT_CHARS)
    category = Text(max_length=100)
    metadata = fields.Dict(validate=check_storable_json)


class ParamsSchema(StrictSchema):
    """Sampling parameters passed to the evaluated model."""

    temperature = fields.Float(validate=validate.Range(min=0, max=2))
    top_p = fields.Float(validate=validate.Range(min=0, max=1))
    max_tokens = fields.Integer(strict=True, validate=validate.Range(min=1, max=131_072))
    random_seed = fields.Integer(strict=True, validate=validate.Range(min=0, max=2**31 - 1))
    presence_penalty = fields.Float(validate=validate.Range(min=-2, max=2))
    frequency_penalty = fields.Float(validate=validate.Range(min=-2, max=2))
    # An empty stop sequence is never what a caller means, and providers differ on it.
    stop = fields.List(fields.String(validate=validate.Length(min=1)), validate=validate.Length(max=4))
    safe_prompt = fields.Boolean()


class JudgeOptionsSchema(StrictSchema):
    temperature = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=2))
    samples = fields.Integer(
        load_default=1, strict=True, validate=validate.Range(min=1, max=MAX_JUDGE_SAMPLES)
    )
    # Weights are relative, so a bound loses nothing. Without one, 1e308 overflows the
    # weighted sum to infinity and the overall score to NaN.
    weights = fields.Dict(
        keys=fields.String(),
        values=fields.Float(allow_nan=False, validate=validate.Range(min=0, max=MAX_WEIGHT)),
    )

    @validates_schema
    def _check_weights(self, data: dict[str, Any], **_: Any) -> None:
        weights = data.get("weights")
        if weights is None:
            return
        unknown = sorted(set(weights) - set(CRITERIA))
        if unknown:
            raise ValidationError(
                f"unknown criteria {unknown}; use {list(CRITERIA)}", field_name="weights"
            )
        if not any(weights.values()):
            raise ValidationError(
                f"weights must be between 0 and {MAX_WEIGHT:g} and at least one must be positive",
                field_name="weights",
            )


class RateLimitOverridesSchema(StrictSchema):
    max_in_flight = fields.Integer(validate=validate.Range(min=1, max=10_000))
    requests_per_minute = fields.Integer(validate=validate.Range(min=1, max=10_000_000))
    tokens_per_minute = fields.Integer(validate=validate.Range(min=1, max=10**10))


class ModelName(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            validate=validate.Regexp(
                r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
                error="must be a model name such as mistral-small-latest",
            ),
            **kwargs,
        )


class RunOptionsSchema(StrictSchema):
    """Options for running each prompt: repetitions, sampling, judging and rate-limit overrides."""

    runs = fields.Integer(
        load_default=1,
        strict=True,
        validate=validate.Range(min=1, max=MAX_RUNS, error="must be between {min} and {max}"),
    )
    params = fields.Nested(ParamsSchema, load_default=dict)
    judge = fields.Nested(JudgeOptionsSchema, load_default=None, allow_none=True)
    rate_limits = fields.Nested(RateLimitOverridesSchema, load_default=None, allow_none=True)


class JobOptionsSchema(RunOptionsSchema):
    """Fields every single-model evaluation job accepts."""

    model = ModelName(required=True)
    judge_model = ModelName(load_default=None, allow_none=True)

    @validates_schema
    def _judge_differs(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("judge_model") and data.get("judge_model") == data.get("model"):
            raise ValidationError(
                "the judge must not be the evaluated model; choose another judge_model",
                field_name="judge_model",
            )

    @validates_schema
    def _judge_options_need_judge(self, data: dict[str, Any], **_: Any) -> None:
        # Without a judge model nothing is judged, so the options would be ignored unseen.
        if data.get("judge") and not data.get("judge_model"):
            raise ValidationError(
                "judge options need a judge_model; set judge_model or remove judge",
                field_name="judge",
            )


class EvaluateSchema(JobOptionsSchema):
    prompt = fields.Nested(PromptSchema, required=True)


class BatchSchema(JobOptionsSchema):
    prompts = fields.List(
        fields.Nested(PromptSchema),
        required=True,
        validate=validate.Length(
            min=1, max=MAX_BATCH_PROMPTS, error="must hold 1 to {max} prompts"
        ),
    )


class DatasetEvaluateQuerySchema(Schema):
    """Query parameters of POST /datasets/{name}/evaluate; a JSON body may carry them instead."""

    class Meta:
        unknown = RAISE

    model = ModelName()
    judge_model = ModelName()
    runs = fields.Integer(validate=validate.Range(min=1, max=MAX_RUNS))
    version = fields.String(validate=validate.Length(min=1, max=MAX_VERSION_CHARS))
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_DATASET_ITEMS))


class DatasetEvaluateBodySchema(JobOptionsSchema):
    model = ModelName()
    version = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=MAX_VERSION_CHARS),
        metadata={"description": "default: the latest"},
    )
    limit = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=MAX_DATASET_ITEMS),
        metadata={"description": "evaluate only the first N items"},
    )


class JobAcceptedSchema(Schema):
    job_id = fields.String()
    status = fields.String()
    location = fields.String()
    total_runs = fields.Integer()


class ProgressSchema(Schema):
    done = fields.Integer()
    failed = fields.Integer()
    total = fields.Integer()


class JobSchema(Schema):
    id = fields.String()
    kind = fields.String()
    status = fields.String()
    progress = fields.Nested(ProgressSchema)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    request = fields.Dict()
    simulated = fields.Boolean()
    dataset = fields.Dict(allow_none=True)
    result = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)


class JobListQuerySchema(Schema):
    status = fields.String(validate=validate.OneOf(
        ["queued", "running", "succeeded", "failed", "cancelled"]
    ))
    kind = fields.String(validate=validate.OneOf(JOB_KINDS))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


class LowercaseString(fields.String):
    """A string read in lower case, so `?format=CSV` means what `?format=csv` means."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).lower()


class ResultsQuerySchema(Schema):
    format = LowercaseString(
        load_default="json", validate=validate.OneOf(["json", "jsonl", "csv"])
    )


class CompareSchema(RunOptionsSchema):
    """Two models on one prompt or on a dataset, judged by a third model in both orders."""

    model_a = ModelName(required=True)
    model_b = ModelName(required=True)
    judge_model = ModelName(required=True)
    prompt = fields.Nested(PromptSchema)
    dataset = fields.String(validate=validate.Length(min=1, max=64))
    version = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=MAX_VERSION_CHARS)
    )
    limit = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=MAX_DATASET_ITEMS)
    )

    @validates_schema
    def _three_distinct_models(self, data: dict[str, Any], **_: Any) -> None:
        model_a, model_b, judge = data.get("model_a"), data.get("model_b"), data.get("judge_model")
        if model_a and model_a == model_b:
            raise ValidationError(
                "model_a and model_b are the same model; compare two different models",
                field_name="model_b",
            )
        for name, model in (("model_a", model_a), ("model_b", model_b)):
            if judge and judge == model:
                raise ValidationError(
                    f"judge_model equals {name}; the judge must be a third model",
                    field_name="judge_model",
                )

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_: Any) -> None:
        if ("prompt" in data) == ("dataset" in data):
            raise ValidationError(
                "give exactly one of prompt (one prompt) or dataset (a dataset name)",
                field_name="prompt",
            )
