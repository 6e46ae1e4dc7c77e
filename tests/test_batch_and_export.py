"""POST /evaluate/batch isolates failing prompts, and the results export matches the database."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select

from api.model_catalog import clear_cache
from api.results_export import ALL_COLUMNS
from api.schemas import MAX_BATCH_PROMPTS, MAX_PROMPT_CHARS
from models.jobs import Job
from models.judgements import CRITERIA, Judgement
from models.runs import Run
from tests.conftest import TEST_SIMULATOR_CONFIG, simulator_config, wait_for_job

pytestmark = pytest.mark.services

# Models of this module only, so that their rate-limit windows in Redis hold only its calls.
MODEL = "batch-small"
JUDGE = "batch-judge"
BROKEN = "batch-broken"

BATCH_SIMULATOR_CONFIG: dict[str, Any] = {
    "seed": 5,
    "models": {
        **TEST_SIMULATOR_CONFIG["models"],
        MODEL: {"ttft_ms": 10, "itl_ms": 1, "output_tokens": 12, "quality": 6.0},
        JUDGE: {"ttft_ms": 2, "itl_ms": 0, "output_tokens": 60},
        BROKEN: {"ttft_ms": 5, "itl_ms": 0, "output_tokens": 5, "faults": {"rate_500": 1.0}},
    },
}

# A prompt of the maximum size needs about 25 000 tokens, over this per-minute budget, so the
# rate limiter rejects that one run as too large while the short prompts fit.
TOKENS_PER_MINUTE = 8_000


@pytest.fixture(scope="module")
def batch_client(app, simulator_url) -> Iterator[Any]:
    """A test client while the simulator offers this module's models."""
    with simulator_config(simulator_url, BATCH_SIMULATOR_CONFIG):
        clear_cache()
        yield app.test_client()
    clear_cache()


def submit_batch(client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/evaluate/batch", json=body)
    assert response.status_code == 202, response.get_json()
    return wait_for_job(client, response.get_json()["job_id"])


def job_runs(session, job_id: str) -> dict[str, Run]:
    session.expire_all()
    runs = session.execute(select(Run).where(Run.job_id == uuid.UUID(job_id))).scalars()
    return {run.item_id: run for run in runs}


def job_count(session) -> int:
    session.expire_all()
    return session.execute(select(func.count()).select_from(Job)).scalar_one()


def test_batch_failing_prompt_does_not_fail_job(batch_client, celery_worker, db_session):
    """One prompt too large for the job's token budget fails alone; the others are judged."""
    prompts = [
        {"id": "short-1", "prompt": "Name a prime number."},
        {"id": "huge", "prompt": "word " * (MAX_PROMPT_CHARS // 5)},
        {"id": "short-2", "prompt": "Name a colour.", "category": "easy"},
        {"id": "short-3", "prompt": "Name a planet."},
    ]
    job = submit_batch(
        batch_client,
        {
            "prompts": prompts,
            "model": MODEL,
            "judge_model": JUDGE,
            "params": {"max_tokens": 40},
            "rate_limits": {"tokens_per_minute": TOKENS_PER_MINUTE},
        },
    )

    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 3, "failed": 1, "total": 4}

    runs = job_runs(db_session, job["id"])
    huge = runs["huge"]
    assert huge.status == "failed"
    assert huge.error_reason == "model_error"
    assert "tokens per minute" in huge.error_message
    assert huge.attempts == 1
    assert huge.response is None
    for item_id in ("short-1", "short-2", "short-3"):
        assert runs[item_id].status == "succeeded"
        assert runs[item_id].output_tokens == 12
    assert runs["short-2"].category == "easy"

    summary = job["result"]["summary"][MODEL]
    assert summary["runs"] == {"total": 4, "succeeded": 3, "failed": 1}
    assert summary["error_rate"] == 0.25
    assert summary["errors"] == {"model_error": 1}
    assert summary["latency"]["total_ms"]["n"] == 3
    assert summary["tokens"]["output_tokens"]["mean"] == 12.0
    assert summary["quality"]["score"]["n"] == 3
    assert summary["quality"]["judged"] == 3

    rows = {row["item_id"]: row for row in job["result"]["prompts"]}
    assert set(rows) == {"short-1", "huge", "short-2", "short-3"}
    assert rows["huge"]["failed"] == 1
    assert rows["huge"]["errors"] == ["model_error"]
    assert rows["huge"]["total_ms_mean"] is None
    assert rows["short-1"]["failed"] == 0
    assert rows["short-2"]["category"] == "easy"


def test_batch_server_errors_are_retried_then_recorded(
    batch_client, celery_worker, db_session, settings
):
    """A model that always returns 500 is retried max_retries times; each run records it."""
    job = submit_batch(
        batch_client,
        {"prompts": [{"prompt": "First."}, {"prompt": "Second."}], "model": BROKEN},
    )

    assert job["status"] == "failed"
    assert "http_500" in job["error"]["message"]
    runs = job_runs(db_session, job["id"])
    assert set(runs) == {"1", "2"}
    for run in runs.values():
        assert run.status == "failed"
        assert run.error_reason == "http_500"
        assert run.attempts == settings.max_retries + 1
        assert "500" in run.error_message
        assert run.retry_wait_ms > 0
        assert run.total_ms is None

    summary = job["result"]["summary"][BROKEN]
    assert summary["errors"] == {"http_500": 2}
    assert summary["error_rate"] == 1.0


def test_batch_rejects_duplicate_ids(batch_client, db_session):
    before = job_count(db_session)
    response = batch_client.post(
        "/evaluate/batch",
        json={
            "prompts": [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}],
            "model": MODEL,
        },
    )

    assert response.status_code == 422
    payload = response.get_json()
    assert "duplicate id 'a'" in payload["message"]
    assert "prompts.1.id" in payload["errors"]
    assert job_count(db_session) == before


@pytest.mark.parametrize("count", [0, MAX_BATCH_PROMPTS + 1])
def test_batch_rejects_prompt_count_out_of_range(batch_client, db_session, count):
    before = job_count(db_session)
    prompts = [{"prompt": f"Question {index}"} for index in range(count)]
    response = batch_client.post("/evaluate/batch", json={"prompts": prompts, "model": MODEL})

    assert response.status_code == 422
    payload = response.get_json()
    assert "prompts" in payload["message"]
    assert f"1 to {MAX_BATCH_PROMPTS}" in payload["message"]
    assert job_count(db_session) == before


@pytest.fixture(scope="module")
def exported_job(batch_client, celery_worker) -> dict[str, Any]:
    job = submit_batch(
        batch_client,
        {
            "prompts": [
                {"id": "p1", "prompt": "Name a prime number.", "category": "math"},
                {"id": "p2", "prompt": "Say hello, with a comma and \"quotes\"."},
                {"id": "p3", "prompt": "List two colours."},
            ],
            "model": MODEL,
            "judge_model": JUDGE,
            "runs": 2,
        },
    )
    assert job["status"] == "succeeded", job
    return job


def parse_export(export_format: str, text: str) -> list[dict[str, Any]]:
    if export_format == "json":
        return json.loads(text)
    if export_format == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line]
    return list(csv.DictReader(io.StringIO(text)))


def as_value(export_format: str, value: Any, like: Any) -> Any:
    """Convert a CSV cell back to the type of the database value; JSON keeps its types."""
    if export_format != "csv":
        return value
    if like is None:
        assert value == ""
        return None
    if isinstance(like, bool):
        return value == "True"
    return type(like)(value)


@pytest.mark.parametrize("export_format", ["json", "jsonl", "csv"])
def test_export_rows_match_database(
    batch_client, exported_job, db_session, export_format
):
    """One row per run, with the stored values of the run and its judgement, in every format."""
    response = batch_client.get(
        f"/jobs/{exported_job['id']}/results", query_string={"format": export_format}
    )

    assert response.status_code == 200
    assert response.mimetype == {
        "json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv"
    }[export_format]
    assert f"mistralmeter-{exported_job['id']}.{export_format}" in response.headers[
        "Content-Disposition"
    ]

    rows = parse_export(export_format, response.get_data(as_text=True))
    db_session.expire_all()
    stored = {
        str(run.id): (run, judgement)
        for run, judgement in db_session.execute(
            select(Run, Judgement)
            .join(Judgement, Judgement.run_id == Run.id)
            .where(Run.job_id == uuid.UUID(exported_job["id"]))
        )
    }
    assert len(rows) == 6
    assert {row["run_id"] for row in rows} == set(stored)
    assert all(list(row) == list(ALL_COLUMNS) for row in rows)

    for row in rows:
        run, judgement = stored[row["run_id"]]
        assert row["job_id"] == exported_job["id"]
        for column in ("item_id", "repetition", "model", "status", "input_tokens",
                       "output_tokens", "total_ms", "time_to_first_token_ms",
                       "tokens_per_second", "inter_token_latency_ms", "attempts",
                       "client_lag_ms", "simulated", "category", "prompt", "response"):
            expected = getattr(run, column)
            assert as_value(export_format, row[column], expected) == expected, column
        assert row["judge_model"] == JUDGE
        assert row["judge_status"] == "scored"
        assert as_value(export_format, row["quality_score"], 0.0) == judgement.overall_score
        for name in CRITERIA:
            assert as_value(export_format, row[name], 0.0) == getattr(judgement, name), name
        assert row["feedback"] == judgement.feedback


def test_export_rejects_unknown_format(batch_client, exported_job):
    response = batch_client.get(f"/jobs/{exported_job['id']}/results?format=xml")

    assert response.status_code == 422
    assert "format" in response.get_json()["message"]


def test_export_format_ignores_case(batch_client, exported_job):
    response = batch_client.get(f"/jobs/{exported_job['id']}/results?format=CSV")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    header = next(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert header == list(ALL_COLUMNS)


def test_export_unknown_job_is_not_found(batch_client):
    response = batch_client.get(f"/jobs/{uuid.uuid4()}/results?format=csv")

    assert response.status_code == 404
