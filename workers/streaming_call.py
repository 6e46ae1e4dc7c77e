"""One streamed model call whose content chunks reach the caller as they arrive.

It shares everything with workers/calls.py except the shape of the result: the same rate
limiter (a slot is held until the stream ends), the same retry policy, the same error classes
and the same timing definitions (workers/measurement.py). One rule differs: transient failures
are retried only before the first content chunk. After it the caller has already passed text
on, and a retry would send a second, different response.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator

import redis
from mistralai.client import Mistral

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings
from workers.calls import redis_client, reserved_tokens
from workers.measurement import LatencyMetrics, StreamTiming, latency_metrics
from workers.model_errors import (
    ModelCallError,
    PermanentModelError,
    TransientModelError,
)
from workers.provider import (
    ALLOWED_PARAMS,
    PROVIDER,
    ChatResult,
    classified_errors,
    clear_request_start,
    content_text,
    get_client,
    injected_plan,
    request_start,
    token_counts,
)
from workers.ratelimit import (
    Lease,
    RateLimiter,
    RateLimitTimeout,
    RequestTooLarge,
    limiter_for,
    resolve_limits,
)
from workers.retry import RetriesExhausted, call_with_retries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenChunk:
    """One content chunk: its text, 0-based position and arrival in ms after the request."""

    text: str
    index: int
    offset_ms: float


@dataclass(frozen=True)
class StreamFinished:
    """The last item of a successful stream: the whole result and its metrics."""

    result: ChatResult
    metrics: LatencyMetrics
    attempts: int
    rate_limit_wait_s: float
    retry_wait_s: float


class StreamFailed(Exception):
    """The call failed; `error` is the final ModelCallError and `tokens_sent` the chunks yielded."""

    def __init__(self, error: ModelCallError, *, attempts: int, tokens_sent: int) -> None:
        super().__init__(error.reason)
        self.error = error
        self.attempts = attempts
        self.tokens_sent = tokens_sent


def check_request_fits(
    settings: Settings, *, model: str, messages: list[dict[str, str]], params: dict[str, Any]
) -> None:
    """Raise RequestTooLarge when the request can never fit the model's tokens-per-minute limit.

    Callers run this before responding, so such a request gets a 4xx rather than a stream
    that fails at once.
    """
    needed = reserved_tokens(messages, params)
    limits = resolve_limits(PROVIDER, model, settings)
    if needed > limits.tokens_per_minute:
        raise RequestTooLarge(
            f"the request needs about {needed} tokens (prompt and max_tokens) but {model} "
            f"allows {limits.tokens_per_minute} tokens per minute; shorten the prompt or "
            "lower max_tokens"
        )


def stream_model(
    settings: Settings,
    *,
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    log_context: dict[str, Any] | None = None,
) -> Iterator[TokenChunk | StreamFinished]:
    """Yield a TokenChunk per content chunk, then one StreamFinished; raise StreamFailed on failure.

    Close the iterator (contextlib.closing) to stop early: that closes the HTTP stream and
    frees the rate-limit slot.
    """
    limiter = limiter_for(redis_client(settings.redis_url), PROVIDER, model, settings)
    call = _StreamCall(settings, limiter, get_client(settings), model, messages, params)

    def on_retry(attempt_number: int, error: TransientModelError, delay_s: float) -> None:
        logger.warning(
            "stream call failed before the first token, retrying",
            extra=log_fields(
                **{**(log_context or {}), "model": model},
                attempt=attempt_number,
                reason=error.reason,
                delay_s=round(delay_s, 3),
            ),
        )

    try:
        opened = call_with_retries(
            call.open,
            max_retries=settings.max_retries,
            base_s=settings.backoff_base_s,
            max_s=settings.backoff_max_s,
            on_retry=on_retry,
        )
    except RetriesExhausted as exc:
        raise StreamFailed(exc, attempts=exc.attempts, tokens_sent=0) from exc
    except ModelCallError as exc:
        raise StreamFailed(exc, attempts=getattr(exc, "attempts", 1), tokens_sent=0) from exc

    reader = opened.value
    with reader.lease, reader.stream:
        try:
            yield from reader.chunks()
            result = reader.result()
        except ModelCallError as exc:
            if isinstance(exc, TransientModelError):
                call.note_failure(exc)
            raise StreamFailed(
                exc, attempts=opened.attempts, tokens_sent=len(reader.chunk_offsets)
            ) from exc
        call.settle_usage(reader.lease, result.total_tokens)

    yield StreamFinished(
        result=result,
        metrics=latency_metrics(result.timing, result.output_tokens),
        attempts=opened.attempts,
        rate_limit_wait_s=call.rate_limit_wait_s,
        retry_wait_s=opened.waited_s,
    )


class _StreamCall:
    """Opens the stream under a rate-limit lease, one attempt per call of open()."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        client: Mistral,
        model: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.client = client
        self.model = model
        self.messages = messages
        self.request = {key: params[key] for key in ALLOWED_PARAMS if key in params}
        self.reserved_tokens = reserved_tokens(messages, params)
        self.rate_limit_wait_s = 0.0

    def open(self) -> _StreamReader:
        """Take a slot, send the request and read up to the first content chunk."""
        lease = self._acquire()
        try:
            reader = self._open_stream(lease)
        except TransientModelError as exc:
            lease.release()
            self.note_failure(exc)
            raise
        except BaseException:
            lease.release()
            raise
        return reader

    def note_failure(self, error: TransientModelError) -> None:
        if error.status != 429:
            return
        try:
            self.limiter.on_rate_limited()
        except redis.RedisError as redis_error:
            logger.warning(
                "rate limit not lowered after 429",
                extra=log_fields(key=self.limiter.key, error=str(redis_error)),
            )

    def settle_usage(self, lease: Lease, total_tokens: int) -> None:
        # Best effort: the response has been streamed, so a Redis error must not turn it into a
        # failure at the last moment.
        try:
            lease.settle(total_tokens)
            self.limiter.on_success()
        except redis.RedisError as redis_error:
            logger.warning(
                "rate limit usage not recorded",
                extra=log_fields(
                    key=self.limiter.key, lease_id=lease.lease_id, error=str(redis_error)
                ),
            )

    def _acquire(self) -> Lease:
        timeout_s = self.settings.request_timeout_s * 4
        try:
            lease = self.limiter.acquire(self.reserved_tokens, timeout_s=timeout_s)
        except RateLimitTimeout as exc:
            self.rate_limit_wait_s += exc.waited_s
            raise TransientModelError(f"rate limit wait timed out: {exc}") from exc
        except RequestTooLarge as exc:
            raise PermanentModelError(f"request too large for the rate limit: {exc}") from exc
        self.rate_limit_wait_s += lease.waited_s
        return lease

    def _open_stream(self, lease: Lease) -> _StreamReader:
        timeout_s = self.settings.request_timeout_s
        # The clock starts just before the request is sent, as in workers/provider.py.
        clear_request_start()
        called = time.perf_counter()
        with classified_errors(timeout_s):
            stream = self.client.chat.stream(
                model=self.model,
                messages=self.messages,
                timeout_ms=int(timeout_s * 1000),
                **self.request,
            )
        reader = _StreamReader(stream, lease, request_start(called), self.messages, timeout_s)
        try:
            reader.read_first_chunk()
        except BaseException:
            stream.close()
            raise
        return reader


class _StreamReader:
    """Reads an open stream, recording each content chunk's arrival like provider.stream_chat."""

    def __init__(
        self,
        stream: Any,
        lease: Lease,
        started: float,
        messages: list[dict[str, str]],
        timeout_s: float,
    ) -> None:
        self.stream = stream
        self.lease = lease
        self.started = started
        self.messages = messages
        self.timeout_s = timeout_s
        self.parts: list[str] = []
        self.chunk_offsets: list[float] = []
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.total_ms: float | None = None
        self._events = iter(stream)
        self._pending: TokenChunk | None = None

    def read_first_chunk(self) -> None:
        """Read until the first content chunk (kept for chunks()) or the end of the stream."""
        self._pending = self._next_chunk()

    def chunks(self) -> Iterator[TokenChunk]:
        chunk = self._pending
        self._pending = None
        while chunk is not None:
            yield chunk
            chunk = self._next_chunk()

    def result(self) -> ChatResult:
        if self.finish_reason is None:
            raise TransientModelError("stream cut: the stream ended without a finish reason")
        assert self.total_ms is not None
        text = "".join(self.parts)
        input_tokens, output_tokens, estimated = token_counts(self.usage, self.messages, text)
        return ChatResult(
            text=text,
            finish_reason=self.finish_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tokens_estimated=estimated,
            timing=StreamTiming(total_ms=self.total_ms, content_chunk_ms=tuple(self.chunk_offsets)),
            injected=injected_plan(self.stream.response.headers),
        )

    def _next_chunk(self) -> TokenChunk | None:
        """Return the next content chunk, or None once the stream has ended."""
        # NOTE: arrival is taken when the SDK hands over an event. A client that stops reading
        # the SSE response until the socket buffers fill delays this loop and so inflates the
        # measured inter-token latency of its own stream.
        with classified_errors(self.timeout_s):
            for event in self._events:
                now_ms = (time.perf_counter() - self.started) * 1000.0
                content = self._take_event(event.data)
                if content:
                    self.parts.append(content)
                    self.chunk_offsets.append(now_ms)
                    return TokenChunk(content, len(self.parts) - 1, now_ms)
        self.total_ms = (time.perf_counter() - self.started) * 1000.0
        return None

    def _take_event(self, chunk: Any) -> str:
        if chunk.usage is not None:
            self.usage = chunk.usage
        texts = []
        for choice in chunk.choices:
            # A chunk with only the role, or with empty text, is not a token.
            texts.append(content_text(choice.delta.content))
            if choice.finish_reason:
                self.finish_reason = str(choice.finish_reason)
        return "".join(texts)
