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
