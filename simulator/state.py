"""Mutable simulator state: config, seeded generators, request log, statistics, rate limits.

All of it lives on the server's event loop thread and is changed only there, so it needs no
locks.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simulator.generation import model_rng
from simulator.judge import QualityRegistry
from simulator.profiles import SimulatorConfig

LOG_CAPACITY = 10_000
RPM_WINDOW_S = 60.0


@dataclass
class RequestRecord:
    """One chat-completions request as the simulator handled it; times are Unix seconds."""

    request_id: str
    model: str
    kind: str
    stream: bool
    received_at: float
    random_seed: int | None = None
    status: int | None = None
    fault: str | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    output_tokens: int | None = None
    tokens_sent: int = 0
    # Worst lateness of a streamed token against its deadline, in ms. A high value means the
    # simulator itself was the bottleneck, so measured timings exceed the injected ones.
    max_send_lag_ms: float = 0.0
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    outcome: str = "in_progress"
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """Ring buffer of the last LOG_CAPACITY requests, oldest first."""

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=capacity)

    def add(self, record: RequestRecord) -> None:
        self._records.append(record)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        return [record.to_json() for record in list(self._records)[-limit:]]

    def clear(self) -> None:
        self._records.clear()


@dataclass
class Stats:
    """Counters over chat-completions requests; admin endpoints are not counted."""

    total_requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    in_flight: int = 0
    max_concurrent: int = 0
    client_disconnects: int = 0

    def begin(self) -> None:
        self.total_requests += 1
        self.in_flight += 1
        self.max_concurrent = max(self.max_concurrent, self.in_flight)

    def end(self, status: int | None, disconnected: bool) -> None:
        """Count a finished request; status is None when no response was started."""
        self.in_flight -= 1
        if status is not None:
            self.by_status[str(status)] += 1
        if disconnected:
            self.client_disconnects += 1

    def reset(self) -> None:
        """Clear the counters; requests still in flight stay counted as in flight."""
        self.total_requests = 0
        self.by_status.clear()
        self.max_concurrent = self.in_flight
        self.client_disconnects = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "total_requests": self.total_requests,
            "by_status": dict(sorted(self.by_status.items())),
            "max_concurrent": self.max_concurrent,
            "in_flight": self.in_flight,
            "client_disconnects": self.client_disconnects,
        }


class RpmLimiter:
    """Per-model requests-per-minute limit over a sliding 60 s window of accepted requests."""

    def __init__(self) -> None:
        self._accepted: dict[str, deque[float]] = {}

    def acquire(self, model: str, limit: int, now: float) -> float | None:
        """Count the request and return None, or return the seconds until one is allowed."""
        window = self._accepted.setdefault(model, deque())
        while window and window[0] <= now - RPM_WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return max(window[0] + RPM_WINDOW_S - now, 0.001)
        window.append(now)
        return None

    def clear(self) -> None:
        self._accepted.clear()


class SimulatorState:
    """Everything one simulator app instance keeps between requests."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.registry = QualityRegistry()
        self.log = RequestLog()
        self.stats = Stats()
        self.limiter = RpmLimiter()
        self._generators: dict[tuple[str, str], np.random.Generator] = {}

    def replace_config(self, config: SimulatorConfig) -> None:
        """Switch to a new config; generators and rate-limit windows start afresh."""
        self.config = config
        self._generators.clear()
        self.limiter.clear()

    def reset(self) -> None:
        """Clear the log, statistics, rate-limit windows and generators; keep the registry.

        The registry stays because answers generated before a reset may still be judged after it.
        """
        self.log.clear()
        self.stats.reset()
        self.limiter.clear()
        self._generators.clear()

    def generator(self, model: str, purpose: str) -> np.random.Generator:
        """Return the model's persistent generator for "plan" or "faults" draws."""
        key = (model, purpose)
        if key not in self._generators:
            self._generators[key] = model_rng(self.config.seed, model, purpose)
        return self._generators[key]

