"""Turn the arrival times of streamed chunks into the latency metrics PRODUCT.md defines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Rough characters per token for English text, used only when the API returns no usage.
CHARS_PER_TOKEN_ESTIMATE = 4.0


@dataclass(frozen=True)
class StreamTiming:
    """Offsets in milliseconds from just before the request was sent."""

    total_ms: float
    content_chunk_ms: tuple[float, ...]


@dataclass(frozen=True)
class LatencyMetrics:
    total_ms: float
    time_to_first_token_ms: float | None
    tokens_per_second: float | None
    decode_tokens_per_second: float | None
    inter_token_latency_ms: float | None


def latency_metrics(timing: StreamTiming, output_tokens: int | None) -> LatencyMetrics:
    """Compute TTFT, throughput, decode speed and inter-token latency for one stream."""
    chunks = timing.content_chunk_ms
    ttft = chunks[0] if chunks else None

    tokens_per_second = None
    if output_tokens is not None and timing.total_ms > 0:
        tokens_per_second = output_tokens / (timing.total_ms / 1000.0)

    # Decode speed leaves out the first token, whose wait is prefill and queueing, not decoding.
    decode_tokens_per_second = None
    if ttft is not None and output_tokens is not None and output_tokens > 1:
        decode_seconds = (timing.total_ms - ttft) / 1000.0
        if decode_seconds > 0:
            decode_tokens_per_second = (output_tokens - 1) / decode_seconds

    inter_token_latency_ms = None
    if len(chunks) >= 2:
        inter_token_latency_ms = float(np.mean(np.diff(np.asarray(chunks, dtype=float))))

    return LatencyMetrics(
        total_ms=timing.total_ms,
        time_to_first_token_ms=ttft,
        tokens_per_second=tokens_per_second,
        decode_tokens_per_second=decode_tokens_per_second,
        inter_token_latency_ms=inter_token_latency_ms,
    )


def estimate_tokens(text: str) -> int:
    """Estimate a token count from text length; callers mark the result as an estimate."""
    if not text:
        return 0
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE))
