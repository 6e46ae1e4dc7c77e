"""The `mistralmeter import-llmbar` command: store an LLMBar result file in DATABASE_URL."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import SQLAlchemyError

from mistralmeter.llmbar_import import DEFAULT_PATH, display_path, import_llmbar
from mistralmeter.settings import get_settings

EXIT_OK = 0
EXIT_DATABASE_ERROR = 1
EXIT_INVALID_FILE = 2

IMPORT_EPILOG = """\
exit codes: 0 imported, or imported before (nothing stored again); 1 the database could not be
reached or rejected the data; 2 the file is missing or not an LLMBar result file.
"""


def add_import_llmbar_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-llmbar",
        help="store an LLMBar result file (human preferences and judge verdicts) in the database",
        description=(
            "Store each record of an LLMBar result file as two runs of one prompt, the human\n"
            "majority preference on them and the judge's verdicts in both orders, all in one job\n"
            "of kind import in DATABASE_URL. GET /ratings/stats?job_id=<job id> then reports\n"
            "the judge-human agreement. Importing the same file again stores nothing."
        ),
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=None,
        help=f"LLMBar result file (default: {display_path(DEFAULT_PATH)})",
    )
    parser.add_argument(
        "--judge-model",
        default=None,
        metavar="MODEL",
        help="name of the judge model that wrote the verdicts "
        "(default: the file name's prefix, e.g. gpt-4 for gpt-4_vanilla_result.json)",
    )
    parser.set_defaults(handler=handle_import_llmbar)


def handle_import_llmbar(args: argparse.Namespace) -> int:
    """Import the file named in args, print the job id and return the exit code."""
    settings = get_settings()
    try:
        result = import_llmbar(settings, args.path, judge_model=args.judge_model)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID_FILE
    except SQLAlchemyError as exc:
        print(
            f"error: the database at DATABASE_URL failed: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}; check that PostgreSQL is running and run "
            "`mistralmeter migrate` if the tables are missing",
            file=sys.stderr,
        )
        return EXIT_DATABASE_ERROR

    pairs = f"{result.pairs} pair{'' if result.pairs == 1 else 's'}"
    if result.created:
        print(f"Imported {pairs} as job {result.job_id}.")
    else:
        print(f"Already imported as job {result.job_id} ({pairs}); nothing stored.")
    print(f"Agreement: GET /ratings/stats?job_id={result.job_id}")
    return EXIT_OK
