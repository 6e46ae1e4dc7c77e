"""Execute one run: call the model, judge the answer, write both once, then update the job."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from mistralmeter.logging_setup import log_fields
from mistralmeter.pricing import PriceTable
from mistralmeter.settings import Settings
from models.db import session_scope
from models.jobs import FINISHED_STATUSES, Job
from models.run_writes import insert_run, mark_job_running, run_exists
from workers.calls import CallOutcome, call_model
from workers.celery_app import SERVICE_ERRORS
from workers.judge import JudgementOutcome, JudgeSettings, judge_answer
from workers.measurement import latency_metrics
from workers.model_errors import ModelCallError
from workers.provider import PROVIDER
from workers.retry import RetriesExhausted

logger = logging.getLogger(__name__)

# Characters of an internal error's message stored on the failed run.
INTERNAL_ERROR_MESSAGE_CHARS = 2_000

# Jobs whose items a worker process keeps in memory; a job of 1,000 prompts is about 1 MB.
ITEMS_CACHE_JOBS = 32
_items_cache: OrderedDict[tuple[str, uuid.UUID], dict[str, dict[str, Any]]] = OrderedDict()
_items_lock = threading.Lock()

# Finished jobs (a final state) this process has seen. The queued tasks of a cancelled job of
# 20,000 runs then cost no database session each.
FINISHED_JOBS_CACHED = 1024
_finished_jobs: OrderedDict[tuple[str, uuid.UUID], None] = OrderedDict()


@dataclass(frozen=True)
class RunKey:
    job_id: uuid.UUID
    item_id: str
    model: str
    repetition: int

    def log_context(self) -> dict[str, Any]:
        return {
            "job_id": str(self.job_id),
            "item_id": self.item_id,
            "model": self.model,
            "repetition": self.repetition,
        }


@dataclass(frozen=True)
class JobSnapshot:
    """The parts of a job that one run needs, read in a short session before any model call."""

    status: str
    item: dict[str, Any]
    params: dict[str, Any]
    judge: JudgeSettings | None
    limit_overrides: dict[str, Any] | None
    dataset_name: str | None
    dataset_version: str | None
    simulated: bool


def execute_run(settings: Settings, key: RunKey) -> str:
    """Run one (item, model, repetition) of a job; return what happened, for logs and tests.

    An unexpected error (a bug, a value the database rejects) is stored as a failed run with
    error_reason "internal_error", so the job still finishes and shows the error. Without
    that, the run would stay unwritten, the job would never finish, and every recovery of the
    job would call the model again. PostgreSQL and Redis outages are raised, for a retry.
    """
    if (settings.database_url, key.job_id) in _finished_jobs:
        return "job_finished"
    snapshot = _load_snapshot(settings, key)
    if snapshot is None:
        return "skipped"
    if snapshot.status in FINISHED_STATUSES:
        _remember_finished(settings.database_url, key.job_id)
        return "job_finished"

    started_at = datetime.now(timezone.utc)
    try:
        return _call_judge_and_write(settings, key, snapshot, started_at)
    except SERVICE_ERRORS:
        raise
    except Exception as error:
        logger.exception(
            "run failed with an internal error", extra=log_fields(**key.log_context())
        )
        return _write_internal_failure(settings, key, snapshot, started_at, error)


def _call_judge_and_write(
    settings: Settings, key: RunKey, snapshot: JobSnapshot, started_at: datetime
) -> str:
    messages = _messages(snapshot.item)
    call = call_model(
        settings,
        model=key.model,
        messages=messages,
        params=snapshot.params,
        limit_overrides=snapshot.limit_overrides,
        log_context=key.log_context(),
    )

    judgement = None
    if call.result is not None and snapshot.judge is not None:
        judgement = judge_answer(
            settings,
            snapshot.judge,
            item=snapshot.item,
            answer=call.result.text,
            limit_overrides=snapshot.limit_overrides,
            log_context=key.log_context(),
        )

    run_values = _run_values(settings, key, snapshot, call, started_at)
    judgement_values = _judgement_values(judgement) if judgement is not None else None
    with session_scope(settings.database_url) as session:
        run_id = insert_run(session, run_values, judgement_values)

    if run_id is None:
        logger.info("run already written by another delivery", extra=log_fields(**key.log_context()))
        return "duplicate"
    logger.info(
        "run written",
        extra=log_fields(**key.log_context(), run_id=str(run_id), status=run_values["status"]),
    )
    return run_values["status"]


def _write_internal_failure(
    settings: Settings, key: RunKey, snapshot: JobSnapshot, started_at: datetime, error: Exception
) -> str:
    call = CallOutcome(result=None, error=None, attempts=1, rate_limit_wait_s=0.0, retry_wait_s=0.0)
    values = _run_values(settings, key, snapshot, call, started_at)
    message = f"{type(error).__name__}: {error}"
    values.update(
        error_reason="internal_error",
        error_message=message[:INTERNAL_ERROR_MESSAGE_CHARS],
    )
    with session_scope(settings.database_url) as session:
        run_id = insert_run(session, values, None)
    return "failed" if run_id is not None else "duplicate"


def _load_snapshot(settings: Settings, key: RunKey) -> JobSnapshot | None:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, key.job_id)
        if job is None:
            logger.warning("job not found for run", extra=log_fields(**key.log_context()))
            return None
        if job.status in FINISHED_STATUSES:
            return _finished_snapshot(job.status)
        if run_exists(session, key.job_id, key.item_id, key.model, key.repetition):
            return None

        mark_job_running(session, key.job_id)
        item = job_items(settings.database_url, key.job_id, lambda: job.items).get(key.item_id)
        if item is None:
            logger.error("item not found in job", extra=log_fields(**key.log_context()))
            return None

        request = job.request
        judge = None
        if job.judge_model:
            judge = JudgeSettings.from_request(job.judge_model, request.get("judge"))
        return JobSnapshot(
            status=job.status,
            item=item,
            params=request.get("params") or {},
            judge=judge,
            limit_overrides=request.get("rate_limits"),
            dataset_name=job.dataset_name,
            dataset_version=job.dataset_version,
            simulated=job.simulated,
        )


def _finished_snapshot(status: str) -> JobSnapshot:
    return JobSnapshot(
        status=status,
        item={},
        params={},
        judge=None,
        limit_overrides=None,
        dataset_name=None,
        dataset_version=None,
        simulated=False,
    )


def _remember_finished(database_url: str, job_id: uuid.UUID) -> None:
    with _items_lock:
        _finished_jobs[(database_url, job_id)] = None
        while len(_finished_jobs) > FINISHED_JOBS_CACHED:
            _finished_jobs.popitem(last=False)


def job_items(
    database_url: str, job_id: uuid.UUID, load: Callable[[], list[dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Index a job's items by id once per process; items never change after submission."""
    key = (database_url, job_id)
    with _items_lock:
        cached = _items_cache.get(key)
        if cached is not None:
            _items_cache.move_to_end(key)
            return cached

    items = {item["id"]: item for item in load()}
    with _items_lock:
        _items_cache[key] = items
        while len(_items_cache) > ITEMS_CACHE_JOBS:
            _items_cache.popitem(last=False)
    return items


def _messages(item: dict[str, Any]) -> list[dict[str, str]]:
    messages = []
    if item.get("system"):
        messages.append({"role": "system", "content": item["system"]})
    messages.append({"role": "user", "content": item["prompt"]})
    return messages


def _run_values(
    settings: Settings,
    key: RunKey,
    snapshot: JobSnapshot,
    call: CallOutcome,
    started_at: datetime,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "job_id": key.job_id,
        "item_id": key.item_id,
        "repetition": key.repetition,
        "model": key.model,
        "provider": PROVIDER,
        "dataset_name": snapshot.dataset_name,
        "dataset_version": snapshot.dataset_version,
        "category": snapshot.item.get("category"),
        "prompt": snapshot.item["prompt"],
        "params": snapshot.params,
        "attempts": call.attempts,
        "rate_limit_wait_ms": call.rate_limit_wait_s * 1000.0,
        "retry_wait_ms": call.retry_wait_s * 1000.0,
        "simulated": snapshot.simulated,
        "started_at": started_at,
    }

    if call.result is None:
        error = call.error
        values.update(
            status="failed",
            error_reason=error_code(error),
            error_message=str(error) if error is not None else "unknown error",
        )
        return values

    result = call.result
    metrics = latency_metrics(result.timing, result.output_tokens)
    values.update(
        status="succeeded",
        response=result.text,
        finish_reason=result.finish_reason,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        total_tokens=result.total_tokens,
        tokens_estimated=result.tokens_estimated,
        total_ms=metrics.total_ms,
        time_to_first_token_ms=metrics.time_to_first_token_ms,
        tokens_per_second=metrics.tokens_per_second,
        decode_tokens_per_second=metrics.decode_tokens_per_second,
        inter_token_latency_ms=metrics.inter_token_latency_ms,
        cost_usd=PriceTable(settings.price_overrides).cost_usd(
            key.model, result.input_tokens, result.output_tokens
        ),
        injected=result.injected,
        concurrent_streams=result.concurrent_streams,
        client_lag_ms=result.client_lag_ms,
    )
    return values


def _judgement_values(judgement: JudgementOutcome) -> dict[str, Any]:
    scores = judgement.criteria_scores
    return {
        "judge_model": judgement.judge_model,
        "status": judgement.status,
        "overall_score": judgement.overall_score,
        "clarity": scores.get("clarity"),
        "accuracy": scores.get("accuracy"),
        "completeness": scores.get("completeness"),
        "relevance": scores.get("relevance"),
        "style_match": scores.get("style_match"),
        "feedback": judgement.feedback,
        "score_std_dev": judgement.score_std_dev,
        "samples": judgement.samples,
        "parsed": judgement.parsed,
        "unscored_reason": judgement.unscored_reason,
        "raw_output": judgement.raw_output,
        "repairs": judgement.repairs,
        "attempts": judgement.attempts,
        "input_tokens": judgement.input_tokens,
        "output_tokens": judgement.output_tokens,
        "cost_usd": judgement.cost_usd,
    }


def error_code(error: ModelCallError | None) -> str:
    """Return a short, groupable code for a failed call, such as http_429 or timeout."""
    if isinstance(error, RetriesExhausted):
        return error_code(error.last_error)
    if error is None:
        return "unknown"
    if error.status is not None:
        return f"http_{error.status}"
    for prefix, code in (("timed out", "timeout"), ("stream cut", "stream_cut"),
                         ("connection failed", "connection_error")):
        if error.reason.startswith(prefix):
            return code
    return "model_error"
