"""Measure how far MistralMeter's timings are from the delays the simulator injected.

Starts the simulator in a subprocess (python -m simulator) with one model whose time to first
token, inter-token latency and output length are fixed. Then, for each concurrency level,
threads call workers.provider.stream_chat with the real mistralai SDK client, and every
measured TTFT, total time and inter-token latency is compared with the plan the simulator
reports in its x-simulator-* headers. The error includes everything between the simulator's
handler and our clock: client-side Python (SDK parsing, the GIL shared by the threads),
loopback TCP and the simulator's own event-loop scheduling.

    python benchmarks/measurement_error.py              # 1 and 50 calls in flight
    python benchmarks/measurement_error.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import numpy as np

from mistralmeter.settings import Settings
from workers.measurement import latency_metrics
from workers.provider import ChatResult, get_client, stream_chat

MODEL = "bench-model"
STARTUP_TIMEOUT_S = 30.0
MESSAGES = [{"role": "user", "content": "Explain time to first token in one paragraph."}]


@dataclass(frozen=True)
class Errors:
    """Measured minus injected values in ms, one entry per call.

    `simulator_lag_ms` is the simulator's own part: the worst lateness of a token it sent
    against its schedule (max_send_lag_ms of its request record). A request that waits for the
    simulator's event loop before the handler starts is not in it, because the schedule starts
    when the handler does.
    """

    ttft_ms: np.ndarray
    total_ms: np.ndarray
    itl_ms: np.ndarray
    simulator_lag_ms: np.ndarray


@dataclass(frozen=True)
class Level:
    """One concurrency level: the errors, its wall time and the CPU time of both processes."""

    concurrency: int
    errors: Errors
    wall_s: float
    client_cpu_s: float
    simulator_cpu_s: float | None
    chunks: int


@dataclass(frozen=True)
class Simulator:
    """A running simulator process."""

    base_url: str
    pid: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50],
                        help="calls in flight at once, one run per value (default: 1 50)")
    parser.add_argument("--calls", type=int, default=200,
                        help="measured calls per level with more than one in flight (default 200)")
    parser.add_argument("--serial-calls", type=int, default=40,
                        help="measured calls at concurrency 1 (default 40)")
    parser.add_argument("--ttft-ms", type=float, default=200.0, help="injected TTFT in ms")
    parser.add_argument("--itl-ms", type=float, default=10.0,
                        help="injected inter-token latency in ms")
    parser.add_argument("--tokens", type=int, default=100, help="output tokens per response")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    profile = {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "output_tokens": args.tokens}

    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        # Other processes on the machine skew every number, so the load is part of the record.
        "load_average_before": os.getloadavg(),
        "injected": profile,
        "levels": [],
    }
    with simulator_process({"seed": 1, "models": {MODEL: profile}}) as simulator:
        settings = Settings(simulator_url=simulator.base_url, request_timeout_s=120.0)
        for concurrency in args.concurrency:
            calls = args.serial_calls if concurrency == 1 else args.calls
            level = measure(settings, simulator, concurrency, calls)
            report["levels"].append(summarise(level))

    report["load_average_after"] = os.getloadavg()
    print(markdown_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


@contextmanager
def simulator_process(config: dict[str, Any]) -> Iterator[Simulator]:
    """Run python -m simulator on a free loopback port; yield its base URL and process id."""
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "simulator.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        port = _free_port()
        command = [sys.executable, "-m", "simulator", "--port", str(port), "--config",
                   str(config_path), "--log-level", "warning", "--no-access-log"]
        process = subprocess.Popen(command)
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(base_url, process)
            yield Simulator(base_url, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_healthy(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the simulator exited with status {process.returncode}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the simulator did not respond at {base_url} within {STARTUP_TIMEOUT_S} s")


def measure(settings: Settings, simulator: Simulator, concurrency: int, calls: int) -> Level:
    """Make `calls` streamed calls with `concurrency` threads; the first wave is a warm-up."""
    client = get_client(settings)

    def one_call(_: int) -> ChatResult:
        return stream_chat(client, model=MODEL, messages=MESSAGES, params={}, timeout_s=120.0)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        # Opens the pooled connections, so that TCP connects are not counted as latency.
        list(pool.map(one_call, range(concurrency)))
        wall_started, cpu_started = time.perf_counter(), time.process_time()
        simulator_cpu_started = process_cpu_s(simulator.pid)
        results = list(pool.map(one_call, range(calls)))
        wall_s = time.perf_counter() - wall_started
        client_cpu_s = time.process_time() - cpu_started
        simulator_cpu_ended = process_cpu_s(simulator.pid)

    simulator_cpu_s = None
    if simulator_cpu_started is not None and simulator_cpu_ended is not None:
        simulator_cpu_s = simulator_cpu_ended - simulator_cpu_started
    errors = errors_of(results, simulator_records(simulator.base_url, len(results)))
    chunks = sum(len(result.timing.content_chunk_ms) for result in results)
    return Level(concurrency, errors, wall_s, client_cpu_s, simulator_cpu_s, chunks)


def process_cpu_s(pid: int) -> float | None:
    """Return the user plus system CPU seconds of a process, or None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of proc(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def simulator_records(base_url: str, count: int) -> dict[str, dict[str, Any]]:
    """Fetch the simulator's records of the last `count` requests, keyed by request id."""
    response = httpx.get(f"{base_url}/v1/simulator/requests", params={"limit": count}, timeout=30)
    response.raise_for_status()
    return {record["request_id"]: record for record in response.json()["data"]}


def errors_of(results: list[ChatResult], records: dict[str, dict[str, Any]]) -> Errors:
    ttft, total, itl, simulator_lag = [], [], [], []
    for result in results:
        injected = result.injected
        if injected is None:
            raise RuntimeError("the response carried no x-simulator-* headers")
        metrics = latency_metrics(result.timing, result.output_tokens)
        tokens = int(injected["output_tokens"])
        injected_total = injected["ttft_ms"] + (tokens - 1) * injected["itl_ms"]
        ttft.append(metrics.time_to_first_token_ms - injected["ttft_ms"])
        total.append(metrics.total_ms - injected_total)
        itl.append(metrics.inter_token_latency_ms - injected["itl_ms"])

        simulator_lag.append(records[injected["request_id"]]["max_send_lag_ms"])
    return Errors(np.asarray(ttft), np.asarray(total), np.asarray(itl), np.asarray(simulator_lag))


def summarise(level: Level) -> dict[str, Any]:
    errors = level.errors
    return {
        "concurrency": level.concurrency,
        "calls": int(errors.ttft_ms.size),
        "wall_s": level.wall_s,
        # CPU seconds of this process (all client threads) per wall second; 1.0 is one full core.
        "client_cpu_per_wall_s": level.client_cpu_s / level.wall_s,
        "client_cpu_ms_per_chunk": level.client_cpu_s * 1000.0 / level.chunks,
        "simulator_cpu_per_wall_s": None
        if level.simulator_cpu_s is None
        else level.simulator_cpu_s / level.wall_s,
        "ttft_error_ms": _describe(errors.ttft_ms),
        "total_error_ms": _describe(errors.total_ms),
        "itl_error_ms": _describe(errors.itl_ms),
        "simulator_max_send_lag_ms": _describe(errors.simulator_lag_ms),
    }


def _describe(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(np.max(values)),
        "min": float(np.min(values)),
    }


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        f"date {report['date']}, Python {report['python']}, "
        f"{report['cpus']} CPUs ({report['machine']})",
        f"injected: {report['injected']}",
        "load average (1, 5, 15 min) before: "
        f"{_loads(report['load_average_before'])}, after: {_loads(report['load_average_after'])}",
        "",
        "| in flight | calls | metric | mean | p50 | p95 | max | min |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for level in report["levels"]:
        for label, key in (("TTFT", "ttft_error_ms"), ("total", "total_error_ms"),
                           ("inter-token", "itl_error_ms"),
                           ("simulator's max send lag", "simulator_max_send_lag_ms")):
            stats = level[key]
            lines.append(
                f"| {level['concurrency']} | {level['calls']} | {label} | {stats['mean']:.2f} | "
                f"{stats['p50']:.2f} | {stats['p95']:.2f} | {stats['max']:.2f} | "
                f"{stats['min']:.2f} |"
            )
    lines.append("")
    for level in report["levels"]:
        simulator_cpu = level["simulator_cpu_per_wall_s"]
        simulator_text = "unknown" if simulator_cpu is None else f"{simulator_cpu:.2f}"
        lines.append(
            f"{level['concurrency']} in flight: {level['wall_s']:.1f} s wall; CPU seconds per "
            f"second: client process {level['client_cpu_per_wall_s']:.2f}, "
            f"simulator process {simulator_text}; client CPU per content chunk "
            f"{level['client_cpu_ms_per_chunk']:.2f} ms"
        )
    return "\n".join(lines)


def _loads(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    sys.exit(main())
