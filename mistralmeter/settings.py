"""Settings read from environment variables.

This is the only module that reads ``os.environ``. Every default works on the embedded stack,
where ``mistralmeter up`` exports the URLs of the services it started.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, TypeVar

T = TypeVar("T")

DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8765"


class SettingsError(ValueError):
    """An environment variable holds a value of the wrong type or range."""


def _read(name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"environment variable {name}={raw!r} is invalid: {exc}") from exc


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of 1, 0, true, false, yes, no, on, off")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("expected a finite number of seconds greater than 0")
    return value


def _parse_json_object(raw: str) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/mistralmeter"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The Celery queue name; separate stacks may share one Redis by using different queues.
    queue_name: str = "mistralmeter"

    # The key is read here and handed to the SDK client only; it is never stored or logged.
    mistral_api_key: str | None = field(default=None, repr=False)
    mistral_server_url: str | None = None
    simulator_url: str = DEFAULT_SIMULATOR_URL

    request_timeout_s: float = 120.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    # Rate limits per "provider:model" key; a job may override them. See workers/ratelimit.py.
    rate_limits: dict[str, Any] = field(default_factory=dict)
    default_max_in_flight: int = 8
    default_requests_per_minute: int = 600
    default_tokens_per_minute: int = 2_000_000

    # USD per million tokens, merged over the dated defaults in mistralmeter/pricing.py.
    price_overrides: dict[str, Any] = field(default_factory=dict)

    # Threads per worker process. More streams per process keep a high in-flight limit busy,
    # but past about 10 they queue for the interpreter and inflate the measured times.
    # docs/benchmarks.md has the measurements.
    worker_concurrency: int = 8
    max_prompt_chars: int = 100_000
    max_upload_bytes: int = 10 * 1024 * 1024
    max_runs_per_prompt: int = 100
    max_runs_per_job: int = 20_000
    task_soft_time_limit_s: int = 900
    # Seconds before the broker hands an unacknowledged task to another worker. None means
    # task_soft_time_limit_s + 300; see workers/celery_app.py for the trade-off.
    visibility_timeout_s: int | None = None
    # Beat checks every recovery_interval_s for unfinished jobs that wrote no run for
    # recovery_stall_s and have no task left in the broker, and sends their work again.
    recovery_interval_s: float = 60.0
    recovery_stall_s: float = 120.0

    log_level: str = "INFO"
    log_json: bool = False

    # Where the embedded stack keeps PostgreSQL, Redis, logs and its lock; None means ./.state.
    state_dir: str | None = None

    @property
    def uses_simulator(self) -> bool:
        """True when model calls go to the bundled simulator instead of the Mistral API."""
        return not self.mistral_api_key

    @property
    def model_server_url(self) -> str | None:
        """The chat-completions base URL the SDK talks to; None means the SDK's default."""
        if self.uses_simulator:
            return self.mistral_server_url or self.simulator_url
        return self.mistral_server_url


def load_settings() -> Settings:
    """Build settings from the environment, raising SettingsError on a malformed value."""
    defaults = Settings()
    return Settings(
        database_url=_read("DATABASE_URL", defaults.database_url, _normalise_database_url),
        redis_url=_read("REDIS_URL", defaults.redis_url, str),
        queue_name=_read("MISTRALMETER_QUEUE", defaults.queue_name, str),
        mistral_api_key=_read("MISTRAL_API_KEY", None, str),
        mistral_server_url=_read("MISTRAL_SERVER_URL", None, str),
        simulator_url=_read("MISTRALMETER_SIMULATOR_URL", defaults.simulator_url, str),
        request_timeout_s=_read("MISTRALMETER_REQUEST_TIMEOUT_S", defaults.request_timeout_s, float),
        max_retries=_read("MISTRALMETER_MAX_RETRIES", defaults.max_retries, int),
        backoff_base_s=_read("MISTRALMETER_BACKOFF_BASE_S", defaults.backoff_base_s, float),
        backoff_max_s=_read("MISTRALMETER_BACKOFF_MAX_S", defaults.backoff_max_s, float),
        rate_limits=_read("MISTRALMETER_RATE_LIMITS", {}, _parse_json_object),
        default_max_in_flight=_read(
            "MISTRALMETER_MAX_IN_FLIGHT", defaults.default_max_in_flight, int
        ),
        default_requests_per_minute=_read(
            "MISTRALMETER_REQUESTS_PER_MINUTE", defaults.default_requests_per_minute, int
        ),
        default_tokens_per_minute=_read(
            "MISTRALMETER_TOKENS_PER_MINUTE", defaults.default_tokens_per_minute, int
        ),
        price_overrides=_read("MISTRALMETER_PRICES", {}, _parse_json_object),
        worker_concurrency=_read(
            "MISTRALMETER_WORKER_CONCURRENCY", defaults.worker_concurrency, int
        ),
        max_prompt_chars=_read("MISTRALMETER_MAX_PROMPT_CHARS", defaults.max_prompt_chars, int),
        max_upload_bytes=_read("MISTRALMETER_MAX_UPLOAD_BYTES", defaults.max_upload_bytes, int),
        max_runs_per_prompt=_read(
            "MISTRALMETER_MAX_RUNS_PER_PROMPT", defaults.max_runs_per_prompt, int
        ),
        max_runs_per_job=_read("MISTRALMETER_MAX_RUNS_PER_JOB", defaults.max_runs_per_job, int),
        task_soft_time_limit_s=_read(
            "MISTRALMETER_TASK_SOFT_TIME_LIMIT_S", defaults.task_soft_time_limit_s, int
        ),
        visibility_timeout_s=_read("MISTRALMETER_VISIBILITY_TIMEOUT_S", None, int),
        recovery_interval_s=_read(
            "MISTRALMETER_RECOVERY_INTERVAL_S", defaults.recovery_interval_s, _positive_float
        ),
        recovery_stall_s=_read(
            "MISTRALMETER_RECOVERY_STALL_S", defaults.recovery_stall_s, _positive_float
        ),
        log_level=_read("MISTRALMETER_LOG_LEVEL", defaults.log_level, str),
        log_json=_read("MISTRALMETER_LOG_JSON", defaults.log_json, _parse_bool),
        state_dir=_read("MISTRALMETER_STATE_DIR", None, str),
    )


def _normalise_database_url(raw: str) -> str:
    # Users paste libpq-style URLs; SQLAlchemy needs the driver named to pick psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix):]
    return raw


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return load_settings()


def environment_variable(name: str) -> str | None:
    """Read one variable for code that passes the environment on, such as the stack launcher."""
    return os.environ.get(name)


def environment_copy() -> dict[str, str]:
    """Return a copy of the whole environment, for the launcher to hand to child processes."""
    return dict(os.environ)
