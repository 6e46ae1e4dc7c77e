"""Measure how late this process's threads get the CPU, to flag timings a starved client inflated.

A daemon thread sleeps PERIOD_S in a loop and records how late it woke up. The lateness
covers both waiting for the GIL (other threads of this process running Python code) and
the operating system not scheduling the process (other processes busy on every core). A
stream read in the same process is delayed by the same stalls, so its timestamps are late
by about as much.

Cost: one thread per process, started on first use, that wakes 200 times a second. That
used about 0.7% of one core on an idle 2-vCPU VM (time.process_time over 2 s). The buffer
keeps SAMPLES_KEPT samples, about 2.7 MB, and a call's query reads only its own window.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

PERIOD_S = 0.005

# Samples covering 120 s, the default request timeout.
# NOTE: a call that streams for longer gets the max over its last 120 s only.
SAMPLES_KEPT = int(120.0 / PERIOD_S)


class LagProbe:
    """A sleeping thread that records each wake-up's lateness as (woke_at, lateness_s)."""

    def __init__(self, period_s: float = PERIOD_S, samples_kept: int = SAMPLES_KEPT) -> None:
        self.period_s = period_s
        self._samples_kept = samples_kept
        self._reset()

    def _reset(self) -> None:
        # This is also the fork handler, because a child process has no probe thread and may
        # have inherited a lock that a parent thread held at the fork.
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque(maxlen=self._samples_kept)
        self._due_at: float | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def ensure_started(self) -> None:
        """Start the probe thread unless it is already running. Any thread may call this."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="client-lag-probe", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            due_at = time.perf_counter() + self.period_s
            with self._lock:
                self._due_at = due_at
            time.sleep(self.period_s)
            woke_at = time.perf_counter()
            self.record(woke_at, max(0.0, woke_at - due_at))

    def record(self, woke_at: float, lateness_s: float) -> None:
        """Store one sample. woke_at is a perf_counter time, not earlier than the last sample's."""
        with self._lock:
            self._samples.append((woke_at, lateness_s))

    def max_lag_ms(self, start: float, end: float) -> float | None:
        """Return the max lateness in ms within [start, end] (perf_counter times).

        A sample covers the stall from woke_at - lateness_s to woke_at. Only the part inside
        the window counts, because a stall that ended before the window began delayed nothing
        the window measures. The probe's current sleep counts too when it is overdue, because
        after a stall the reading thread may finish before the probe runs again. Returns None
        when no sample overlaps the window.
        """
        now = time.perf_counter()
        with self._lock:
            due_at = self._due_at
            # Newest first, so a call reads only the samples of its own window.
            recent = []
            for woke_at, lateness_s in reversed(self._samples):
                if woke_at < start:
                    break
                recent.append((woke_at, lateness_s))

        overlaps = [
            _overlap(woke_at - lateness_s, woke_at, start, end) for woke_at, lateness_s in recent
        ]
        if due_at is not None and now > due_at:
            overlaps.append(_overlap(due_at, now, start, end))
        in_window = [overlap for overlap in overlaps if overlap is not None]
        return max(in_window) * 1000.0 if in_window else None


def _overlap(stall_start: float, stall_end: float, start: float, end: float) -> float | None:
    """Return how long [stall_start, stall_end] overlaps [start, end], or None if they are apart."""
    if stall_end < start or stall_start > end:
        return None
    return max(0.0, min(stall_end, end) - max(stall_start, start))


probe = LagProbe()
os.register_at_fork(after_in_child=probe._reset)


def max_lag_ms(start: float, end: float) -> float | None:
    """Return the max lateness in ms of this process's probe within [start, end]."""
    return probe.max_lag_ms(start, end)


def ensure_started() -> None:
    probe.ensure_started()
