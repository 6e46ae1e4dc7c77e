"""Run the simulator under uvicorn: ``python -m simulator --host --port --config FILE.json``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import uvicorn

from simulator.app import create_app
from simulator.sending import SimulatedStreamCut
from simulator.profiles import ConfigError

logger = logging.getLogger("simulator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Bounds how long shutdown waits for open streams, such as an injected 600 s hang.
GRACEFUL_SHUTDOWN_S = 2


class StreamCutFilter(logging.Filter):
    """Drop uvicorn's traceback for an injected stream cut, which is expected, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BaseExceptionGroup):
            return not all(isinstance(e, SimulatedStreamCut) for e in error.exceptions)
        return not isinstance(error, SimulatedStreamCut)


def install_stream_cut_filter() -> None:
    """Attach StreamCutFilter to uvicorn's error logger, once per process."""
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, StreamCutFilter) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(StreamCutFilter())


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file; raise ValueError naming the file when it is missing or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read simulator config file {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"simulator config file {path} is not valid JSON: {exc}") from exc


def uvicorn_config(app: Any, host: str, port: int, *, log_level: str = "info", access_log: bool = True) -> uvicorn.Config:
    """Return the uvicorn settings shared by serve() and the test helper."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Longer than the 5 s idle expiry of httpx2's pool (the SDK's client), so clients close idle
        # connections first. A server-side close can race a new request and look like a fault.
        timeout_keep_alive=30,
    )


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    config_path: str | Path | None = None,
    *,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve the simulator until interrupted; raise ValueError if the config is invalid."""
    config = load_config_file(config_path) if config_path is not None else None
    app = create_app(config)
    install_stream_cut_filter()
    models = sorted(app.state.simulator.config.models)
    logger.info("simulator.starting host=%s port=%s models=%s", host, port, ",".join(models))
    uvicorn.Server(uvicorn_config(app, host, port, log_level=log_level, access_log=access_log)).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Serve a simulated Mistral chat-completions API (MistralMeter simulator).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--config", help="JSON config file with seed, models and default (default: built-in config)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="log level"
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve; return 2 when the config is invalid."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        serve(args.host, args.port, args.config, log_level=args.log_level, access_log=not args.no_access_log)
    except ConfigError as exc:
        print(f"error: invalid simulator config: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
