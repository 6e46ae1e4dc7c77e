"""The mistralmeter command line: parser, summary table, API client, the run flow, and end to end.

The API client and run-flow tests talk to an in-process fake of the HTTP API (httpx.MockTransport).
The end-to-end tests run `mistralmeter run` through main() against a real embedded stack.
"""

from __future__ import annotations

import csv
import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from rich.console import Console

from mistralmeter import cli
from mistralmeter.api_client import ApiClient, ApiError, format_field_errors
from mistralmeter.processes import CELERY_APP, WSGI_APP, api_command, find_free_port, worker_command
from mistralmeter.run_command import (
    EXIT_API_ERROR,
    EXIT_JOB_FAILED,
    EXIT_OK,
    RichProgressDisplay,
    RunRequest,
    TrackedJob,
    run_evaluation,
    submit_jobs,
    warn_if_unhealthy,
)
from mistralmeter.settings import get_settings
from mistralmeter.stack import EmbeddedStack, StackOptions
from mistralmeter.summary_table import format_mean_interval, summary_text


def _statistics(mean: float | None, p50: float | None = None, p95: float | None = None,
                ci: tuple[float, float] | None = None, n: int = 10) -> dict[str, Any]:
    return {
        "n": n, "mean": mean, "std_dev": None, "min": None, "max": None,
        "p50": p50, "p95": p95, "p99": None,
        "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
    }


def _result(*, simulated: bool) -> dict[str, Any]:
    return {
        "simulated": simulated,
        "dataset": {"name": "mt_bench", "version": "sha256:0123456789abcdef0123"},
        "summary": {
            "mistral-small-latest": {
                "runs": {"total": 10, "succeeded": 9, "failed": 1},
                "error_rate": 0.1,
                "latency": {
                    "total_ms": _statistics(900.0, p50=812.4, p95=1204.2),
                    "time_to_first_token_ms": _statistics(130.0, p50=120.2),
                    "tokens_per_second": _statistics(48.24),
                    "decode_tokens_per_second": _statistics(60.0),
                    "inter_token_latency_ms": _statistics(4.0),
                },
                "tokens": {},
                "quality": {
                    "score": _statistics(7.21, ci=(6.93, 7.49)),
                    "unscored_rate": 0.05,
                    "criteria_scores": {},
                },
                "cost": {
                    "candidate_usd": 0.01, "judge_usd": 0.0023, "per_1000_prompts_usd": 1.23,
                    "estimate": True, "prices_as_of": "2025-06-01",
                },
            }
        },
        "prompts": [],
        "results_url": "/jobs/job-1/results",
    }


# ---------------------------------------------------------------- parser


def test_parser_run_collects_options() -> None:
    """`run` collects repeated models, the JSON parameters and the export formats."""
    args = cli.build_parser().parse_args([
        "run", "mt_bench", "--model", "a", "--model", "b", "--judge-model", "j", "--runs", "3",
        "--params", '{"temperature": 0.7}', "--format", "json,csv", "--output-dir", "out",
    ])
    assert args.handler is cli.handle_run
    assert args.dataset == "mt_bench"
    assert args.models == ["a", "b"]
    assert args.judge_model == "j"
    assert args.runs == 3
    assert args.params == {"temperature": 0.7}
    assert args.formats == ("json", "csv")
    assert args.output_dir == Path("out")
    assert args.api_url is None


def test_parser_run_defaults() -> None:
    """Without options, `run` does one repetition and writes all three formats to ./results."""
    args = cli.build_parser().parse_args(["run", "mt_bench", "--model", "a", "--judge-model", "j"])
    assert args.runs == 1
    assert args.params == {}
    assert args.formats == ("json", "jsonl", "csv")
    assert args.output_dir == Path("results")
    assert args.timeout is None


@pytest.mark.parametrize(
    "extra",
    [
        ["--params", "[1, 2]"],
        ["--params", "{not json"],
        ["--format", "json,xml"],
        ["--runs", "0"],
        ["--runs", "many"],
    ],
)
def test_parser_run_rejects_invalid_values(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid option values stop argparse with exit code 2 and name the option."""
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(["run", "mt_bench", "--model", "a", "--judge-model", "j", *extra])
    assert stop.value.code == 2
    assert extra[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["up"],
        ["run", "mt_bench", "--model", "a", "--judge-model", "j"],
        ["api"],
        ["worker"],
        ["beat"],
        ["flower"],
        ["simulator"],
        ["migrate"],
        ["healthcheck", "services"],
    ],
)
def test_parser_has_subcommand(argv: list[str]) -> None:
    """Every command that compose.yaml and the docs use is registered and parses."""
    assert argv[0] in cli.SUBCOMMANDS
    assert cli.build_parser().parse_args(argv).command == argv[0]


@pytest.mark.parametrize(
    ("flags", "expected"), [([], True), (["--beat"], True), (["--no-beat"], False)]
)
def test_parser_up_starts_beat_by_default(flags: list[str], expected: bool) -> None:
    """Beat runs the schedules and the lost-task recovery, so `up` starts it unless given --no-beat."""
    assert cli.build_parser().parse_args(["up", *flags]).beat is expected


def test_register_subcommand_adds_parser() -> None:
    """A registered builder's subcommand parses, and a second registration of a name is rejected."""

    def add_hello_parser(subparsers: Any) -> None:
        parser = subparsers.add_parser("hello", help="say hello")
        parser.set_defaults(handler=lambda args: 7)

    cli.register_subcommand("hello", add_hello_parser)
    try:
        assert cli.main(["hello"]) == 7
        with pytest.raises(ValueError):
            cli.register_subcommand("hello", add_hello_parser)
    finally:
        del cli.SUBCOMMANDS["hello"]


def test_process_commands_name_the_apps() -> None:
    """The API runs under gunicorn's gthread worker and the Celery worker uses the thread pool."""
    api = api_command("127.0.0.1", 8123, workers=3, threads=4)
    assert api[1:3] == ["-m", "gunicorn"]
    assert api[api.index("--bind") + 1] == "127.0.0.1:8123"
    assert api[api.index("--worker-class") + 1] == "gthread"
    assert api[api.index("--workers") + 1] == "3"
    assert api[api.index("--threads") + 1] == "4"
    assert api[-1] == WSGI_APP

    worker = worker_command(concurrency=50, loglevel="INFO")
    assert worker[worker.index("-A") + 1] == CELERY_APP
    assert worker[worker.index("--pool") + 1] == "threads"
    assert worker[worker.index("--concurrency") + 1] == "50"


# ---------------------------------------------------------------- summary table


def test_summary_text_shows_key_numbers() -> None:
    """The table shows p50/p95 latency, TTFT, tokens/s, quality with its interval, rates and cost."""
    text = summary_text(_result(simulated=False), width=120)
    assert "mistral-small-latest on mt_bench (version sha256:0123456789ab)" in text
    assert "10 (9 succeeded, 1 failed)" in text
    assert "10.0%" in text
    assert "812" in text
    assert "1,204" in text
    assert "120" in text
    assert "48.2" in text
    assert "7.2 [6.9, 7.5]" in text
    assert "5.0%" in text
    assert "$0.0123 (model $0.0100 + judge $0.0023)" in text
    assert "$1.23 per 1000 prompts" in text
    assert "prices as of 2025-06-01" in text


def test_summary_text_marks_simulated_result() -> None:
    """A simulated result carries the SIMULATED mark in the title and a warning under the table."""
    text = summary_text(_result(simulated=True), width=120)
    assert "[SIMULATED]" in text
    assert "not from a real model" in text


def test_summary_text_real_result_has_no_mark() -> None:
    text = summary_text(_result(simulated=False), width=120)
    assert "SIMULATED" not in text


def test_summary_text_prints_na_for_missing_values() -> None:
    """Null statistics and a missing cost print as n/a instead of failing."""
    result = _result(simulated=False)
    summary = result["summary"]["mistral-small-latest"]
    summary["latency"]["total_ms"] = _statistics(None)
    summary["quality"]["score"] = None
    summary["error_rate"] = None
    summary["cost"] = {}
    text = summary_text(result, width=120)
    assert text.count("n/a") == 5


def test_summary_text_without_models() -> None:
    text = summary_text({"simulated": False, "summary": {}})
    assert "no summary" in text


@pytest.mark.parametrize(
    ("statistics", "expected"),
    [
        (_statistics(7.21, ci=(6.93, 7.49)), "7.2 [6.9, 7.5]"),
        (_statistics(7.0, n=1), "7.0"),
        (_statistics(None), "n/a"),
        (None, "n/a"),
    ],
)
def test_format_mean_interval(statistics: dict[str, Any] | None, expected: str) -> None:
    assert format_mean_interval(statistics) == expected


# ---------------------------------------------------------------- API client


def _client(handler: Any) -> ApiClient:
    return ApiClient("http://api.test", transport=httpx.MockTransport(handler))


def test_api_client_error_carries_api_message() -> None:
    """A 422 error envelope becomes an ApiError with the API's message and field errors."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={
            "code": 422, "status": "Unprocessable Entity", "message": "Validation failed",
            "errors": {"json": {"runs": ["Must be greater than or equal to 1."]}},
        })

    with _client(handler) as client, pytest.raises(ApiError) as failure:
        client.submit_dataset_evaluation("mt_bench", model="a", judge_model="j", runs=0)
    assert failure.value.status_code == 422
    assert str(failure.value) == "HTTP 422: Validation failed"
    assert format_field_errors(failure.value.errors) == ["json.runs: Must be greater than or equal to 1."]


def test_api_client_error_without_json_body() -> None:
    """A non-JSON error page (a proxy's 502) still gives a message with the status."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with _client(handler) as client, pytest.raises(ApiError) as failure:
        client.get_job("job-1")
    assert failure.value.status_code == 502
    assert "unexpected response: <html>Bad Gateway</html>" in str(failure.value)


def test_api_client_unreachable_api() -> None:
    """Nothing listening on the port gives an ApiError without a status that names the URL."""
    url = f"http://127.0.0.1:{find_free_port()}"
    with ApiClient(url, timeout_s=2) as client, pytest.raises(ApiError) as failure:
        client.health()
    assert failure.value.status_code is None
    assert f"cannot reach the API at {url}" in str(failure.value)


def test_api_client_submit_sends_body_and_quotes_name() -> None:
    """The dataset name is URL-quoted and the body carries model, judge, runs and params."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"job_id": "job-1", "status": "queued", "location": "/jobs/job-1"})

    with _client(handler) as client:
        accepted = client.submit_dataset_evaluation(
            "my set/v2", model="a", judge_model="j", runs=3, params={"temperature": 0.2}
        )
    assert accepted["job_id"] == "job-1"
    assert seen[0].method == "POST"
    assert seen[0].url.raw_path == b"/datasets/my%20set%2Fv2/evaluate"
    assert json.loads(seen[0].content) == {
        "model": "a", "judge_model": "j", "runs": 3, "params": {"temperature": 0.2}
    }


def test_api_client_get_retries_dropped_connection() -> None:
    """A GET that loses its connection once is retried and succeeds."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(200, json={"id": "job-1", "status": "running"})

    with _client(handler) as client:
        assert client.get_job("job-1")["status"] == "running"
    assert len(calls) == 2


# ---------------------------------------------------------------- run flow against a fake API


class FakeApi:
    """Just enough of the HTTP API for the run flow: submit, job bodies in sequence, cancel, export."""

    def __init__(self, job_bodies: list[dict[str, Any]], *, reject_model: str | None = None,
                 interrupt_on_poll: int | None = None) -> None:
        self.job_bodies = job_bodies
        self.reject_model = reject_model
        self.interrupt_on_poll = interrupt_on_poll
        self.polls = 0
        self.submitted: list[dict[str, Any]] = []
        self.cancelled: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/evaluate"):
            body = json.loads(request.content)
            if body["model"] == self.reject_model:
                return httpx.Response(404, json={"code": 404, "status": "Not Found",
                                                 "message": f"unknown model {body['model']!r}"})
            self.submitted.append(body)
            job_id = f"job-{len(self.submitted)}"
            accepted = {"job_id": job_id, "status": "queued", "location": f"/jobs/{job_id}"}
            return httpx.Response(202, json=accepted)
        if request.method == "POST" and path.endswith("/cancel"):
            self.cancelled.append(path.split("/")[2])
            return httpx.Response(202, json={"status": "cancelled"})
        if path.endswith("/results"):
            export_format = request.url.params["format"]
            return httpx.Response(200, content=f"export as {export_format}".encode())
        self.polls += 1
        if self.interrupt_on_poll == self.polls:
            raise KeyboardInterrupt
        body = self.job_bodies[min(self.polls - 1, len(self.job_bodies) - 1)]
        return httpx.Response(200, json={"id": path.split("/")[2], **body})


def _job(status: str, done: int, failed: int = 0, **extra: Any) -> dict[str, Any]:
    return {"status": status, "progress": {"done": done, "failed": failed, "total": 10},
            "simulated": True, **extra}


def _request(
    tmp_path: Path, models: tuple[str, ...] = ("mistral-small-latest",), **overrides: Any
) -> RunRequest:
    values: dict[str, Any] = dict(
        dataset="mt_bench", models=models, judge_model="mistral-large-latest", runs=1, params={},
        output_dir=tmp_path / "results", formats=("json", "csv"), poll_interval_s=0.01,
    )
    values.update(overrides)
    return RunRequest(**values)


def _plain_console() -> tuple[Console, io.StringIO]:
    output = io.StringIO()
    return Console(file=output, width=120, soft_wrap=True), output


def test_run_evaluation_reports_and_exports(tmp_path: Path) -> None:
    """A succeeded job prints progress lines and the summary, and its exports are written."""
    api = FakeApi([_job("queued", 0), _job("running", 4),
                   _job("succeeded", 10, result=_result(simulated=True))])
    console, output = _plain_console()

    with ApiClient("http://api.test", transport=httpx.MockTransport(api.handle)) as client:
        exit_code = run_evaluation(client, _request(tmp_path), console)

    text = output.getvalue()
    assert exit_code == EXIT_OK
    assert "job job-1 (mistral-small-latest) [SIMULATED]: running, 4/10 runs done, 0 failed" in text
    assert "7.2 [6.9, 7.5]" in text
    assert (tmp_path / "results" / "job-1.json").read_text() == "export as json"
    assert (tmp_path / "results" / "job-1.csv").read_text() == "export as csv"
    assert not (tmp_path / "results" / "job-1.jsonl").exists()
    assert "http://api.test/jobs/job-1/results" in text


def test_run_evaluation_failed_job_exits_nonzero(tmp_path: Path) -> None:
    """A failed job prints the job's error message and gives exit code 1, with no export."""
    api = FakeApi([_job("failed", 3, 7, error={"message": "judge model unavailable"})])
    console, output = _plain_console()

    with ApiClient("http://api.test", transport=httpx.MockTransport(api.handle)) as client:
        exit_code = run_evaluation(client, _request(tmp_path), console)

    assert exit_code == EXIT_JOB_FAILED
    assert "Job job-1 (mistral-small-latest) failed: judge model unavailable" in output.getvalue()
    assert not (tmp_path / "results").exists()


def test_run_evaluation_cancels_jobs_on_interrupt(tmp_path: Path) -> None:
    """Ctrl-C while polling sends a cancel request for every unfinished job, then propagates."""
    api = FakeApi([_job("running", 1)], interrupt_on_poll=3)
    console, output = _plain_console()

    with ApiClient("http://api.test", transport=httpx.MockTransport(api.handle)) as client:
        with pytest.raises(KeyboardInterrupt):
            run_evaluation(client, _request(tmp_path, models=("a", "b")), console)

    assert api.cancelled == ["job-1", "job-2"]
    assert "Cancelled job job-1 (a)." in output.getvalue()


def test_run_evaluation_timeout_keeps_jobs(tmp_path: Path) -> None:
    """A job still running at --timeout gives exit code 1, names the job and is not cancelled."""
    api = FakeApi([_job("running", 1)])
    console, output = _plain_console()

    with ApiClient("http://api.test", transport=httpx.MockTransport(api.handle)) as client:
        exit_code = run_evaluation(client, _request(tmp_path, timeout_s=0.05), console)

    assert exit_code == EXIT_JOB_FAILED
    assert "did not finish within" in output.getvalue()
    assert "job-1" in output.getvalue()
    assert api.cancelled == []


def test_rich_progress_display_shows_counts() -> None:
    """On a terminal, the progress bar shows finished runs out of the total and the failures."""
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=120, color_system=None)
    display = RichProgressDisplay(console)
    display.update(TrackedJob("mistral-small-latest", "job-1", _job("running", 3, failed=1)))
    display.close()

    text = output.getvalue()
    assert "mistral-small-latest [SIMULATED]" in text
    assert "4/10" in text
    assert "1 failed" in text


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ({"status": "ok", "database": "ok", "redis": "ok", "workers": 2}, ""),
        ({"status": "degraded", "database": "ok", "redis": "ok", "workers": 0}, "no Celery worker"),
        ({"status": "unavailable", "database": "error: OperationalError", "redis": "ok", "workers": 0},
         "unhealthy"),
    ],
)
def test_warn_if_unhealthy(health: dict[str, Any], expected: str) -> None:
    """A healthy API prints nothing; no worker or a failing service prints a warning."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200 if health["status"] != "unavailable" else 503, json=health)

    console, output = _plain_console()
    with _client(handler) as client:
        warn_if_unhealthy(client, console)

    if expected:
        assert output.getvalue().startswith("warning: ")
        assert expected in output.getvalue()
    else:
        assert output.getvalue() == ""


def test_submit_jobs_cancels_earlier_jobs_on_rejection(tmp_path: Path) -> None:
    """When the API rejects the second model, the first model's job is cancelled."""
    api = FakeApi([_job("queued", 0)], reject_model="unknown-model")

    with ApiClient("http://api.test", transport=httpx.MockTransport(api.handle)) as client:
        with pytest.raises(ApiError) as failure:
            submit_jobs(client, _request(tmp_path, models=("mistral-small-latest", "unknown-model")))

    assert "unknown model 'unknown-model'" in str(failure.value)
    assert api.cancelled == ["job-1"]


# ---------------------------------------------------------------- end to end on the embedded stack

FAST_SIMULATOR_CONFIG = {
    "seed": 3,
    "models": {
        "sim-small": {"ttft_ms": 20, "itl_ms": 1, "output_tokens": 20, "quality": 6.0},
        "sim-judge": {"ttft_ms": 5, "itl_ms": 0, "output_tokens": 60},
    },
}


@pytest.fixture(scope="module")
def isolated_environment() -> Iterator[None]:
    """No external services or API key, so stacks start their own PostgreSQL, Redis and simulator."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DATABASE_URL", "REDIS_URL", "MISTRAL_API_KEY", "MISTRAL_SERVER_URL"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def restore_sigterm_handler() -> Iterator[None]:
    # main() installs a SIGTERM handler for `run` and `up`; the test process keeps its own.
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, isolated_environment: None
) -> Iterator[EmbeddedStack]:
    state_dir = tmp_path_factory.mktemp("stack")
    config = state_dir / "simulator.json"
    config.write_text(json.dumps(FAST_SIMULATOR_CONFIG))
    stack = EmbeddedStack(StackOptions(
        state_dir=state_dir / "state", simulator_config=config, worker_concurrency=8, start_timeout_s=60
    ))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _run_args(dataset: str, model: str, judge: str, *extra: str) -> list[str]:
    return ["run", dataset, "--model", model, "--judge-model", judge, "--runs", "1",
            "--poll-interval", "0.2", *extra]


def test_main_run_against_api_url(
    running_stack: EmbeddedStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --api-url` evaluates the dataset, prints a SIMULATED summary and writes all exports."""
    assert running_stack.endpoints is not None
    exit_code = cli.main(_run_args(
        "general_qa", "sim-small", "sim-judge",
        "--api-url", running_stack.endpoints.api_url, "--output-dir", str(tmp_path),
    ))
    output = capsys.readouterr().out

    assert exit_code == EXIT_OK, output
    assert "sim-small on general_qa" in output
    assert "[SIMULATED]" in output
    assert "22 (22 succeeded, 0 failed)" in output
    exports = {path.suffix: path for path in tmp_path.iterdir()}
    assert set(exports) == {".json", ".jsonl", ".csv"}
    assert len(json.loads(exports[".json"].read_text())) == 22
    assert len(exports[".jsonl"].read_text().splitlines()) == 22
    assert len(list(csv.DictReader(io.StringIO(exports[".csv"].read_text())))) == 22


def test_main_run_uses_stack_running_on_state_dir(
    running_stack: EmbeddedStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --api-url, `run` submits to the stack that has locked the state folder."""
    exit_code = cli.main(_run_args(
        "coding", "sim-small", "sim-judge", "--format", "json",
        "--state-dir", str(running_stack.state_dir), "--output-dir", str(tmp_path),
    ))
    captured = capsys.readouterr()

    assert exit_code == EXIT_OK, captured.err
    assert f"Using the running stack at {running_stack.endpoints.api_url}" in captured.err
    assert "sim-small on coding" in captured.out


@pytest.mark.parametrize(
    ("dataset", "model", "judge"),
    [("no_such_dataset", "sim-small", "sim-judge"), ("general_qa", "sim-small", "sim-small")],
)
def test_main_run_prints_api_error(
    running_stack: EmbeddedStack, dataset: str, model: str, judge: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown dataset or a judge equal to the model gives the API's message and exit code 3."""
    exit_code = cli.main(_run_args(
        dataset, model, judge, "--api-url", running_stack.endpoints.api_url, "--output-dir", str(tmp_path)
    ))
    err = capsys.readouterr().err

    assert exit_code == EXIT_API_ERROR
    assert err.startswith("error: HTTP 4")
    assert dataset in err or "judge" in err


def test_main_run_starts_and_stops_embedded_stack(
    isolated_environment: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a running stack, `run` starts one, evaluates with the simulator, and stops every part."""
    state_dir = tmp_path / "state"
    exit_code = cli.main(_run_args(
        "coding", "mistral-small-latest", "mistral-large-latest", "--format", "csv",
        "--state-dir", str(state_dir), "--output-dir", str(tmp_path / "results"),
    ))
    captured = capsys.readouterr()

    assert exit_code == EXIT_OK, captured.err
    assert "Embedded stack ready" in captured.err
    assert "mistral-small-latest on coding" in captured.out
    assert "[SIMULATED]" in captured.out
    assert len(list((tmp_path / "results").glob("*.csv"))) == 1
    assert list((state_dir / "run").glob("*.pid")) == []
    assert not (state_dir / "postgres" / "postmaster.pid").exists()
    leftovers = [
        process.pid for process in psutil.process_iter(["cmdline"])
        if str(state_dir) in " ".join(process.info["cmdline"] or [])
    ]
    assert leftovers == []
