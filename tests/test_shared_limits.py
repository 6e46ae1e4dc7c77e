"""Two worker processes share one in-flight limit through Redis, measured at the simulator.

The workers, the API and the broker are real processes. The broker is a Redis server of this
module alone, so no other test session's workers or limiter keys interfere with the counts.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from mistralmeter.embedded_services import start_redis
from simulator.testing import run_simulator
from tests.worker_processes import (
    ApiProcess,
    ProcessStack,
    rate_limits_variable,
    running_api,
    running_workers,
    simulator_call,
    submit_batch,
    task_counts,
    wait_for_job,
)

pytestmark = pytest.mark.services

MAX_IN_FLIGHT = 4
# Each worker alone could run more calls than the shared limit allows.
WORKER_CONCURRENCY = 6
PROMPTS = 15
REPETITIONS = 4

SIMULATOR_CONFIG = {
    "seed": 3,
    "models": {"sim-paced": {"ttft_ms": 150, "itl_ms": 1, "output_tokens": 8}},
}


@pytest.fixture(scope="module")
def stack(stack_env, tmp_path_factory) -> Iterator[ProcessStack]:
    """A dedicated Redis and simulator, with the session's migrated test database."""
    state_dir = tmp_path_factory.mktemp("shared-limits")
    broker = start_redis(state_dir)
    try:
        with run_simulator(SIMULATOR_CONFIG) as simulator_url:
            yield ProcessStack(
                database_url=stack_env["DATABASE_URL"],
                redis_url=broker.url,
                simulator_url=simulator_url,
                log_dir=state_dir / "logs",
                settings={
                    "MISTRALMETER_REQUESTS_PER_MINUTE": "100000",
                    "MISTRALMETER_TOKENS_PER_MINUTE": "100000000",
                    "MISTRALMETER_RATE_LIMITS": rate_limits_variable(
                        {"sim-paced": {"max_in_flight": MAX_IN_FLIGHT}}
                    ),
                },
            )
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def api(stack: ProcessStack) -> Iterator[ApiProcess]:
    with running_api(stack.environment(), log_dir=stack.log_dir) as process:
        yield process


def test_two_workers_share_in_flight_limit(stack: ProcessStack, api: ApiProcess):
    """Two workers together keep exactly max_in_flight calls at the simulator at the busiest."""
    with running_workers(
        stack.environment(), ["limits-a", "limits-b"], log_dir=stack.log_dir,
        concurrency=WORKER_CONCURRENCY,
    ) as workers:
        simulator_call(stack.simulator_url, "POST", "/v1/simulator/reset")
        accepted = submit_batch(api.url, model="sim-paced", prompts=PROMPTS, runs=REPETITIONS)
        status, rows = wait_for_job(stack, accepted["job_id"], timeout_s=60)
        stats = simulator_call(stack.simulator_url, "GET", "/v1/simulator/stats")
        runs_per_worker = task_counts(workers, "mistralmeter.run")

    total = PROMPTS * REPETITIONS
    assert accepted["total_runs"] == total
    assert status == "succeeded"
    assert len(rows) == total
    assert {(row.item_id, row.repetition) for row in rows} == {
        (f"p{index:03d}", repetition)
        for index in range(PROMPTS)
        for repetition in range(REPETITIONS)
    }
    assert all(row.status == "succeeded" and row.attempts == 1 for row in rows)

    assert stats["max_concurrent"] <= MAX_IN_FLIGHT, stats
    assert stats["max_concurrent"] == MAX_IN_FLIGHT, stats
    assert stats["total_requests"] == total, stats
    assert stats["by_status"] == {"200": total}, stats

    # Both processes took part, so the limit held across processes, not within one.
    assert sorted(runs_per_worker) == sorted(worker.node for worker in workers)
    assert all(count > 0 for count in runs_per_worker.values()), runs_per_worker
    assert sum(runs_per_worker.values()) == total, runs_per_worker
