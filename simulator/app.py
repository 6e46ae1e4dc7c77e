"""The simulator's Starlette application: chat completions, model list and admin endpoints."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from simulator.completions import chat_completions
from simulator.defaults import default_config
from simulator.profiles import ConfigError, parse_config
from simulator.state import LOG_CAPACITY, SimulatorState
from simulator.wire import error_body

logger = logging.getLogger("simulator")

OWNER = "mistralmeter-simulator"
DEFAULT_LOG_LIMIT = 100


class SimulatedHeadersMiddleware:
    """Give every response an x-request-id and x-mistralmeter-simulated: true.

    A plain ASGI middleware, because Starlette's BaseHTTPMiddleware would buffer the
    streaming responses whose timing the simulator controls.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["x-mistralmeter-simulated"] = "true"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(config: dict[str, Any] | None = None) -> Starlette:
    """Build the simulator app; config None uses the built-in config.

    Raises ConfigError (a ValueError) naming the field when the config is invalid.
    """
    parsed = parse_config(default_config() if config is None else config)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/simulator/config", get_config, methods=["GET"]),
            Route("/v1/simulator/config", put_config, methods=["PUT"]),
            Route("/v1/simulator/requests", list_requests, methods=["GET"]),
            Route("/v1/simulator/stats", get_stats, methods=["GET"]),
            Route("/v1/simulator/reset", reset, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.add_middleware(SimulatedHeadersMiddleware)
    app.state.simulator = SimulatorState(parsed)
    app.state.started_at = int(time.time())
    return app


def _state(request: Request) -> SimulatorState:
    return request.app.state.simulator


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error_type = "not_found" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(exc.detail), error_type), status_code=exc.status_code, headers=exc.headers)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "simulated": True, "models": sorted(_state(request).config.models)})


def _model_card(name: str, created: int) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "name": name,
        "description": f"Simulated model {name} (MistralMeter simulator, not a real model)",
        "capabilities": {"completion_chat": True, "function_calling": False},
        "max_context_length": 32768,
        "type": "base",
    }


async def list_models(request: Request) -> JSONResponse:
    """List the configured models; the "default" profile serves other names but is not listed."""
    created = request.app.state.started_at
    cards = [_model_card(name, created) for name in sorted(_state(request).config.models)]
    return JSONResponse({"object": "list", "data": cards})


async def retrieve_model(request: Request) -> JSONResponse:
    name = request.path_params["model_id"]
    if name not in _state(request).config.models:
        body = error_body(f"Model not found: {name}", "invalid_model", code="1500")
        return JSONResponse(body, status_code=404)
    return JSONResponse(_model_card(name, request.app.state.started_at))


async def get_config(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).config.to_json())


async def put_config(request: Request) -> JSONResponse:
    """Replace the whole config; 422 names the invalid field and leaves the old config in place."""
    try:
        raw = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return JSONResponse(_config_error(f"Invalid JSON body: {exc}", "config"), status_code=422)
    try:
        parsed = parse_config(raw)
    except ConfigError as exc:
        logger.warning("simulator.config_rejected field=%s error=%s", exc.field, exc)
        return JSONResponse(_config_error(f"Invalid simulator config: {exc}", exc.field), status_code=422)
    _state(request).replace_config(parsed)
    logger.info("simulator.config_replaced models=%s", ",".join(sorted(parsed.models)))
    return JSONResponse(parsed.to_json())


def _config_error(message: str, field_path: str) -> dict[str, Any]:
    body = error_body(message, "invalid_config", param=field_path)
    body["field"] = field_path
    return body


async def list_requests(request: Request) -> JSONResponse:
    raw_limit = request.query_params.get("limit", str(DEFAULT_LOG_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LOG_CAPACITY:
        message = f"Invalid limit {raw_limit!r}: expected an integer from 1 to {LOG_CAPACITY}"
        return JSONResponse(error_body(message, "invalid_request_error", param="limit"), status_code=422)
    return JSONResponse({"object": "list", "data": _state(request).log.recent(int(raw_limit))})


async def get_stats(request: Request) -> JSONResponse:
    return JSONResponse(_state(request).stats.to_json())


async def reset(request: Request) -> JSONResponse:
    state = _state(request)
    state.reset()
    logger.info("simulator.reset")
    return JSONResponse(state.stats.to_json())
