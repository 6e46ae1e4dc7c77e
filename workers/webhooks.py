"""Post a regression alert to a schedule's webhook."""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings
from models.db import session_scope
from models.jobs import Job
from models.schedules import Schedule

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0


class WebhookFailed(Exception):
    """The webhook returned no 2xx status; the task retries with backoff."""


def redact_url(url: str | None) -> str | None:
    """Keep scheme and host only: webhook paths and queries often carry tokens."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/..."


def alert_payload(job: Job, schedule: Schedule) -> dict[str, Any]:
    regression = (job.result or {}).get("regression", {})
    return {
        "event": "mistralmeter.regression",
        "schedule": schedule.name,
        "schedule_id": str(schedule.id),
        "job_id": str(job.id),
        "compared_with": regression.get("compared_with"),
        "dataset": {"name": job.dataset_name, "version": job.dataset_version},
        "flags": regression.get("flags", []),
        "simulated": job.simulated,
    }


def send_alert(settings: Settings, job_id: uuid.UUID) -> bool:
    """POST the alert for a finished scheduled job; return False when there is nothing to send."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        schedule = session.get(Schedule, job.schedule_id) if job and job.schedule_id else None
        if job is None or schedule is None or not schedule.webhook_url:
            return False
        payload = alert_payload(job, schedule)
        url = schedule.webhook_url

    try:
        response = httpx.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"{type(exc).__name__} posting to {redact_url(url)}") from exc
    if response.status_code >= 300:
        raise WebhookFailed(f"HTTP {response.status_code} from {redact_url(url)}")

    logger.info(
        "regression alert sent",
        extra=log_fields(job_id=str(job_id), webhook=redact_url(url), flags=len(payload["flags"])),
    )
    return True
