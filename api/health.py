"""GET /health: database, Redis and the number of live workers."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from api.parsing import JSON_PARSER
from sqlalchemy import text

from api.job_submission import settings_for_app
from models.db import session_scope
from workers.calls import redis_client

blueprint = Blueprint("health", __name__, url_prefix="/health", description="Service health")
# Set before the routes, because blueprint.arguments() binds the parser it finds.
blueprint.ARGUMENTS_PARSER = JSON_PARSER

# Worker discovery waits this long for replies; /health must stay fast under polling.
PING_TIMEOUT_S = 1.0


@blueprint.route("")
class HealthView(MethodView):
    @blueprint.response(200)
    def get(self):
        """Report whether PostgreSQL, Redis and at least one worker answer."""
        settings = settings_for_app()
        report = {
            "database": _check_database(settings.database_url),
            "redis": _check_redis(settings.redis_url),
            "workers": 0,
            "simulated": settings.uses_simulator,
        }
        if report["redis"] == "ok":
            report["workers"] = _count_workers()

        healthy = report["database"] == "ok" and report["redis"] == "ok"
        report["status"] = "ok" if healthy else "unavailable"
        if healthy and report["workers"] == 0:
            report["status"] = "degraded"
            report["message"] = "no Celery worker answered; jobs will wait in the queue"
        return report, 200 if healthy else 503


def _check_database(url: str) -> str:
    try:
        with session_scope(url) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver or pool error means "not usable"
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_redis(url: str) -> str:
    try:
        redis_client(url).ping()
    except Exception as exc:  # redis-py raises several connection error types
        return f"error: {type(exc).__name__}"
    return "ok"


def _count_workers() -> int:
    from workers.celery_app import celery_app

    try:
        replies = celery_app.control.ping(timeout=PING_TIMEOUT_S)
    except Exception:  # a broker hiccup during ping is reported as zero workers
        return 0
    return len(replies or [])
