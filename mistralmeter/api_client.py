"""HTTP client for the MistralMeter API, used by the command line.

Every failure surfaces as ApiError with the API's own message when it sent one, so the command
line can print it and exit with a clear status.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EXPORT_FORMATS = ("json", "jsonl", "csv")


class ApiError(Exception):
    """The API rejected a request, returned something unexpected, or was unreachable.

    status_code is None when no HTTP response arrived. errors holds the per-field validation
    errors of the API's error body, keyed by field name.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.errors = errors or {}

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"HTTP {self.status_code}: {self.message}"


# Reading is idempotent, so a dropped connection while polling is retried a few times.
_retry_transport_errors = retry(
    retry=retry_if_exception_type(httpx.TransportError),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.25, max=2.0),
    reraise=True,
)


class ApiClient:
    """Synchronous client for one API base URL, such as http://127.0.0.1:8000."""

    def __init__(
        self, base_url: str, *, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def health(self) -> dict[str, Any]:
        """Return the body of GET /health; a 503 body is returned too, since it names the failing part."""
        response = self._send("GET", "/health")
        if response.status_code in (200, 503):
            return _json_object(response)
        raise _error_from_response(response)

    def submit_dataset_evaluation(
        self,
        dataset: str,
        *,
        model: str,
        judge_model: str,
        runs: int,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Submit POST /datasets/{dataset}/evaluate and return the 202 body (job_id, status, location)."""
        body = {"model": model, "judge_model": judge_model, "runs": runs, "params": params or {}}
        response = self._send("POST", f"/datasets/{quote(dataset, safe='')}/evaluate", json=body)
        if response.status_code != 202:
            raise _error_from_response(response)
        job = _json_object(response)
        if not isinstance(job.get("job_id"), str):
            raise ApiError("the API accepted the job but returned no job_id", status_code=202)
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        """Return GET /jobs/{job_id}: status, progress and, once finished, result or error."""
        response = self._get(f"/jobs/{quote(job_id, safe='')}")
        if response.status_code != 200:
            raise _error_from_response(response)
        return _json_object(response)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Ask the API to cancel a job with POST /jobs/{job_id}/cancel; return the response body."""
        response = self._send("POST", f"/jobs/{quote(job_id, safe='')}/cancel")
        if response.status_code not in (200, 202):
            raise _error_from_response(response)
        return _json_object(response)

    def export_results(self, job_id: str, export_format: str) -> bytes:
        """Return the job's results exported as json, jsonl or csv."""
        if export_format not in EXPORT_FORMATS:
            raise ValueError(f"export format {export_format!r} is invalid; use one of {EXPORT_FORMATS}")
        response = self._get(f"/jobs/{quote(job_id, safe='')}/results", params={"format": export_format})
        if response.status_code != 200:
            raise _error_from_response(response)
        return response.content

    @_retry_transport_errors
    def _get_with_retry(self, path: str, params: dict[str, str] | None) -> httpx.Response:
        return self._client.get(path, params=params)

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self._get_with_retry(path, params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return ApiError(f"the API at {self.base_url} timed out: {exc.__class__.__name__}")
        return ApiError(f"cannot reach the API at {self.base_url}: {exc}")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ApiError(
            f"the API returned a body that is not JSON: {response.text[:200]!r}",
            status_code=response.status_code,
        ) from None
    if not isinstance(body, dict):
        raise ApiError("the API returned JSON that is not an object", status_code=response.status_code)
    return body


def _error_from_response(response: httpx.Response) -> ApiError:
    """Build an ApiError from the API's error envelope {code, status, message, errors}."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        errors = body.get("errors")
        return ApiError(
            str(body["message"]),
            status_code=response.status_code,
            errors=errors if isinstance(errors, dict) else None,
        )
    text = response.text.strip()[:200] or response.reason_phrase
    return ApiError(f"unexpected response: {text}", status_code=response.status_code)


def format_field_errors(errors: dict[str, Any]) -> list[str]:
    """Flatten nested validation errors into lines such as 'json.runs: Must be greater than 0.'."""
    lines: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, nested in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), nested)
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            lines.append(f"{prefix}: {' '.join(value)}")
        else:
            lines.append(f"{prefix}: {value}")

    walk("", errors)
    return lines
