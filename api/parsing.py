"""The request parser every blueprint uses."""

from __future__ import annotations

import json

from webargs.flaskparser import FlaskParser


class JsonArgumentsParser(FlaskParser):
    """webargs' Flask parser, which rejects every unparseable JSON body as invalid JSON (400).

    webargs handles json.JSONDecodeError only. Python's json module raises a plain
    ValueError on an integer of more than 4300 digits and RecursionError on deep nesting,
    which would otherwise become a 500.
    """

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as exc:
            return self._handle_invalid_json_error(exc, req)


JSON_PARSER = JsonArgumentsParser()
