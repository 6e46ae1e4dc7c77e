"""Real Celery worker, API and Redis processes for tests and benchmarks that kill or restart them.

Each process runs in its own session with its output in a log file under `log_dir`, so a test
can send SIGKILL to exactly one worker and show that worker's log when something fails. The job
helpers read runs straight from PostgreSQL, so they work while the API cannot.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import kombu.exceptions
import psycopg
import redis
from celery import Celery

from mistralmeter.embedded_services import redis_server_path
from mistralmeter.processes import (
    LOOPBACK_HOST,
    ManagedProcess,
    api_command,
    beat_command,
    child_environment,
    find_free_port,
    worker_command,
)

# Importing the SDK, Celery and SQLAlchemy takes several seconds on a busy 2-core machine.
STARTUP_TIMEOUT_S = 60.0
# A warm shutdown waits for running tasks. After this many seconds the worker gets SIGKILL.
STOP_GRACE_S = 10.0
LOG_TAIL_CHARS = 4000
QUEUE_NAME = "mistralmeter-processes"
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


class ProcessStartError(RuntimeError):
    """A worker or API process exited or did not respond in time; the message has its log tail."""


def process_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """Return the environment for a child: this process's, minus its settings, plus `variables`.

    Settings variables that tests set in this process (DATABASE_URL, REDIS_URL, MISTRAL_* and
    MISTRALMETER_*) are dropped, so a child reads only the ones in `variables`. Without
    MISTRAL_API_KEY every model call goes to the simulator.
    """
    environment = child_environment(variables)
    for name in list(environment):
        if name not in variables and _is_setting(name):
            del environment[name]
    return environment


def _is_setting(name: str) -> bool:
    return name in ("DATABASE_URL", "REDIS_URL") or name.startswith("MISTRAL")


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log file)"


@dataclass
class WorkerProcess:
    """One `celery worker --pool threads` process; `node` is its Celery node name."""

    node: str
    broker_url: str
    managed: ManagedProcess

    @property
    def pid(self) -> int | None:
        return self.managed.pid

    @property
    def log_path(self) -> Path:
        return self.managed.log_path

    def is_running(self) -> bool:
        return self.managed.is_running()

    def kill(self) -> None:
        """Send SIGKILL, as `kill -9` does: no task is finished, acknowledged or requeued."""
        self.managed.signal_group(signal.SIGKILL)
        self.managed.wait(10.0)

    def stop(self, grace_period_s: float = STOP_GRACE_S) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL after the grace period."""
        self.managed.stop(grace_period_s)

    def log(self) -> str:
        return log_tail(self.log_path)


def start_worker(
    environment: Mapping[str, str],
    *,
    name: str,
    log_dir: Path,
    concurrency: int,
    loglevel: str = "WARNING",
) -> WorkerProcess:
    """Start a worker process with `environment` (a complete environment) and return at once.

    Call wait_for_workers before relying on it: the process takes seconds to connect.
    """
    node = f"{name}@{LOOPBACK_HOST}"
    managed = ManagedProcess(
        name,
        worker_command(concurrency=concurrency, loglevel=loglevel, hostname=node),
        log_path=log_dir / f"{name}.log",
        pid_path=log_dir / f"{name}.pid",
        env=environment,
    )
    managed.start()
    return WorkerProcess(node=node, broker_url=environment["REDIS_URL"], managed=managed)


def wait_for_workers(
    workers: Iterable[WorkerProcess], timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Wait until every worker replies to a Celery ping, or raise ProcessStartError."""
    pending = {worker.node: worker for worker in workers}
    if not pending:
        return
    broker_url = next(iter(pending.values())).broker_url
    deadline = time.monotonic() + timeout_s
    with _control_app(broker_url) as app:
        while pending:
            for worker in pending.values():
                if not worker.is_running():
                    raise ProcessStartError(
                        f"worker {worker.node} exited while starting; log:\n{worker.log()}"
                    )
            try:
                replies = app.control.ping(destination=list(pending), timeout=0.5)
            except (redis.ConnectionError, kombu.exceptions.OperationalError):
                # After a Redis restart the first command fails on a stale pooled connection.
                replies = []
            for reply in replies:
                for node in reply:
                    pending.pop(node, None)
            if pending and time.monotonic() > deadline:
                details = "\n".join(f"{w.node}:\n{w.log()}" for w in pending.values())
                raise ProcessStartError(
                    f"workers did not reply to ping within {timeout_s:.0f} s:\n{details}"
                )


def start_workers(
    environment: Mapping[str, str],
    names: Iterable[str],
    *,
    log_dir: Path,
    concurrency: int,
    loglevel: str = "WARNING",
) -> list[WorkerProcess]:
    """Start several workers at once, so their imports overlap, and wait until all reply to ping."""
    workers = [
        start_worker(environment, name=name, log_dir=log_dir, concurrency=concurrency,
                     loglevel=loglevel)
        for name in names
    ]
    try:
        wait_for_workers(workers)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Iterable[WorkerProcess], grace_period_s: float = STOP_GRACE_S) -> None:
    for worker in workers:
        worker.stop(grace_period_s)


@contextmanager
def running_workers(
    environment: Mapping[str, str],
    names: Iterable[str],
    *,
    log_dir: Path,
    concurrency: int,
) -> Iterator[list[WorkerProcess]]:
    """Start workers for the block; stop them after it, also when the block raises."""
    workers = start_workers(environment, names, log_dir=log_dir, concurrency=concurrency)
    try:
        yield workers
    finally:
        stop_workers(workers)


def task_counts(workers: Iterable[WorkerProcess], task_name: str) -> dict[str, int]:
    """Return how many `task_name` tasks each worker has received since it started."""
    workers = list(workers)
    with _control_app(workers[0].broker_url) as app:
        inspector = app.control.inspect(destination=[w.node for w in workers], timeout=2.0)
        stats = inspector.stats() or {}
    return {node: reply.get("total", {}).get(task_name, 0) for node, reply in stats.items()}


@contextmanager
def _control_app(broker_url: str) -> Iterator[Celery]:
    # A bare Celery app is enough to send control commands; it must not import the tasks.
    app = Celery("mistralmeter-test-control", broker=broker_url)
    app.conf.broker_connection_retry_on_startup = True
    try:
        yield app
    finally:
        app.close()


@contextmanager
def running_beat(environment: Mapping[str, str], *, log_dir: Path) -> Iterator[ManagedProcess]:
    """Run Celery beat, which sends the periodic tasks, until the block ends."""
    managed = ManagedProcess(
        "beat",
        beat_command(loglevel="INFO", schedule_file=log_dir / "celerybeat-schedule"),
        log_path=log_dir / "beat.log",
        pid_path=log_dir / "beat.pid",
        env=environment,
    )
    managed.start()
    try:
        yield managed
    finally:
        managed.stop(STOP_GRACE_S)


@dataclass
class ApiProcess:
    """The Flask API under gunicorn, reachable at `url`."""

    url: str
    managed: ManagedProcess

    def stop(self) -> None:
        self.managed.stop(5.0)

    def log(self) -> str:
        return log_tail(self.managed.log_path)


def start_api(environment: Mapping[str, str], *, log_dir: Path, name: str = "api") -> ApiProcess:
    """Start gunicorn on a free loopback port and wait until it serves the OpenAPI document."""
    port = find_free_port()
    managed = ManagedProcess(
        name,
        # Without --no-control-socket, every gunicorn 27 of this user binds the same socket
        # file (~/.gunicorn/gunicorn.ctl), so parallel test sessions would collide.
        [*api_command(LOOPBACK_HOST, port, workers=1, threads=4), "--no-control-socket"],
        log_path=log_dir / f"{name}.log",
        pid_path=log_dir / f"{name}.pid",
        env=environment,
    )
    managed.start()
    api = ApiProcess(url=f"http://{LOOPBACK_HOST}:{port}", managed=managed)

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if not managed.is_running():
            raise ProcessStartError(f"API exited while starting; log:\n{api.log()}")
        try:
            if httpx.get(f"{api.url}/openapi.json", timeout=2.0).status_code == 200:
                return api
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            api.stop()
            raise ProcessStartError(
                f"API did not respond within {STARTUP_TIMEOUT_S:.0f} s; log:\n{api.log()}"
            )
        time.sleep(0.1)


@contextmanager
def running_api(
    environment: Mapping[str, str], *, log_dir: Path, name: str = "api"
) -> Iterator[ApiProcess]:
    api = start_api(environment, log_dir=log_dir, name=name)
    try:
        yield api
    finally:
        api.stop()


@dataclass
class ProcessStack:
    """Where child processes find PostgreSQL, Redis and the simulator, and where they log.

    `settings` are MISTRALMETER_* variables shared by every child; environment() adds more.
    """

    database_url: str
    redis_url: str
    simulator_url: str
    log_dir: Path
    settings: dict[str, str] = field(default_factory=dict)

    def environment(self, **overrides: str) -> dict[str, str]:
        """Return a complete child environment, with `overrides` as more variables."""
        variables = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "MISTRALMETER_SIMULATOR_URL": self.simulator_url,
            "MISTRALMETER_QUEUE": QUEUE_NAME,
            "MISTRALMETER_LOG_LEVEL": "WARNING",
            **self.settings,
            **overrides,
        }
        return process_environment(variables)

    def libpq_url(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


class RedisServer:
    """A redis-server on a fixed loopback port that can be stopped and started on its data.

    With `appendonly`, every write goes to an append-only file as well as to the snapshot, as
    a production broker should be configured: a queued task then survives even a crash, minus
    the last second of writes with appendfsync everysec.
    """

    def __init__(self, data_dir: Path, *, appendonly: bool = True) -> None:
        self.data_dir = data_dir
        self.port = find_free_port()
        self.appendonly = appendonly
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK_HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)

    def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_server_path()),
            "--port", str(self.port),
            "--bind", LOOPBACK_HOST,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", "",
        ]
        self.starts += 1
        self.process = ManagedProcess(
            "redis",
            argv,
            log_path=self.data_dir / "redis.log",
            pid_path=self.data_dir / "redis.pid",
            env=child_environment({}),
        )
        self.process.start()
        client = self.client()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if not self.process.is_running() or time.monotonic() > deadline:
                raise ProcessStartError(
                    f"redis-server on port {self.port} did not start; log:\n"
                    f"{log_tail(self.data_dir / 'redis.log')}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop with SIGTERM: Redis writes its data files before it exits."""
        if self.process is not None:
            self.process.stop(10.0)


@dataclass(frozen=True)
class RunRow:
    item_id: str
    repetition: int
    model: str
    status: str
    attempts: int
    error_reason: str | None
    error_message: str | None


def submit_batch(
    api_url: str, *, model: str, prompts: int, runs: int, **options: Any
) -> dict[str, Any]:
    """Submit `prompts` generated prompts to POST /evaluate/batch and return the 202 body."""
    body = {
        "model": model,
        "runs": runs,
        "prompts": [
            {"id": f"p{index:03d}", "prompt": f"Question {index}"} for index in range(prompts)
        ],
        **options,
    }
    response = httpx.post(f"{api_url}/evaluate/batch", json=body, timeout=30.0)
    if response.status_code != 202:
        raise AssertionError(f"job not accepted: {response.status_code} {response.text}")
    return response.json()


def read_job(stack: ProcessStack, job_id: str) -> tuple[str, list[RunRow]]:
    """Return the job's status and its runs, read from PostgreSQL."""
    with psycopg.connect(stack.libpq_url(), connect_timeout=2) as connection:
        status = connection.execute(
            "SELECT status FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()[0]
        rows = connection.execute(
            "SELECT item_id, repetition, model, status, attempts, error_reason, error_message"
            " FROM runs WHERE job_id = %s ORDER BY item_id, repetition",
            (job_id,),
        ).fetchall()
    return status, [RunRow(*row) for row in rows]


def count_runs(stack: ProcessStack, job_id: str) -> int | None:
    """Return the number of runs written, or None while PostgreSQL cannot be reached."""
    try:
        with psycopg.connect(stack.libpq_url(), connect_timeout=2) as connection:
            return connection.execute(
                "SELECT count(*) FROM runs WHERE job_id = %s", (job_id,)
            ).fetchone()[0]
    except psycopg.OperationalError:
        return None


def wait_for_runs(stack: ProcessStack, job_id: str, at_least: int, timeout_s: float = 60.0) -> int:
    """Wait until the job has at least `at_least` runs written, and return the count."""
    deadline = time.monotonic() + timeout_s
    while True:
        written = count_runs(stack, job_id) or 0
        if written >= at_least:
            return written
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job_id} wrote {written} runs, not {at_least}, within {timeout_s:.0f} s"
            )
        time.sleep(0.05)


def wait_for_job(
    stack: ProcessStack, job_id: str, timeout_s: float = 90.0
) -> tuple[str, list[RunRow]]:
    """Wait until the job is finished, tolerating a database that is down for a while."""
    deadline = time.monotonic() + timeout_s
    last: tuple[str, int] | None = None
    while time.monotonic() < deadline:
        try:
            status, rows = read_job(stack, job_id)
        except psycopg.OperationalError:
            time.sleep(0.2)
            continue
        if status in FINISHED_STATUSES:
            return status, rows
        last = (status, len(rows))
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout_s:.0f} s; last: {last}")


def simulator_call(simulator_url: str, method: str, path: str, body: Any = None) -> Any:
    """Call one of the simulator's admin endpoints and return its JSON body."""
    response = httpx.request(method, f"{simulator_url}{path}", json=body, timeout=10.0)
    response.raise_for_status()
    return response.json()


def rate_limits_variable(limits: Mapping[str, Mapping[str, int]]) -> str:
    """Encode limits per model as MISTRALMETER_RATE_LIMITS expects them."""
    return json.dumps(limits)
