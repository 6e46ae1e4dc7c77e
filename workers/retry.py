"""Retry policy for model calls, built on tenacity.

Only TransientModelError is retried. The delay before retry n (1-based) is drawn uniformly from
[0, min(max_s, base_s * 2 ** (n - 1))] ("full jitter"), so workers that failed together do not
retry together. When the server sent Retry-After, the delay is at least that long, even above
max_s: asking again sooner would only earn another 429.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_base

from mistralmeter.logging_setup import log_fields
from workers.model_errors import ModelCallError, TransientModelError

T = TypeVar("T")

logger = logging.getLogger(__name__)

RetryCallback = Callable[[int, TransientModelError, float], None]


@dataclass(frozen=True)
class RetryOutcome(Generic[T]):
    """The value of a call that succeeded, the attempts it took and the seconds slept between."""

    value: T
    attempts: int
    waited_s: float


class RetriesExhausted(ModelCallError):
    """Every allowed attempt failed with a transient error; `last_error` is the final one."""

    def __init__(self, last_error: TransientModelError, attempts: int, waited_s: float) -> None:
        reason = f"{last_error.reason} (gave up after {attempts} attempts)"
        super().__init__(reason, status=last_error.status)
        self.last_error = last_error
        self.attempts = attempts
        self.waited_s = waited_s


class WaitRetryAfterOrBackoff(wait_base):
    """Tenacity wait: max(Retry-After, full-jitter exponential backoff capped at max_s)."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self.base_s = base_s
        self.max_s = max_s

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = min(self.max_s, self.base_s * 2 ** (retry_state.attempt_number - 1))
        delay = random.uniform(0.0, ceiling)

        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after_s = getattr(error, "retry_after_s", None)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_retries: int,
    base_s: float,
    max_s: float,
    on_retry: RetryCallback | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RetryOutcome[T]:
    """Call `fn` until it returns, retrying TransientModelError up to `max_retries` times.

    Makes at most max_retries + 1 attempts. `on_retry(attempt, error, delay_s)` runs before each
    backoff sleep, with the number of the attempt that failed. Raises RetriesExhausted when the
    last attempt fails too. A PermanentModelError, or any exception that is not a
    TransientModelError, propagates from the attempt that raised it; a ModelCallError gets an
    `attempts` attribute first.
    """
    _validate_policy(max_retries, base_s, max_s)

    attempts = 0
    waited_s = 0.0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return fn()

    def sleep_and_record(delay_s: float) -> None:
        nonlocal waited_s
        sleep(delay_s)
        waited_s += delay_s

    def before_sleep(retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception()
        delay_s = retry_state.upcoming_sleep
        # DEBUG only: callers log retries at WARNING through on_retry, with their job and run ids.
        logger.debug(
            "model call failed, retrying",
            extra=log_fields(
                attempt=retry_state.attempt_number, delay_s=round(delay_s, 3), reason=error.reason
            ),
        )
        if on_retry is not None:
            on_retry(retry_state.attempt_number, error, delay_s)

    retrying = Retrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=WaitRetryAfterOrBackoff(base_s, max_s),
        retry=retry_if_exception_type(TransientModelError),
        before_sleep=before_sleep,
        sleep=sleep_and_record,
        reraise=False,
    )
    try:
        value = retrying(attempt)
    except RetryError as exhausted:
        last_error = exhausted.last_attempt.exception()
        raise RetriesExhausted(last_error, attempts, waited_s) from last_error
    except ModelCallError as error:
        error.attempts = attempts
        raise
    return RetryOutcome(value=value, attempts=attempts, waited_s=waited_s)


def _validate_policy(max_retries: int, base_s: float, max_s: float) -> None:
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
    if base_s < 0:
        raise ValueError(f"base_s must be 0 or more, got {base_s}")
    if max_s < 0:
        raise ValueError(f"max_s must be 0 or more, got {max_s}")
