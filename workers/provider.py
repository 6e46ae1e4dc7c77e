"""Streamed chat calls through the official mistralai SDK, timed and classified."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx2
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from mistralmeter.settings import Settings
from workers import client_lag
from workers.measurement import StreamTiming, estimate_tokens
from workers.model_errors import (
    ModelCallError,
    PermanentModelError,
    TransientModelError,
    classify_http_status,
)
from workers.sdk_decoding import install_cached_decoding

PROVIDER = "mistral"

# Sampling parameters a request may pass through to the chat-completions call.
ALLOWED_PARAMS = ("temperature", "top_p", "max_tokens", "random_seed", "presence_penalty",
                  "frequency_penalty", "stop", "safe_prompt")

_client_lock = threading.Lock()
_clients: dict[tuple[str | None, float], Mistral] = {}


class StreamCounter:
    """Streams open in this process. Many at once queue for the GIL and inflate measured times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0

    def enter(self) -> int:
        """Count one more open stream and return how many are open, this one included."""
        with self._lock:
            self._open += 1
            return self._open

    def leave(self) -> None:
        with self._lock:
            self._open -= 1


open_streams = StreamCounter()


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    timing: StreamTiming
    injected: dict[str, Any] | None = field(default=None)
    # Streams open in this process when this one started, itself included.
    concurrent_streams: int = 1
    # Max ms this process's threads waited for the CPU between the request and the last
    # chunk. None when the lag probe took no sample in that time.
    client_lag_ms: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


_send_marks = threading.local()


def _record_send(event_name: str, _info: dict[str, Any]) -> None:
    # httpcore calls this in the requesting thread. The mark is the moment the request
    # headers start to go out, after any connection set-up (TCP, TLS) has finished.
    if event_name.endswith("send_request_headers.started"):
        _send_marks.sent_at = time.perf_counter()


class SendTimingTransport(httpx2.HTTPTransport):
    """An HTTP transport that marks when each request is sent, for the latency clock."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.extensions["trace"] = _record_send
        return super().handle_request(request)


def request_start(fallback: float) -> float:
    """Return when the last request of this thread was sent, or `fallback` if not marked.

    Timing from here leaves out connection set-up, which a new connection pays once and a
    kept-alive one not at all, so the first runs of a job are not slower than the rest.
    """
    sent_at = getattr(_send_marks, "sent_at", None)
    return sent_at if sent_at is not None and sent_at >= fallback else fallback


def clear_request_start() -> None:
    _send_marks.sent_at = None


def get_client(settings: Settings) -> Mistral:
    """Return one SDK client per server URL and process; its HTTP pool is thread-safe."""
    key = (settings.model_server_url, settings.request_timeout_s)
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            install_cached_decoding()
            http_client = httpx2.Client(
                transport=SendTimingTransport(),
                timeout=settings.request_timeout_s,
                follow_redirects=True,
            )
            client = Mistral(
                # The simulator accepts any key; a real key never leaves this call.
                api_key=settings.mistral_api_key or "simulator",
                server_url=settings.model_server_url,
                timeout_ms=int(settings.request_timeout_s * 1000),
                client=http_client,
            )
            _clients[key] = client
        return client


def stream_chat(
    client: Mistral,
    *,
    model: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    timeout_s: float,
    json_mode: bool = False,
) -> ChatResult:
    """Make one streamed call and time it, raising ModelCallError subclasses on failure."""
    request: dict[str, Any] = {key: params[key] for key in ALLOWED_PARAMS if key in params}
    if json_mode:
        request["response_format"] = {"type": "json_object"}

    client_lag.ensure_started()
    concurrent = open_streams.enter()
    try:
        clear_request_start()
        called = time.perf_counter()
        with classified_errors(timeout_s):
            stream = client.chat.stream(
                model=model, messages=messages, timeout_ms=int(timeout_s * 1000), **request
            )
            with stream:
                started = request_start(called)
                result = _read_stream(stream, started, messages)
    finally:
        open_streams.leave()
    result.concurrent_streams = concurrent
    finished = started + result.timing.total_ms / 1000.0
    result.client_lag_ms = client_lag.max_lag_ms(started, finished)
    return result


@contextmanager
def classified_errors(timeout_s: float) -> Iterator[None]:
    """Turn SDK and transport errors into ModelCallError subclasses the retry policy reads."""
    try:
        yield
    except MistralError as exc:
        raise classify_http_status(
            exc.status_code, exc.headers.get("retry-after"), detail=error_detail(exc)
        ) from exc
    except httpx2.TimeoutException as exc:
        raise TransientModelError(f"timed out: no response within {timeout_s:g} s") from exc
    except httpx2.RemoteProtocolError as exc:
        raise TransientModelError(f"stream cut: the connection closed early ({exc})") from exc
    except httpx2.TransportError as exc:
        raise TransientModelError(f"connection failed: {type(exc).__name__}: {exc}") from exc


def _read_stream(stream: Any, started: float, messages: list[dict[str, str]]) -> ChatResult:
    parts: list[str] = []
    chunk_offsets: list[float] = []
    finish_reason = None
    usage = None

    for event in stream:
        now_ms = (time.perf_counter() - started) * 1000.0
        chunk = event.data
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content = content_text(choice.delta.content)
            # A chunk with only the role, or with empty text, is not the first token.
            if content:
                parts.append(content)
                chunk_offsets.append(now_ms)
            if choice.finish_reason:
                finish_reason = str(choice.finish_reason)

    total_ms = (time.perf_counter() - started) * 1000.0
    if finish_reason is None:
        raise TransientModelError("stream cut: the stream ended without a finish reason")

    text = "".join(parts)
    input_tokens, output_tokens, estimated = token_counts(usage, messages, text)
    return ChatResult(
        text=text,
        finish_reason=finish_reason,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tokens_estimated=estimated,
        timing=StreamTiming(total_ms=total_ms, content_chunk_ms=tuple(chunk_offsets)),
        injected=injected_plan(stream.response.headers),
    )


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Content may arrive as a list of typed chunks; only text chunks carry tokens we time.
    return "".join(getattr(part, "text", "") or "" for part in content)


def token_counts(usage: Any, messages: list[dict[str, str]], text: str) -> tuple[int, int, bool]:
    if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
        return int(usage.prompt_tokens), int(usage.completion_tokens), False
    prompt_text = "\n".join(message["content"] for message in messages)
    return estimate_tokens(prompt_text), estimate_tokens(text), True


def injected_plan(headers: Any) -> dict[str, Any] | None:
    """Read the timing plan the simulator reports, to compare measured with injected values."""
    if headers.get("x-mistralmeter-simulated") != "true":
        return None
    plan: dict[str, Any] = {"simulated": True, "request_id": headers.get("x-request-id")}
    for name in ("ttft-ms", "itl-ms", "output-tokens"):
        value = headers.get(f"x-simulator-{name}")
        if value is not None:
            plan[name.replace("-", "_")] = float(value)
    return plan


def error_detail(exc: MistralError) -> str:
    body = (exc.body or "").strip()
    return body[:500] if body else f"HTTP {exc.status_code}"


__all__ = [
    "ALLOWED_PARAMS",
    "PROVIDER",
    "ChatResult",
    "ModelCallError",
    "PermanentModelError",
    "TransientModelError",
    "get_client",
    "stream_chat",
]
