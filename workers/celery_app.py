"""The Celery application: Redis broker, late acknowledgement, no result backend."""

from __future__ import annotations

from celery import Celery, Task
from celery.signals import setup_logging, worker_process_init

from mistralmeter.logging_setup import configure_logging
from mistralmeter.settings import get_settings
from models.db import dispose_engines

# Redelivery waits for the visibility timeout, so it must outlast the longest task.
VISIBILITY_MARGIN_S = 300


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
            "visibility_timeout": settings.task_soft_time_limit_s + VISIBILITY_MARGIN_S,
        },
        task_default_queue="mistralmeter",
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
