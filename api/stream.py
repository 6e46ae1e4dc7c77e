"""POST /stream: one model response as Server-Sent Events, token by token, then its metrics.

Input is validated, and the model checked, before the response starts, so bad input gets the
usual JSON error envelope. Once streaming, a failure is reported as an `error` event, because
the 200 status has already been sent. Nothing is stored and no judge is called.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import closing
from typing import Any, Iterator

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from api.errors import Unprocessable
from api.job_submission import check_models, settings_for_app
from api.schemas import ModelName, ParamsSchema, PromptSchema, StrictSchema
from mistralmeter.logging_setup import log_fields
from mistralmeter.pricing import PRICES_AS_OF, PriceTable
from mistralmeter.settings import Settings
from workers.evaluation import error_code
from workers.ratelimit import RequestTooLarge
from workers.streaming_call import (
    StreamFailed,
    StreamFinished,
    TokenChunk,
    check_request_fits,
    stream_model,
)

logger = logging.getLogger(__name__)

blueprint = Blueprint(
    "stream",
    __name__,
    url_prefix="/stream",
    description="Stream one model response as Server-Sent Events",
)

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # Reverse proxies such as nginx buffer responses unless this header turns buffering off.
    "X-Accel-Buffering": "no",
}


class StreamRequestSchema(StrictSchema):
    prompt = fields.Nested(PromptSchema, required=True)
    model = ModelName(required=True)
    params = fields.Nested(ParamsSchema, load_default=dict)


@blueprint.route("")
class StreamView(MethodView):
    @blueprint.arguments(StreamRequestSchema)
    @blueprint.response(
        200,
        content_type="text/event-stream",
        description="`token` events ({text, index}), then one `metrics` or `error` event",
    )
    def post(self, body: dict[str, Any]):
        """Stream the model's response token by token, then its metrics, as Server-Sent Events.

        Transient failures (429, 5xx, timeouts, a cut stream) are retried only before the
        first token; a failure after it ends the stream with an `error` event.
        """
        settings = settings_for_app()
        check_models(settings, {"model": body["model"]})
        messages = chat_messages(body["prompt"])
        try:
            check_request_fits(
                settings, model=body["model"], messages=messages, params=body["params"]
            )
        except RequestTooLarge as exc:
            raise Unprocessable(str(exc), field="prompt") from exc

        events = sse_events(settings, body["model"], messages, body["params"])
        return Response(events, mimetype="text/event-stream", headers=SSE_HEADERS)


def chat_messages(prompt: dict[str, Any]) -> list[dict[str, str]]:
    """Build the chat messages the same way evaluation runs do: optional system, then user."""
    messages = []
    if prompt.get("system"):
        messages.append({"role": "system", "content": prompt["system"]})
    messages.append({"role": "user", "content": prompt["prompt"]})
    return messages


def sse_events(
    settings: Settings, model: str, messages: list[dict[str, str]], params: dict[str, Any]
) -> Iterator[str]:
    """Yield the SSE text: a `token` event per chunk, then `metrics` or `error`.

    When the client disconnects, the server closes this generator, which closes the model
    stream and frees its rate-limit slot.
    """
    stream_id = uuid.uuid4().hex
    context = {"stream_id": stream_id, "model": model}
    logger.info("stream started", extra=log_fields(**context))
    try:
        with closing(stream_model(settings, model=model, messages=messages, params=params,
                                  log_context=context)) as items:
            for item in items:
                if isinstance(item, TokenChunk):
                    yield sse_event("token", {"text": item.text, "index": item.index})
                elif isinstance(item, StreamFinished):
                    yield sse_event("metrics", metrics_document(settings, model, item))
    except StreamFailed as failure:
        logger.warning(
            "stream failed",
            extra=log_fields(**context, reason=failure.error.reason, attempts=failure.attempts),
        )
        yield sse_event("error", error_document(failure))
        return
    except Exception:  # the status line is sent, so the client can only learn of it here
        logger.exception("stream failed unexpectedly", extra=log_fields(**context))
        message = "internal error; the server log has the details"
        yield sse_event("error", {"message": message, "reason": "internal_error"})
        return
    logger.info("stream finished", extra=log_fields(**context))


def sse_event(name: str, data: dict[str, Any]) -> str:
    # json.dumps escapes newlines, so the data always fits on the one data: line SSE needs.
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def metrics_document(settings: Settings, model: str, finished: StreamFinished) -> dict[str, Any]:
    """Build the `metrics` event: the run metrics in the names of a job's single-run result."""
    result, metrics = finished.result, finished.metrics
    return {
        "model": model,
        "finish_reason": result.finish_reason,
        "tokens": {
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "total_tokens": result.total_tokens,
            "estimated": result.tokens_estimated,
        },
        "latency": {
            "total_ms": metrics.total_ms,
            "time_to_first_token_ms": metrics.time_to_first_token_ms,
            "tokens_per_second": metrics.tokens_per_second,
            "decode_tokens_per_second": metrics.decode_tokens_per_second,
            "inter_token_latency_ms": metrics.inter_token_latency_ms,
        },
        "waiting": {
            "rate_limit_wait_ms": finished.rate_limit_wait_s * 1000.0,
            "retry_wait_ms": finished.retry_wait_s * 1000.0,
            "attempts": finished.attempts,
        },
        "cost": {
            "usd": PriceTable(settings.price_overrides).cost_usd(
                model, result.input_tokens, result.output_tokens
            ),
            "estimate": True,
            "prices_as_of": PRICES_AS_OF,
        },
        "simulated": settings.uses_simulator,
        "injected": result.injected,
    }


def error_document(failure: StreamFailed) -> dict[str, Any]:
    return {
        "message": failure.error.reason,
        "reason": error_code(failure.error),
        "attempts": failure.attempts,
        "tokens_sent": failure.tokens_sent,
    }
