"""Embedded PostgreSQL and Redis, child process handling, and the embedded stack's start and stop.

Everything here starts real servers under a temporary state folder; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from mistralmeter import embedded_services
from mistralmeter.processes import ManagedProcess, child_environment, stop_leftover_process, stop_processes
from mistralmeter.settings import get_settings
from mistralmeter.stack import MAX_RESTARTS, EmbeddedStack, StackOptions, StackStartError
from mistralmeter.state_folder import StateDirBusyError, StateLock, read_running_stack


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def isolated_environment(monkeypatch: pytest.MonkeyPatch):
    """No external services or API key, so the stack starts its own PostgreSQL, Redis and simulator."""
    for name in ("DATABASE_URL", "REDIS_URL", "MISTRAL_API_KEY", "MISTRAL_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_postgres_serves_queries_and_stops(tmp_path: Path) -> None:
    """Embedded PostgreSQL runs SELECT 1 over its URL, and no server process is left after stop."""
    postgres = embedded_services.start_postgres(tmp_path)
    try:
        assert embedded_services.create_database(postgres) is True
        assert embedded_services.create_database(postgres) is False
        with psycopg.connect(postgres.libpq_url()) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
            assert connection.execute("SELECT current_database()").fetchone() == ("mistralmeter",)
        assert postgres.url().startswith("postgresql+psycopg://postgres@/mistralmeter?host=")
        assert (tmp_path / "logs" / "postgres.log").resolve() == postgres.log_path
    finally:
        postgres.stop()

    assert _wait_gone(postgres.pid)
    assert not postgres.is_running()


def test_postgres_start_reuses_running_server(tmp_path: Path) -> None:
    """A second start on the same data directory adopts the server that still runs (crash recovery)."""
    first = embedded_services.start_postgres(tmp_path)
    try:
        second = embedded_services.start_postgres(tmp_path)
        assert second.pid == first.pid
        assert second.socket_dir == first.socket_dir
    finally:
        first.stop()
    assert _wait_gone(first.pid)


def test_redis_answers_ping_and_stops(tmp_path: Path) -> None:
    """Embedded Redis responds to PING on a loopback TCP port and saves its data when stopped."""
    embedded = embedded_services.start_redis(tmp_path)
    pid = embedded.process.pid
    try:
        assert embedded.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(embedded.url)
        assert client.ping() is True
        client.set("mistralmeter-test", "kept")
        client.close()
    finally:
        embedded.stop()

    assert pid is not None
    assert _wait_gone(pid)
    assert (tmp_path / "redis" / "dump.rdb").is_file()
    assert not (tmp_path / "run" / "redis.pid").exists()


def test_redis_start_stops_leftover_and_keeps_data(tmp_path: Path) -> None:
    """A Redis left by a crashed launcher is stopped by the next start, which loads its saved data."""
    leftover = embedded_services.start_redis(tmp_path)
    client = redis.Redis.from_url(leftover.url)
    client.set("mistralmeter-test", "kept")
    client.close()
    leftover_pid = leftover.process.pid
    assert leftover_pid is not None

    # The pid file stays behind as if the launcher had died; the new start must find it.
    fresh = embedded_services.start_redis(tmp_path)
    try:
        assert _wait_gone(leftover_pid)
        client = redis.Redis.from_url(fresh.url)
        assert client.get("mistralmeter-test") == b"kept"
        client.close()
    finally:
        fresh.stop()
        leftover.process.wait(5.0)


def _python_child(tmp_path: Path, name: str, code: str) -> ManagedProcess:
    return ManagedProcess(
        name,
        [sys.executable, "-c", code],
        log_path=tmp_path / "logs" / f"{name}.log",
        pid_path=tmp_path / "run" / f"{name}.pid",
        env=child_environment({}),
    )


IGNORE_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
IGNORES_SIGTERM_WITH_GRANDCHILD = f"""
import subprocess, sys
{IGNORE_SIGTERM}
child = subprocess.Popen([sys.executable, "-c", "{IGNORE_SIGTERM}; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_stop_processes_kills_group_after_grace(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is killed with its own child after the grace period."""
    process = _python_child(tmp_path, "stubborn", IGNORES_SIGTERM_WITH_GRANDCHILD)
    process.start()
    log_path = tmp_path / "logs" / "stubborn.log"
    deadline = time.monotonic() + 10
    while not log_path.read_text().splitlines()[-1].isdigit() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild_pid = int(log_path.read_text().splitlines()[-1])

    started = time.monotonic()
    stop_processes([process], grace_period_s=0.5)
    elapsed = time.monotonic() - started

    assert process.exit_code() == -9
    assert _wait_gone(grandchild_pid)
    assert elapsed >= 0.5
    assert elapsed < 8
    assert not process.pid_path.exists()


def test_stop_leftover_ignores_reused_pid(tmp_path: Path) -> None:
    """A pid file whose start time does not match the live process leaves that process alone."""
    pid_path = tmp_path / "run" / "other.pid"
    pid_path.parent.mkdir(parents=True)
    pid_path.write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0}))

    assert stop_leftover_process(pid_path, grace_period_s=0.1) is None
    assert _alive(os.getpid())
    assert not pid_path.exists()


def test_stop_leftover_stops_recorded_group(tmp_path: Path) -> None:
    """A pid file that matches a live process group gets that group stopped."""
    process = _python_child(tmp_path, "orphan", "import time; time.sleep(60)")
    process.start()
    assert process.pid is not None

    assert stop_leftover_process(process.pid_path, grace_period_s=5.0) == process.pid
    assert process.wait(5.0) == -15


def test_state_lock_is_exclusive(tmp_path: Path) -> None:
    """A second lock on the same state folder fails until the first is released."""
    first = StateLock(tmp_path / "stack.lock")
    second = StateLock(tmp_path / "stack.lock")
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    first.release()
    assert second.try_acquire() is True
    second.release()


def test_read_running_stack_without_launcher(tmp_path: Path) -> None:
    """With no launcher holding the lock, a stale stack.json is not reported as running."""
    (tmp_path / "stack.json").write_text(json.dumps({"pid": 1, "api_url": "http://127.0.0.1:9"}))
    assert read_running_stack(tmp_path) is None


def _wait_for_workers(api_url: str, at_least: int, timeout_s: float = 60.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = httpx.get(f"{api_url}/health", timeout=10).json()
        if health["workers"] >= at_least:
            return True
        time.sleep(0.5)
    return False


def test_restarts_limited_to_worker_and_beat(tmp_path: Path) -> None:
    """Only stateless parts restart, and a part that keeps exiting stops the stack."""
    stack = EmbeddedStack(StackOptions(state_dir=tmp_path / "state"))

    assert [stack._restart_allowed("worker") for _ in range(MAX_RESTARTS)] == [True] * MAX_RESTARTS
    assert stack._restart_allowed("worker") is False
    assert stack._restart_allowed("beat") is True
    for name in ("api", "simulator", "migrate"):
        assert stack._restart_allowed(name) is False


def test_stack_start_failure_names_part_and_stops_services(
    tmp_path: Path, isolated_environment: None
) -> None:
    """A simulator that cannot start fails the stack with its log path, and nothing is left running."""
    bad_config = tmp_path / "simulator.json"
    bad_config.write_text("{not json")
    stack = EmbeddedStack(
        StackOptions(state_dir=tmp_path / "state", simulator_config=bad_config, start_timeout_s=30)
    )

    with pytest.raises(StackStartError) as failure:
        stack.start()

    assert failure.value.part == "simulator"
    assert failure.value.log_path == tmp_path / "state" / "logs" / "simulator.log"
    assert str(failure.value.log_path) in str(failure.value)
    assert list((tmp_path / "state" / "run").glob("*.pid")) == []
    postmaster = tmp_path / "state" / "postgres" / "postmaster.pid"
    assert not postmaster.exists()
    # The lock is released, so the state folder can be used again at once.
    assert read_running_stack(tmp_path / "state") is None


def test_stack_starts_healthy_and_stops_every_process(
    tmp_path: Path, isolated_environment: None
) -> None:
    """The stack reports a healthy API with a worker, refuses a second launcher, and stops everything."""
    import httpx

    state_dir = tmp_path / "state"
    stack = EmbeddedStack(StackOptions(state_dir=state_dir, start_timeout_s=60, worker_concurrency=4))
    endpoints = stack.start()
    try:
        health = httpx.get(f"{endpoints.api_url}/health", timeout=10).json()
        assert health["status"] == "ok"
        assert health["workers"] >= 1
        assert endpoints.simulator_url is not None
        assert httpx.get(f"{endpoints.simulator_url}/health", timeout=5).status_code == 200
        assert read_running_stack(state_dir)["api_url"] == endpoints.api_url

        with pytest.raises(StateDirBusyError):
            EmbeddedStack(StackOptions(state_dir=state_dir)).start()

        # A worker that dies is started again, and reports to the API health check.
        worker = next(p for p in stack._started.processes if p.name == "worker")
        killed_pid = worker.pid
        worker.signal_group(signal.SIGKILL)
        # The zombie of a multithreaded process is waitable only once all its threads are gone.
        assert worker.wait(10.0) == -signal.SIGKILL
        # A task the dead worker had taken but not acknowledged, as kombu records it.
        broker = redis.Redis.from_url(endpoints.redis_url)
        unacked_task = {"body": "W1tdLCB7fSwge31d", "headers": {"task": "mistralmeter.tick_schedules"},
                "properties": {"body_encoding": "base64", "delivery_info": {}},
                "content-type": "application/json", "content-encoding": "utf-8"}
        broker.hset("unacked", "held-by-dead-worker", json.dumps([unacked_task, "", get_settings().queue_name]))
        [restart] = stack.check_processes()
        assert broker.hget("unacked", "held-by-dead-worker") is None
        assert restart.name == "worker"
        assert restart.exit_code == -signal.SIGKILL
        assert restart.log_path == state_dir / "logs" / "worker.log"
        assert worker.pid != killed_pid
        assert worker.is_running()
        assert _wait_for_workers(endpoints.api_url, at_least=1)

        pids = [json.loads(path.read_text())["pid"] for path in (state_dir / "run").glob("*.pid")]
        assert len(pids) == 4  # redis, simulator, worker, api
        children = [
            child.pid for pid in pids for child in psutil.Process(pid).children(recursive=True)
        ]
        postgres_pid = stack._started.postgres.pid
    finally:
        stack.stop()

    for pid in [*pids, *children, postgres_pid]:
        assert _wait_gone(pid), f"process {pid} still runs after stop"
    assert list((state_dir / "run").glob("*.pid")) == []
    assert not (state_dir / "stack.json").exists()
    for name in ("api", "worker", "simulator", "migrate", "redis"):
        assert (state_dir / "logs" / f"{name}.log").is_file()
