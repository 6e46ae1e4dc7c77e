"""Log records stay one line each, whatever text a request puts into their fields."""

from __future__ import annotations

import logging

from mistralmeter.logging_setup import KeyValueFormatter, escape_control, log_fields


def test_escape_control_characters():
    assert escape_control("x\n2026-12-04 ERROR forged") == "x\\x0a2026-12-04 ERROR forged"
    assert escape_control("nul\x00 tab\t cr\r del\x7f") == "nul\\x00 tab\\x09 cr\\x0d del\\x7f"
    assert escape_control("line\u2028separator") == "line\\x2028separator"
    assert escape_control("café /jobs?limit=5") == "café /jobs?limit=5"


def test_formatter_keeps_record_on_one_line():
    record = logging.LogRecord("api.errors", logging.WARNING, __file__, 1, "request rejected",
                               None, None)
    record.fields = log_fields(path="/datasets/x\n2026-12-04 ERROR forged", status=404)["fields"]

    line = KeyValueFormatter().format(record)

    assert "\n" not in line
    assert line.endswith(
        "WARNING api.errors request rejected path=/datasets/x\\x0a2026-12-04 ERROR forged status=404"
    )
