"""The Celery application: Redis broker, late acknowledgement, no result backend."""

from __future__ import annotations

from celery import Celery, Task
from celery.signals import setup_logging, worker_process_init

from mistralmeter.logging_setup import configure_logging
from mistralmeter.settings import Settings, get_settings
from models.db import dispose_engines

# Redelivery waits for the visibility timeout, so it must outlast the longest task.
VISIBILITY_MARGIN_S = 300


def visibility_timeout_s(settings: Settings) -> int:
    """Return the seconds after which Redis hands an unacknowledged task to another worker.

    Tasks of a worker killed with SIGKILL wait this long before they run again. A task that
    runs longer than this while its worker lives also runs a second time, which the idempotent
    run writes absorb, but it costs model calls. NOTE: the threads pool does not enforce
    soft_time_limit, so the default margin bounds only tasks that finish on their own.
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
        },
        task_default_queue=settings.queue_name,
        worker_send_task_events=True,
        task_send_sent_event=True,
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
    """Base for every task: JSON arguments only, acknowledged after the work is written."""

    acks_late = True
    reject_on_worker_lost = True
