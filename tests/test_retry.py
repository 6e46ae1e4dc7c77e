"""Tests of the retry policy and of the HTTP status classification, with a recording sleep."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from workers.model_errors import (
    ModelCallError,
    PermanentModelError,
    TransientModelError,
    classify_http_status,
    parse_retry_after,
)
from workers.retry import RetriesExhausted, call_with_retries

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing_then(value, errors):
    """Return a callable that raises each error in turn, then returns value."""
    remaining = list(errors)
    calls = []

    def call():
        calls.append(len(calls) + 1)
        if remaining:
            raise remaining.pop(0)
        return value

    call.calls = calls
    return call


# call_with_retries


def test_call_with_retries_success_after_two_failures():
    sleep = RecordingSleep()
    fn = failing_then("ok", [TransientModelError("HTTP 503"), TransientModelError("timed out")])

    outcome = call_with_retries(fn, max_retries=4, base_s=0.5, max_s=30, sleep=sleep)

    assert outcome.value == "ok"
    assert outcome.attempts == 3
    assert len(sleep.delays) == 2
    assert outcome.waited_s == pytest.approx(sum(sleep.delays))


def test_call_with_retries_first_success_does_not_sleep():
    sleep = RecordingSleep()

    outcome = call_with_retries(lambda: 42, max_retries=4, base_s=0.5, max_s=30, sleep=sleep)

    assert outcome.value == 42
    assert outcome.attempts == 1
    assert outcome.waited_s == 0
    assert sleep.delays == []


def test_call_with_retries_honours_retry_after():
    sleep = RecordingSleep()
    errors = [TransientModelError("HTTP 429", status=429, retry_after_s=7.0) for _ in range(2)]
    fn = failing_then("ok", errors)

    outcome = call_with_retries(fn, max_retries=4, base_s=0.1, max_s=1.0, sleep=sleep)

    assert outcome.attempts == 3
    assert len(sleep.delays) == 2
    assert all(delay >= 7.0 for delay in sleep.delays)
    assert outcome.waited_s == pytest.approx(sum(sleep.delays))


def test_call_with_retries_zero_retry_after_keeps_backoff():
    random.seed(7)
    sleep = RecordingSleep()
    errors = [TransientModelError("HTTP 503", status=503, retry_after_s=0.0) for _ in range(5)]

    call_with_retries(failing_then("ok", errors), max_retries=5, base_s=1, max_s=64, sleep=sleep)

    # With Retry-After: 0 the jittered backoff still applies, so later delays grow.
    assert max(sleep.delays) > 1.0


def test_call_with_retries_backoff_grows_within_cap():
    random.seed(1234)
    base_s, max_s, max_retries, trials = 1.0, 8.0, 6, 400
    delays_by_retry: list[list[float]] = [[] for _ in range(max_retries)]
    for _ in range(trials):
        sleep = RecordingSleep()
        errors = [TransientModelError("HTTP 500") for _ in range(max_retries + 1)]
        with pytest.raises(RetriesExhausted):
            call_with_retries(
                failing_then("never", errors),
                max_retries=max_retries,
                base_s=base_s,
                max_s=max_s,
                sleep=sleep,
            )
        for index, delay in enumerate(sleep.delays):
            delays_by_retry[index].append(delay)

    ceilings = [min(max_s, base_s * 2**index) for index in range(max_retries)]
    for delays, ceiling in zip(delays_by_retry, ceilings):
        assert len(delays) == trials
        assert min(delays) >= 0
        assert max(delays) <= ceiling
        # Full jitter is uniform on [0, ceiling], so the mean is half the ceiling.
        assert sum(delays) / trials == pytest.approx(ceiling / 2, rel=0.15)


def test_call_with_retries_stops_after_max_retries():
    sleep = RecordingSleep()
    errors = [TransientModelError(f"HTTP 502 try {n}", status=502) for n in range(1, 10)]
    fn = failing_then("never", errors)

    with pytest.raises(RetriesExhausted) as raised:
        call_with_retries(fn, max_retries=3, base_s=0.5, max_s=30, sleep=sleep)

    exhausted = raised.value
    assert fn.calls == [1, 2, 3, 4]
    assert exhausted.attempts == 4
    assert len(sleep.delays) == 3
    assert exhausted.waited_s == pytest.approx(sum(sleep.delays))
    assert exhausted.last_error is errors[3]
    assert exhausted.status == 502
    assert exhausted.reason == "HTTP 502 try 4 (gave up after 4 attempts)"
    assert isinstance(exhausted, ModelCallError)
    assert not isinstance(exhausted, TransientModelError)


def test_call_with_retries_zero_retries_makes_one_attempt():
    sleep = RecordingSleep()
    fn = failing_then("never", [TransientModelError("stream cut")])

    with pytest.raises(RetriesExhausted) as raised:
        call_with_retries(fn, max_retries=0, base_s=0.5, max_s=30, sleep=sleep)

    assert raised.value.attempts == 1
    assert raised.value.waited_s == 0
    assert sleep.delays == []


def test_call_with_retries_permanent_error_not_retried():
    sleep = RecordingSleep()
    error = PermanentModelError("HTTP 400 Bad Request", status=400)
    fn = failing_then("never", [error])

    with pytest.raises(PermanentModelError) as raised:
        call_with_retries(fn, max_retries=4, base_s=0.5, max_s=30, sleep=sleep)

    assert raised.value is error
    assert raised.value.attempts == 1
    assert fn.calls == [1]
    assert sleep.delays == []


def test_call_with_retries_permanent_after_transient_counts_attempts():
    sleep = RecordingSleep()
    errors = [TransientModelError("HTTP 503"), PermanentModelError("HTTP 404", status=404)]

    with pytest.raises(PermanentModelError) as raised:
        call_with_retries(
            failing_then("never", errors), max_retries=4, base_s=0.5, max_s=30, sleep=sleep
        )

    assert raised.value.attempts == 2
    assert len(sleep.delays) == 1


def test_call_with_retries_other_exception_not_retried():
    sleep = RecordingSleep()
    fn = failing_then("never", [KeyError("choices")])

    with pytest.raises(KeyError):
        call_with_retries(fn, max_retries=4, base_s=0.5, max_s=30, sleep=sleep)

    assert fn.calls == [1]
    assert sleep.delays == []


def test_call_with_retries_reports_each_retry():
    sleep = RecordingSleep()
    errors = [TransientModelError("HTTP 500"), TransientModelError("HTTP 429", retry_after_s=2)]
    reported = []

    call_with_retries(
        failing_then("ok", errors),
        max_retries=4,
        base_s=0.5,
        max_s=30,
        on_retry=lambda attempt, error, delay: reported.append((attempt, error, delay)),
        sleep=sleep,
    )

    assert [attempt for attempt, _, _ in reported] == [1, 2]
    assert [error for _, error, _ in reported] == errors
    assert [delay for _, _, delay in reported] == sleep.delays


@pytest.mark.parametrize(
    ("option", "value"), [("max_retries", -1), ("base_s", -0.1), ("max_s", -1)]
)
def test_call_with_retries_rejects_negative_policy(option, value):
    policy = {"max_retries": 2, "base_s": 0.5, "max_s": 30} | {option: value}

    with pytest.raises(ValueError, match=option):
        call_with_retries(lambda: None, **policy)


# classify_http_status and parse_retry_after


@pytest.mark.parametrize(
    ("status", "expected_class"),
    [
        (400, PermanentModelError),
        (401, PermanentModelError),
        (403, PermanentModelError),
        (404, PermanentModelError),
        (408, TransientModelError),
        (409, PermanentModelError),
        (422, PermanentModelError),
        (429, TransientModelError),
        (500, TransientModelError),
        (501, PermanentModelError),
        (502, TransientModelError),
        (503, TransientModelError),
        (504, TransientModelError),
        (505, PermanentModelError),
        (529, TransientModelError),
        (599, TransientModelError),
    ],
)
def test_classify_http_status_table(status, expected_class):
    error = classify_http_status(status, None)

    assert type(error) is expected_class
    assert error.status == status
    assert error.reason.startswith(f"HTTP {status} ")


def test_classify_http_status_parses_retry_after_seconds():
    error = classify_http_status(429, "12", detail="Requests rate limit exceeded")

    assert isinstance(error, TransientModelError)
    assert error.retry_after_s == 12.0
    assert error.reason == "HTTP 429 Too Many Requests: Requests rate limit exceeded"


def test_classify_http_status_parses_retry_after_http_date():
    header = format_datetime(NOW + timedelta(seconds=120), usegmt=True)

    error = classify_http_status(503, header, now=NOW)

    assert header == "Wed, 01 Jan 2025 12:02:00 GMT"
    assert error.retry_after_s == 120.0


def test_classify_http_status_http_date_against_clock():
    header = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)

    error = classify_http_status(429, header)

    # The header has whole seconds, so up to one second is lost in formatting.
    assert 88.0 <= error.retry_after_s <= 90.0


def test_classify_http_status_permanent_ignores_retry_after():
    error = classify_http_status(400, "30")

    assert isinstance(error, PermanentModelError)
    assert not hasattr(error, "retry_after_s")


@pytest.mark.parametrize("status", [200, 302, 399, 600])
def test_classify_http_status_rejects_non_error(status):
    with pytest.raises(ValueError, match=str(status)):
        classify_http_status(status, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wednesday, 01-Jan-25 12:00:30 GMT", 30.0),
        ("Wed Jan  1 12:00:30 2025", 30.0),
        ("Wed, 01 Jan 2025 11:59:00 GMT", 0.0),
        ("Wed, 99 Jan 2025 12:00:30 GMT", None),
    ],
)
def test_parse_retry_after_values(header, expected):
    assert parse_retry_after(header, now=NOW) == expected
