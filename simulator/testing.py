"""Run the simulator inside a test process: ``with run_simulator(config) as base_url: ...``."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import uvicorn

from simulator.app import create_app
from simulator.server import install_stream_cut_filter, uvicorn_config

STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@contextmanager
def run_simulator(config: dict[str, Any] | None = None) -> Iterator[str]:
    """Serve the simulator on a free loopback port in a background thread; yield its base URL.

    The base URL has no path (``http://127.0.0.1:PORT``), as the SDK's server_url expects.
    Raises ConfigError for an invalid config and RuntimeError if the server does not start.
    The server is stopped and its thread joined when the block exits.
    """
    app = create_app(config)
    install_stream_cut_filter()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name=f"simulator-{port}", daemon=True)
    thread.start()
    try:
        _wait_until_started(server, thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        listener.close()


def _wait_until_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("simulator server thread exited during startup")
        if time.monotonic() > deadline:
            raise RuntimeError(f"simulator did not start within {STARTUP_TIMEOUT_S} s")
        time.sleep(0.01)
