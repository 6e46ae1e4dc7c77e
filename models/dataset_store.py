"""Queries on the datasets table: builtin sets mirrored from datasets/, uploads, versions."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from mistralmeter.builtin_datasets import load_all_builtin
from mistralmeter.dataset_files import DatasetItem, dataset_version
from models.datasets import Dataset

_synced_urls: set[str] = set()
_sync_lock = threading.Lock()


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    latest_version: str
    item_count: int
    description: str
    source: str
    license: str | None
    versions: int


def sync_builtin_datasets(session: Session, database_url: str) -> None:
    """Insert each shipped dataset version once per database; later calls are free."""
    with _sync_lock:
        if database_url in _synced_urls:
            return
        for builtin in load_all_builtin():
            _insert_version(
                session,
                name=builtin.name,
                version=builtin.version,
                items=[item.to_dict() for item in builtin.items],
                description=builtin.description,
                source="builtin",
                license=builtin.license,
            )
        session.flush()
        _synced_urls.add(database_url)


def forget_synced(database_url: str | None = None) -> None:
    """Make the next call sync again, for tests that recreate the database."""
    with _sync_lock:
        if database_url is None:
            _synced_urls.clear()
        else:
            _synced_urls.discard(database_url)


def store_upload(
    session: Session, *, name: str, items: list[DatasetItem], description: str
) -> tuple[Dataset, bool]:
    """Store an uploaded version; return it and whether it was new (equal content is one version)."""
    version = dataset_version(items)
    created = _insert_version(
        session,
        name=name,
        version=version,
        items=[item.to_dict() for item in items],
        description=description,
        source="upload",
        license=None,
    )
    dataset = get_version(session, name, version)
    assert dataset is not None
    return dataset, created


def _insert_version(session: Session, *, name: str, version: str, items: list[dict[str, Any]],
                    description: str, source: str, license: str | None) -> bool:
    statement = (
        insert(Dataset)
        .values(
            name=name,
            version=version,
            items=items,
            item_count=len(items),
            description=description,
            source=source,
            license=license,
        )
        .on_conflict_do_nothing(constraint="uq_datasets_name_version")
        .returning(Dataset.id)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def get_latest(session: Session, name: str) -> Dataset | None:
    statement = (
        select(Dataset)
        .where(Dataset.name == name)
        .order_by(Dataset.created_at.desc(), Dataset.id.desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


def get_version(session: Session, name: str, version: str) -> Dataset | None:
    """Find a version by its full hash or by a unique prefix of at least 8 hex digits."""
    exact = session.execute(
        select(Dataset).where(Dataset.name == name, Dataset.version == version)
    ).scalar_one_or_none()
    if exact is not None:
        return exact

    prefix = version if version.startswith("sha256:") else f"sha256:{version}"
    if len(prefix) < len("sha256:") + 8:
        return None
    matches = session.execute(
        select(Dataset).where(Dataset.name == name, Dataset.version.startswith(prefix)).limit(2)
    ).scalars().all()
    return matches[0] if len(matches) == 1 else None


def list_versions(session: Session, name: str) -> list[Dataset]:
    statement = (
        select(Dataset).where(Dataset.name == name).order_by(Dataset.created_at.desc())
    )
    return list(session.execute(statement).scalars())


def list_datasets(session: Session) -> list[DatasetSummary]:
    counts = dict(
        session.execute(select(Dataset.name, func.count()).group_by(Dataset.name)).all()
    )
    summaries = []
    for name in sorted(counts):
        latest = get_latest(session, name)
        assert latest is not None
        summaries.append(
            DatasetSummary(
                name=name,
                latest_version=latest.version,
                item_count=latest.item_count,
                description=latest.description,
                source=latest.source,
                license=latest.license,
                versions=counts[name],
            )
        )
    return summaries
