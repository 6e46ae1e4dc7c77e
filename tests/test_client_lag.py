"""The lag probe measures how late this process gets the CPU, and runs and summaries carry it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mistralmeter.settings import Settings
from models.runs import Run
from simulator.testing import run_simulator
from workers import client_lag, provider
from workers.client_lag import LagProbe
from workers.job_results import CROWDED_STREAMS, STARVED_LAG_MS, RunRow, summarise_model

# A switch interval this long makes a thread that wakes up wait about that long for the GIL
# while another thread runs pure Python.
BUSY_SWITCH_INTERVAL_S = 0.05

SIMULATOR_CONFIG = {
    "seed": 5,
    "models": {"lagged": {"ttft_ms": 20, "itl_ms": 1, "output_tokens": 3}},
}


@contextmanager
def busy_thread() -> Iterator[None]:
    """Run a pure-Python loop in another thread, with a long GIL switch interval."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    saved_interval = sys.getswitchinterval()
    sys.setswitchinterval(BUSY_SWITCH_INTERVAL_S)
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(saved_interval)


def probe_with(samples: list[tuple[float, float]]) -> LagProbe:
    probe = LagProbe()
    for woke_at, lateness_s in samples:
        probe.record(woke_at, lateness_s)
    return probe


@pytest.mark.parametrize(
    ("sample", "expected_ms"),
    [
        # (woke_at, lateness_s) against the window [10.0, 10.1].
        ((10.04, 0.030), 30.0),  # stall inside the window
        ((10.02, 0.050), 20.0),  # stall began 30 ms before the window
        ((10.12, 0.050), 30.0),  # stall ran 20 ms past the window
        ((10.05, 0.0), 0.0),  # on time
        ((9.99, 0.500), None),  # stall ended before the window
        ((10.20, 0.050), None),  # stall began after the window
    ],
)
def test_window_max_clips_stall(sample, expected_ms):
    lag = probe_with([sample]).max_lag_ms(10.0, 10.1)

    if expected_ms is None:
        assert lag is None
    else:
        assert lag == pytest.approx(expected_ms)


def test_window_max_over_several_samples():
    probe = probe_with([(9.5, 0.4), (10.01, 0.002), (10.04, 0.030), (10.06, 0.001), (10.3, 0.1)])

    assert probe.max_lag_ms(10.0, 10.1) == pytest.approx(30.0)
    assert probe.max_lag_ms(10.05, 10.1) == pytest.approx(1.0)
    assert probe.max_lag_ms(10.1, 10.15) is None
    assert probe.max_lag_ms(9.0, 11.0) == pytest.approx(400.0)


def test_window_max_empty_probe_is_none():
    assert LagProbe().max_lag_ms(0.0, time.perf_counter()) is None


def test_buffer_keeps_newest_samples():
    probe = LagProbe(samples_kept=3)
    for woke_at, lateness_s in [(1.0, 0.9), (2.0, 0.8), (3.0, 0.001), (4.0, 0.002), (5.0, 0.003)]:
        probe.record(woke_at, lateness_s)

    assert probe.max_lag_ms(0.0, 10.0) == pytest.approx(3.0)


def test_overdue_sleep_counts_as_lag():
    """After a stall the reading thread may finish before the probe records its sample."""
    probe = LagProbe()
    now = time.perf_counter()
    probe._due_at = now - 0.040

    lag = probe.max_lag_ms(now - 1.0, now + 1.0)

    assert lag is not None
    assert lag >= 40.0
    assert lag < 1000.0


def test_busy_thread_raises_lag():
    probe = LagProbe()
    probe.ensure_started()
    time.sleep(0.05)

    idle_start = time.perf_counter()
    time.sleep(0.5)
    idle_lag = probe.max_lag_ms(idle_start, time.perf_counter())

    with busy_thread():
        busy_start = time.perf_counter()
        time.sleep(0.6)
        busy_lag = probe.max_lag_ms(busy_start, time.perf_counter())

    assert idle_lag is not None
    assert busy_lag is not None
    assert busy_lag >= 20.0
    assert idle_lag < busy_lag


def test_stopped_process_raises_lag():
    """A process the OS does not run for 100 ms shows at least that much lag."""
    probe = LagProbe()
    probe.ensure_started()
    time.sleep(0.05)

    start = time.perf_counter()
    # The child resumes this process, so the test cannot hang on SIGSTOP.
    resumer = subprocess.Popen(["sh", "-c", f"sleep 0.1; kill -CONT {os.getpid()}"])
    os.kill(os.getpid(), signal.SIGSTOP)
    resumer.wait(timeout=10)
    time.sleep(0.02)
    lag = probe.max_lag_ms(start, time.perf_counter())

    assert resumer.returncode == 0
    assert lag is not None
    assert lag >= 80.0


def test_concurrent_start_makes_one_thread():
    probe = LagProbe()
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        probe.ensure_started()

    before = {thread for thread in threading.enumerate() if thread.name == "client-lag-probe"}
    starters = [threading.Thread(target=start) for _ in range(8)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    after = {thread for thread in threading.enumerate() if thread.name == "client-lag-probe"}

    assert len(after - before) == 1
    assert probe._thread in after


def test_forked_child_restarts_probe():
    client_lag.ensure_started()
    time.sleep(0.02)

    child = os.fork()
    if child == 0:
        # The child inherits no probe thread and must start a fresh one with empty samples.
        empty = client_lag.probe._thread is None and not client_lag.probe._samples
        client_lag.ensure_started()
        time.sleep(0.05)
        sampled = client_lag.max_lag_ms(0.0, time.perf_counter()) is not None
        os._exit(0 if empty and sampled else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0


def test_stream_chat_records_lag():
    with run_simulator(SIMULATOR_CONFIG) as url:
        client = provider.get_client(Settings(simulator_url=url, request_timeout_s=31.0))
        result = provider.stream_chat(
            client,
            model="lagged",
            messages=[{"role": "user", "content": "hi"}],
            params={},
            timeout_s=30,
        )

    assert result.client_lag_ms is not None
    assert result.client_lag_ms >= 0.0


def test_stream_chat_lag_with_busy_thread():
    client_lag.ensure_started()
    with run_simulator(SIMULATOR_CONFIG) as url:
        client = provider.get_client(Settings(simulator_url=url, request_timeout_s=32.0))
        with busy_thread():
            result = provider.stream_chat(
                client,
                model="lagged",
                messages=[{"role": "user", "content": "hi"}],
                params={},
                timeout_s=30,
            )

    assert result.client_lag_ms is not None
    assert result.client_lag_ms >= 20.0


def make_row(lag_ms: float | None, *, status: str = "succeeded", streams: int = 1) -> RunRow:
    run = Run(
        item_id="q1",
        repetition=0,
        model="m",
        status=status,
        concurrent_streams=streams,
        client_lag_ms=lag_ms,
    )
    return RunRow(run, None)


def test_measurement_counts_lagged_runs():
    rows = [
        make_row(3.0),
        make_row(40.0),
        make_row(120.4),
        make_row(STARVED_LAG_MS),
        make_row(None),
        make_row(900.0, status="failed"),
    ]

    measurement = summarise_model(rows)["measurement"]

    assert measurement["max_client_lag_ms"] == 120.4
    assert measurement["runs_with_client_lag"] == 2
    assert measurement["max_concurrent_streams_per_process"] == 1
    assert measurement["note"] == (
        "timings of 2 runs may be inflated by up to about 120 ms, because the worker process "
        "was starved of CPU while they ran (client lag above 25 ms). Give the workers idle "
        "cores, or fewer threads each."
    )


def test_measurement_below_threshold_has_no_note():
    measurement = summarise_model([make_row(3.0), make_row(STARVED_LAG_MS)])["measurement"]

    assert measurement["max_client_lag_ms"] == STARVED_LAG_MS
    assert measurement["runs_with_client_lag"] == 0
    assert measurement["note"] is None


def test_measurement_without_lag_values():
    measurement = summarise_model([make_row(None), make_row(None)])["measurement"]

    assert measurement["max_client_lag_ms"] is None
    assert measurement["runs_with_client_lag"] == 0
    assert measurement["note"] is None


def test_measurement_note_keeps_streams_part():
    crowded = CROWDED_STREAMS + 2
    rows = [make_row(2.0, streams=crowded), make_row(60.0, streams=3)]

    note = summarise_model(rows)["measurement"]["note"]

    assert note.startswith(f"up to {crowded} streams were open in one worker process;")
    assert "timings of 1 run may be inflated by up to about 60 ms" in note
