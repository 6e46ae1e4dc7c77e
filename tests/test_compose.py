"""compose.yaml and the Containerfile refer only to commands, modules and files that exist.

Containers cannot run here, so these checks parse the files and resolve every name they use
against the installed package. `mistralmeter` subcommands go through the real CLI parser,
Python modules through importlib, and the Celery and WSGI app paths are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mistralmeter import cli, processes

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
CONTAINERFILE = (ROOT / "Containerfile").read_text()
SETTINGS_SOURCE = (ROOT / "mistralmeter" / "settings.py").read_text()


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """Return the service's environment as a mapping; None marks a variable copied from the host."""
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return dict(environment)
    pairs = {}
    for entry in environment:
        name, separator, value = entry.partition("=")
        pairs[name] = value if separator else None
    return pairs


def _exec_form(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_has_every_service() -> None:
    assert set(SERVICES) == {
        "postgres", "redis", "migrate", "api", "worker", "beat", "flower", "simulator"
    }
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert SERVICES["redis"]["image"].startswith("redis:7")


def test_app_services_build_from_containerfile() -> None:
    assert APP_SERVICES == ["api", "beat", "flower", "migrate", "simulator", "worker"]
    for name in APP_SERVICES:
        assert SERVICES[name]["build"]["dockerfile"] == "Containerfile", name
        assert SERVICES[name]["build"]["context"] == ".", name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_command_parses(name: str) -> None:
    """Each app service runs a `mistralmeter` subcommand whose arguments the CLI parser accepts."""
    command = _exec_form(SERVICES[name]["command"])
    assert command[0] == "mistralmeter"
    args = cli.build_parser().parse_args(command[1:])
    assert args.command == command[1]
    assert command[1] in cli.SUBCOMMANDS


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_is_checked_or_one_shot(name: str) -> None:
    """Every long-running service has a health check; a service without one must be one-shot."""
    service = SERVICES[name]
    if "healthcheck" not in service:
        assert service.get("restart") == "no", f"{name} has no healthcheck and is not one-shot"
        return
    test = service["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"}
    if test[1] == "mistralmeter":
        args = cli.build_parser().parse_args(test[2:])
        assert args.command == "healthcheck"


def test_healthchecks_use_the_service_port() -> None:
    """HTTP health checks target the port the service listens on."""
    for name, path in (("api", "/health"), ("simulator", "/health"), ("flower", "/healthcheck")):
        command = _exec_form(SERVICES[name]["command"])
        port = command[command.index("--port") + 1]
        assert SERVICES[name]["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}{path}", name


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_conditions_match_dependency(name: str) -> None:
    """Dependencies wait for health, or for successful completion of a one-shot service."""
    for dependency, condition in (SERVICES[name].get("depends_on") or {}).items():
        assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        one_shot = SERVICES[dependency].get("restart") == "no"
        expected = "service_completed_successfully" if one_shot else "service_healthy"
        assert condition["condition"] == expected, f"{name} -> {dependency}"


@pytest.mark.parametrize("name", ["api", "worker", "beat"])
def test_job_services_wait_for_migrations(name: str) -> None:
    assert "migrate" in SERVICES[name]["depends_on"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_environment(name: str) -> None:
    """App services get the service URLs, and MISTRAL_API_KEY only from the host environment."""
    environment = _environment(SERVICES[name])
    assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["MISTRALMETER_SIMULATOR_URL"] == "http://simulator:8765"
    assert "MISTRAL_API_KEY" in environment
    assert environment["MISTRAL_API_KEY"] is None


def test_compose_never_contains_api_key_value() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert re.search(r"MISTRAL_API_KEY\s*[=:]\s*\S", text) is None


def test_compose_variables_are_settings() -> None:
    """Every variable compose passes to the app is one that mistralmeter/settings.py reads."""
    for name in APP_SERVICES:
        for variable in _environment(SERVICES[name]):
            assert f'"{variable}"' in SETTINGS_SOURCE, f"{variable} is not read by settings.py"


@pytest.mark.parametrize("module", ["gunicorn", "celery", "simulator", "mistralmeter.cli", "flower"])
def test_process_modules_exist(module: str) -> None:
    """The modules that the process commands run with `python -m` are installed."""
    assert importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(
    "command",
    [
        processes.api_command("127.0.0.1", 8000, workers=1, threads=1),
        processes.worker_command(concurrency=1, loglevel="INFO"),
        processes.beat_command(loglevel="INFO"),
        processes.flower_command(host="127.0.0.1", port=5555),
        processes.simulator_command("127.0.0.1", 8765),
        processes.migrate_command(),
    ],
)
def test_process_command_modules_resolve(command: list[str]) -> None:
    module = command[command.index("-m") + 1]
    assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("app_path", [processes.CELERY_APP, processes.WSGI_APP])
def test_app_paths_import(app_path: str) -> None:
    """The Celery app and the WSGI app named in the commands import and are the right objects."""
    module_name, _, attribute = app_path.partition(":")
    app = getattr(importlib.import_module(module_name), attribute)
    if app_path == processes.CELERY_APP:
        from celery import Celery

        assert isinstance(app, Celery)
    else:
        from flask import Flask

        assert isinstance(app, Flask)


def test_containerfile_base_and_user() -> None:
    """The image starts from python:3.11-slim and drops root before its command."""
    lines = [line.strip() for line in CONTAINERFILE.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    user_lines = [line for line in lines if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1] not in {"root", "0"}
    assert lines.index(user_lines[-1]) < next(i for i, line in enumerate(lines) if line.startswith("CMD "))


def test_containerfile_copies_existing_files() -> None:
    """Every file the Containerfile copies or installs from exists in the repository."""
    for match in re.finditer(r"^COPY\s+(.+)$", CONTAINERFILE, flags=re.MULTILINE):
        *sources, _destination = match.group(1).split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"
    for match in re.finditer(r"--(?:constraint|requirement)\s+(\S+)", CONTAINERFILE):
        path = match.group(1)
        if not path.startswith("/"):
            assert (ROOT / path).is_file(), f"{path} is missing"
    assert "--constraint constraints.txt" in CONTAINERFILE


def test_containerfile_command_parses() -> None:
    """The default command runs the API through a subcommand the CLI accepts."""
    match = re.search(r"^CMD\s+(\[.*\])$", CONTAINERFILE, flags=re.MULTILINE)
    assert match is not None
    command = yaml.safe_load(match.group(1))
    assert command[:2] == ["mistralmeter", "api"]
    assert cli.build_parser().parse_args(command[1:]).host == "0.0.0.0"


def test_dockerignore_excludes_local_state() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".state", "results", ".env"} <= ignored
