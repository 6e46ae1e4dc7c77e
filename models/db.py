"""Engines and sessions shared by the API, the workers and the tools."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from mistralmeter.settings import get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def get_engine(database_url: str | None = None) -> Engine:
    """Return the pooled engine for a URL, one per URL and process."""
    url = database_url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            # pre_ping replaces connections that a PostgreSQL restart closed, so workers recover.
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=60)
            _engines[url] = engine
            _factories[url] = sessionmaker(bind=engine, expire_on_commit=False)
        return engine


@contextmanager
def session_scope(database_url: str | None = None) -> Iterator[Session]:
    """Open a session that commits on success and rolls back on any exception."""
    url = database_url or get_settings().database_url
    get_engine(url)
    session = _factories[url]()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Forget every engine: after a fork, and in tests that switch DATABASE_URL."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
        _factories.clear()
