"""No run is lost or written twice when calls fail, a worker dies, or Redis or PostgreSQL restart.

Workers, the API and the services they use are real processes. The broker is a Redis server of
this module alone, and the tests that restart a service start a dedicated one, so the shared
services of the machine are never stopped.

Production configuration these tests assume:
- Redis runs with `appendonly yes` (and `appendfsync everysec`) and `maxmemory-policy
  noeviction`. Snapshots alone lose every task queued since the last snapshot when Redis
  crashes, and eviction would drop queued tasks under memory pressure.
- The visibility timeout is far longer than any task. The kill and Redis tests shorten it to
  VISIBILITY_TIMEOUT_S, which is safe only because their tasks end well within it.
- A supervisor restarts a worker process that exits (see wait_for_job_restarting_workers).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import redis

from mistralmeter.embedded_services import create_database, start_postgres, start_redis
from models.migrate import upgrade_database
from simulator.testing import run_simulator
from tests.worker_processes import (
    FINISHED_STATUSES,
    QUEUE_NAME,
    ApiProcess,
    ProcessStack,
    RedisServer,
    RunRow,
    WorkerProcess,
    count_runs,
    read_job,
    running_api,
    running_beat,
    running_workers,
    simulator_call,
    start_worker,
    start_workers,
    stop_workers,
    submit_batch,
    wait_for_job,
    wait_for_runs,
    wait_for_workers,
)

pytestmark = pytest.mark.services

MAX_RETRIES = 2
REQUEST_TIMEOUT_S = 2
VISIBILITY_TIMEOUT_S = 8
# How long a restarted service stays down.
OUTAGE_S = 2.0
# Seconds without a new run after which the test kills a worker whose consumer hung.
STALL_S = 20.0
# Beat looks for stalled jobs every 2 s, and sends again the tasks of a job that wrote no run
# for 5 s and has none left in the broker.
RECOVERY_SETTINGS = {
    "MISTRALMETER_RECOVERY_INTERVAL_S": "2",
    "MISTRALMETER_RECOVERY_STALL_S": "5",
}

SIMULATOR_CONFIG = {
    "seed": 11,
    "models": {
        # 20% of calls fail: 5% each of 429, 500, a hang longer than the request timeout, a cut.
        "sim-flaky": {
            "ttft_ms": 30,
            "itl_ms": 1,
            "output_tokens": 8,
            "faults": {
                "rate_429": 0.05,
                "retry_after_s": 0.2,
                "rate_500": 0.05,
                "rate_hang": 0.05,
                "hang_s": REQUEST_TIMEOUT_S * 2,
                "rate_cut": 0.05,
            },
        },
        "sim-down": {"ttft_ms": 10, "faults": {"rate_500": 1.0}},
        # Slow enough that a job of 120 to 200 runs takes several seconds.
        "sim-steady": {
            "ttft_ms": {"distribution": "uniform", "min": 100, "max": 300},
            "itl_ms": 1,
            "output_tokens": 8,
        },
    },
}

# The run errors a call can end with after the faults above.
FAULT_REASONS = {"http_429", "http_500", "timeout", "stream_cut"}


@pytest.fixture(scope="module")
def fault_simulator_url() -> Iterator[str]:
    with run_simulator(SIMULATOR_CONFIG) as url:
        yield url


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory) -> Iterator[str]:
    broker = start_redis(tmp_path_factory.mktemp("fault-broker"))
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture()
def stack(stack_env, broker_url, fault_simulator_url, tmp_path: Path) -> ProcessStack:
    """The session's test database, this module's broker (emptied) and simulator."""
    redis.Redis.from_url(broker_url).flushdb()
    simulator_call(fault_simulator_url, "POST", "/v1/simulator/reset")
    return ProcessStack(
        database_url=stack_env["DATABASE_URL"],
        redis_url=broker_url,
        simulator_url=fault_simulator_url,
        log_dir=tmp_path / "logs",
        settings={
            "MISTRALMETER_MAX_RETRIES": str(MAX_RETRIES),
            "MISTRALMETER_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            "MISTRALMETER_BACKOFF_BASE_S": "0.05",
            "MISTRALMETER_BACKOFF_MAX_S": "0.3",
            "MISTRALMETER_MAX_IN_FLIGHT": "32",
            "MISTRALMETER_REQUESTS_PER_MINUTE": "100000",
            "MISTRALMETER_TOKENS_PER_MINUTE": "100000000",
        },
    )


@pytest.fixture()
def api(stack: ProcessStack) -> Iterator[ApiProcess]:
    with running_api(stack.environment(), log_dir=stack.log_dir) as process:
        yield process


def expected_keys(prompts: int, repetitions: int) -> list[tuple[str, int]]:
    return [(f"p{index:03d}", rep) for index in range(prompts) for rep in range(repetitions)]


def run_keys(rows) -> list[tuple[str, int]]:
    return sorted((row.item_id, row.repetition) for row in rows)


def test_faults_leave_one_run_per_key(stack: ProcessStack, api: ApiProcess):
    """Under 20% injected faults every run is written once, succeeded or failed with its reason."""
    flaky_prompts, flaky_repetitions = 25, 4
    down_prompts, down_repetitions = 5, 2

    with running_workers(stack.environment(), ["faults"], log_dir=stack.log_dir, concurrency=10):
        flaky = submit_batch(
            api.url, model="sim-flaky", prompts=flaky_prompts, runs=flaky_repetitions
        )
        down = submit_batch(api.url, model="sim-down", prompts=down_prompts, runs=down_repetitions)
        flaky_status, flaky_rows = wait_for_job(stack, flaky["job_id"], timeout_s=90)
        down_status, down_rows = wait_for_job(stack, down["job_id"], timeout_s=30)
    requests = simulator_call(stack.simulator_url, "GET", "/v1/simulator/requests?limit=10000")

    assert flaky_status == "succeeded"
    assert run_keys(flaky_rows) == expected_keys(flaky_prompts, flaky_repetitions)
    for row in flaky_rows:
        assert row.status in ("succeeded", "failed"), row
        assert 1 <= row.attempts <= MAX_RETRIES + 1, row
        if row.status == "succeeded":
            assert row.error_reason is None, row
        else:
            assert row.error_reason in FAULT_REASONS, row
            assert row.error_message, row
            assert row.attempts == MAX_RETRIES + 1, row
    assert sum(row.attempts for row in flaky_rows) > len(flaky_rows), "no call was retried"

    injected = Counter(
        record["fault"] for record in requests["data"] if record["model"] == "sim-flaky"
    )
    for fault in ("429", "500", "hang", "cut"):
        assert injected[fault] > 0, injected
    flaky_calls = sum(record["model"] == "sim-flaky" for record in requests["data"])
    assert flaky_calls == sum(row.attempts for row in flaky_rows)

    # Every call to sim-down fails, so each run shows the retry limit and its reason.
    assert down_status == "failed"
    assert run_keys(down_rows) == expected_keys(down_prompts, down_repetitions)
    for row in down_rows:
        assert row.status == "failed", row
        assert row.error_reason == "http_500", row
        assert "500" in row.error_message, row
        assert row.attempts == MAX_RETRIES + 1, row


def test_killed_worker_tasks_are_redelivered(stack: ProcessStack, api: ApiProcess):
    """After kill -9 of a worker mid-job, a new worker runs its tasks; each run is written once."""
    prompts, repetitions = 50, 4
    total = prompts * repetitions
    environment = stack.environment(MISTRALMETER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S))
    broker = redis.Redis.from_url(stack.redis_url)

    workers = start_workers(
        environment, ["victim", "survivor"], log_dir=stack.log_dir, concurrency=4
    )
    try:
        victim = workers[0]
        job_id = submit_batch(api.url, model="sim-steady", prompts=prompts, runs=repetitions)[
            "job_id"
        ]
        written_at_kill = wait_for_runs(stack, job_id, at_least=total // 4)
        victim.kill()
        killed_at = time.monotonic()
        assert not victim.is_running()
        assert 0 < written_at_kill < total

        # The survivor drains the queue, but the victim's unacknowledged tasks stay out of it
        # until the visibility timeout has passed and a worker restores them.
        written_before_restart = wait_until_idle(stack, job_id, broker)
        time.sleep(max(0.0, killed_at + VISIBILITY_TIMEOUT_S + 1 - time.monotonic()))
        stranded = broker.hlen("unacked")
        assert written_before_restart < total
        # A stranded task may have written its run before the kill, but not been acknowledged.
        assert stranded >= total - written_before_restart

        workers.append(start_worker(environment, name="newcomer", log_dir=stack.log_dir,
                                    concurrency=4))
        wait_for_workers(workers[1:])
        status, rows = wait_for_job(stack, job_id, timeout_s=60)
    finally:
        stop_workers(workers)

    assert status == "succeeded"
    assert len(rows) == total
    assert run_keys(rows) == expected_keys(prompts, repetitions)
    assert all(row.status == "succeeded" for row in rows)


def test_lost_tasks_are_sent_again(stack: ProcessStack, api: ApiProcess):
    """A job whose queued tasks the broker lost is finished by beat's recovery task."""
    prompts, repetitions = 10, 3
    environment = stack.environment(**RECOVERY_SETTINGS)
    broker = redis.Redis.from_url(stack.redis_url)

    job_id = submit_batch(api.url, model="sim-steady", prompts=prompts, runs=repetitions)[
        "job_id"
    ]
    # No worker runs yet, so the start task still waits in the queue: deleting it is the loss.
    assert broker.llen(QUEUE_NAME) == 1
    broker.delete(QUEUE_NAME)

    with running_beat(environment, log_dir=stack.log_dir), running_workers(
        environment, ["recovery"], log_dir=stack.log_dir, concurrency=8
    ):
        status, rows = wait_for_job(stack, job_id, timeout_s=90)

    assert status == "succeeded"
    assert run_keys(rows) == expected_keys(prompts, repetitions)
    assert all(row.status == "succeeded" for row in rows)
    assert all(row.attempts == 1 for row in rows)


def wait_until_idle(stack: ProcessStack, job_id: str, broker: redis.Redis) -> int:
    """Wait until the queue is empty and no run was written for 2 s; return the runs written."""
    deadline = time.monotonic() + 60
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = count_runs(stack, job_id)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif broker.llen(QUEUE_NAME) == 0 and time.monotonic() - last_change > 2.0:
            return count
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} was still writing runs after 60 s: {last_count}")


def test_redis_restart_mid_job_loses_no_run(stack: ProcessStack, tmp_path: Path):
    """A job survives a restart of its Redis (broker and limiter), every run written once."""
    prompts, repetitions = 30, 4
    total = prompts * repetitions
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    restarted = ProcessStack(
        database_url=stack.database_url,
        redis_url=server.url,
        simulator_url=stack.simulator_url,
        log_dir=stack.log_dir,
        settings=stack.settings,
    )
    environment = restarted.environment(
        MISTRALMETER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S), **RECOVERY_SETTINGS
    )
    workers: list[WorkerProcess] = []

    try:
        with running_api(environment, log_dir=stack.log_dir, name="api-redis") as api, \
                running_beat(environment, log_dir=stack.log_dir):
            workers += start_workers(
                environment, ["redis-restart"], log_dir=stack.log_dir, concurrency=8
            )
            job_id = submit_batch(api.url, model="sim-steady", prompts=prompts, runs=repetitions)[
                "job_id"
            ]
            written_at_stop = wait_for_runs(restarted, job_id, at_least=total // 4)
            server.stop()
            time.sleep(OUTAGE_S)
            server.start()
            queued_after_restart = server.client().llen(QUEUE_NAME)

            status, rows = wait_for_job_restarting_workers(
                restarted, job_id, workers, environment, timeout_s=150
            )
    finally:
        stop_workers(workers)
        server.stop()

    assert 0 < written_at_stop < total
    assert server.starts == 2
    # The tasks still queued came back from the append-only file.
    assert queued_after_restart > 0
    assert status == "succeeded"
    assert len(rows) == total
    assert run_keys(rows) == expected_keys(prompts, repetitions)
    assert all(row.status == "succeeded" for row in rows)


def wait_for_job_restarting_workers(
    stack: ProcessStack,
    job_id: str,
    workers: list[WorkerProcess],
    environment: dict[str, str],
    timeout_s: float,
) -> tuple[str, list[RunRow]]:
    """Wait for the job, replacing an exited worker as a process supervisor would.

    NOTE: Celery 5.7 with kombu 5.7 sometimes exits with "Unrecoverable error:
    AttributeError: 'NoneType' object has no attribute 'hostname'" when the broker connection
    drops while tasks are unacknowledged. Closing the lost channel tries to requeue them after
    Connection.collect() has already cleared the transport's client. The replacement starts
    after the visibility timeout, so that its first scan gives the exited worker's tasks back.
    Once a consumer also hung after reconnecting attempts stopped, without exiting, so a worker
    that writes no run for STALL_S seconds is killed and replaced the same way.
    """
    deadline = time.monotonic() + timeout_s
    exited_at: dict[str, float] = {}
    last_count, last_progress_at = -1, time.monotonic()
    while time.monotonic() < deadline:
        status, rows = read_job(stack, job_id)
        if status in FINISHED_STATUSES:
            return status, rows
        if len(rows) != last_count:
            last_count, last_progress_at = len(rows), time.monotonic()
        elif time.monotonic() - last_progress_at > STALL_S:
            # A liveness check, as a supervisor would run: the consumer can also hang after a
            # broker outage without exiting, so a worker that makes no progress is killed.
            for worker in workers:
                if worker.is_running():
                    worker.kill()
            last_progress_at = time.monotonic()
        for worker in list(workers):
            if worker.is_running():
                continue
            exited_at.setdefault(worker.node, time.monotonic())
            if time.monotonic() - exited_at[worker.node] > VISIBILITY_TIMEOUT_S + 1:
                workers.remove(worker)
                replacement = start_worker(
                    environment, name=f"replacement-{len(exited_at)}", log_dir=stack.log_dir,
                    concurrency=8,
                )
                workers.append(replacement)
                wait_for_workers([replacement])
        time.sleep(0.2)
    raise AssertionError(
        f"job {job_id} did not finish within {timeout_s:.0f} s: {last_count} runs written; "
        f"broker: {describe_broker(environment['REDIS_URL'])}"
    )


def describe_broker(redis_url: str) -> str:
    """Describe what the broker still contains, so a failure shows whether a task was lost."""
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
        return f"{client.llen(QUEUE_NAME)} queued, {client.hlen('unacked')} unacknowledged"
    except redis.RedisError as error:
        return f"unreachable ({error})"


@pytest.fixture()
def postgres_dir() -> Iterator[Path]:
    """A folder outside pytest's temporary root for a dedicated PostgreSQL.

    When run as root, the server runs as another user, which needs to traverse every parent
    folder. pytest makes its root folder private again whenever another session starts.
    """
    path = Path(tempfile.mkdtemp(prefix="mistralmeter-test-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_postgres_restart_mid_job_loses_no_run(stack: ProcessStack, postgres_dir: Path):
    """A job survives a fast shutdown and restart of PostgreSQL with every run written once."""
    prompts, repetitions = 30, 4
    total = prompts * repetitions
    postgres = start_postgres(postgres_dir)
    try:
        create_database(postgres)
        upgrade_database(postgres.url())
        restarted = ProcessStack(
            database_url=postgres.url(),
            redis_url=stack.redis_url,
            simulator_url=stack.simulator_url,
            log_dir=stack.log_dir,
            settings=stack.settings,
        )
        environment = restarted.environment()

        with running_api(environment, log_dir=stack.log_dir, name="api-postgres") as api, \
                running_workers(environment, ["pg-restart"], log_dir=stack.log_dir,
                                concurrency=8) as workers:
            job_id = submit_batch(api.url, model="sim-steady", prompts=prompts, runs=repetitions)[
                "job_id"
            ]
            written_at_stop = wait_for_runs(restarted, job_id, at_least=total // 4)
            postgres.stop()
            time.sleep(OUTAGE_S)
            postgres = start_postgres(postgres_dir)

            status, rows = wait_for_job(restarted, job_id, timeout_s=90)
            worker_log = workers[0].log_path.read_text()
    finally:
        postgres.stop()

    assert 0 < written_at_stop < total
    # Tasks did hit the outage, and were sent again instead of being acknowledged as failed.
    assert "task failed on a service error, retrying" in worker_log
    assert status == "succeeded"
    assert len(rows) == total
    assert run_keys(rows) == expected_keys(prompts, repetitions)
    assert all(row.status == "succeeded" for row in rows)
