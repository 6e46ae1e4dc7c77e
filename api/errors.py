"""One error envelope for every status: {code, status, message, errors}.

Domain exceptions are mapped to statuses here and nowhere else.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, request
from flask_smorest import Api
from sqlalchemy import exc as sqlalchemy_exc
from werkzeug.exceptions import HTTPException

from mistralmeter.logging_setup import log_fields

logger = logging.getLogger(__name__)

JSON_MIMETYPES = ("application/json",)


class ApiError(Exception):
    """An error with a status, a message for people and optional errors keyed by field."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None, errors: dict | None = None):
        super().__init__(message)
        self.message = message
        if errors is None and field:
            errors = {field: [message]}
        self.errors = errors


class BadRequest(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unprocessable(ApiError):
    status_code = 422


class PayloadTooLarge(ApiError):
    status_code = 413


class ServiceUnavailable(ApiError):
    status_code = 503


class MeterApi(Api):
    """flask-smorest's Api with a `message` on every error, validation errors included."""

    def handle_http_exception(self, error: HTTPException):
        payload, code, headers = super().handle_http_exception(error)
        if "message" not in payload:
            payload["message"] = _message_for(error, payload.get("errors"))
        if code >= 500:
            logger.error("request failed", extra=log_fields(path=request.path, status=code))
        elif code != 404:
            logger.warning(
                "request rejected", extra=log_fields(path=request.path, status=code)
            )
        return payload, code, headers


def _message_for(error: HTTPException, errors: Any) -> str:
    if errors:
        problems = "; ".join(_flatten(errors))
        if error.code == 422 and _body_is_not_json():
            return (
                "request body must be JSON: send Content-Type: application/json "
                f"(fields not found: {problems})"
            )
        return f"invalid request: {problems}"
    if error.code == 400 and _body_is_not_json() is False and request.get_data(cache=True):
        return "request body is not valid JSON"
    return error.description or error.name


def _flatten(errors: Any, prefix: str = "") -> list[str]:
    """Turn webargs' nested {location: {field: [messages]}} into "field: message" strings."""
    if isinstance(errors, dict):
        lines = []
        for key, value in errors.items():
            # The location ("json", "query") is noise for users, and marshmallow's "_schema" is
            # the object itself: the field path is what matters.
            if key in ("json", "query", "form", "files", "path", "_schema"):
                path = prefix
            else:
                # A list index of 0 is a key too, so test for the empty prefix explicitly.
                path = f"{prefix}.{key}" if prefix else str(key)
            lines.extend(_flatten(value, path))
        return lines
    if isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        text = "; ".join(errors)
        return [f"{prefix}: {text}" if prefix else text]
    if isinstance(errors, list):
        return [line for item in errors for line in _flatten(item, prefix)]
    return [f"{prefix}: {errors}" if prefix else str(errors)]


def _body_is_not_json() -> bool | None:
    """True when a body was sent with a non-JSON type, None when there is no body."""
    if not request.get_data(cache=True):
        return None
    return request.mimetype not in JSON_MIMETYPES


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(sqlalchemy_exc.OperationalError, _handle_database_down)
    app.register_error_handler(sqlalchemy_exc.InterfaceError, _handle_database_down)
    app.register_error_handler(Exception, _handle_unexpected)


def _handle_database_down(error: Exception):
    logger.error(
        "database unavailable", extra=log_fields(path=request.path, error=type(error).__name__)
    )
    payload = {
        "code": 503,
        "status": _status_name(503),
        "message": "the database is unavailable; nothing was stored, try again shortly",
    }
    return payload, 503


def _handle_api_error(error: ApiError):
    payload: dict[str, Any] = {
        "code": error.status_code,
        "status": _status_name(error.status_code),
        "message": error.message,
    }
    if error.errors:
        payload["errors"] = error.errors
    if error.status_code >= 500:
        logger.error("request failed", extra=log_fields(path=request.path, error=error.message))
    else:
        logger.warning(
            "request rejected",
            extra=log_fields(path=request.path, status=error.status_code, error=error.message),
        )
    return payload, error.status_code


def _handle_unexpected(error: Exception):
    if isinstance(error, HTTPException):
        raise error
    logger.exception("unhandled error", extra=log_fields(path=request.path))
    payload = {
        "code": 500,
        "status": _status_name(500),
        "message": "internal error; the server log has the details",
    }
    return payload, 500


def _status_name(code: int) -> str:
    return HTTPStatus(code).phrase
