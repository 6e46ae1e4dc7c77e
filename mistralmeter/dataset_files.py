"""Parse and validate dataset files uploaded as JSON, JSONL or CSV.

Parsing is all or nothing: ``parse_dataset`` returns every item of the file or raises
``DatasetFileError`` naming the first problem (line, item and field where they are known), so
the caller never stores half a dataset.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

FORMATS = ("json", "jsonl", "csv")
FORMAT_BY_EXTENSION = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}

ITEM_FIELDS = ("id", "prompt", "system", "expected_style", "reference", "category", "metadata")
OPTIONAL_TEXT_FIELDS = ("system", "expected_style", "reference", "category")
JSON_TOP_LEVEL_KEYS = ("items", "name", "description")

# Ids end up in URLs, exports and log fields, where a paragraph-long id is a mistake.
MAX_ID_CHARS = 200

_MEGABYTE = 1024 * 1024
_DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


# Items one dataset file may hold.
MAX_ITEMS = 50_000


class DatasetFileError(ValueError):
    """A dataset file or item is invalid.

    ``message`` (and ``str()``) is the full sentence shown to the user. ``line`` is the 1-based
    physical line of the file and ``item`` the 1-based item number. ``field`` is the item field,
    CSV column or argument at fault. Each of the three is None when it is unknown or does not
    apply.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        item: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.item = item
        self.field = field


class DatasetTooLargeError(DatasetFileError):
    """A dataset file is larger than the size limit."""


@dataclass(frozen=True)
class DatasetItem:
    """One prompt of a dataset with its optional system prompt, style hint and reference."""

    id: str
    prompt: str
    system: str | None = None
    expected_style: str | None = None
    reference: str | None = None
    category: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the item as a JSON-ready dict without None fields or empty metadata."""
        result: dict[str, Any] = {"id": self.id, "prompt": self.prompt}
        for name in OPTIONAL_TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                result[name] = value
        if self.metadata:
            result["metadata"] = self.metadata
        return result


class _RawItem(NamedTuple):
    """One item as read from the file, before validation."""

    record: Any
    number: int
    line: int | None


def parse_dataset(
    data: bytes,
    *,
    filename: str | None = None,
    format: str | None = None,
    max_bytes: int,
    max_items: int = MAX_ITEMS,
    max_prompt_chars: int = 100_000,
) -> list[DatasetItem]:
    """Parse a whole dataset file into validated items, or raise DatasetFileError.

    The format comes from ``format`` ("json", "jsonl" or "csv") or else from the extension of
    ``filename``. ``max_prompt_chars`` applies to every text field of an item, not only to the
    prompt, because each of them is sent to the model or to the judge.
    """
    _check_size(len(data), max_bytes)
    file_format = _resolve_format(format, filename)
    text = _decode_utf8(data)
    if not text.strip():
        raise DatasetFileError("file is empty; a dataset needs at least one item")

    if file_format == "json":
        raw_items = _read_json(text)
    elif file_format == "jsonl":
        raw_items = _read_jsonl(text)
    else:
        raw_items = _read_csv(text, max_bytes=max_bytes)
    return _validate_items(raw_items, max_items=max_items, max_prompt_chars=max_prompt_chars)


def items_from_records(
    records: Iterable[Any],
    *,
    max_items: int = MAX_ITEMS,
    max_prompt_chars: int = 100_000,
) -> list[DatasetItem]:
    """Validate records that are already decoded (dicts in the item schema) into items.

    The rules and messages are those of ``parse_dataset``; errors carry the 1-based item
    number but no line.
    """
    raw_items = (
        _RawItem(record=record, number=number, line=None)
        for number, record in enumerate(records, start=1)
    )
    return _validate_items(raw_items, max_items=max_items, max_prompt_chars=max_prompt_chars)


def dataset_version(items: list[DatasetItem]) -> str:
    """Compute the content version "sha256:<hex>" from the canonical JSON of the items.

    The same items give the same version whichever file format they came from, and any change
    to an item's content or to the item order gives a new version.
    """
    canonical = json.dumps(
        [item.to_dict() for item in items],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate_dataset_name(name: str) -> str:
    """Return ``name`` unchanged if it is a valid dataset name, else raise DatasetFileError."""
    if not isinstance(name, str):
        raise DatasetFileError(
            f"dataset name must be a string, got {_json_type(name)}", field="name"
        )
    if _DATASET_NAME.fullmatch(name) is None:
        raise DatasetFileError(
            f"invalid dataset name {name!r}: use 1 to 64 characters from a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or a digit",
            field="name",
        )
    return name


# --- file level: size, format, encoding ---------------------------------------------------


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DatasetTooLargeError(
            f"file is too large: {_describe_size(size)}; the limit is {_describe_size(max_bytes)}"
        )


def _describe_size(size: int) -> str:
    megabytes = f"{size / _MEGABYTE:.1f}".removesuffix(".0")
    return f"{megabytes} MB ({size:,} bytes)"


def _resolve_format(format: str | None, filename: str | None) -> str:
    if format is not None:
        normalized = format.strip().lower()
        if normalized not in FORMATS:
            raise DatasetFileError(
                f"unknown dataset format {format!r}; accepted formats: {', '.join(FORMATS)}",
                field="format",
            )
        return normalized

    extensions = ", ".join(FORMAT_BY_EXTENSION)
    if not filename:
        raise DatasetFileError(
            "cannot tell the dataset format: no file name was given; name the file with one of "
            f"the extensions {extensions} or give the format ({', '.join(FORMATS)})",
            field="format",
        )
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in FORMAT_BY_EXTENSION:
        raise DatasetFileError(
            f"cannot tell the dataset format of {filename!r} from its extension; accepted "
            f"extensions: {extensions} (or give the format: {', '.join(FORMATS)})",
            field="format",
        )
    return FORMAT_BY_EXTENSION[suffix]


def _decode_utf8(data: bytes) -> str:
    bom = b"\xef\xbb\xbf"
    offset = len(bom) if data.startswith(bom) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        position = offset + exc.start
        line = data.count(b"\n", 0, position) + 1
        raise DatasetFileError(
            f"file is not UTF-8: {exc.reason} at byte {position}; save it as UTF-8 and upload "
            "again",
            line=line,
        ) from exc


# --- readers: each yields raw records with their item number and line -----------------------


class _NonStandardConstant(ValueError):
    """NaN or Infinity in JSON: Python accepts them, but the JSON standard and PostgreSQL do not.

    A number too large for a 64-bit float, such as 1e400, is reported the same way, because
    Python reads it as infinity.
    """


def _reject_constant(name: str) -> Any:
    raise _NonStandardConstant(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonStandardConstant(f"{text} (beyond the range of a 64-bit float)")
    return value


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        # Python's parser recurses per nesting level; report it like any other invalid JSON.
        raise json.JSONDecodeError("nesting is too deep", text, 0) from None


def _read_json(text: str) -> Iterator[_RawItem]:
    try:
        document = _loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetFileError(
            f"invalid JSON on line {exc.lineno}: {exc.msg} (column {exc.colno})", line=exc.lineno
        ) from exc
    except _NonStandardConstant as exc:
        raise DatasetFileError(
            f"invalid JSON: {exc} is not a JSON value; write null or a string instead"
        ) from exc

    items = _top_level_items(document)
    for number, record in enumerate(items, start=1):
        yield _RawItem(record=record, number=number, line=None)


def _top_level_items(document: Any) -> list[Any]:
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise DatasetFileError(
            'the JSON top level must be a list of items or an object with an "items" list, got '
            f"{_json_type(document)}"
        )

    unknown = [key for key in document if key not in JSON_TOP_LEVEL_KEYS]
    if unknown:
        raise DatasetFileError(
            f"unknown top-level key {unknown[0]!r}; allowed keys: {', '.join(JSON_TOP_LEVEL_KEYS)}",
            field=unknown[0],
        )
    if "items" not in document:
        raise DatasetFileError(
            'the JSON object has no "items" key; put the items in a list under "items"',
            field="items",
        )
    items = document["items"]
    if not isinstance(items, list):
        raise DatasetFileError(
            f'"items" must be a list of items, got {_json_type(items)}', field="items"
        )
    return items


def _read_jsonl(text: str) -> Iterator[_RawItem]:
    # Split on "\n" only: str.splitlines() would also split on U+2028 and U+0085, which may
    # appear unescaped inside JSON strings.
    number = 0
    for line_number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = _loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFileError(
                f"invalid JSON on line {line_number}: {exc.msg} (column {exc.colno})",
                line=line_number,
            ) from exc
        except _NonStandardConstant as exc:
            raise DatasetFileError(
                f"invalid JSON on line {line_number}: {exc} is not a JSON value; write null or "
                "a string instead",
                line=line_number,
            ) from exc
        number += 1
        yield _RawItem(record=record, number=number, line=line_number)


def _read_csv(text: str, *, max_bytes: int) -> Iterator[_RawItem]:
    # The csv module rejects fields over 131,072 characters by default. The file size limit
    # already bounds memory, and an overlong prompt gets its own error during validation.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    # strict=True turns an unclosed quote into an error instead of swallowing the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows = _csv_rows(reader)

    header_line, header = next(
        ((line, row) for line, row in rows if any(cell.strip() for cell in row)), (1, [])
    )
    columns = _csv_columns(header, header_line)
    number = 0
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        number += 1
        if len(row) != len(columns):
            raise DatasetFileError(
                f"item {number} (line {line}): the row has {len(row)} cells but the header has "
                f"{len(columns)} columns; quote cells that contain commas or line breaks",
                item=number,
                line=line,
            )
        record = _csv_record(columns, row, number=number, line=line)
        yield _RawItem(record=record, number=number, line=line)


def _csv_rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Yield (first physical line, cells) for each CSV record, multi-line records included."""
    previous_end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetFileError(
                f"invalid CSV on line {reader.line_num}: {exc}", line=reader.line_num
            ) from exc
        yield previous_end + 1, row
        previous_end = reader.line_num


def _csv_columns(header: list[str], line: int) -> list[str]:
    columns = [cell.strip() for cell in header]
    hint = ""
    if len(columns) == 1 and (";" in columns[0] or "\t" in columns[0]):
        hint = "; the file seems to separate cells with ';' or tabs, but CSV needs commas"

    for index, column in enumerate(columns, start=1):
        if not column:
            raise DatasetFileError(
                f"the CSV header (line {line}) has an empty name in column {index}",
                line=line,
            )
        if column not in ITEM_FIELDS:
            raise DatasetFileError(
                f"unknown column {column!r} in the CSV header (line {line}){_suggestion(column)}; "
                f"allowed columns: {', '.join(ITEM_FIELDS)}{hint}",
                line=line,
                field=column,
            )
        if columns.index(column) != index - 1:
            raise DatasetFileError(
                f"column {column!r} appears twice in the CSV header (line {line})",
                line=line,
                field=column,
            )
    if "prompt" not in columns:
        raise DatasetFileError(
            f"the CSV header (line {line}) has no 'prompt' column; found columns: "
            f"{', '.join(columns) or 'none'}",
            line=line,
            field="prompt",
        )
    return columns


def _csv_record(columns: list[str], row: list[str], *, number: int, line: int) -> dict[str, Any]:
    """Turn one CSV row into a record in the JSON item shape; empty cells mean absent."""
    record: dict[str, Any] = {}
    if "id" not in columns:
        record["id"] = str(number)
    for column, cell in zip(columns, row):
        if cell == "":
            continue
        if column == "metadata":
            record[column] = _csv_metadata(cell, number=number, line=line)
        else:
            record[column] = cell
    return record


def _csv_metadata(cell: str, *, number: int, line: int) -> Any:
    try:
        return _loads(cell)
    except json.JSONDecodeError as exc:
        detail = f"{exc.msg} (column {exc.colno})"
    except _NonStandardConstant as exc:
        detail = f"{exc} is not a JSON value"
    raise _item_error(f"metadata is not valid JSON: {detail}", number, line, "metadata")


# --- item validation ----------------------------------------------------------------------


def _validate_items(
    raw_items: Iterable[_RawItem], *, max_items: int, max_prompt_chars: int
) -> list[DatasetItem]:
    items: list[DatasetItem] = []
    first_seen: dict[str, tuple[int, int | None]] = {}
    for raw in raw_items:
        if raw.number > max_items:
            raise DatasetFileError(
                f"too many items: the file has more than {max_items:,} items, the limit per "
                "dataset; split it into smaller datasets",
                item=raw.number,
                line=raw.line,
            )
        item = _build_item(raw, max_chars=max_prompt_chars)
        if item.id in first_seen:
            raise _duplicate_id_error(item.id, first_seen[item.id], raw)
        first_seen[item.id] = (raw.number, raw.line)
        items.append(item)

    if not items:
        raise DatasetFileError("the dataset has no items; add at least one item")
    return items


def _duplicate_id_error(
    item_id: str, first: tuple[int, int | None], raw: _RawItem
) -> DatasetFileError:
    first_number, first_line = first
    message = f"duplicate id {item_id!r} on items {first_number} and {raw.number}"
    if first_line is not None and raw.line is not None:
        message += f" (lines {first_line} and {raw.line})"
    return DatasetFileError(message, item=raw.number, line=raw.line, field="id")


def _build_item(raw: _RawItem, *, max_chars: int) -> DatasetItem:
    record, number, line = raw
    if not isinstance(record, Mapping):
        raise _item_error(f"expected a JSON object, got {_json_type(record)}", number, line, None)

    for key in record:
        if key not in ITEM_FIELDS:
            raise _item_error(
                f"unknown field {key!r}{_suggestion(str(key))}; allowed fields: "
                f"{', '.join(ITEM_FIELDS)}",
                number,
                line,
                str(key),
            )

    values: dict[str, Any] = {
        "id": _item_id(record, number, line),
        "prompt": _item_prompt(record, number, line, max_chars),
        "metadata": _item_metadata(record, number, line),
    }
    for name in OPTIONAL_TEXT_FIELDS:
        values[name] = _optional_text(record, name, number, line, max_chars)
    return DatasetItem(**values)


def _item_id(record: Mapping[str, Any], number: int, line: int | None) -> str:
    if record.get("id") is None:
        raise _item_error("missing required field 'id'", number, line, "id")
    value = record["id"]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _item_error(
            f"id must be a string or an integer, got {_json_type(value)}", number, line, "id"
        )
    if not value.strip():
        raise _item_error("id is empty", number, line, "id")
    if len(value) > MAX_ID_CHARS:
        raise _item_error(
            f"id is {len(value):,} characters long; the limit is {MAX_ID_CHARS} characters",
            number,
            line,
            "id",
        )
    _check_text(value, "id", number, line)
    return value


def _item_prompt(record: Mapping[str, Any], number: int, line: int | None, max_chars: int) -> str:
    if record.get("prompt") is None:
        raise _item_error("missing required field 'prompt'", number, line, "prompt")
    value = record["prompt"]
    if not isinstance(value, str):
        raise _item_error(
            f"prompt must be a string, got {_json_type(value)}", number, line, "prompt"
        )
    if not value.strip():
        raise _item_error("prompt is empty", number, line, "prompt")
    _check_length(value, "prompt", number, line, max_chars)
    _check_text(value, "prompt", number, line)
    return value


def _optional_text(
    record: Mapping[str, Any], name: str, number: int, line: int | None, max_chars: int
) -> str | None:
    # An empty string means absent, as an empty CSV cell does, so that the same content gives
    # the same items (and version) in every format.
    value = record.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _item_error(f"{name} must be a string, got {_json_type(value)}", number, line, name)
    _check_length(value, name, number, line, max_chars)
    _check_text(value, name, number, line)
    return value


def _item_metadata(record: Mapping[str, Any], number: int, line: int | None) -> dict[str, Any]:
    value = record.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _item_error(
            f"metadata must be a JSON object, got {_json_type(value)}", number, line, "metadata"
        )
    for text in _strings_in(value):
        _check_text(text, "metadata", number, line)
    return value


def _strings_in(value: Any) -> Iterator[str]:
    """Yield every string in a decoded JSON value, object keys included."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)


def _check_length(value: str, name: str, number: int, line: int | None, max_chars: int) -> None:
    if len(value) > max_chars:
        raise _item_error(
            f"{name} is {len(value):,} characters long; the limit is {max_chars:,} characters",
            number,
            line,
            name,
        )


def _check_text(value: str, name: str, number: int, line: int | None) -> None:
    # PostgreSQL text and jsonb cannot store U+0000. An unpaired surrogate, which a JSON
    # "\ud800" escape can produce, cannot be encoded as UTF-8. Both would fail at insert time.
    if "\x00" in value:
        raise _item_error(
            f"{name} contains a NUL character (U+0000), which cannot be stored; remove it",
            number,
            line,
            name,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _item_error(
            f"{name} contains an unpaired surrogate (U+{ord(value[exc.start]):04X}), which is not "
            "valid Unicode text",
            number,
            line,
            name,
        ) from exc


# --- messages -----------------------------------------------------------------------------


def _item_error(detail: str, number: int, line: int | None, field: str | None) -> DatasetFileError:
    where = f"item {number} (line {line})" if line is not None else f"item {number}"
    return DatasetFileError(f"{where}: {detail}", item=number, line=line, field=field)


def _suggestion(name: str) -> str:
    matches = difflib.get_close_matches(name, ITEM_FIELDS, n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
