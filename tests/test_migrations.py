"""The migrations at head match the models, and 0005 and 0006 round-trip."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import models
from models.migrate import downgrade_database, upgrade_database
from tests.conftest import _dsn_url
from tests.test_ratings_api import _scratch_database

pytestmark = pytest.mark.services

INDEX_QUERY = text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_runs_job_id_status'")


def test_head_schema_matches_models(settings):
    engine = create_engine(settings.database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), models.Base.metadata)
    finally:
        engine.dispose()

    assert diff == []


def round_trip(services, query, down_to: str) -> tuple:
    """Upgrade a scratch database to head, downgrade to `down_to`, upgrade again.

    Return what `query` gives after each of the three steps.
    """
    admin, conninfo = _scratch_database(services)
    url = _dsn_url(conninfo)
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(url, poolclass=NullPool)
    results = []
    try:
        for step in (lambda: upgrade_database(url), lambda: downgrade_database(url, down_to),
                     lambda: upgrade_database(url)):
            step()
            with engine.connect() as connection:
                row = connection.execute(query).one_or_none()
            results.append(tuple(row) if row is not None else None)
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return tuple(results)


def test_job_status_index_round_trip(services):
    created, dropped, recreated = round_trip(services, INDEX_QUERY, "0004")

    assert "(job_id, status)" in created[0]
    assert dropped is None
    assert recreated == created


LAG_COLUMN_QUERY = text(
    "SELECT data_type, is_nullable FROM information_schema.columns "
    "WHERE table_name = 'runs' AND column_name = 'client_lag_ms'"
)


def test_client_lag_column_round_trip(services):
    created, dropped, recreated = round_trip(services, LAG_COLUMN_QUERY, "0005")

    assert created == ("double precision", "YES")
    assert dropped is None
    assert recreated == created
