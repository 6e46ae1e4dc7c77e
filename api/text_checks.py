"""Reject request text that PostgreSQL cannot store, wherever in the request it appears.

PostgreSQL text and JSONB refuse the NUL character (U+0000), and psycopg cannot encode a
lone UTF-16 surrogate (U+D800 to U+DFFF), which JSON can express as "\\ud800". Either one
reaching an INSERT or a WHERE clause raises inside the database driver, so every string of a
request is checked here first: the JSON body, the query string, the path and form fields.
"""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import unquote_to_bytes

from api.errors import Unprocessable

# Nesting deeper than this is rejected before the walk, which recurses once per level.
MAX_JSON_DEPTH = 64


def text_problem(value: str) -> str | None:
    """Return why `value` cannot be stored, or None when it can."""
    position = value.find("\x00")
    if position >= 0:
        return f"contains a NUL character (U+0000) at character {position}; remove it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"contains an unpaired surrogate (U+{ord(value[error.start]):04X}) at character "
            f"{error.start}; send valid UTF-8 text"
        )
    return None


def check_json_document(document: Any) -> None:
    """Raise Unprocessable for the first string or key in `document` that cannot be stored."""
    for path, value in _json_strings(document, "", 0):
        problem = text_problem(value)
        if problem is not None:
            field = path or "body"
            raise Unprocessable(f"{field}: {problem}", field=field)


def check_request_text() -> None:
    """Check the query string, path parameters and form fields of the current request."""
    from flask import request

    _check_query_encoding(request.query_string)
    for source, values in (("query parameter", request.args), ("form field", request.form)):
        for name in values:
            for value in (name, *values.getlist(name)):
                _raise_if_unstorable(f"{source} {name!r}", name, value)
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            _raise_if_unstorable(f"path parameter {name!r}", name, value)


def _raise_if_unstorable(label: str, field: str, value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise Unprocessable(f"{label} {problem}", field=field)


def _check_query_encoding(query_string: bytes) -> None:
    """Reject a query parameter whose percent-encoded bytes are not UTF-8.

    Werkzeug keeps such a sequence as the literal text "%FF", which would be stored unchanged.
    """
    for part in query_string.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" "))
        for raw in (name, unquote_to_bytes(raw_value.replace(b"+", b" "))):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                printable_name = name.decode("utf-8", errors="replace")
                raise Unprocessable(
                    f"query parameter {printable_name!r} is not valid UTF-8 after percent-decoding; "
                    "percent-encode the UTF-8 bytes of the text",
                    field=printable_name,
                ) from None


def _json_strings(value: Any, path: str, depth: int) -> Iterator[tuple[str, str]]:
    """Yield (path, string) for every key and string value, paths like `prompts.0.prompt`."""
    if depth > MAX_JSON_DEPTH:
        raise Unprocessable(
            f"{path or 'body'}: JSON nested more than {MAX_JSON_DEPTH} levels deep; "
            "flatten the document",
            field=path or "body",
        )
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"a key of {path or 'the body'}", str(key)
            child = f"{path}.{key}" if path else str(key)
            yield from _json_strings(item, child, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_strings(item, f"{path}.{index}" if path else str(index), depth + 1)
