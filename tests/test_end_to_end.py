"""Jobs submitted over HTTP run on a real Celery worker against the simulator and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from models.judgements import Judgement
from models.runs import Run
from tests.conftest import wait_for_job

pytestmark = pytest.mark.services

ITEMS = [
    {"id": "q1", "prompt": "Name three prime numbers.", "category": "math"},
    {"id": "q2", "prompt": "What is the capital of Italy?", "expected_style": "one word"},
    {"id": "q3", "prompt": "Explain recursion briefly.", "reference": "A function calling itself."},
]


def upload_dataset(client, name: str, items=ITEMS) -> dict:
    body = "\n".join(json.dumps(item) for item in items).encode()
    response = client.post(
        f"/datasets?name={name}", data=body, content_type="application/x-ndjson"
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_dataset_evaluation_writes_one_run_per_item_and_repetition(
    client, celery_worker, db_session
):
    """A dataset job ends with exactly items x runs runs whose values match the simulator."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    uploaded = upload_dataset(client, name)

    response = client.post(
        f"/datasets/{name}/evaluate?model=sim-small&judge_model=sim-judge&runs=2"
    )
    assert response.status_code == 202, response.get_json()
    accepted = response.get_json()
    assert response.headers["Location"] == f"/jobs/{accepted['job_id']}"
    assert accepted["total_runs"] == 6

    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 6, "failed": 0, "total": 6}
    assert job["simulated"] is True

    runs = db_session.execute(
        select(Run).where(Run.job_id == uuid.UUID(accepted["job_id"]))
    ).scalars().all()
    keys = sorted((run.item_id, run.repetition) for run in runs)
    assert keys == [(item, rep) for item in ("q1", "q2", "q3") for rep in (0, 1)]

    for run in runs:
        assert run.status == "succeeded"
        assert run.dataset_version == uploaded["version"]
        # The simulator was told: 20 output tokens, TTFT 40 ms, 2 ms between tokens.
        assert run.output_tokens == 20
        assert run.tokens_estimated is False
        assert run.total_tokens == run.input_tokens + 20
        assert run.time_to_first_token_ms >= 40.0
        assert run.total_ms >= 40.0 + 19 * 2.0
        assert run.total_ms >= run.time_to_first_token_ms
        assert run.tokens_per_second == pytest.approx(20 / (run.total_ms / 1000))
        assert len(run.response.split()) == 20
        assert run.simulated is True
        assert run.injected["ttft_ms"] == 40.0

    judgements = db_session.execute(
        select(Judgement).where(Judgement.run_id.in_([run.id for run in runs]))
    ).scalars().all()
    assert len(judgements) == 6
    assert all(j.status == "scored" and j.judge_model == "sim-judge" for j in judgements)
    assert all(0 <= j.overall_score <= 10 for j in judgements)

    summary = job["result"]["summary"]["sim-small"]
    assert summary["runs"] == {"total": 6, "succeeded": 6, "failed": 0}
    assert summary["error_rate"] == 0.0
    assert summary["latency"]["time_to_first_token_ms"]["n"] == 6
    assert summary["latency"]["time_to_first_token_ms"]["min"] >= 40.0
    assert summary["tokens"]["output_tokens"]["mean"] == 20.0
    assert summary["quality"]["score"]["n"] == 6
    assert job["result"]["dataset"] == {"name": name, "version": uploaded["version"]}
    assert len(job["result"]["prompts"]) == 3


def test_evaluate_single_run_has_response_and_metrics(client, celery_worker):
    response = client.post(
        "/evaluate",
        json={
            "prompt": {"prompt": "Say hello.", "expected_style": "friendly"},
            "model": "sim-large",
            "judge_model": "sim-judge",
        },
    )
    assert response.status_code == 202, response.get_json()

    job = wait_for_job(client, response.get_json()["job_id"])
    result = job["result"]
    assert job["status"] == "succeeded"
    assert len(result["response"].split()) == 30
    assert result["metrics"]["tokens"]["output_tokens"] == 30
    assert result["metrics"]["latency"]["time_to_first_token_ms"] >= 60.0
    assert set(result["metrics"]["quality"]["criteria_scores"]) == {
        "clarity", "accuracy", "completeness", "relevance", "style_match"
    }
    assert 0 <= result["metrics"]["quality"]["score"] <= 10


def test_evaluate_multiple_runs_gives_statistics(client, celery_worker):
    response = client.post(
        "/evaluate",
        json={
            "prompt": {"prompt": "Count to three."},
            "model": "sim-small",
            "judge_model": "sim-judge",
            "runs": 4,
        },
    )
    job = wait_for_job(client, response.get_json()["job_id"])
    result = job["result"]

    assert len(result["responses"]) == 4
    best = result["best_response"]
    assert best["metrics"]["quality"]["score"] == max(
        r["metrics"]["quality"]["score"] for r in result["responses"]
    )
    latency = result["metrics"]["latency"]["total_ms"]
    assert latency["n"] == 4
    assert latency["std_dev"] is not None
    assert latency["ci_low"] <= latency["mean"] <= latency["ci_high"]
    assert result["metrics"]["tokens"]["output_tokens"]["mean"] == 20.0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "sim-small", "judge_model": "sim-judge"}, 422, "prompt"),
        ({"prompt": {"prompt": "x"}, "model": "sim-small", "judge_model": "sim-small"}, 422,
         "judge_model"),
        ({"prompt": {"prompt": "x"}, "model": "sim-small", "runs": 0}, 422, "runs"),
        ({"prompt": {"prompt": "x"}, "model": "sim-small", "runs": 10000}, 422, "runs"),
        ({"prompt": {"prompt": "x"}, "model": "no-such-model"}, 422, "model"),
        ({"prompt": {"prompt": ""}, "model": "sim-small"}, 422, "prompt"),
        ({"prompt": {"prompt": "x" * 100_001}, "model": "sim-small"}, 422, "prompt"),
        ({"prompt": {"prompt": "x"}, "model": "sim-small", "judge_modle": "x"}, 422,
         "judge_modle"),
    ],
)
def test_evaluate_rejects_bad_input_and_enqueues_nothing(client, db_session, body, status, field):
    before = _job_count(db_session)
    response = client.post("/evaluate", json=body)

    assert response.status_code == status
    payload = response.get_json()
    assert field in payload["message"]
    assert payload["code"] == status
    assert _job_count(db_session) == before


def test_evaluate_rejects_non_json_body(client, db_session):
    before = _job_count(db_session)
    response = client.post("/evaluate", data="prompt=hi", content_type="text/plain")

    assert response.status_code == 422
    assert "must be JSON" in response.get_json()["message"]
    assert _job_count(db_session) == before


def test_evaluate_rejects_invalid_json(client):
    response = client.post("/evaluate", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("model=sim-small&judge_model=sim-judge", 404, "no-such-dataset"),
        ("judge_model=sim-judge", 422, "model"),
    ],
)
def test_dataset_evaluate_rejects_bad_input(client, db_session, query, status, text):
    before = _job_count(db_session)
    response = client.post(f"/datasets/no-such-dataset/evaluate?{query}")

    assert response.status_code == status
    assert text in response.get_json()["message"]
    assert _job_count(db_session) == before


def test_dataset_evaluate_rejects_runs_out_of_range(client, db_session):
    before = _job_count(db_session)
    response = client.post(
        "/datasets/mt_bench/evaluate?model=sim-small&judge_model=sim-judge&runs=10000"
    )

    assert response.status_code == 422
    assert "runs" in response.get_json()["message"]
    assert _job_count(db_session) == before


def test_health_reports_services_and_workers(client, celery_worker):
    response = client.get("/health")

    assert response.status_code == 200
    body = response.get_json()
    assert body["database"] == "ok"
    assert body["redis"] == "ok"
    assert body["workers"] >= 1
    assert body["status"] == "ok"


def test_openapi_document_lists_the_routes(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    for path in ("/evaluate", "/evaluate/batch", "/datasets/{name}/evaluate", "/jobs/{job_id}"):
        assert path in paths


def _job_count(session) -> int:
    from sqlalchemy import func

    from models.jobs import Job

    session.expire_all()
    return session.execute(select(func.count()).select_from(Job)).scalar_one()
