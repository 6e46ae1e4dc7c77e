"""Tests for parsing and validating uploaded dataset files (JSON, JSONL, CSV)."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest

from mistralmeter.dataset_files import (
    DatasetFileError,
    DatasetItem,
    dataset_version,
    items_from_records,
    parse_dataset,
    validate_dataset_name,
)

LIMIT = 10 * 1024 * 1024
MEGABYTE = 1024 * 1024


def parse(data: bytes | str, **kwargs) -> list[DatasetItem]:
    if isinstance(data, str):
        data = data.encode("utf-8")
    kwargs.setdefault("max_bytes", LIMIT)
    return parse_dataset(data, **kwargs)


def parse_error(data: bytes | str, **kwargs) -> DatasetFileError:
    with pytest.raises(DatasetFileError) as caught:
        parse(data, **kwargs)
    return caught.value


def jsonl(*records: object) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


# Items with text that stresses every format: quotes, commas, a line break, non-ASCII text,
# a system prompt on some items only, and metadata with nesting.
SAMPLE_RECORDS = [
    {
        "id": "q1",
        "prompt": 'Say "hello", then stop.',
        "system": "You are terse.",
        "expected_style": "one line",
        "category": "instructions",
    },
    {
        "id": "q2",
        "prompt": "Line one\nline two, with a comma",
        "reference": "Café au lait ☕ 東京",
        "metadata": {"difficulty": 2, "tags": ["a", "b"], "nested": {"ok": True}},
    },
    {"id": "q3", "prompt": "Plain prompt"},
]
CSV_COLUMNS = ["id", "prompt", "system", "expected_style", "reference", "category", "metadata"]


def sample_as_json() -> bytes:
    return json.dumps({"name": "sample", "items": SAMPLE_RECORDS}, ensure_ascii=False).encode()


def sample_as_jsonl() -> bytes:
    return "".join(json.dumps(record) + "\n" for record in SAMPLE_RECORDS).encode("utf-8")


def sample_as_csv() -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for record in SAMPLE_RECORDS:
        row = []
        for column in CSV_COLUMNS:
            value = record.get(column, "")
            row.append(json.dumps(value) if column == "metadata" and value else value)
        writer.writerow(row)
    return buffer.getvalue().encode("utf-8")


# --- formats agree ------------------------------------------------------------------------


def test_parse_dataset_same_items_in_every_format():
    from_json = parse(sample_as_json(), format="json")
    from_jsonl = parse(sample_as_jsonl(), format="jsonl")
    from_csv = parse(sample_as_csv(), format="csv")

    assert from_json == from_jsonl
    assert from_json == from_csv
    assert from_json[1].prompt == "Line one\nline two, with a comma"
    assert from_json[1].reference == "Café au lait ☕ 東京"
    assert from_json[1].metadata == {"difficulty": 2, "tags": ["a", "b"], "nested": {"ok": True}}
    assert from_json[2].system is None
    assert from_json[2].metadata == {}


def test_dataset_version_same_in_every_format():
    versions = {
        dataset_version(parse(sample_as_json(), format="json")),
        dataset_version(parse(sample_as_jsonl(), format="jsonl")),
        dataset_version(parse(sample_as_csv(), format="csv")),
    }

    assert len(versions) == 1
    (version,) = versions
    assert version.startswith("sha256:")
    assert len(version) == len("sha256:") + 64


def test_dataset_version_changes_with_one_character():
    original = parse(sample_as_jsonl(), format="jsonl")
    edited = parse(sample_as_jsonl().replace(b"Plain prompt", b"Plain prompT"), format="jsonl")

    assert dataset_version(original) != dataset_version(edited)


def test_dataset_version_changes_with_item_order():
    items = parse(sample_as_jsonl(), format="jsonl")

    assert dataset_version(items) != dataset_version(list(reversed(items)))


def test_dataset_version_matches_documented_recipe():
    items = [DatasetItem(id="1", prompt="Hi", category="greeting")]

    # Keys sorted, no spaces, non-ASCII kept as UTF-8.
    canonical = '[{"category":"greeting","id":"1","prompt":"Hi"}]'
    expected = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert dataset_version(items) == expected


def test_dataset_version_ignores_key_order_and_json_spacing():
    compact = b'[{"id":"a","prompt":"p","metadata":{"x":1,"y":2}}]'
    spaced = b'[ { "metadata": { "y": 2, "x": 1 }, "prompt": "p", "id": "a" } ]'

    assert dataset_version(parse(compact, format="json")) == dataset_version(
        parse(spaced, format="json")
    )


@pytest.mark.parametrize("file_format", ["json", "jsonl", "csv"])
def test_parse_dataset_accepts_utf8_bom(file_format):
    data = {"json": sample_as_json, "jsonl": sample_as_jsonl, "csv": sample_as_csv}[file_format]()

    with_bom = parse(b"\xef\xbb\xbf" + data, format=file_format)

    assert with_bom == parse(data, format=file_format)
    assert with_bom[0].id == "q1"


# --- format detection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected_id"),
    [("set.json", "j"), ("set.JSONL", "l"), ("set.ndjson", "l"), ("my.set.csv", "c")],
)
def test_parse_dataset_format_from_extension(filename, expected_id):
    bodies = {
        "j": b'[{"id": "j", "prompt": "p"}]',
        "l": b'{"id": "l", "prompt": "p"}\n',
        "c": b"id,prompt\nc,p\n",
    }

    items = parse(bodies[expected_id], filename=filename)

    assert [item.id for item in items] == [expected_id]


def test_parse_dataset_format_argument_overrides_extension():
    items = parse(b'{"id": "x", "prompt": "p"}\n', filename="upload.json", format="jsonl")

    assert [item.id for item in items] == ["x"]


def test_parse_dataset_unknown_extension_names_accepted_ones():
    error = parse_error(b"id,prompt\n1,p\n", filename="prompts.txt")

    assert "'prompts.txt'" in error.message
    assert ".json, .jsonl, .ndjson, .csv" in error.message
    assert error.field == "format"


def test_parse_dataset_unknown_format_argument():
    error = parse_error(b"<items/>", format="xml")

    assert error.message == "unknown dataset format 'xml'; accepted formats: json, jsonl, csv"


def test_parse_dataset_without_format_or_filename():
    error = parse_error(b"[]")

    assert "no file name was given" in error.message


# --- file-level errors --------------------------------------------------------------------


def test_parse_dataset_jsonl_invalid_json_names_line():
    lines = [json.dumps({"id": f"q{n}", "prompt": "p"}) for n in range(1, 7)]
    bad_line = '{"id": "q7" "prompt": "p"}'
    text = "\n".join(lines + [bad_line]) + "\n"

    error = parse_error(text, format="jsonl")

    column = bad_line.index('"prompt"') + 1
    assert error.message == f"invalid JSON on line 7: Expecting ',' delimiter (column {column})"
    assert str(error) == error.message
    assert error.line == 7
    assert error.item is None


def test_parse_dataset_json_invalid_json_names_line():
    text = '[\n  {"id": "a", "prompt": "p"},\n  {"id": "b" "prompt": "p"}\n]'

    error = parse_error(text, format="json")

    assert error.message.startswith("invalid JSON on line 3: Expecting ',' delimiter")
    assert error.line == 3


def test_parse_dataset_rejects_latin1_bytes():
    data = b'{"id": "1", "prompt": "caf\xe9 au lait"}\n'

    error = parse_error(data, format="jsonl")

    offset = data.index(b"\xe9")
    assert error.message == (
        f"file is not UTF-8: invalid continuation byte at byte {offset}; save it as UTF-8 and "
        "upload again"
    )
    assert error.line == 1


def test_parse_dataset_rejects_latin1_at_end_of_file():
    data = b"id,prompt\n1,caf\xe9"

    error = parse_error(data, format="csv")

    assert error.message.startswith("file is not UTF-8: unexpected end of data at byte 15;")
    assert error.line == 2


@pytest.mark.parametrize(
    ("encoding", "expected_reason"),
    # UTF-16 starts with the byte-order mark FF FE; cp1252 encodes "ù" as the single byte F9.
    [("utf-16", "invalid start byte at byte 0"), ("cp1252", "invalid start byte at byte 13")],
)
def test_parse_dataset_rejects_csv_in_wrong_encoding(encoding, expected_reason):
    data = "id,prompt\n1,Où est la gare ?\n".encode(encoding)

    error = parse_error(data, format="csv")

    assert error.message.startswith("file is not UTF-8: ")
    assert expected_reason in error.message
    assert error.message.endswith("save it as UTF-8 and upload again")


def test_parse_dataset_byte_offset_counts_the_bom():
    data = b"\xef\xbb\xbfid,prompt\n1,caf\xe9!\n"

    error = parse_error(data, format="csv")

    assert f"at byte {data.index(bytes([0xE9]))};" in error.message


def test_parse_dataset_too_big_names_limit_and_size():
    data = b"x" * (MEGABYTE + MEGABYTE // 2)

    error = parse_error(data, format="jsonl", max_bytes=MEGABYTE)

    assert error.message == (
        "file is too large: 1.5 MB (1,572,864 bytes); the limit is 1 MB (1,048,576 bytes)"
    )


def test_parse_dataset_size_checked_before_decoding():
    error = parse_error(b"\xff" * 100, format="csv", max_bytes=99)

    assert error.message.startswith("file is too large:")


def test_parse_dataset_file_at_limit_accepted():
    data = b'{"id": "1", "prompt": "p"}\n'

    items = parse(data, format="jsonl", max_bytes=len(data))

    assert [item.id for item in items] == ["1"]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"  \n\n\t\n"])
@pytest.mark.parametrize("file_format", ["json", "jsonl", "csv"])
def test_parse_dataset_empty_file(data, file_format):
    error = parse_error(data, format=file_format)

    assert error.message == "file is empty; a dataset needs at least one item"


@pytest.mark.parametrize(
    ("text", "file_format"),
    [("[]", "json"), ('{"items": []}', "json"), ("id,prompt\n", "csv"), ("id,prompt\n,\n", "csv")],
)
def test_parse_dataset_no_items(text, file_format):
    error = parse_error(text, format=file_format)

    assert error.message == "the dataset has no items; add at least one item"


@pytest.mark.parametrize(
    ("text", "kind"),
    [('"hello"', "a string"), ("42", "a number"), ("null", "null"), ("true", "a boolean")],
)
def test_parse_dataset_json_top_level_not_list(text, kind):
    error = parse_error(text, format="json")

    assert error.message == (
        'the JSON top level must be a list of items or an object with an "items" list, got '
        f"{kind}"
    )


def test_parse_dataset_json_object_with_name_and_description():
    text = json.dumps({"name": "x", "description": "d", "items": [{"id": 1, "prompt": "p"}]})

    items = parse(text, format="json")

    assert items == [DatasetItem(id="1", prompt="p")]


def test_parse_dataset_json_items_not_list():
    error = parse_error('{"items": {"id": 1, "prompt": "p"}}', format="json")

    assert error.message == '"items" must be a list of items, got an object'
    assert error.field == "items"


def test_parse_dataset_json_object_without_items():
    error = parse_error('{"name": "x"}', format="json")

    assert 'has no "items" key' in error.message


def test_parse_dataset_json_unknown_top_level_key():
    error = parse_error('{"items": [], "version": 2}', format="json")

    assert error.message == (
        "unknown top-level key 'version'; allowed keys: items, name, description"
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_parse_dataset_rejects_nan_and_infinity(constant):
    text = '{"id": "1", "prompt": "p", "metadata": {"score": %s}}\n' % constant

    error = parse_error(text, format="jsonl")

    assert error.message.startswith(f"invalid JSON on line 1: {constant} is not a JSON value")
    assert error.line == 1


# --- item-level errors --------------------------------------------------------------------


def test_parse_dataset_missing_prompt_names_item_and_line():
    records = [{"id": f"q{n}", "prompt": f"prompt {n}"} for n in range(1, 12)]
    records.append({"id": "q12", "category": "x"})
    lines = [json.dumps(record) for record in records]
    lines.insert(5, "")  # a blank line shifts line numbers but not item numbers

    error = parse_error("\n".join(lines) + "\n", format="jsonl")

    assert error.message == "item 12 (line 13): missing required field 'prompt'"
    assert error.item == 12
    assert error.line == 13
    assert error.field == "prompt"


def test_parse_dataset_json_item_error_has_no_line():
    error = parse_error('[{"id": "a", "prompt": "p"}, {"id": "b"}]', format="json")

    assert error.message == "item 2: missing required field 'prompt'"
    assert error.line is None


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_parse_dataset_empty_prompt(prompt):
    error = parse_error(json.dumps([{"id": "a", "prompt": prompt}]), format="json")

    assert error.message == "item 1: prompt is empty"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "a", "prompt": 5}, "item 1: prompt must be a string, got a number"),
        ({"id": "a", "prompt": ["p"]}, "item 1: prompt must be a string, got a list"),
        ({"prompt": "p"}, "item 1: missing required field 'id'"),
        ({"id": None, "prompt": "p"}, "item 1: missing required field 'id'"),
        ({"id": True, "prompt": "p"}, "item 1: id must be a string or an integer, got a boolean"),
        ({"id": 1.5, "prompt": "p"}, "item 1: id must be a string or an integer, got a number"),
        ({"id": " ", "prompt": "p"}, "item 1: id is empty"),
        ({"id": "a", "prompt": "p", "system": 3}, "item 1: system must be a string, got a number"),
        (
            {"id": "a", "prompt": "p", "category": ["x"]},
            "item 1: category must be a string, got a list",
        ),
        (["a", "p"], "item 1: expected a JSON object, got a list"),
    ],
)
def test_parse_dataset_wrong_types(record, message):
    error = parse_error(json.dumps([record]), format="json")

    assert error.message == message


def test_parse_dataset_integer_ids_become_strings():
    items = parse('[{"id": 7, "prompt": "p"}, {"id": "007", "prompt": "q"}]', format="json")

    assert [item.id for item in items] == ["7", "007"]


def test_parse_dataset_integer_and_string_id_collide():
    error = parse_error('[{"id": 7, "prompt": "p"}, {"id": "7", "prompt": "q"}]', format="json")

    assert error.message == "duplicate id '7' on items 1 and 2"


def test_parse_dataset_duplicate_ids_json():
    records = [{"id": f"q{n}", "prompt": "p"} for n in range(1, 9)]
    records.append({"id": "q3", "prompt": "again"})

    error = parse_error(json.dumps(records), format="json")

    assert error.message == "duplicate id 'q3' on items 3 and 9"
    assert error.item == 9
    assert error.field == "id"


def test_parse_dataset_duplicate_ids_jsonl_adds_lines():
    text = jsonl({"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"})
    text += "\n" + jsonl({"id": "a", "prompt": "p"})

    error = parse_error(text, format="jsonl")

    assert error.message == "duplicate id 'a' on items 1 and 3 (lines 1 and 4)"
    assert error.line == 4


def test_parse_dataset_unknown_key_names_key_and_allowed():
    error = parse_error(
        json.dumps([{"id": "a", "prompt": "p"}, {"id": "b", "promt": "p"}]), format="json"
    )

    assert error.message == (
        "item 2: unknown field 'promt' (did you mean 'prompt'?); allowed fields: id, prompt, "
        "system, expected_style, reference, category, metadata"
    )
    assert error.field == "promt"


def test_parse_dataset_unknown_key_without_close_match():
    error = parse_error(jsonl({"id": "a", "prompt": "p", "temperature": 0.2}), format="jsonl")

    assert error.message.startswith("item 1 (line 1): unknown field 'temperature'; allowed")


def test_parse_dataset_prompt_too_long():
    text = jsonl({"id": "a", "prompt": "x" * 12_345})

    error = parse_error(text, format="jsonl", max_prompt_chars=10_000)

    assert error.message == (
        "item 1 (line 1): prompt is 12,345 characters long; the limit is 10,000 characters"
    )
    assert error.field == "prompt"


def test_parse_dataset_prompt_at_limit_accepted():
    items = parse(jsonl({"id": "a", "prompt": "x" * 100}), format="jsonl", max_prompt_chars=100)

    assert len(items[0].prompt) == 100


def test_parse_dataset_limit_applies_to_system_and_reference():
    record = {"id": "a", "prompt": "p", "reference": "r" * 11}

    error = parse_error(jsonl(record), format="jsonl", max_prompt_chars=10)

    assert error.message == (
        "item 1 (line 1): reference is 11 characters long; the limit is 10 characters"
    )


@pytest.mark.parametrize(
    ("metadata", "kind"), [([1, 2], "a list"), ("tag", "a string"), (3, "a number")]
)
def test_parse_dataset_metadata_not_object(metadata, kind):
    text = json.dumps([{"id": "a", "prompt": "p", "metadata": metadata}])

    error = parse_error(text, format="json")

    assert error.message == f"item 1: metadata must be a JSON object, got {kind}"
    assert error.field == "metadata"


def test_parse_dataset_metadata_null_means_empty():
    items = parse('[{"id": "a", "prompt": "p", "metadata": null}]', format="json")

    assert items[0].metadata == {}


def test_parse_dataset_empty_optional_string_means_absent():
    items = parse('[{"id": "a", "prompt": "p", "system": "", "reference": null}]', format="json")

    assert items[0].system is None
    assert items[0].reference is None
    assert items[0].to_dict() == {"id": "a", "prompt": "p"}


def test_parse_dataset_rejects_nul_character():
    error = parse_error('[{"id": "a", "prompt": "before\\u0000after"}]', format="json")

    assert error.message == (
        "item 1: prompt contains a NUL character (U+0000), which cannot be stored; remove it"
    )


def test_parse_dataset_rejects_nul_in_metadata_key():
    text = '[{"id": "a", "prompt": "p", "metadata": {"k\\u0000": 1}}]'

    error = parse_error(text, format="json")

    assert error.field == "metadata"
    assert "NUL character" in error.message


def test_parse_dataset_rejects_unpaired_surrogate():
    error = parse_error('[{"id": "a", "prompt": "p", "system": "\\ud800"}]', format="json")

    assert error.message == (
        "item 1: system contains an unpaired surrogate (U+D800), which is not valid Unicode text"
    )


def test_parse_dataset_accepts_escaped_surrogate_pair():
    items = parse('[{"id": "a", "prompt": "\\ud83d\\ude00"}]', format="json")

    assert items[0].prompt == "😀"


def test_parse_dataset_id_too_long():
    error = parse_error(json.dumps([{"id": "x" * 201, "prompt": "p"}]), format="json")

    assert error.message == "item 1: id is 201 characters long; the limit is 200 characters"


def test_parse_dataset_too_many_items():
    text = jsonl(*({"id": str(n), "prompt": "p"} for n in range(1, 5)))

    error = parse_error(text, format="jsonl", max_items=3)

    assert error.message.startswith("too many items: the file has more than 3 items")
    assert error.item == 4


def test_parse_dataset_items_at_max_accepted():
    text = jsonl(*({"id": str(n), "prompt": "p"} for n in range(1, 4)))

    assert len(parse(text, format="jsonl", max_items=3)) == 3


def test_parse_dataset_jsonl_line_not_object():
    error = parse_error(jsonl({"id": "a", "prompt": "p"}, ["b", "p"]), format="jsonl")

    assert error.message == "item 2 (line 2): expected a JSON object, got a list"


def test_parse_dataset_jsonl_crlf_and_unicode_line_separator():
    # U+2028 is legal unescaped inside a JSON string and must not split the line.
    text = '{"id": "a", "prompt": "one\u2028two"}\r\n{"id": "b", "prompt": "p"}\r\n'

    items = parse(text, format="jsonl")

    assert [item.prompt for item in items] == ["one\u2028two", "p"]


# --- CSV specifics ------------------------------------------------------------------------


def test_parse_dataset_csv_without_id_numbers_rows():
    items = parse("prompt,category\nfirst,a\n\nsecond,b\n", format="csv")

    assert [(item.id, item.prompt, item.category) for item in items] == [
        ("1", "first", "a"),
        ("2", "second", "b"),
    ]


def test_parse_dataset_csv_unknown_column():
    error = parse_error("id,promt\n1,p\n", format="csv")

    assert error.message == (
        "unknown column 'promt' in the CSV header (line 1) (did you mean 'prompt'?); allowed "
        "columns: id, prompt, system, expected_style, reference, category, metadata"
    )
    assert error.line == 1
    assert error.field == "promt"


def test_parse_dataset_csv_missing_prompt_column():
    error = parse_error("id,category\n1,a\n", format="csv")

    assert error.message == (
        "the CSV header (line 1) has no 'prompt' column; found columns: id, category"
    )


def test_parse_dataset_csv_semicolon_separator_hint():
    error = parse_error("id;prompt\n1;p\n", format="csv")

    assert "CSV needs commas" in error.message


def test_parse_dataset_csv_duplicate_column():
    error = parse_error("id,prompt,prompt\n1,a,b\n", format="csv")

    assert error.message == "column 'prompt' appears twice in the CSV header (line 1)"


def test_parse_dataset_csv_header_names_trimmed():
    items = parse(" id , prompt \n1,p\n", format="csv")

    assert items == [DatasetItem(id="1", prompt="p")]


def test_parse_dataset_csv_error_line_after_multiline_cell():
    text = 'id,prompt\n1,"first\nsecond\nthird"\n2,\n'

    error = parse_error(text, format="csv")

    assert error.message == "item 2 (line 5): missing required field 'prompt'"
    assert error.line == 5


def test_parse_dataset_csv_multiline_record_reports_first_line():
    text = 'id,prompt,metadata\n1,p,\n2,"multi\nline",[1]\n'

    error = parse_error(text, format="csv")

    assert error.message == "item 2 (line 3): metadata must be a JSON object, got a list"


def test_parse_dataset_csv_metadata_invalid_json():
    error = parse_error('id,prompt,metadata\n1,p,"{not json}"\n', format="csv")

    assert error.message.startswith("item 1 (line 2): metadata is not valid JSON: Expecting")
    assert error.field == "metadata"


def test_parse_dataset_csv_wrong_cell_count():
    error = parse_error("id,prompt\n1,p\n2,hello, world\n", format="csv")

    assert error.message == (
        "item 2 (line 3): the row has 3 cells but the header has 2 columns; quote cells that "
        "contain commas or line breaks"
    )


def test_parse_dataset_csv_unclosed_quote():
    error = parse_error('id,prompt\n1,"never closed\n2,p\n', format="csv")

    assert error.message.startswith("invalid CSV on line ")
    assert "unexpected end of data" in error.message


def test_parse_dataset_csv_empty_id_cell():
    error = parse_error("id,prompt\n,p\n", format="csv")

    assert error.message == "item 1 (line 2): missing required field 'id'"


def test_parse_dataset_csv_cell_over_131072_chars():
    # The csv module's default field limit is 131,072 characters.
    prompt = "y" * 200_000

    items = parse(f"id,prompt\n1,{prompt}\n", format="csv", max_prompt_chars=250_000)

    assert len(items[0].prompt) == 200_000


# --- items_from_records, DatasetItem, names -----------------------------------------------


def test_items_from_records_validates_like_files():
    items = items_from_records([{"id": 1, "prompt": "p", "category": ""}])

    assert items == [DatasetItem(id="1", prompt="p")]
    with pytest.raises(DatasetFileError, match=r"^item 2: missing required field 'prompt'$"):
        items_from_records([{"id": 1, "prompt": "p"}, {"id": 2}])


def test_dataset_item_to_dict_omits_absent_fields():
    full = DatasetItem(
        id="a",
        prompt="p",
        system="s",
        expected_style="e",
        reference="r",
        category="c",
        metadata={"k": 1},
    )

    assert DatasetItem(id="a", prompt="p").to_dict() == {"id": "a", "prompt": "p"}
    assert full.to_dict() == {
        "id": "a",
        "prompt": "p",
        "system": "s",
        "expected_style": "e",
        "reference": "r",
        "category": "c",
        "metadata": {"k": 1},
    }


@pytest.mark.parametrize("name", ["a", "mt_bench", "team.qa-v2", "0day", "x" * 64])
def test_validate_dataset_name_accepts(name):
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "My Set", "-lead", ".hidden", "_x", "x" * 65, "naïve", "a/b", "ok\n", "ABC"]
)
def test_validate_dataset_name_rejects(name):
    with pytest.raises(DatasetFileError) as caught:
        validate_dataset_name(name)

    assert caught.value.message == (
        f"invalid dataset name {name!r}: use 1 to 64 characters from a-z, 0-9, '.', '_' and "
        "'-', starting with a letter or a digit"
    )
    assert caught.value.field == "name"


def test_validate_dataset_name_rejects_non_string():
    with pytest.raises(DatasetFileError, match="dataset name must be a string, got a number"):
        validate_dataset_name(5)  # type: ignore[arg-type]


def test_dataset_file_error_is_value_error():
    error = DatasetFileError("bad", line=3, item=2, field="prompt")

    assert isinstance(error, ValueError)
    assert (str(error), error.line, error.item, error.field) == ("bad", 3, 2, "prompt")
