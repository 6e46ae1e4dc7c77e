"""One model call under the shared rate limit, retried on transient failures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from redis.backoff import EqualJitterBackoff
from redis.retry import Retry

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings
from workers.model_errors import ModelCallError, PermanentModelError, TransientModelError
from workers.provider import PROVIDER, ChatResult, get_client, stream_chat
from workers.ratelimit import Lease, RateLimiter, RateLimitTimeout, RequestTooLarge, limiter_for
from workers.retry import RetriesExhausted, call_with_retries

logger = logging.getLogger(__name__)

# Output tokens reserved against the tokens-per-minute budget when a request sets no max_tokens.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 512

# Rate-limiter commands retry a lost connection 12 times, waiting 0.25 s doubling to at most 4 s,
# half of each wait random. That is about 20 to 40 s in all, enough for a Redis restart.
LIMITER_RETRIES = 12
LIMITER_BACKOFF_BASE_S = 0.25
LIMITER_BACKOFF_MAX_S = 4.0
# Without a socket timeout, a command on a connection whose peer vanished waits forever.
LIMITER_SOCKET_TIMEOUT_S = 5.0


@dataclass
class CallOutcome:
    result: ChatResult | None
    error: ModelCallError | None
    attempts: int
    rate_limit_wait_s: float
    retry_wait_s: float


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, health_check_interval=30)


@lru_cache(maxsize=4)
def limiter_redis_client(url: str) -> redis.Redis:
    """Return the client for the rate limiter, which waits out a Redis restart.

    redis_client fails at once, as a health check should. A limiter command that failed
    instead would fail the task, and Celery acknowledges a failed task, so its run is lost.
    """
    return redis.Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=LIMITER_SOCKET_TIMEOUT_S,
        socket_timeout=LIMITER_SOCKET_TIMEOUT_S,
        retry=Retry(
            EqualJitterBackoff(cap=LIMITER_BACKOFF_MAX_S, base=LIMITER_BACKOFF_BASE_S),
            LIMITER_RETRIES,
        ),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def call_model(
    settings: Settings,
    *,
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    json_mode: bool = False,
    limit_overrides: dict[str, Any] | None = None,
    log_context: dict[str, Any] | None = None,
) -> CallOutcome:
    """Call the model, waiting for a rate-limit slot before every attempt."""
    limiter = limiter_for(
        limiter_redis_client(settings.redis_url), PROVIDER, model, settings, limit_overrides
    )
    client = get_client(settings)
    reserved = reserved_tokens(messages, params)
    waits = {"rate_limit_s": 0.0}

    def attempt() -> ChatResult:
        try:
            lease = limiter.acquire(reserved, timeout_s=settings.request_timeout_s * 4)
        except RateLimitTimeout as exc:
            waits["rate_limit_s"] += exc.waited_s
            raise TransientModelError(f"rate limit wait timed out: {exc}") from exc
        except RequestTooLarge as exc:
            raise PermanentModelError(f"request too large for the rate limit: {exc}") from exc
        with lease:
            waits["rate_limit_s"] += lease.waited_s
            try:
                result = stream_chat(
                    client,
                    model=model,
                    messages=messages,
                    params=params,
                    timeout_s=settings.request_timeout_s,
                    json_mode=json_mode,
                )
            except TransientModelError as exc:
                _note_failure(limiter, exc)
                raise
            _settle_usage(limiter, lease, result)
            return result

    def on_retry(attempt_number: int, error: TransientModelError, delay_s: float) -> None:
        # A dict merge, because log_context usually names the model too.
        fields = {
            **(log_context or {}),
            "model": model,
            "attempt": attempt_number,
            "reason": error.reason,
            "delay_s": round(delay_s, 3),
        }
        logger.warning("model call failed, retrying", extra=log_fields(**fields))

    try:
        outcome = call_with_retries(
            attempt,
            max_retries=settings.max_retries,
            base_s=settings.backoff_base_s,
            max_s=settings.backoff_max_s,
            on_retry=on_retry,
        )
    except RetriesExhausted as exc:
        return CallOutcome(None, exc, exc.attempts, waits["rate_limit_s"], exc.waited_s)
    except ModelCallError as exc:
        attempts = getattr(exc, "attempts", 1)
        return CallOutcome(None, exc, attempts, waits["rate_limit_s"], 0.0)
    return CallOutcome(
        outcome.value, None, outcome.attempts, waits["rate_limit_s"], outcome.waited_s
    )


def reserved_tokens(messages: list[dict[str, str]], params: dict[str, Any]) -> int:
    prompt_chars = sum(len(message["content"]) for message in messages)
    expected_output = int(params.get("max_tokens") or DEFAULT_EXPECTED_OUTPUT_TOKENS)
    return prompt_chars // 4 + expected_output


def _settle_usage(limiter: RateLimiter, lease: Lease, result: ChatResult) -> None:
    # Token accounting is best effort, because losing the result of a finished call over it
    # would cost a second call.
    try:
        lease.settle(result.total_tokens)
        limiter.on_success()
    except redis.RedisError as error:
        logger.warning(
            "rate limit usage not recorded",
            extra=log_fields(key=limiter.key, lease_id=lease.lease_id, error=str(error)),
        )


def _note_failure(limiter: RateLimiter, error: TransientModelError) -> None:
    if error.status != 429:
        return
    try:
        limiter.on_rate_limited()
    except redis.RedisError as error_lowering:
        logger.warning(
            "rate limit not lowered after 429",
            extra=log_fields(key=limiter.key, error=str(error_lowering)),
        )
