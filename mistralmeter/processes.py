"""Child processes of the embedded stack: the command that starts each part, and its lifecycle.

Every child runs in its own session (so its process group id equals its pid), writes stdout and
stderr to one log file, and records its pid in a pid file. Stopping sends SIGTERM to the whole
group, then SIGKILL after a grace period. A pid file that outlives its launcher (after a crash or
SIGKILL) lets the next launcher stop the leftover group before it starts new children.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import psutil

from mistralmeter.settings import environment_copy

logger = logging.getLogger(__name__)

WSGI_APP = "api.wsgi:app"
CELERY_APP = "workers.celery_app:celery_app"
LOOPBACK_HOST = "127.0.0.1"
DEFAULT_GRACE_PERIOD_S = 10.0

# Linux prctl option that delivers a signal to a child when its parent thread exits.
_PR_SET_PDEATHSIG = 1


MAX_REQUEST_LINE_BYTES = 8190


def api_command(host: str, port: int, *, workers: int, threads: int) -> list[str]:
    """Return the gunicorn command that serves the Flask API with threaded (gthread) workers."""
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{host}:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
        "--worker-class", "gthread",
        "--access-logfile", "-",
        # gunicorn 23+ binds a control socket in the home folder; parallel stacks would collide.
        "--no-control-socket",
        # gunicorn's maximum. The default of 4094 bytes cut off a `comment` of 2,000 characters
        # sent in the query string of POST /rate with a 414 HTML page.
        "--limit-request-line", str(MAX_REQUEST_LINE_BYTES),
        WSGI_APP,
    ]


def worker_command(
    *, concurrency: int, loglevel: str, hostname: str | None = None, queues: str | None = None
) -> list[str]:
    """Return the Celery worker command; the thread pool suits tasks that wait on model calls."""
    command = [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
        "--loglevel", loglevel,
        "--pool", "threads",
        "--concurrency", str(concurrency),
    ]
    if hostname:
        command += ["--hostname", hostname]
    if queues:
        command += ["--queues", queues]
    return command


def beat_command(*, loglevel: str, schedule_file: Path | None = None) -> list[str]:
    """Return the Celery beat command; schedule_file is where beat keeps its last-run times."""
    command = [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel", loglevel]
    if schedule_file is not None:
        command += ["--schedule", str(schedule_file)]
    return command


def flower_command(*, host: str, port: int) -> list[str]:
    """Return the Flower command; Flower reads the broker URL from the Celery app's settings."""
    return [
        sys.executable, "-m", "celery", "-A", CELERY_APP, "flower",
        f"--address={host}", f"--port={port}",
    ]


def simulator_command(host: str, port: int, *, config: Path | None = None) -> list[str]:
    """Return the command that starts the Mistral-compatible simulator."""
    command = [sys.executable, "-m", "simulator", "--host", host, "--port", str(port)]
    if config is not None:
        command += ["--config", str(config)]
    return command


def migrate_command() -> list[str]:
    """Return the command that applies the database migrations (alembic upgrade head)."""
    return [sys.executable, "-m", "mistralmeter.cli", "migrate"]


def find_free_port(host: str = LOOPBACK_HOST) -> int:
    """Return a TCP port that is free on host right now.

    NOTE: another program can take the port before the child binds it. The child then fails
    to start, and the stack's error names the child's log file.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """Return this process's environment with overrides applied, for a child process.

    This passes the environment on unchanged (PATH, MISTRAL_API_KEY, MISTRALMETER_* tuning);
    it does not read settings, which stay in mistralmeter/settings.py.
    """
    environment = environment_copy()
    environment.update(overrides)
    # Unbuffered output keeps a child's log file current when it is read after a failure.
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def _terminate_with_parent() -> None:
    # Runs in the child between fork and exec. Without it, a launcher killed with SIGKILL would
    # leave its children running; the pid files cover the systems where prctl is unavailable.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class ManagedProcess:
    """One child process with its log file and pid file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        pid_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.pid_path = pid_path
        self.env = dict(env)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def start(self) -> None:
        """Start the child with its output appended to the log file, and write its pid file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            # One header line per start, so a log that spans several starts can be split.
            command = shlex.join(self.argv).replace("\n", "\\n")
            log_file.write(f"--- {started} starting: {command}\n".encode())
            log_file.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,
            )
        _write_pid_file(self.pid_path, self._popen.pid)
        logger.info("process started: %s pid=%s log=%s", self.name, self._popen.pid, self.log_path)

    def exit_code(self) -> int | None:
        """Return the exit code if the child has exited, None while it runs."""
        if self._popen is None:
            return None
        return self._popen.poll()

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send signum to the child's process group, which includes the children it forked."""
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to timeout_s seconds for the child to exit; return its exit code or None."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_period_s: float = DEFAULT_GRACE_PERIOD_S) -> None:
        stop_processes([self], grace_period_s)


def stop_processes(
    processes: Iterable[ManagedProcess], grace_period_s: float = DEFAULT_GRACE_PERIOD_S
) -> None:
    """Stop the processes together: SIGTERM to every group, then SIGKILL to what remains.

    Every group receives SIGTERM first, so the grace period is shared instead of added up.
    Pid files are removed once a process is gone.
    """
    processes = [process for process in processes if process.pid is not None]
    for process in processes:
        if process.is_running():
            logger.info("process stopping: %s pid=%s", process.name, process.pid)
        # Signal the group even when the leader exited: its own children may still run.
        process.signal_group(signal.SIGTERM)

    deadline = time.monotonic() + grace_period_s
    for process in processes:
        process.wait(max(0.0, deadline - time.monotonic()))
        _wait_for_group_exit(process.pid, max(0.0, deadline - time.monotonic()))

    for process in processes:
        if process.is_running() or _group_alive(process.pid):
            logger.warning(
                "process killed after grace period: %s pid=%s grace_s=%s",
                process.name, process.pid, grace_period_s,
            )
            process.signal_group(signal.SIGKILL)
            process.wait(5.0)
        process.pid_path.unlink(missing_ok=True)


def stop_leftover_process(pid_path: Path, grace_period_s: float = DEFAULT_GRACE_PERIOD_S) -> int | None:
    """Stop the process group recorded in pid_path if that exact process still runs.

    The pid file stores the process start time as well, so a pid that the system has since
    given to an unrelated process is left alone. Returns the pid that was stopped, or None.
    """
    record = _read_pid_file(pid_path)
    pid_path.unlink(missing_ok=True)
    if record is None:
        return None
    pid, create_time = record
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.5:
            return None
    except psutil.NoSuchProcess:
        return None

    logger.warning("leftover process stopping: pid=%s pid_file=%s", pid, pid_path)
    _signal_group(pid, signal.SIGTERM)
    if not _wait_for_group_exit(pid, grace_period_s):
        _signal_group(pid, signal.SIGKILL)
        _wait_for_group_exit(pid, 5.0)
    return pid


def _write_pid_file(pid_path: Path, pid: int) -> None:
    try:
        create_time = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0
    pid_path.write_text(json.dumps({"pid": pid, "create_time": create_time}))


def _read_pid_file(pid_path: Path) -> tuple[int, float] | None:
    try:
        record = json.loads(pid_path.read_text())
        return int(record["pid"]), float(record["create_time"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        logger.warning("pid file ignored because it is malformed: %s", pid_path)
        return None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int | None) -> bool:
    if pgid is None:
        return False
    try:
        # Signal 0 checks that some process in the group exists without affecting it.
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    # killpg(0) also succeeds for zombies that our own Popen has not reaped yet.
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.info["pid"]) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def _wait_for_group_exit(pgid: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
