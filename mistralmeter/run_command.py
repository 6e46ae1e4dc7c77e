"""The `mistralmeter run` flow: submit one dataset evaluation per model, follow it, report it.

The caller provides an ApiClient for a running stack (an external one or the embedded stack it
started). Progress shows as rich progress bars on a terminal and as plain lines otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mistralmeter.api_client import TERMINAL_STATUSES, ApiClient, ApiError
from mistralmeter.summary_table import SIMULATED_MARK, render_summary

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_API_ERROR = 3
EXIT_STACK_FAILED = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@dataclass(frozen=True)
class RunRequest:
    """Request of one `mistralmeter run`: the jobs to submit and where to write the exports."""

    dataset: str
    models: tuple[str, ...]
    judge_model: str
    runs: int
    params: dict[str, Any]
    output_dir: Path
    formats: tuple[str, ...]
    poll_interval_s: float = 0.5
    timeout_s: float | None = None


@dataclass
class TrackedJob:
    """A submitted job and the latest GET /jobs/{id} body seen for it."""

    model: str
    job_id: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.body.get("status", "queued"))

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobWaitTimeout(Exception):
    """The jobs did not finish within the requested time."""


class ProgressDisplay(Protocol):
    def update(self, job: TrackedJob) -> None: ...

    def close(self) -> None: ...


def submit_jobs(client: ApiClient, request: RunRequest) -> list[TrackedJob]:
    """Submit one dataset evaluation per model; cancel the ones already submitted if one fails."""
    jobs: list[TrackedJob] = []
    for model in request.models:
        try:
            accepted = client.submit_dataset_evaluation(
                request.dataset,
                model=model,
                judge_model=request.judge_model,
                runs=request.runs,
                params=request.params,
            )
        except ApiError:
            cancel_jobs(client, jobs)
            raise
        jobs.append(TrackedJob(model=model, job_id=accepted["job_id"], body=accepted))
    return jobs


def wait_for_jobs(
    client: ApiClient,
    jobs: list[TrackedJob],
    display: ProgressDisplay,
    *,
    poll_interval_s: float,
    timeout_s: float | None,
    check_stack: Callable[[], object] | None = None,
) -> None:
    """Poll GET /jobs/{id} until every job has finished, updating the display after each poll.

    check_stack runs before each poll and raises when a part of the stack has stopped, since
    the jobs would then never finish.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if check_stack is not None:
            check_stack()
        for job in jobs:
            if not job.finished:
                job.body = client.get_job(job.job_id)
            display.update(job)
        if all(job.finished for job in jobs):
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise JobWaitTimeout(f"the jobs did not finish within {timeout_s:.0f} s")
        time.sleep(poll_interval_s)


def cancel_jobs(client: ApiClient, jobs: list[TrackedJob], console: Console | None = None) -> None:
    """Ask the API to cancel every job that has not finished; report failures without raising."""
    for job in jobs:
        if job.finished:
            continue
        try:
            client.cancel_job(job.job_id)
            message = f"Cancelled job {job.job_id} ({job.model})."
        except ApiError as exc:
            message = f"Could not cancel job {job.job_id} ({job.model}): {exc}"
        if console is not None:
            console.print(message)


def warn_if_unhealthy(client: ApiClient, console: Console) -> None:
    """Print a warning when GET /health reports a failing part or no worker; jobs would wait.

    An API that cannot be reached raises ApiError, so the command stops before submitting.
    """
    health = client.health()
    services_ok = health.get("database") == "ok" and health.get("redis") == "ok"
    workers = health.get("workers") or 0
    if services_ok and workers >= 1:
        return
    if services_ok:
        problem = "no Celery worker responded, so the jobs will wait in the queue until one starts"
    else:
        problem = f"the API reports itself unhealthy: {health}"
    console.print(f"warning: {problem}.", style="yellow", highlight=False)


def make_progress_display(console: Console) -> ProgressDisplay:
    """Return progress bars on a terminal, plain lines when output goes to a file or a pipe."""
    if console.is_terminal:
        return RichProgressDisplay(console)
    return PlainProgressDisplay(console)


class RichProgressDisplay:
    """One progress bar per job, counting finished runs (succeeded and failed) out of the total."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed  {task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[str, Any] = {}
        self._progress.start()

    def update(self, job: TrackedJob) -> None:
        done, failed, total = _progress_counts(job.body)
        description = job.model + (f" [{SIMULATED_MARK}]" if job.body.get("simulated") else "")
        if job.job_id not in self._tasks:
            self._tasks[job.job_id] = self._progress.add_task(
                description, total=total or None, failed=failed, status=job.status
            )
        self._progress.update(
            self._tasks[job.job_id],
            description=description,
            completed=done + failed,
            total=total or None,
            failed=failed,
            status=job.status,
        )

    def close(self) -> None:
        self._progress.stop()


class PlainProgressDisplay:
    """A line per job whenever its status or counts change."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._last: dict[str, tuple[str, int, int, int]] = {}

    def update(self, job: TrackedJob) -> None:
        done, failed, total = _progress_counts(job.body)
        state = (job.status, done, failed, total)
        if self._last.get(job.job_id) == state:
            return
        self._last[job.job_id] = state
        simulated = f" [{SIMULATED_MARK}]" if job.body.get("simulated") else ""
        self._console.print(
            f"job {job.job_id} ({job.model}){simulated}: {job.status}, "
            f"{done}/{total} runs done, {failed} failed",
            highlight=False,
        )

    def close(self) -> None:
        pass


def report_jobs(
    client: ApiClient,
    jobs: list[TrackedJob],
    request: RunRequest,
    console: Console,
    *,
    api_stays_up: bool = True,
) -> int:
    """Print each job's summary or error, write the exports, and return the exit code.

    api_stays_up is True when the API outlives this command, so its results URL is worth printing.
    """
    exit_code = EXIT_OK
    for job in jobs:
        if job.status != "succeeded":
            console.print(_failure_message(job), style="bold red", highlight=False)
            exit_code = max(exit_code, EXIT_JOB_FAILED)
            continue
        result = job.body.get("result") or {}
        render_summary(result, console)
        try:
            paths = write_exports(client, job.job_id, request.output_dir, request.formats)
        except (ApiError, OSError) as exc:
            console.print(f"Could not export the results of job {job.job_id}: {exc}", style="bold red")
            exit_code = EXIT_API_ERROR
            continue
        message = f"Full results of job {job.job_id}: " + ", ".join(str(path) for path in paths)
        if api_stays_up:
            results_path = result.get("results_url") or f"/jobs/{job.job_id}/results"
            message += f" (also at {client.base_url}{results_path})"
        console.print(message, highlight=False)
    return exit_code


def write_exports(
    client: ApiClient, job_id: str, output_dir: Path, formats: tuple[str, ...]
) -> list[Path]:
    """Download the job's results in each format to output_dir/<job_id>.<format>."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for export_format in formats:
        path = output_dir / f"{job_id}.{export_format}"
        path.write_bytes(client.export_results(job_id, export_format))
        paths.append(path)
    return paths


def run_evaluation(
    client: ApiClient,
    request: RunRequest,
    console: Console,
    *,
    check_stack: Callable[[], object] | None = None,
    api_stays_up: bool = True,
) -> int:
    """Submit, follow and report the jobs of one `mistralmeter run`; return the exit code.

    Any exception while the jobs run (Ctrl-C, SIGTERM, a stopped stack) cancels the
    unfinished jobs and is raised again. An ApiError while polling is raised without cancelling.
    """
    jobs = submit_jobs(client, request)
    for job in jobs:
        console.print(f"Submitted job {job.job_id} for {job.model}.", highlight=False)

    display = make_progress_display(console)
    try:
        wait_for_jobs(
            client,
            jobs,
            display,
            poll_interval_s=request.poll_interval_s,
            timeout_s=request.timeout_s,
            check_stack=check_stack,
        )
    except BaseException as exc:
        display.close()
        if isinstance(exc, JobWaitTimeout):
            console.print(
                f"{exc}; they keep running. Follow them with GET {client.base_url}/jobs/<id>: "
                + ", ".join(job.job_id for job in jobs if not job.finished),
                style="bold red",
                highlight=False,
            )
            return EXIT_JOB_FAILED
        if not isinstance(exc, ApiError):
            console.print("Stopping: cancelling the unfinished jobs.")
            cancel_jobs(client, jobs, console)
        raise
    display.close()
    return report_jobs(client, jobs, request, console, api_stays_up=api_stays_up)


def _progress_counts(body: dict[str, Any]) -> tuple[int, int, int]:
    progress = body.get("progress") or {}
    return (
        int(progress.get("done") or 0),
        int(progress.get("failed") or 0),
        int(progress.get("total") or 0),
    )


def _failure_message(job: TrackedJob) -> str:
    error = job.body.get("error") or {}
    reason = error.get("message") if isinstance(error, dict) else None
    if job.status == "cancelled":
        return f"Job {job.job_id} ({job.model}) was cancelled."
    return f"Job {job.job_id} ({job.model}) {job.status}: {reason or 'no error message'}"
