"""Parsing and validation of a chat-completions request body.

Errors follow api.mistral.ai: a body that is not JSON gets 400, a field of the wrong type
gets 422 with {"detail": [{"type", "loc", "msg"}]}, which the SDK raises as
HTTPValidationError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from simulator.judge import is_judge_request
from simulator.wire import error_body, validation_error_body

MESSAGE_ROLES = ("system", "user", "assistant", "tool")


class RequestInvalid(Exception):
    """The request body is invalid; ``response`` is the error response to send."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class ChatRequest:
    """The request fields the simulator uses; temperature, tools, stop and n are ignored."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None
    random_seed: int | None
    is_judge: bool


def parse_chat_request(raw_body: bytes) -> ChatRequest:
    """Parse and validate the request body; raise RequestInvalid with a Mistral-style error."""
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestInvalid(JSONResponse(error_body(f"Invalid JSON body: {exc}", "invalid_request_error"), 400))
    if not isinstance(body, dict):
        raise _invalid([], "The request body must be a JSON object", "dict_type")

    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid(["body", "model"], "Field required: a non-empty model name", "missing")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid(["body", "messages"], "Field required: a non-empty list of messages", "missing")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            roles = ", ".join(MESSAGE_ROLES)
            raise _invalid(["body", "messages", str(index), "role"], f"Role must be one of {roles}", "literal_error")

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid(["body", "stream"], "Input should be a valid boolean", "bool_type")
    max_tokens = _optional_int(body, "max_tokens", minimum=1)
    random_seed = _optional_int(body, "random_seed", minimum=0)
    return ChatRequest(model, messages, stream, max_tokens, random_seed, is_judge_request(body))


def _optional_int(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _invalid(["body", name], f"Input should be an integer >= {minimum}", "int_type")
    return value


def _invalid(location: list[str], message: str, error_type: str) -> RequestInvalid:
    return RequestInvalid(JSONResponse(validation_error_body(location, message, error_type), status_code=422))
