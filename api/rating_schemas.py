"""Request and response schemas of the human rating routes."""

from __future__ import annotations

import json
import re
from datetime import timezone
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from api.schemas import MAX_OFFSET
from mistralmeter.rating_stats import JUDGE_RATER_PREFIX
from models.ratings import (
    DEFAULT_CRITERION,
    DEFAULT_RATER,
    MAX_COMMENT_CHARS,
    MAX_RATER_CHARS,
    PREFERENCES,
    RATING_CRITERIA,
)

RATING_VALUES_TEXT = "a whole number from 1 to 5 (1, 2, 3, 4 or 5)"
# At most 3 digits, so a huge digit string is rejected before int() has to parse it.
RATING_DIGITS = re.compile(r"[0-9]{1,3}")


class StrictSchema(Schema):
    """Reject unknown keys, so a typo such as "ratng" is an error, not a silent default."""

    class Meta:
        unknown = RAISE


def describe_value(value: Any) -> str:
    """Show a rejected value as it was sent: JSON notation, shortened to 40 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class RatingValue(fields.Field):
    """A rating from 1 to 5: a JSON integer in a body, or its digits in a query string.

    Floats (4.0 included), strings in a JSON body, booleans, null, NaN and Infinity are
    rejected, because a rating is a choice among five values, not a measurement.
    """

    def __init__(self, *, from_text: bool, **kwargs: Any) -> None:
        message = f"must be {RATING_VALUES_TEXT}; got {{input}}"
        super().__init__(
            error_messages={"invalid": message, "null": message.format(input="null")},
            metadata={
                "type": "integer",
                "minimum": 1,
                "maximum": 5,
                "description": RATING_VALUES_TEXT,
            },
            **kwargs,
        )
        self.from_text = from_text

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if self.from_text:
            if not isinstance(value, str) or not RATING_DIGITS.fullmatch(value):
                raise self.make_error("invalid", input=describe_value(value))
            number = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.make_error("invalid", input=describe_value(value))
            number = value
        if not 1 <= number <= 5:
            raise self.make_error("invalid", input=describe_value(value))
        return number


def _reject_nul(value: str) -> None:
    # PostgreSQL text cannot contain NUL, so it is rejected here rather than by the driver.
    if "\x00" in value:
        raise ValidationError("must not contain the NUL character (\\u0000)")


def _check_comment(value: str) -> None:
    _reject_nul(value)
    if len(value) > MAX_COMMENT_CHARS:
        raise ValidationError(
            f"must be at most {MAX_COMMENT_CHARS} characters long; got {len(value)}"
        )


def _check_rater(value: str) -> None:
    _reject_nul(value)
    if not value.strip() or len(value) > MAX_RATER_CHARS:
        raise ValidationError(
            f"must be 1 to {MAX_RATER_CHARS} characters long and not only spaces"
        )
    if value.startswith(JUDGE_RATER_PREFIX):
        raise ValidationError(
            f"must not start with {JUDGE_RATER_PREFIX!r}: that prefix names judge models "
            "in the statistics"
        )


def _check_filter_text(value: str) -> None:
    _reject_nul(value)
    if not value or len(value) > MAX_RATER_CHARS:
        raise ValidationError(f"must be 1 to {MAX_RATER_CHARS} characters long")


def comment_field() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=_check_comment,
        metadata={"description": f"optional, at most {MAX_COMMENT_CHARS} characters"},
    )


def rater_field() -> fields.String:
    return fields.String(
        validate=_check_rater, metadata={"description": f"default: {DEFAULT_RATER}"}
    )


def criterion_field(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.OneOf(
            RATING_CRITERIA,
            error=f"must be one of {', '.join(RATING_CRITERIA)}; got {{input}}",
        ),
        metadata={"description": f"default: {DEFAULT_CRITERION}"},
        **kwargs,
    )


def filter_text_field() -> fields.String:
    return fields.String(validate=_check_filter_text)


class RateQuerySchema(StrictSchema):
    """Query parameters of POST /rate/{run_id}. A JSON body may carry the same fields."""

    rating = RatingValue(from_text=True)
    comment = comment_field()
    rater = rater_field()
    criterion = criterion_field()


class RateBodySchema(StrictSchema):
    """JSON body of POST /rate/{run_id}, whose fields win over the query parameters."""

    rating = RatingValue(from_text=False)
    comment = comment_field()
    rater = rater_field()
    criterion = criterion_field()


class RatingSchema(Schema):
    id = fields.String()
    run_id = fields.String()
    rater = fields.String()
    criterion = fields.String()
    rating = fields.Integer()
    comment = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class RunRatingsSchema(Schema):
    run = fields.Dict()
    judge = fields.Dict(allow_none=True)
    ratings = fields.List(fields.Nested(RatingSchema))


class PreferenceBodySchema(StrictSchema):
    run_a_id = fields.UUID(required=True)
    run_b_id = fields.UUID(required=True)
    preference = fields.String(
        required=True,
        validate=validate.OneOf(
            PREFERENCES, error=f"must be one of {', '.join(PREFERENCES)}; got {{input}}"
        ),
        metadata={"description": "a: run_a_id is better, b: run_b_id is better, or tie"},
    )
    rater = rater_field()
    comment = comment_field()

    @validates_schema
    def _two_runs(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("run_a_id") is not None and data.get("run_a_id") == data.get("run_b_id"):
            raise ValidationError(
                "run_a_id and run_b_id are the same run; a preference needs two runs",
                field_name="run_b_id",
            )


class PreferenceSchema(Schema):
    id = fields.String()
    run_a_id = fields.String()
    run_b_id = fields.String()
    preference = fields.String()
    rater = fields.String()
    comment = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PreferenceListQuerySchema(StrictSchema):
    run_id = fields.UUID(metadata={"description": "preferences in which this run is a or b"})
    rater = filter_text_field()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


class RatingStatsQuerySchema(StrictSchema):
    """Filters of GET /ratings/stats and GET /ratings/calibration."""

    model = filter_text_field()
    judge_model = filter_text_field()
    dataset = filter_text_field()
    rater = filter_text_field()
    job_id = fields.UUID()
    since = fields.AwareDateTime(
        default_timezone=timezone.utc,
        metadata={"description": "ISO 8601, inclusive, on created_at; UTC when no offset"},
    )
    until = fields.AwareDateTime(
        default_timezone=timezone.utc,
        metadata={"description": "ISO 8601, exclusive, on created_at; UTC when no offset"},
    )
    criterion = criterion_field(load_default=DEFAULT_CRITERION)

    @validates_schema
    def _window_order(self, data: dict[str, Any], **_: Any) -> None:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since >= until:
            raise ValidationError("must be later than since", field_name="until")
