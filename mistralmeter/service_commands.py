"""Commands that run one part of the distributed deployment: api, worker, beat, flower, simulator,
migrate, and the health checks that compose.yaml runs inside the containers.

The process commands replace the current process (exec), so signals from the container runtime
reach gunicorn or Celery directly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

import httpx
import redis
import sqlalchemy
from sqlalchemy.pool import NullPool

from mistralmeter.processes import (
    CELERY_APP,
    api_command,
    beat_command,
    flower_command,
    simulator_command,
    worker_command,
)
from mistralmeter.settings import get_settings


def exec_command(argv: list[str]) -> NoReturn:
    """Replace this process with argv; argv[0] must be an absolute path (sys.executable)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def handle_api(args: argparse.Namespace) -> int:
    exec_command(api_command(args.host, args.port, workers=args.workers, threads=args.threads))


def handle_worker(args: argparse.Namespace) -> int:
    exec_command(
        worker_command(
            concurrency=args.concurrency or get_settings().worker_concurrency,
            loglevel=args.loglevel or get_settings().log_level,
            hostname=args.hostname,
            queues=args.queues,
        )
    )


def handle_beat(args: argparse.Namespace) -> int:
    exec_command(
        beat_command(loglevel=args.loglevel or get_settings().log_level, schedule_file=args.schedule_file)
    )


def handle_flower(args: argparse.Namespace) -> int:
    exec_command(flower_command(host=args.host, port=args.port))


def handle_simulator(args: argparse.Namespace) -> int:
    exec_command(simulator_command(args.host, args.port, config=args.config))


def handle_migrate(args: argparse.Namespace) -> int:
    """Apply every pending migration to DATABASE_URL (alembic upgrade head)."""
    from models.migrate import upgrade_database

    upgrade_database(get_settings().database_url)
    print("Database migrations applied.")
    return 0


def handle_healthcheck(args: argparse.Namespace) -> int:
    """Run one health check; exit 0 when healthy, 1 with the reason on stderr otherwise."""
    checks = {"http": _check_http, "worker": _check_worker, "services": _check_services}
    problem = checks[args.target](args)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


def _check_http(args: argparse.Namespace) -> str | None:
    if not args.url:
        return "the http check needs a URL, e.g. healthcheck http http://127.0.0.1:8000/health"
    try:
        response = httpx.get(args.url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        return f"GET {args.url} failed: {exc}"
    if not response.is_success:
        return f"GET {args.url} returned HTTP {response.status_code}: {response.text[:300]}"
    return None


def _check_worker(args: argparse.Namespace) -> str | None:
    # The default Celery node name is celery@<hostname>, and a container's hostname is its id.
    node = args.url or f"celery@{socket.gethostname()}"
    module_name, _, attribute = CELERY_APP.partition(":")
    celery_app = getattr(importlib.import_module(module_name), attribute)
    replies = celery_app.control.ping(destination=[node], timeout=args.timeout)
    if not any(node in reply for reply in replies):
        return f"Celery node {node} did not respond to a ping within {args.timeout:.0f} s"
    return None


def _check_services(args: argparse.Namespace) -> str | None:
    settings = get_settings()
    engine = sqlalchemy.create_engine(
        settings.database_url, poolclass=NullPool, connect_args={"connect_timeout": int(args.timeout)}
    )
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return f"the database at DATABASE_URL is not reachable: {getattr(exc, 'orig', None) or exc}"
    finally:
        engine.dispose()

    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=args.timeout, socket_timeout=args.timeout
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return f"Redis at REDIS_URL did not answer PING: {exc}"
    finally:
        client.close()
    return None


LOG_LEVEL_HELP = "log level (default: MISTRALMETER_LOG_LEVEL, else INFO)"
REPLACES_PROCESS = "(replaces this process)"


def add_api_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help=f"serve the HTTP API with gunicorn {REPLACES_PROCESS}")
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; use 0.0.0.0 in a container)",
    )
    _add_port_argument(parser, 8000)
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="gunicorn worker processes (default: 2)"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=8, help="threads per gunicorn worker (default: 8)"
    )
    parser.set_defaults(handler=handle_api)


def add_worker_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help=f"run a Celery worker {REPLACES_PROCESS}")
    parser.add_argument(
        "--concurrency", type=positive_int, default=None,
        help="worker threads, i.e. tasks in flight (default: MISTRALMETER_WORKER_CONCURRENCY, else 50)",
    )
    parser.add_argument("--loglevel", default=None, help=LOG_LEVEL_HELP)
    parser.add_argument(
        "--hostname", default=None, help="Celery node name (default: celery@<host name>)"
    )
    parser.add_argument(
        "--queues", default=None,
        help="comma-separated queues to consume (default: MISTRALMETER_QUEUE, else mistralmeter)",
    )
    parser.set_defaults(handler=handle_worker)


def add_beat_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "beat", help=f"run Celery beat, which starts the scheduled benchmarks {REPLACES_PROCESS}"
    )
    parser.add_argument("--loglevel", default=None, help=LOG_LEVEL_HELP)
    parser.add_argument(
        "--schedule-file", type=Path, default=None,
        help="file where beat stores last-run times (default: ./celerybeat-schedule)",
    )
    parser.set_defaults(handler=handle_beat)


def add_flower_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flower", help=f"run Flower, the Celery monitoring UI, against REDIS_URL {REPLACES_PROCESS}"
    )
    _add_host_argument(parser)
    _add_port_argument(parser, 5555)
    parser.set_defaults(handler=handle_flower)


def add_simulator_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulator", help=f"run the Mistral-compatible simulator {REPLACES_PROCESS}"
    )
    _add_host_argument(parser)
    _add_port_argument(parser, 8765)
    parser.add_argument(
        "--config", type=Path, default=None,
        help="JSON file with per-model latency, output length and error settings",
    )
    parser.set_defaults(handler=handle_simulator)


def add_migrate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "migrate", help="apply pending database migrations to DATABASE_URL and exit"
    )
    parser.set_defaults(handler=handle_migrate)


def add_healthcheck_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "healthcheck",
        help="check one part; exit 0 when healthy, 1 otherwise (compose runs it in the containers)",
    )
    parser.add_argument(
        "target", choices=("http", "worker", "services"),
        help="http: GET URL returns 2xx; worker: the Celery node responds to a ping; "
        "services: DATABASE_URL and REDIS_URL respond",
    )
    parser.add_argument(
        "url", nargs="?", default=None,
        help="for http, the URL to GET; for worker, the node name (default: celery@<host name>)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for a response (default: 5)"
    )
    parser.set_defaults(handler=handle_healthcheck)


def _add_host_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )


def _add_port_argument(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument(
        "--port", type=int, default=default, help=f"TCP port to listen on (default: {default})"
    )


SERVICE_SUBCOMMANDS = {
    "api": add_api_parser,
    "worker": add_worker_parser,
    "beat": add_beat_parser,
    "flower": add_flower_parser,
    "simulator": add_simulator_parser,
    "migrate": add_migrate_parser,
    "healthcheck": add_healthcheck_parser,
}


def positive_int(raw: str) -> int:
    """Parse an argparse value that must be an integer of at least 1."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is invalid: expected an integer of at least 1")
    return value
