"""The request parser every blueprint uses."""

from __future__ import annotations

import json

from marshmallow import RAISE
from webargs.flaskparser import FlaskParser


class JsonArgumentsParser(FlaskParser):
    """webargs' Flask parser, stricter in two ways.

    Every unparseable JSON body is invalid JSON (400): webargs handles json.JSONDecodeError
    only, and Python's json module raises a plain ValueError on an integer of more than 4300
    digits and RecursionError on deep nesting, which would otherwise become a 500. Unknown
    query parameters are rejected like unknown body fields, so a typo is never ignored.
    """

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": RAISE,
        "querystring": RAISE,
    }

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as exc:
            return self._handle_invalid_json_error(exc, req)


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
