#!/usr/bin/env python3
"""Set up a virtual environment and run the demo or the tests: the README's two commands.

    python3 quickstart.py demo   # evaluate the MT-Bench set on the embedded stack
    python3 quickstart.py test   # run the test suite against real PostgreSQL and Redis

Only the standard library is used here, because it runs before anything is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("MISTRALMETER_VENV", ROOT / ".venv"))
JUNIT_REPORT = ROOT / ".state" / "junit.xml"
DEMO_ARGS = [
    "run", "mt_bench",
    "--model", "mistral-small-latest",
    "--judge-model", "mistral-large-latest",
    "--runs", "3",
]


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment(extras: str) -> None:
    """Create the venv once and install the project with the tested versions pinned."""
    if not venv_python().exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[{extras}]" if extras else str(ROOT)],
        check=True,
    )


def run_demo(extra_args: list[str]) -> int:
    ensure_environment("")
    command = [str(venv_python()), "-m", "mistralmeter.cli", *DEMO_ARGS, *extra_args]
    return subprocess.run(command, cwd=ROOT).returncode


def run_tests(extra_args: list[str]) -> int:
    ensure_environment("test")
    JUNIT_REPORT.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(venv_python()), "-m", "pytest", f"--junitxml={JUNIT_REPORT}", "-rs", *extra_args,
    ]
    status = subprocess.run(command, cwd=ROOT).returncode
    if status != 0:
        return status
    return check_no_skips(JUNIT_REPORT)


def check_no_skips(report: Path) -> int:
    """Fail when any test was skipped: a skipped service test is a test that did not run."""
    root = ElementTree.parse(report).getroot()
    skipped = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("skipped") is not None
    ]
    if skipped:
        print(f"{len(skipped)} test(s) were skipped; every test must run:", file=sys.stderr)
        for name in skipped:
            print(f"  {name}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    commands = {"demo": run_demo, "test": run_tests}
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
