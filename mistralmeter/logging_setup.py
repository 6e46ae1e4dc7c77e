"""One logging configuration for the API, the workers, beat and the tools."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

from mistralmeter.settings import Settings


# Control characters, and the Unicode line and paragraph separators, in logged values. A
# request path such as "/datasets/x%0A2026-..." would otherwise forge a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029]")


def escape_control(text: str) -> str:
    """Return `text` with control characters written as \\xNN escapes, so one record is one line."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class KeyValueFormatter(logging.Formatter):
    """Render a fixed event message followed by the record's ids as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        pairs = " ".join(f"{key}={escape_control(str(value))}" for key, value in fields.items())
        message = escape_control(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {message}"
        text = f"{line} {pairs}" if pairs else line
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())

    # The HTTP clients log every request at INFO; that would drown the job events.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_fields(**fields: object) -> dict[str, dict[str, object]]:
    """Build the `extra` argument that attaches ids to a log record."""
    return {"fields": fields}
