"""The request parser every blueprint uses."""

from __future__ import annotations

import json
import math
from typing import Any

from marshmallow import RAISE
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request

from api.errors import BadRequest
from api.text_checks import check_json_document


class JsonArgumentsParser(FlaskParser):
    """webargs' Flask parser, stricter in four ways.

    - Every unparseable JSON body is a 400 that gives the reason: webargs handles
      json.JSONDecodeError only, and Python's json module raises a plain ValueError on an
      integer of more than 4300 digits and RecursionError on deep nesting.
    - A key given twice in one JSON object is a 400, where json.loads keeps the last one.
    - A string PostgreSQL cannot store (NUL, unpaired surrogate) is a 422 naming its path.
    - Unknown query parameters are rejected like unknown body fields, so a typo is never
      ignored.
    """

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": RAISE,
        "querystring": RAISE,
    }

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return missing
        return parse_json_body(req.get_data(cache=True))


def parse_json_body(data: bytes) -> Any:
    """Decode a JSON request body, raising BadRequest with the reason when it is invalid."""
    try:
        document = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"invalid JSON body: not UTF-8 at byte {exc.start}; send UTF-8 JSON", field="json"
        ) from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}", field="json") from None
    except RecursionError:
        raise BadRequest(
            "invalid JSON body: nested too deeply; flatten the document", field="json"
        ) from None
    except ValueError as exc:
        # Raised for a duplicate key, NaN, Infinity, a float beyond 64 bits (PostgreSQL's JSONB
        # rejects all three) and an integer of more than 4300 digits.
        raise BadRequest(f"invalid JSON body: {exc}", field="json") from None

    check_json_document(document)
    return document


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value; send null or a string")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is beyond the range of a 64-bit float")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document: dict[str, object] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"key {key!r} given twice in one object; give each key once")
        document[key] = value
    return document


JSON_PARSER = JsonArgumentsParser()


# Routes that read query parameters themselves instead of through a schema.
MANUAL_QUERY_PARAMETERS = {
    ("datasets.DatasetListView", "POST"): {"name", "description", "format"},
}


def reject_unexpected_query() -> None:
    """Reject query parameters a route does not take, and any parameter given twice.

    Routes with a query schema are checked by it; this covers the others, where a stray
    `?runs=50` would otherwise be ignored without a word.
    """
    from flask import current_app, request

    from api.errors import Unprocessable

    repeated = sorted(key for key in request.args if len(request.args.getlist(key)) > 1)
    if repeated:
        raise Unprocessable(
            f"query parameter {', '.join(repeated)} given more than once; give each once",
            field=repeated[0],
        )
    if not request.args or request.endpoint is None:
        return

    allowed = MANUAL_QUERY_PARAMETERS.get((request.endpoint, request.method))
    if allowed is None:
        if _declares_query_schema(current_app.view_functions.get(request.endpoint)):
            return
        allowed = set()
    unexpected = sorted(set(request.args) - allowed)
    if unexpected:
        takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
        raise Unprocessable(
            f"unknown query parameter {', '.join(unexpected)} for {request.method} "
            f"{request.path}; {takes}",
            field=unexpected[0],
        )


def _declares_query_schema(view) -> bool:
    from flask import request

    view_class = getattr(view, "view_class", None)
    method = getattr(view_class, request.method.lower(), None) if view_class else view
    parameters = getattr(method, "_apidoc", {}).get("arguments", {}).get("parameters", [])
    return any(parameter.get("in") == "query" for parameter in parameters)
