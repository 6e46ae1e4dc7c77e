"""Errors raised by model calls, split into those worth retrying and those that are not.

Providers translate HTTP statuses, timeouts and dropped streams into these classes, so that
the retry policy in workers/retry.py decides on the class alone.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus

# 408 and 429 are the only 4xx statuses where the same request can succeed later.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 429})
# These 5xx statuses describe the request or the server's abilities, not a passing failure.
PERMANENT_SERVER_STATUSES = frozenset({501, 505})


class ModelCallError(Exception):
    """A failed model call. `reason` is the message stored on the failed run."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TransientModelError(ModelCallError):
    """A failure that may pass: 408, 429, most 5xx, timeouts, connection errors, a cut stream.

    `retry_after_s` is the delay the server asked for (from Retry-After), or None.
    """

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after_s = retry_after_s


class PermanentModelError(ModelCallError):
    """A failure that repeats on retry: other 4xx statuses, an unknown model, a bad request."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Convert a Retry-After header to seconds from `now`, or None when absent or invalid.

    The header contains either delay-seconds or an HTTP-date (RFC 9110, section 10.2.3). A date in
    the past gives 0. Fractional seconds are accepted although the RFC allows only integers.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()

    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(text: str, now: datetime | None) -> float | None:
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        # RFC 9110 dates are always GMT, but parsedate_to_datetime leaves "-0000" naive.
        moment = moment.replace(tzinfo=timezone.utc)
    reference = now if now is not None else datetime.now(timezone.utc)
    return max(0.0, (moment - reference).total_seconds())


def classify_http_status(
    status: int,
    retry_after_header: str | None = None,
    *,
    detail: str | None = None,
    now: datetime | None = None,
) -> TransientModelError | PermanentModelError:
    """Build the error for an HTTP error status (400 to 599).

    408, 429 and 5xx other than 501 and 505 give a TransientModelError carrying the parsed
    Retry-After. Every other status gives a PermanentModelError. `detail`, such as the error
    message from the response body, is appended to the reason. Raises ValueError for a status
    outside 400 to 599, because a success or redirect is no error.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"HTTP status {status} is not an error status (expected 400 to 599)")

    reason = _reason_for_status(status, detail)
    if status in TRANSIENT_CLIENT_STATUSES or (
        status >= 500 and status not in PERMANENT_SERVER_STATUSES
    ):
        retry_after_s = parse_retry_after(retry_after_header, now=now)
        return TransientModelError(reason, status=status, retry_after_s=retry_after_s)
    return PermanentModelError(reason, status=status)


def _reason_for_status(status: int, detail: str | None) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Client Error" if status < 500 else "Server Error"
    reason = f"HTTP {status} {phrase}"
    if detail:
        reason = f"{reason}: {detail}"
    return reason
