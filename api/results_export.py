"""Stream a job's runs as JSON, JSONL or CSV without holding them all in memory."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any, Iterator

from sqlalchemy import select

from models.db import session_scope
from models.judgements import CRITERIA, Judgement
from models.runs import Run

CONTENT_TYPES = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
}

RUN_COLUMNS = (
    "run_id", "job_id", "item_id", "repetition", "model", "status", "dataset_name",
    "dataset_version", "category", "input_tokens", "output_tokens", "total_tokens",
    "tokens_estimated", "total_ms", "time_to_first_token_ms", "tokens_per_second",
    "decode_tokens_per_second", "inter_token_latency_ms", "rate_limit_wait_ms", "retry_wait_ms",
    "attempts", "concurrent_streams", "client_lag_ms", "cost_usd", "error_reason",
    "error_message", "simulated", "finish_reason",
)
JUDGE_COLUMNS = (
    "judge_model", "judge_status", "quality_score", *CRITERIA, "judge_score_std_dev",
    "judge_unscored_reason", "judge_cost_usd", "feedback",
)
# Timings the simulator reported injecting, to check measured times against (null otherwise).
INJECTED_COLUMNS = ("started_at", "request_id", "injected_ttft_ms", "injected_itl_ms",
                    "injected_output_tokens")
TEXT_COLUMNS = ("prompt", "response")
ALL_COLUMNS = RUN_COLUMNS + JUDGE_COLUMNS + INJECTED_COLUMNS + TEXT_COLUMNS

# Rows fetched per round trip; bounds memory for jobs with many thousands of runs.
BATCH_SIZE = 500


def export_rows(database_url: str, job_id: uuid.UUID, export_format: str) -> Iterator[str]:
    rows = _iter_rows(database_url, job_id)
    if export_format == "jsonl":
        return (json.dumps(row, default=str) + "\n" for row in rows)
    if export_format == "csv":
        return _csv_lines(rows)
    return _json_array(rows)


def _iter_rows(database_url: str, job_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    statement = (
        select(Run, Judgement)
        .outerjoin(Judgement, Judgement.run_id == Run.id)
        .where(Run.job_id == job_id)
        .order_by(Run.model, Run.item_id, Run.repetition)
        .execution_options(yield_per=BATCH_SIZE)
    )
    with session_scope(database_url) as session:
        for run, judgement in session.execute(statement):
            yield flatten_run(run, judgement)


def flatten_run(run: Run, judgement: Judgement | None) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": str(run.id), "job_id": str(run.job_id)}
    for column in RUN_COLUMNS[2:]:
        row[column] = getattr(run, column)
    row.update({column: None for column in JUDGE_COLUMNS})
    if judgement is not None:
        row.update(
            judge_model=judgement.judge_model,
            judge_status=judgement.status,
            quality_score=judgement.overall_score,
            judge_score_std_dev=judgement.score_std_dev,
            judge_unscored_reason=judgement.unscored_reason,
            judge_cost_usd=judgement.cost_usd,
            feedback=judgement.feedback,
            **{name: getattr(judgement, name) for name in CRITERIA},
        )
    injected = run.injected or {}
    row["started_at"] = run.started_at.isoformat() if run.started_at else None
    row["request_id"] = injected.get("request_id")
    row["injected_ttft_ms"] = injected.get("ttft_ms")
    row["injected_itl_ms"] = injected.get("itl_ms")
    row["injected_output_tokens"] = injected.get("output_tokens")
    row["prompt"] = run.prompt
    row["response"] = run.response
    return row


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ALL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    yield _drain(buffer)
    for row in rows:
        writer.writerow(row)
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _json_array(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    first = True
    for row in rows:
        yield ("" if first else ",") + "\n" + json.dumps(row, default=str)
        first = False
    yield "\n]\n"
