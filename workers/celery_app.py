"""The Celery application: Redis broker, late acknowledgement, no result backend."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import kombu.exceptions
import redis
import sqlalchemy.exc
from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import setup_logging, worker_process_init
from celery.utils.time import get_exponential_backoff_interval

from mistralmeter.logging_setup import configure_logging, log_fields
from mistralmeter.settings import Settings, get_settings
from models.db import dispose_engines

# Seconds between beat's checks for due schedules, so a schedule starts at most this late.
SCHEDULE_TICK_S = 30.0

logger = logging.getLogger(__name__)

# Redelivery waits for the visibility timeout, so it must outlast the longest task.
VISIBILITY_MARGIN_S = 300

# PostgreSQL or Redis unreachable (a restart, a failover): the task itself is not at fault.
SERVICE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
)
# Retries after a service error wait up to 2**n s (full jitter), capped at SERVICE_RETRY_MAX_S.
# 240 retries average about an hour of outage before the task fails for good.
SERVICE_RETRY_MAX_S = 30
SERVICE_MAX_RETRIES = 240


def visibility_timeout_s(settings: Settings) -> int:
    """Return the seconds after which Redis hands an unacknowledged task to another worker.

    Tasks of a worker killed with SIGKILL wait this long, then until a worker scans for them:
    kombu 5.7 scans when a worker starts and, with unacked_restore_throttle 1, about every 10 s. A task that runs longer than this
    while its worker lives, or waits longer in a retry countdown, runs a second time. The
    idempotent run writes absorb that, but it costs model calls. NOTE: Celery 5.7's threads
    pool ignores soft_time_limit, so the default margin bounds only tasks that end by themselves.
    """
    if settings.visibility_timeout_s is not None:
        return settings.visibility_timeout_s
    return settings.task_soft_time_limit_s + VISIBILITY_MARGIN_S


def create_celery_app() -> Celery:
    settings = get_settings()
    app = Celery("mistralmeter", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s(settings),
            # Scan for tasks of dead workers every poll interval (about 10 s), not every tenth.
            "unacked_restore_throttle": 1,
        },
        task_default_queue=settings.queue_name,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "start-due-schedules": {
                "task": "mistralmeter.tick_schedules",
                "schedule": SCHEDULE_TICK_S,
            },
            "recover-lost-tasks": {
                "task": "mistralmeter.recover_lost_tasks",
                "schedule": settings.recovery_interval_s,
            },
        },
    )
    return app


celery_app = create_celery_app()


@setup_logging.connect
def _configure_worker_logging(**_: object) -> None:
    configure_logging(get_settings())


@worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    # A forked child must not share the parent's database connections.
    dispose_engines()


class EvaluationTask(Task):
    """Base for every task: JSON arguments only, acknowledged after the work is written.

    A task that fails because PostgreSQL or Redis is unreachable is sent again after a backoff.
    Celery acknowledges a late-acknowledged task that raised, so otherwise its work is lost.
    """

    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SERVICE_ERRORS as error:
            self.retry_after_service_error(error)

    def retry_after_service_error(self, error: Exception) -> NoReturn:
        countdown_s = get_exponential_backoff_interval(
            factor=1, retries=self.request.retries, maximum=SERVICE_RETRY_MAX_S, full_jitter=True
        )
        logger.warning(
            "task failed on a service error, retrying",
            extra=log_fields(
                task=self.name,
                task_id=self.request.id,
                retries=self.request.retries,
                countdown_s=countdown_s,
                error=str(error),
            ),
        )
        try:
            raise self.retry(exc=error, countdown=countdown_s, max_retries=SERVICE_MAX_RETRIES)
        except Reject as dropped:
            # retry() rejects the message without requeueing when it cannot publish the copy,
            # which is what happens while Redis is down. Requeueing keeps the task: Redis puts
            # it back in the queue, or, if Redis cannot be reached, it stays unacknowledged and
            # returns after the visibility timeout.
            raise Reject(error, requeue=True) from dropped
