"""The latency clock starts when the request is sent, not when the connection is opened."""

from __future__ import annotations

import time

from mistralmeter.settings import Settings
from simulator.testing import run_simulator
from workers import provider

CONFIG = {"seed": 3, "models": {"timed": {"ttft_ms": 80, "itl_ms": 2, "output_tokens": 10}}}


def test_request_start_marked_after_connection_setup():
    with run_simulator(CONFIG) as url:
        client = provider.get_client(Settings(simulator_url=url, request_timeout_s=11.0))
        provider.clear_request_start()
        called = time.perf_counter()
        stream = client.chat.stream(model="timed", messages=[{"role": "user", "content": "hi"}])
        with stream:
            for _ in stream:
                pass

    sent_at = provider.request_start(called)
    assert sent_at > called
    assert provider.request_start(sent_at + 1.0) == sent_at + 1.0


def test_first_call_measured_from_send_mark():
    """stream_chat times from the send mark, so the clock never starts before the request."""
    with run_simulator(CONFIG) as url:
        client = provider.get_client(Settings(simulator_url=url, request_timeout_s=12.0))
        called = time.perf_counter()
        result = provider.stream_chat(
            client,
            model="timed",
            messages=[{"role": "user", "content": "hi"}],
            params={},
            timeout_s=5,
        )
        finished = time.perf_counter()

    sent_at = provider.request_start(called)
    assert sent_at > called
    assert result.timing.content_chunk_ms[0] >= 80.0
    # The measured total fits between the send mark and the end of the call.
    assert result.timing.total_ms <= (finished - sent_at) * 1000.0
    assert result.timing.total_ms >= 80.0 + 9 * 2.0
