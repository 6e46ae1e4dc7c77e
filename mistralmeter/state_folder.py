"""The state folder of the embedded stack: where it is, and the lock that one launcher keeps on it.

The launcher that has locked ``stack.lock`` writes ``stack.json`` with its pid and API URL, so
another command (such as ``mistralmeter run``) can find and use the running stack.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

from mistralmeter.settings import load_settings

DEFAULT_STATE_DIR = Path(".state")


RECORD_NAME = "stack.json"


class StateDirBusyError(RuntimeError):
    """Another launcher has locked the state folder."""


def resolve_state_dir(cli_value: str | None) -> Path:
    """Return the state folder: the --state-dir value, else $MISTRALMETER_STATE_DIR, else ./.state."""
    raw = cli_value or load_settings().state_dir
    return Path(raw).expanduser().resolve() if raw else DEFAULT_STATE_DIR.resolve()


def read_running_stack(state_dir: Path) -> dict[str, Any] | None:
    """Return the record (pid, api_url, ...) of a live launcher that has locked state_dir, else None."""
    lock = StateLock(state_dir / "stack.lock")
    if lock.try_acquire():
        lock.release()
        return None
    try:
        record = json.loads((state_dir / RECORD_NAME).read_text())
    except (FileNotFoundError, ValueError):
        # The launcher has the lock but has not written its record yet, because it is starting.
        return None
    return record if isinstance(record, dict) else None


class StateLock:
    """An exclusive, non-blocking flock on a file; the kernel drops it when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.path.open("a+")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        self._file = lock_file
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def write_stack_record(state_dir: Path, record: dict[str, Any]) -> None:
    """Write the running launcher's record; call it only while holding the lock."""
    (state_dir / RECORD_NAME).write_text(json.dumps(record, indent=2))


def remove_stack_record(state_dir: Path) -> None:
    (state_dir / RECORD_NAME).unlink(missing_ok=True)
