"""Mistral chat-completions wire format: stream chunks, full responses and error bodies.

The shapes follow the models of the mistralai SDK 3.7 (CompletionChunk,
ChatCompletionResponse) and the error bodies of api.mistral.ai, for example
{"object": "error", "message": "Invalid model: x", "type": "invalid_model", "param": null,
"code": "1500"}.
"""

from __future__ import annotations

import json
from typing import Any

SSE_DONE = b"data: [DONE]\n\n"


def usage_block(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def stream_chunk(
    completion_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def completion_response(
    completion_id: str, model: str, created: int, text: str, finish_reason: str, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": None},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": error_type, "param": param, "code": code}


def validation_error_body(location: list[str], message: str, error_type: str) -> dict[str, Any]:
    """Build a 422 body in the {"detail": [...]} shape that the SDK parses as HTTPValidationError."""
    return {"detail": [{"type": error_type, "loc": location, "msg": message}]}


def format_number(value: float) -> str:
    """Format a header number: whole numbers without a fraction, others to 3 decimals."""
    rounded = round(value, 3)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)
