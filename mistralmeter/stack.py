"""The embedded stack: PostgreSQL, Redis, migrations, simulator, Celery worker and API in one command.

``EmbeddedStack.start`` brings the parts up in dependency order and waits for each to be healthy.
``EmbeddedStack.stop`` stops everything it started, in reverse order. It also runs when start
fails and when the context manager exits. A state folder contains the data and the logs, so a
second start after a crash reuses the database. The state folder's lock (mistralmeter/state_folder.py)
keeps two launchers from sharing it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import redis
import sqlalchemy
from sqlalchemy.pool import NullPool

from mistralmeter.embedded_services import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServiceError,
    create_database,
    start_postgres,
    start_redis,
)
from mistralmeter.processes import (
    DEFAULT_GRACE_PERIOD_S,
    LOOPBACK_HOST,
    ManagedProcess,
    api_command,
    beat_command,
    child_environment,
    find_free_port,
    migrate_command,
    simulator_command,
    stop_leftover_process,
    stop_processes,
    worker_command,
)
from mistralmeter.settings import environment_variable, get_settings
from mistralmeter.state_folder import (
    DEFAULT_STATE_DIR,
    StateDirBusyError,
    StateLock,
    read_running_stack,
    remove_stack_record,
    write_stack_record,
)

logger = logging.getLogger(__name__)

# Parts that keep no state of their own, so the stack starts them again when they exit. A
# Celery worker can exit after a broker outage, and its unacknowledged tasks return to the
# queue after the visibility timeout.
RESTARTABLE_PARTS = ("worker", "beat")
# A part that exits more often than this within the window is failing, so the stack stops.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0


class StackStartError(RuntimeError):
    """A part of the stack failed to start; names the part and the log file to read."""

    def __init__(self, part: str, message: str, log_path: Path | None = None) -> None:
        self.part = part
        self.log_path = log_path
        detail = f"{part} {message}"
        if log_path is not None:
            detail += f"; see its log: {log_path}"
        super().__init__(detail)


class StackProcessExited(RuntimeError):
    """A child process of a running stack exited on its own."""

    def __init__(self, process: ManagedProcess, exit_code: int) -> None:
        self.process = process
        self.exit_code = exit_code
        super().__init__(
            f"{process.name} exited with code {exit_code}; see its log: {process.log_path}"
        )


class TerminationRequested(Exception):
    """Raised in the main thread when the process receives SIGTERM, so cleanup code runs."""


@dataclass(frozen=True)
class StackOptions:
    """Options of the embedded stack: the parts it starts and how long it waits for them.

    A port of None picks a free loopback port. Timeouts and the grace period are in seconds.
    """

    state_dir: Path = DEFAULT_STATE_DIR
    api_port: int | None = None
    api_workers: int = 2
    api_threads: int = 8
    worker_concurrency: int | None = None
    start_beat: bool = False
    simulator_config: Path | None = None
    start_timeout_s: float = 60.0
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S


@dataclass(frozen=True)
class ProcessRestart:
    """A worker or beat process that exited and was started again."""

    name: str
    exit_code: int
    log_path: Path


@dataclass(frozen=True)
class StackEndpoints:
    """Addresses of a started stack's parts, as passed to its child processes."""

    api_url: str
    database_url: str
    redis_url: str
    simulator_url: str | None
    state_dir: Path
    log_dir: Path
    started_postgres: bool
    started_redis: bool


@dataclass
class _Started:
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    # Child processes in start order; stopped in reverse order.
    processes: list[ManagedProcess] = field(default_factory=list)


class EmbeddedStack:
    """Start and stop the whole stack under one state folder.

    DATABASE_URL or REDIS_URL set in the environment replace the embedded PostgreSQL or Redis.
    The simulator starts when MISTRAL_API_KEY and MISTRAL_SERVER_URL are both unset.
    """

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.endpoints: StackEndpoints | None = None
        self._lock = StateLock(self.state_dir / "stack.lock")
        self._started = _Started()
        self._restarts: dict[str, list[float]] = {}

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> StackEndpoints:
        """Start every part and wait until the API reports itself healthy with a worker."""
        self._prepare_state_dir()
        try:
            database_url = self._start_database()
            redis_url = self._start_redis()
            environment = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
            self._run_migrations(environment)
            simulator_url = self._start_simulator(environment)
            if simulator_url is not None:
                environment["MISTRALMETER_SIMULATOR_URL"] = simulator_url
            self._start_worker(environment)
            if self.options.start_beat:
                self._start_beat(environment)
            api_url = self._start_api(environment)
        except BaseException:
            self.stop()
            raise

        self.endpoints = StackEndpoints(
            api_url=api_url,
            database_url=database_url,
            redis_url=redis_url,
            simulator_url=simulator_url,
            state_dir=self.state_dir,
            log_dir=self.log_dir,
            started_postgres=self._started.postgres is not None,
            started_redis=self._started.redis is not None,
        )
        self._write_record()
        return self.endpoints

    def stop(self) -> None:
        """Stop every process and service this stack started, then release the state folder."""
        with _signals_deferred():
            processes = list(reversed(self._started.processes))
            # The simulator goes last: a worker finishing its tasks during shutdown must not see
            # connection errors that would be stored as model failures.
            consumers = [process for process in processes if process.name != "simulator"]
            simulators = [process for process in processes if process.name == "simulator"]
            stop_processes(consumers, self.options.grace_period_s)
            stop_processes(simulators, self.options.grace_period_s)
            self._started.processes.clear()
            if self._started.redis is not None:
                self._started.redis.stop(self.options.grace_period_s)
                self._started.redis = None
            if self._started.postgres is not None:
                self._started.postgres.stop()
                self._started.postgres = None
            remove_stack_record(self.state_dir)
            self._lock.release()

    def check_processes(self) -> list[ProcessRestart]:
        """Start an exited worker or beat again, and return the restarts made.

        Raise StackProcessExited when any other part exits, or when a worker or beat has
        already been restarted MAX_RESTARTS times within RESTART_WINDOW_S.
        """
        restarts = []
        for process in self._started.processes:
            exit_code = process.exit_code()
            if exit_code is None:
                continue
            if not self._restart_allowed(process.name):
                raise StackProcessExited(process, exit_code)
            if process.name == "worker":
                self._restore_unacked_tasks()
            process.start()
            restarts.append(ProcessRestart(process.name, exit_code, process.log_path))
        redis_server = self._started.redis
        if redis_server is not None and not redis_server.is_running():
            raise StackProcessExited(redis_server.process, redis_server.process.exit_code() or 0)
        if self._started.postgres is not None and not self._started.postgres.is_running():
            raise StackStartError("PostgreSQL", "stopped unexpectedly", self._started.postgres.log_path)
        return restarts

    def _restore_unacked_tasks(self) -> None:
        """Give the dead worker's tasks back to the queue now, not after the visibility timeout.

        The stack runs one worker, so on its own Redis no live worker has taken any of these
        tasks. On a Redis given by REDIS_URL other workers may have, so kombu's own restore is
        left to do it.
        """
        from workers.broker_queue import restore_unacked

        if self.endpoints is None or not self.endpoints.started_redis:
            return
        try:
            client = redis.Redis.from_url(self.endpoints.redis_url, socket_timeout=30)
            restored = restore_unacked(client, get_settings().queue_name)
        except redis.RedisError as error:
            logger.warning("tasks of the exited worker not restored: %s", error)
            return
        logger.info("tasks of the exited worker restored to the queue: %d", restored)

    def _restart_allowed(self, name: str) -> bool:
        if name not in RESTARTABLE_PARTS:
            return False
        now = time.monotonic()
        recent = [at for at in self._restarts.get(name, []) if now - at < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS:
            return False
        self._restarts[name] = [*recent, now]
        return True

    def _prepare_state_dir(self) -> None:
        for folder in (self.state_dir, self.log_dir, self.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if not self._lock.try_acquire():
            record = read_running_stack(self.state_dir) or {}
            holder = f" (pid {record['pid']}, API at {record.get('api_url')})" if "pid" in record else ""
            raise StateDirBusyError(
                f"the state folder {self.state_dir} is used by another running mistralmeter "
                f"launcher{holder}; stop it, use its API with --api-url, or pass another --state-dir"
            )
        # Holding the lock proves the previous launcher is gone, so its children are leftovers.
        for pid_path in sorted(self.run_dir.glob("*.pid")):
            stop_leftover_process(pid_path, self.options.grace_period_s)

    def _start_database(self) -> str:
        if environment_variable("DATABASE_URL"):
            database_url = get_settings().database_url
            self._check_external_database(database_url)
            logger.info("service external: database from DATABASE_URL")
            return database_url

        try:
            self._started.postgres = start_postgres(self.state_dir)
            create_database(self._started.postgres)
        except EmbeddedServiceError as exc:
            raise StackStartError("PostgreSQL", str(exc).removeprefix("PostgreSQL "), exc.log_path) from exc
        return self._started.postgres.url()

    def _check_external_database(self, database_url: str) -> None:
        engine = sqlalchemy.create_engine(
            database_url, poolclass=NullPool, connect_args={"connect_timeout": 5}
        )
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StackStartError(
                "PostgreSQL at DATABASE_URL", f"is not reachable: {getattr(exc, 'orig', None) or exc}"
            ) from exc
        finally:
            engine.dispose()

    def _start_redis(self) -> str:
        if environment_variable("REDIS_URL"):
            redis_url = get_settings().redis_url
            client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
            try:
                client.ping()
            except redis.exceptions.RedisError as exc:
                raise StackStartError("Redis at REDIS_URL", f"did not respond to PING: {exc}") from exc
            finally:
                client.close()
            logger.info("service external: redis from REDIS_URL")
            return redis_url

        try:
            self._started.redis = start_redis(self.state_dir, timeout_s=self.options.start_timeout_s)
        except EmbeddedServiceError as exc:
            raise StackStartError("Redis", str(exc).removeprefix("Redis "), exc.log_path) from exc
        return self._started.redis.url

    def _run_migrations(self, environment: dict[str, str]) -> None:
        process = self._spawn("migrate", migrate_command(), environment, track=False)
        exit_code = process.wait(self.options.start_timeout_s)
        if exit_code is None:
            stop_processes([process], self.options.grace_period_s)
            raise StackStartError(
                "migrations", f"did not finish within {self.options.start_timeout_s:.0f} s", process.log_path
            )
        process.pid_path.unlink(missing_ok=True)
        if exit_code != 0:
            raise StackStartError("migrations", f"failed with exit code {exit_code}", process.log_path)

    def _start_simulator(self, environment: dict[str, str]) -> str | None:
        settings = get_settings()
        if not settings.uses_simulator or settings.mistral_server_url:
            return None
        port = find_free_port()
        url = f"http://{LOOPBACK_HOST}:{port}"
        process = self._spawn(
            "simulator",
            simulator_command(LOOPBACK_HOST, port, config=self.options.simulator_config),
            environment,
        )
        self._wait_until_healthy(process, "simulator", lambda: _probe_simulator(url))
        return url

    def _start_worker(self, environment: dict[str, str]) -> None:
        settings = get_settings()
        concurrency = self.options.worker_concurrency or settings.worker_concurrency
        command = worker_command(
            concurrency=concurrency, loglevel=settings.log_level, hostname=f"embedded-{os.getpid()}@%h"
        )
        self._spawn("worker", command, environment)

    def _start_beat(self, environment: dict[str, str]) -> None:
        command = beat_command(
            loglevel=get_settings().log_level, schedule_file=self.state_dir / "celerybeat-schedule"
        )
        self._spawn("beat", command, environment)

    def _start_api(self, environment: dict[str, str]) -> str:
        port = self.options.api_port or find_free_port()
        url = f"http://{LOOPBACK_HOST}:{port}"
        command = api_command(
            LOOPBACK_HOST, port, workers=self.options.api_workers, threads=self.options.api_threads
        )
        process = self._spawn("api", command, environment)
        worker = next(p for p in self._started.processes if p.name == "worker")
        observation = _HealthObservation()
        try:
            self._wait_until_healthy(process, "API", lambda: _probe_api(url, observation))
        except StackStartError:
            if observation.answered and observation.workers == 0:
                raise StackStartError(
                    "Celery worker",
                    f"did not report to the API within {self.options.start_timeout_s:.0f} s",
                    worker.log_path,
                ) from None
            if observation.answered:
                raise StackStartError(
                    "API",
                    f"reported unhealthy until the timeout: {observation.last_body}",
                    process.log_path,
                ) from None
            raise
        return url

    def _spawn(
        self, name: str, argv: list[str], environment: dict[str, str], *, track: bool = True
    ) -> ManagedProcess:
        process = ManagedProcess(
            name,
            argv,
            log_path=self.log_dir / f"{name}.log",
            pid_path=self.run_dir / f"{name}.pid",
            env=child_environment(environment),
        )
        process.start()
        if track:
            self._started.processes.append(process)
        return process

    def _wait_until_healthy(
        self, process: ManagedProcess, part: str, probe: Callable[[], bool]
    ) -> None:
        started = time.monotonic()
        deadline = started + self.options.start_timeout_s
        while True:
            for child in self._started.processes:
                exit_code = child.exit_code()
                if exit_code is not None:
                    raise StackStartError(
                        child.name, f"exited with code {exit_code} while starting", child.log_path
                    )
            if probe():
                logger.info("part ready: %s elapsed_s=%.2f", part, time.monotonic() - started)
                return
            if time.monotonic() >= deadline:
                raise StackStartError(
                    part, f"was not healthy within {self.options.start_timeout_s:.0f} s", process.log_path
                )
            time.sleep(0.2)

    def _write_record(self) -> None:
        assert self.endpoints is not None
        # Only loopback URLs of parts this launcher started: an external URL can hold a password.
        record = {
            "pid": os.getpid(),
            "api_url": self.endpoints.api_url,
            "simulator_url": self.endpoints.simulator_url,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_stack_record(self.state_dir, record)


@dataclass
class _HealthObservation:
    answered: bool = False
    workers: int | None = None
    last_body: str = ""


def _probe_simulator(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _probe_api(url: str, observation: _HealthObservation) -> bool:
    try:
        response = httpx.get(f"{url}/health", timeout=5.0)
    except httpx.HTTPError:
        return False
    observation.answered = True
    observation.last_body = response.text[:300]
    try:
        body = response.json()
    except ValueError:
        return False
    workers = body.get("workers") if isinstance(body, dict) else None
    observation.workers = workers if isinstance(workers, int) else None
    return response.status_code == 200 and isinstance(workers, int) and workers >= 1


def install_termination_handler() -> None:
    """Make SIGTERM raise TerminationRequested in the main thread, so `finally` blocks run."""

    def _raise(signum: int, frame: object) -> None:
        raise TerminationRequested()

    signal.signal(signal.SIGTERM, _raise)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    # A second Ctrl-C or SIGTERM during shutdown must not abandon the processes still to stop.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda number, frame: received.append(number))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            logger.info("signal received during shutdown, ignored: %s", received)
