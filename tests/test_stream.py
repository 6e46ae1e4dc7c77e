"""POST /stream over a real HTTP server: tokens as Server-Sent Events, then metrics or an error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest
from werkzeug.serving import make_server

from api.model_catalog import clear_cache
from mistralmeter.processes import api_command
from tests.conftest import TEST_SIMULATOR_CONFIG, simulator_config
from workers.calls import redis_client
from workers.provider import PROVIDER, get_client, stream_chat
from workers.ratelimit import limiter_for

pytestmark = pytest.mark.services

FAST = "stream-fast"
SLOW = "stream-slow"
FAILING = "stream-500"
CUT = "stream-cut"

STREAM_SIMULATOR_CONFIG: dict[str, Any] = {
    "seed": 3,
    "models": {
        **TEST_SIMULATOR_CONFIG["models"],
        FAST: {"ttft_ms": 120, "itl_ms": 3, "output_tokens": 25},
        SLOW: {"ttft_ms": 20, "itl_ms": 80, "output_tokens": 25},
        FAILING: {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 5, "faults": {"rate_500": 1.0}},
        CUT: {"ttft_ms": 5, "itl_ms": 2, "output_tokens": 20, "faults": {"rate_cut": 1.0}},
    },
}
SERVER_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


@pytest.fixture(scope="module")
def stream_simulator(simulator_url) -> Iterator[str]:
    with simulator_config(simulator_url, STREAM_SIMULATOR_CONFIG):
        clear_cache()
        yield simulator_url
    clear_cache()


@pytest.fixture(scope="module")
def server_url(app, stream_simulator) -> Iterator[str]:
    """The API on werkzeug's threaded server in a background thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def read_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream body into events as they arrive."""
    name, data = None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "" and name is not None:
            yield Event(name, json.loads("\n".join(data)))
            name, data = None, []


def open_stream(base_url: str, body: dict[str, Any]) -> Any:
    return httpx.stream("POST", f"{base_url}/stream", json=body, timeout=30)


def stream(base_url: str, body: dict[str, Any]) -> tuple[httpx.Response, list[Event]]:
    with open_stream(base_url, body) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, list(read_events(response))


def request_body(model: str, **params: Any) -> dict[str, Any]:
    return {"prompt": {"prompt": "Describe latency in one sentence."}, "model": model,
            "params": params}


def in_flight(settings, model: str) -> int:
    limiter = limiter_for(redis_client(settings.redis_url), PROVIDER, model, settings)
    return limiter.current_in_flight()


def test_stream_tokens_concatenate_to_answer(server_url, settings):
    """The token events, joined, are the text the same seeded request gets without /stream."""
    response, events = stream(server_url, request_body(FAST, random_seed=11))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    tokens = [event for event in events if event.name == "token"]
    assert [event.name for event in events] == ["token"] * len(tokens) + ["metrics"]
    assert [event.data["index"] for event in tokens] == list(range(25))

    expected = stream_chat(
        get_client(settings),
        model=FAST,
        messages=[{"role": "user", "content": "Describe latency in one sentence."}],
        params={"random_seed": 11},
        timeout_s=10,
    )
    assert "".join(event.data["text"] for event in tokens) == expected.text
    assert events[-1].data["tokens"]["output_tokens"] == 25


def test_stream_metrics_follow_injected_timing(server_url):
    _, events = stream(server_url, request_body(FAST))
    metrics = events[-1].data
    latency = metrics["latency"]

    assert events[-1].name == "metrics"
    assert metrics["simulated"] is True
    assert metrics["injected"]["ttft_ms"] == 120.0
    assert metrics["injected"]["output_tokens"] == 25.0
    assert metrics["tokens"]["estimated"] is False
    assert metrics["tokens"]["total_tokens"] == metrics["tokens"]["input_tokens"] + 25
    assert metrics["waiting"]["attempts"] == 1
    # Measured times include the injected delays plus loopback and Python overhead.
    assert latency["time_to_first_token_ms"] >= 120.0
    assert latency["total_ms"] >= 120.0 + 24 * 3.0
    assert latency["total_ms"] >= latency["time_to_first_token_ms"]
    assert latency["tokens_per_second"] == pytest.approx(25 / (latency["total_ms"] / 1000))
    assert latency["decode_tokens_per_second"] == pytest.approx(
        24 / ((latency["total_ms"] - latency["time_to_first_token_ms"]) / 1000)
    )
    assert 0 < latency["inter_token_latency_ms"] < 3.0 + 20.0


def test_stream_error_event_after_retries(server_url, settings):
    """A 500 before the first token is retried; when every attempt fails, an error event ends it."""
    response, events = stream(server_url, request_body(FAILING))

    assert response.status_code == 200
    assert [event.name for event in events] == ["error"]
    error = events[0].data
    assert error["reason"] == "http_500"
    assert error["attempts"] == settings.max_retries + 1
    assert error["tokens_sent"] == 0
    assert "500" in error["message"]
    assert in_flight(settings, FAILING) == 0


def test_stream_cut_after_first_token_is_not_retried(server_url, settings):
    response, events = stream(server_url, request_body(CUT))

    assert response.status_code == 200
    names = [event.name for event in events]
    assert names == ["token"] * 10 + ["error"]
    error = events[-1].data
    assert error["reason"] == "stream_cut"
    assert error["attempts"] == 1
    assert error["tokens_sent"] == 10
    assert in_flight(settings, CUT) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": {"prompt": "hi"}, "model": "no-such-model"}, "model"),
        ({"model": FAST}, "prompt"),
        ({"prompt": {"prompt": ""}, "model": FAST}, "prompt"),
        ({"prompt": {"prompt": "hi"}, "model": FAST, "judge_model": "sim-judge"}, "judge_model"),
        ({"prompt": {"prompt": "hi"}, "model": FAST, "params": {"temperature": 5}}, "temperature"),
    ],
)
def test_stream_rejects_bad_input_before_streaming(server_url, body, field):
    response = httpx.post(f"{server_url}/stream", json=body, timeout=10)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["code"] == 422
    assert field in payload["message"]


def test_stream_holds_one_rate_limit_slot(server_url, settings):
    """The stream goes through the shared limiter: one slot while open, none after."""
    seen_in_flight = []
    with open_stream(server_url, request_body(SLOW)) as response:
        for event in read_events(response):
            if event.name == "token" and event.data["index"] == 2:
                seen_in_flight.append(in_flight(settings, SLOW))

    assert seen_in_flight == [1]
    assert in_flight(settings, SLOW) == 0


def test_stream_client_disconnect_frees_slot(server_url, settings, stream_simulator):
    with open_stream(server_url, request_body(SLOW)) as response:
        for event in read_events(response):
            if event.name == "token" and event.data["index"] == 2:
                break

    deadline = time.monotonic() + 5
    while in_flight(settings, SLOW) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight(settings, SLOW) == 0
    recent = httpx.get(f"{stream_simulator}/v1/simulator/requests?limit=1", timeout=5).json()
    assert recent["data"][0]["model"] == SLOW
    assert recent["data"][0]["tokens_sent"] < 25


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn_url(settings, stream_simulator) -> Iterator[str]:
    """The API under gunicorn: one gthread worker process with two threads."""
    port = free_port()
    # The command the stack runs, so its gunicorn options are under test too.
    command = api_command("127.0.0.1", port, workers=1, threads=2)
    command[-1:-1] = ["--log-level", "warning"]
    # The settings fixture has put the test services (DATABASE_URL, REDIS_URL, simulator URL)
    # into the environment, which the subprocess inherits.
    process = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_serving(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with status {process.returncode} during startup")
        try:
            if httpx.get(f"{url}/jobs?limit=1", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer at {url} within {SERVER_START_TIMEOUT_S} s")


def test_long_query_string_gets_json_answer(gunicorn_url):
    """A long comment in a query string reaches the API instead of gunicorn's 414 HTML page."""
    # 1,000 characters, 6,000 bytes once percent-encoded: over gunicorn's default of 4094.
    comment = "é" * 1000
    response = httpx.post(
        f"{gunicorn_url}/rate/{uuid.uuid4()}", params={"rating": 3, "comment": comment}, timeout=10
    )

    assert len(str(response.request.url)) > 6000
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "not found" in response.json()["message"]


def test_stream_leaves_gunicorn_worker_free(gunicorn_url):
    """While a slow stream occupies one thread, the same single process serves GET /jobs."""
    other: dict[str, Any] = {}
    events = []
    stream_started = time.monotonic()
    with open_stream(gunicorn_url, request_body(SLOW)) as response:
        for event in read_events(response):
            events.append(event)
            if event.name == "token" and event.data["index"] == 1:
                jobs = httpx.get(f"{gunicorn_url}/jobs?limit=1", timeout=10)
                other = {"status": jobs.status_code, "answered_at": time.monotonic()}

    assert other["status"] == 200
    assert events[-1].name == "metrics"
    assert sum(event.name == "token" for event in events) == 25
    # The model stream lasts about 2 s (25 tokens, 80 ms apart). GET /jobs was served while
    # it was still open, so the stream did not hold the only worker process.
    stream_seconds = events[-1].data["latency"]["total_ms"] / 1000
    assert other["answered_at"] - stream_started < stream_seconds - 0.5
