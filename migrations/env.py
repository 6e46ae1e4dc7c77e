"""Alembic environment: NullPool, lock timeouts, and one migrator at a time."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

import models
from mistralmeter.settings import get_settings

# An advisory lock key, so two processes starting at once do not migrate concurrently.
MIGRATION_LOCK_KEY = 72_151_903


def _database_url() -> str:
    configured = context.config.attributes.get("database_url")
    return configured or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=models.Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Fail fast instead of queueing behind a long transaction that holds a table lock.
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.execute(text("SET statement_timeout = '300s'"))
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=models.Base.metadata)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
