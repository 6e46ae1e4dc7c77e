"""Jobs submitted over HTTP run on a real Celery worker against the simulator and PostgreSQL."""

from __future__ import annotations

import json
import time
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
        # The simulator's profile: 20 output tokens, TTFT 40 ms, 2 ms between tokens.
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
        assert run.client_lag_ms is not None
        assert run.client_lag_ms >= 0.0

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
    # Two repetitions of three prompts: the interval to quote is over the three prompt means.
    assert summary["quality"]["score_by_prompt"]["n"] == 3
    assert summary["quality"]["score_by_prompt"]["mean"] == pytest.approx(
        summary["quality"]["score"]["mean"]
    )
    peak = summary["measurement"]["max_concurrent_streams_per_process"]
    assert peak == max(run.concurrent_streams for run in runs)
    assert peak >= 1
    max_lag = summary["measurement"]["max_client_lag_ms"]
    assert max_lag == max(run.client_lag_ms for run in runs)
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


def test_docs_page_loads_assets_from_api(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "cdn" not in html.lower()

    for name, content_type in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui-standalone-preset.js", "javascript"),
        ("swagger-ui.css", "text/css"),
    ):
        assert f'"/docs/assets/{name}"' in html
        asset = client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200, name
        assert content_type in asset.content_type, name
        assert len(asset.get_data()) > 10_000, name
        asset.close()

    assert '"validatorUrl": null' in html
    assert client.get("/docs/assets/missing.js").status_code == 404
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/../__init__.py").status_code == 404


def _job_count(session) -> int:
    from sqlalchemy import func

    from models.jobs import Job

    session.expire_all()
    return session.execute(select(func.count()).select_from(Job)).scalar_one()


def test_missing_usage_gives_flagged_estimate(client, celery_worker, db_session):
    """A stream without usage yields token counts estimated from text, marked as estimates."""
    response = client.post(
        "/evaluate", json={"prompt": {"prompt": "abcdefgh"}, "model": "sim-no-usage"}
    )
    job = wait_for_job(client, response.get_json()["job_id"])
    run = db_session.execute(
        select(Run).where(Run.job_id == uuid.UUID(job["id"]))
    ).scalar_one()

    assert run.tokens_estimated is True
    # ceil(len(text) / 4): the prompt has 8 characters, the response its own length.
    assert run.input_tokens == 2
    assert run.output_tokens == -(-len(run.response) // 4)
    assert job["result"]["metrics"]["tokens"]["estimated"] is True
    # No judge was requested, so there is no quality block.
    assert job["result"]["metrics"]["quality"] is None


def test_cost_uses_price_table_and_splits_judge_cost(client, celery_worker, db_session):
    response = client.post(
        "/evaluate/batch",
        json={
            "prompts": [{"prompt": "One"}, {"prompt": "Two"}],
            "model": "sim-small",
            "judge_model": "sim-judge",
        },
    )
    job = wait_for_job(client, response.get_json()["job_id"])
    rows = db_session.execute(
        select(Run, Judgement)
        .join(Judgement, Judgement.run_id == Run.id)
        .where(Run.job_id == uuid.UUID(job["id"]))
    ).all()

    candidate = 0.0
    judge = 0.0
    for run, judgement in rows:
        expected = (run.input_tokens * 1.0 + run.output_tokens * 2.0) / 1_000_000
        assert run.cost_usd == pytest.approx(expected)
        judge_expected = (judgement.input_tokens * 0.5 + judgement.output_tokens * 4.0) / 1_000_000
        assert judgement.cost_usd == pytest.approx(judge_expected)
        candidate += expected
        judge += judge_expected

    cost = job["result"]["summary"]["sim-small"]["cost"]
    assert cost["candidate_usd"] == pytest.approx(candidate)
    assert cost["judge_usd"] == pytest.approx(judge)
    assert cost["per_1000_prompts_usd"] == pytest.approx((candidate + judge) / 2 * 1000)
    assert cost["estimate"] is True
    assert cost["prices_as_of"]


def test_cancel_stops_a_job(client, celery_worker, simulator_url):
    import copy

    from tests.conftest import TEST_SIMULATOR_CONFIG, simulator_config

    slow = copy.deepcopy(TEST_SIMULATOR_CONFIG)
    slow["models"]["sim-small"]["ttft_ms"] = 2000
    with simulator_config(simulator_url, slow):
        # Four calls in flight at 2 s each: the job is cancelled after its first four runs,
        # while the next four are calling the model.
        response = client.post(
            "/evaluate",
            json={
                "prompt": {"prompt": "x"},
                "model": "sim-small",
                "runs": 40,
                "rate_limits": {"max_in_flight": 4},
            },
        )
        job_id = response.get_json()["job_id"]
        wait_for_written_runs(client, job_id, at_least=4)
        cancelled = client.post(f"/jobs/{job_id}/cancel")
        again = client.post(f"/jobs/{job_id}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert again.status_code == 409
    assert "already cancelled" in again.get_json()["message"]

    # Runs that were calling the model finish after the cancel, and the partial result follows.
    document = wait_for_partial_result(client, job_id)
    written = document["progress"]["done"] + document["progress"]["failed"]
    assert document["status"] == "cancelled"
    assert 4 <= written < 40
    assert document["result"]["partial"] == {
        "reason": "cancelled", "runs_written": written, "total": 40
    }
    runs = document["result"]["summary"]["sim-small"]["runs"]
    assert runs["total"] == written
    assert document["result"]["metrics"]["latency"]["total_ms"]["n"] == runs["succeeded"]


def wait_for_written_runs(client, job_id: str, at_least: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = client.get(f"/jobs/{job_id}").get_json()["progress"]
        if progress["done"] + progress["failed"] >= at_least:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} wrote fewer than {at_least} runs in {timeout_s} s")


def wait_for_partial_result(client, job_id: str, timeout_s: float = 30.0) -> dict:
    """Poll until no run was written for 3 s and the partial result counts every written run."""
    deadline = time.monotonic() + timeout_s
    last_written, settled_at = -1, time.monotonic()
    document: dict = {}
    while time.monotonic() < deadline:
        document = client.get(f"/jobs/{job_id}").get_json()
        written = document["progress"]["done"] + document["progress"]["failed"]
        if written != last_written:
            last_written, settled_at = written, time.monotonic()
        partial = (document["result"] or {}).get("partial") or {}
        if time.monotonic() - settled_at > 3.0 and partial.get("runs_written") == written:
            return document
        time.sleep(0.2)
    raise AssertionError(f"no partial result for all written runs of {job_id}: {document}")


def test_unknown_job_is_404(client):
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    response = client.get("/jobs/not-a-uuid")
    assert response.status_code == 404
    assert "UUID" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "text"),
    [
        ("post", "/evaluate?runs=50", "unknown query parameter runs"),
        ("get", f"/jobs/{uuid.uuid4()}?verbose=1", "unknown query parameter verbose"),
        ("get", "/datasets?page=2", "unknown query parameter page"),
        ("post", "/datasets/mt_bench/evaluate?model=sim-small&runs=1&runs=2", "more than once"),
    ],
)
def test_unexpected_query_parameters_rejected(client, db_session, method, path, text):
    before = _job_count(db_session)
    response = getattr(client, method)(path, json={"prompt": {"prompt": "x"}, "model": "sim-small"}
                                       if method == "post" and path.startswith("/evaluate") else None)

    assert response.status_code == 422
    assert text in response.get_json()["message"]
    assert _job_count(db_session) == before


def test_dataset_evaluate_query_body_conflict(client, db_session):
    before = _job_count(db_session)

    conflict = client.post(
        "/datasets/mt_bench/evaluate?model=sim-small&limit=1", json={"model": "sim-judge"}
    )
    same = client.post("/datasets/mt_bench/evaluate?model=sim-small&limit=1",
                       json={"model": "sim-small"})

    assert conflict.status_code == 422
    assert conflict.get_json()["message"] == (
        "model given in both the query string and the JSON body with different values; "
        "give each option once"
    )
    assert same.status_code == 202, same.get_json()
    assert _job_count(db_session) == before + 1


def test_internal_error_fails_run_with_reason(client, celery_worker, db_session, monkeypatch):
    """A bug inside a run is stored as a failed run, so the job finishes and shows it."""

    def broken_judge(*args, **kwargs):
        raise ValueError("judge exploded")

    monkeypatch.setattr("workers.evaluation.judge_answer", broken_judge)
    response = client.post(
        "/evaluate",
        json={"prompt": {"prompt": "x"}, "model": "sim-small", "judge_model": "sim-judge"},
    )
    job = wait_for_job(client, response.get_json()["job_id"])

    assert job["status"] == "failed"
    assert job["progress"] == {"done": 0, "failed": 1, "total": 1}
    db_session.expire_all()
    run = db_session.execute(
        select(Run).where(Run.job_id == uuid.UUID(job["id"]))
    ).scalar_one()
    assert run.status == "failed"
    assert run.error_reason == "internal_error"
    assert run.error_message == "ValueError: judge exploded"
    assert run.attempts == 1


@pytest.mark.parametrize(
    ("weights", "text"),
    [
        ({"clarity": -1}, "greater than or equal to 0"),
        ({"clarity": 1e308, "accuracy": 1e308}, "less than or equal to 1000"),
        ({"clarity": 0, "accuracy": 0}, "at least one must be positive"),
        ({"style": 1}, "unknown criteria"),
    ],
)
def test_judge_weights_rejected(client, db_session, weights, text):
    before = _job_count(db_session)

    response = client.post(
        "/evaluate",
        json={"prompt": {"prompt": "hi"}, "model": "sim-small", "judge_model": "sim-judge",
              "judge": {"weights": weights}},
    )

    assert response.status_code == 422
    assert "weights" in response.get_json()["message"]
    assert text in response.get_json()["message"]
    assert _job_count(db_session) == before


def test_judge_options_need_judge_model(client, db_session):
    before = _job_count(db_session)

    response = client.post(
        "/evaluate",
        json={"prompt": {"prompt": "hi"}, "model": "sim-small", "judge": {"samples": 3}},
    )

    assert response.status_code == 422
    assert response.get_json()["message"] == (
        "invalid request: judge: judge options need a judge_model; set judge_model or remove judge"
    )
    assert _job_count(db_session) == before
