"""GET /stats aggregates stored runs in PostgreSQL and matches describe() on the same runs."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any, Iterator

import pytest
from scipy import stats as scipy_stats
from sqlalchemy import select

from api.model_catalog import clear_cache
from mistralmeter.statistics import describe
from models.judgements import CRITERIA, Judgement
from models.runs import Run
from tests.conftest import TEST_SIMULATOR_CONFIG, simulator_config, wait_for_job

pytestmark = pytest.mark.services

# Model names used by no other test module, so filters by model see only this module's runs.
# mistral-small-latest and ministral-3b-latest have default prices, so costs are not zero.
CANDIDATE = "mistral-small-latest"
FIXED = "open-mistral-nemo"
JUDGE = "ministral-3b-latest"
BROKEN = "stats-broken"
WINDOW = "stats-window"

STATS_SIMULATOR_CONFIG: dict[str, Any] = {
    "seed": 11,
    "models": {
        **TEST_SIMULATOR_CONFIG["models"],
        CANDIDATE: {
            "ttft_ms": {"distribution": "uniform", "min": 10, "max": 40},
            "itl_ms": {"distribution": "uniform", "min": 0.5, "max": 2},
            "output_tokens": {"distribution": "uniform", "min": 8, "max": 30},
            "quality": 7.0,
            "quality_sd": 1.5,
        },
        FIXED: {"ttft_ms": 15, "itl_ms": 1, "output_tokens": 15},
        WINDOW: {"ttft_ms": 15, "itl_ms": 1, "output_tokens": 15},
        JUDGE: {"ttft_ms": 2, "itl_ms": 0, "output_tokens": 60},
        BROKEN: {"ttft_ms": 5, "itl_ms": 0, "output_tokens": 5, "faults": {"rate_500": 1.0}},
    },
}

STATISTIC_KEYS = ("mean", "std_dev", "min", "max", "p50", "p95", "p99")


@pytest.fixture(scope="module")
def stats_client(app, simulator_url) -> Iterator[Any]:
    """A test client while the simulator offers this module's models."""
    with simulator_config(simulator_url, STATS_SIMULATOR_CONFIG):
        clear_cache()
        yield app.test_client()
    clear_cache()


def run_batch(client, model: str, prompts: int, *, runs: int = 1, judge: str | None = None):
    body = {
        "prompts": [{"prompt": f"Question {index}: explain item {index}."}
                    for index in range(prompts)],
        "model": model,
        "runs": runs,
        "judge_model": judge,
    }
    response = client.post("/evaluate/batch", json=body)
    assert response.status_code == 202, response.get_json()
    return wait_for_job(client, response.get_json()["job_id"])


@pytest.fixture(scope="module")
def judged_job(stats_client, celery_worker) -> dict[str, Any]:
    job = run_batch(stats_client, CANDIDATE, 6, runs=2, judge=JUDGE)
    assert job["status"] == "succeeded", job
    return job


def get_stats(client, **params: Any) -> dict[str, Any]:
    response = client.get("/stats", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def load_runs(session, job_id: str) -> list[tuple[Run, Judgement | None]]:
    session.expire_all()
    statement = (
        select(Run, Judgement)
        .outerjoin(Judgement, Judgement.run_id == Run.id)
        .where(Run.job_id == uuid.UUID(job_id))
    )
    return list(session.execute(statement).all())


def assert_matches_describe(actual: dict[str, Any], values: list[float]) -> None:
    expected = describe(values)
    assert actual["n"] == expected["n"]
    for key in STATISTIC_KEYS:
        assert actual[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    if expected["std_dev"] == 0.0:
        # Constant values: describe()'s interval is [v, v], and /stats must return the same.
        low, high = expected["ci_low"], expected["ci_high"]
    else:
        low, high = scipy_stats.t.interval(
            0.95, expected["n"] - 1, loc=expected["mean"],
            scale=expected["std_dev"] / expected["n"] ** 0.5,
        )
    assert actual["ci_low"] == pytest.approx(low, rel=1e-9)
    assert actual["ci_high"] == pytest.approx(high, rel=1e-9)


def test_stats_equal_describe_on_the_same_runs(stats_client, judged_job, db_session):
    """Every metric of GET /stats?job_id= equals describe() over the job's stored values."""
    body = get_stats(stats_client, job_id=judged_job["id"])
    rows = load_runs(db_session, judged_job["id"])

    assert body["ci_method"] == "t"
    assert body["simulated"] is True
    assert len(body["groups"]) == 1
    group = body["groups"][0]
    assert group["model"] == CANDIDATE
    assert group["dataset"] is None
    assert group["runs"] == {"total": 12, "succeeded": 12, "failed": 0}
    assert group["error_rate"] == 0.0

    runs = [run for run, _ in rows]
    for section, names in (
        ("latency", ("total_ms", "time_to_first_token_ms", "tokens_per_second",
                     "decode_tokens_per_second", "inter_token_latency_ms")),
        ("tokens", ("input_tokens", "output_tokens", "total_tokens")),
    ):
        for name in names:
            assert_matches_describe(group[section][name], [getattr(run, name) for run in runs])

    judgements = [judgement for _, judgement in rows]
    assert all(judgement.status == "scored" for judgement in judgements)
    assert_matches_describe(
        group["quality"]["score"], [judgement.overall_score for judgement in judgements]
    )
    for name in CRITERIA:
        assert_matches_describe(
            group["quality"]["criteria_scores"][name],
            [getattr(judgement, name) for judgement in judgements],
        )
    assert group["quality"]["judged"] == 12
    assert group["quality"]["unscored_rate"] == 0.0
    assert group["quality"]["judge_models"] == [JUDGE]

    candidate_cost = sum(run.cost_usd for run in runs)
    judge_cost = sum(judgement.cost_usd for judgement in judgements)
    assert candidate_cost > 0
    assert group["cost"]["candidate_usd"] == pytest.approx(candidate_cost, rel=1e-12)
    assert group["cost"]["judge_usd"] == pytest.approx(judge_cost, rel=1e-12)
    assert group["cost"]["unpriced_runs"] == 0


def test_stats_agree_with_job_summary(stats_client, judged_job):
    """The job's own summary (built with describe()) and /stats give the same numbers."""
    summary = judged_job["result"]["summary"][CANDIDATE]
    group = get_stats(stats_client, job_id=judged_job["id"])["groups"][0]

    for section in ("latency", "tokens"):
        for name, expected in summary[section].items():
            for key in ("n", *STATISTIC_KEYS):
                assert group[section][name][key] == pytest.approx(expected[key], rel=1e-9), (
                    section, name, key
                )
    assert group["quality"]["score"]["mean"] == pytest.approx(
        summary["quality"]["score"]["mean"], rel=1e-9
    )
    assert group["cost"]["total_usd"] == pytest.approx(summary["cost"]["total_usd"], rel=1e-12)


def test_stats_score_by_prompt_matches_job_summary(stats_client, judged_job):
    """Both compute statistics over per-prompt means: 6 prompts, 2 repetitions each."""
    expected = judged_job["result"]["summary"][CANDIDATE]["quality"]["score_by_prompt"]
    group = get_stats(stats_client, job_id=judged_job["id"])["groups"][0]
    actual = group["quality"]["score_by_prompt"]

    assert actual["n"] == 6
    assert expected["n"] == 6
    for key in ("mean", "min", "max", "p50", "p95", "p99"):
        assert actual[key] == pytest.approx(expected[key], rel=1e-9), key
    if expected["std_dev"] is None:
        assert actual["std_dev"] is None
    else:
        assert actual["std_dev"] == pytest.approx(expected["std_dev"], rel=1e-9)


def test_stats_error_rate_counts_failed_runs(stats_client, celery_worker):
    job = run_batch(stats_client, BROKEN, 2)
    assert job["status"] == "failed"

    group = get_stats(stats_client, job_id=job["id"])["groups"][0]

    assert group["runs"] == {"total": 2, "succeeded": 0, "failed": 2}
    assert group["error_rate"] == 1.0
    assert group["errors"] == {"http_500": 2}
    assert group["latency"]["total_ms"] == {
        "n": 0, "mean": None, "std_dev": None, "min": None, "max": None,
        "p50": None, "p95": None, "p99": None, "ci_low": None, "ci_high": None,
    }
    assert group["quality"]["judged"] == 0
    assert group["quality"]["unscored_rate"] is None


def test_stats_model_and_time_window_filters(stats_client, celery_worker, db_session):
    """since/until select runs by created_at, and a constant metric has std_dev 0."""
    first = run_batch(stats_client, WINDOW, 2)
    second = run_batch(stats_client, WINDOW, 3)
    second_runs = [run for run, _ in load_runs(db_session, second["id"])]
    boundary = min(run.created_at for run in second_runs)
    end = max(run.created_at for run in second_runs) + timedelta(microseconds=1)

    everything = get_stats(stats_client, model=WINDOW)["groups"]
    later = get_stats(stats_client, model=WINDOW, since=boundary.isoformat())["groups"]
    earlier = get_stats(stats_client, model=WINDOW, until=boundary.isoformat())["groups"]
    window = get_stats(
        stats_client, model=WINDOW, since=boundary.isoformat(), until=end.isoformat()
    )["groups"]

    assert [group["runs"]["total"] for group in everything] == [5]
    assert [group["runs"]["total"] for group in later] == [3]
    assert [group["runs"]["total"] for group in earlier] == [2]
    assert [group["runs"]["total"] for group in window] == [3]
    assert first["status"] == second["status"] == "succeeded"

    output_tokens = later[0]["tokens"]["output_tokens"]
    assert output_tokens["mean"] == 15.0
    assert output_tokens["std_dev"] == 0.0
    assert (output_tokens["ci_low"], output_tokens["ci_high"]) == (15.0, 15.0)
    assert get_stats(stats_client, model=WINDOW, job_id=first["id"])["groups"][0]["runs"][
        "total"
    ] == 2
    assert get_stats(stats_client, model=CANDIDATE, job_id=first["id"])["groups"] == []


def upload_version(client, name: str, prompts: list[str]) -> str:
    lines = [json.dumps({"id": f"i{index}", "prompt": text}) for index, text in enumerate(prompts)]
    body = "\n".join(lines)
    response = client.post(f"/datasets?name={name}", data=body, content_type="application/x-ndjson")
    assert response.status_code == 201, response.get_json()
    return response.get_json()["version"]


def evaluate_version(client, name: str, version: str) -> dict[str, Any]:
    response = client.post(f"/datasets/{name}/evaluate?model={FIXED}&version={version}")
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture(scope="module")
def two_versions(stats_client, celery_worker) -> dict[str, Any]:
    name = f"stats-{uuid.uuid4().hex[:8]}"
    first = upload_version(stats_client, name, ["What is 2 + 2?", "Name a colour."])
    second = upload_version(stats_client, name, ["What is 3 + 3?", "Name a fruit.", "Say hi."])
    evaluate_version(stats_client, name, first)
    evaluate_version(stats_client, name, second)
    return {"name": name, "first": first, "second": second}


def test_stats_keep_dataset_versions_apart(stats_client, two_versions):
    groups = get_stats(stats_client, dataset=two_versions["name"])["groups"]

    by_version = {group["dataset"]["version"]: group["runs"]["total"] for group in groups}
    assert by_version == {two_versions["first"]: 2, two_versions["second"]: 3}
    assert all(group["model"] == FIXED for group in groups)


@pytest.mark.parametrize(
    ("version_of", "expected_runs"),
    [
        (lambda versions: versions["second"], 3),
        # Without "sha256:" and shortened to 12 hex digits, as users paste it.
        (lambda versions: versions["first"].removeprefix("sha256:")[:12], 2),
    ],
)
def test_stats_filter_by_dataset_version(stats_client, two_versions, version_of, expected_runs):
    groups = get_stats(
        stats_client, dataset=two_versions["name"], dataset_version=version_of(two_versions)
    )["groups"]

    assert [group["runs"]["total"] for group in groups] == [expected_runs]


def test_stats_pool_versions_when_asked(stats_client, two_versions):
    body = get_stats(stats_client, dataset=two_versions["name"], pool_versions="true")

    assert body["pool_versions"] is True
    assert len(body["groups"]) == 1
    group = body["groups"][0]
    assert group["runs"]["total"] == 5
    assert group["dataset"]["name"] == two_versions["name"]
    assert group["dataset"]["version"] is None
    assert group["dataset"]["versions"] == sorted([two_versions["first"], two_versions["second"]])


def test_stats_judge_simulated_and_schedule_filters(stats_client, judged_job, two_versions):
    judged = judged_job["id"]

    assert len(get_stats(stats_client, job_id=judged, judge_model=JUDGE)["groups"]) == 1
    assert get_stats(stats_client, job_id=judged, judge_model="sim-judge")["groups"] == []
    assert get_stats(stats_client, dataset=two_versions["name"], judge_model=JUDGE)["groups"] == []
    assert len(get_stats(stats_client, job_id=judged, simulated="true")["groups"]) == 1
    assert get_stats(stats_client, job_id=judged, simulated="false")["groups"] == []
    assert get_stats(stats_client, schedule=str(uuid.uuid4()))["groups"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"model": CANDIDATE, "modle": CANDIDATE}, "modle"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01T00:00:00Z"}, "until"),
        ({"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "since"),
        ({"job_id": "not-a-uuid"}, "job_id"),
        ({"schedule": "42"}, "schedule"),
        ({"dataset_version": "v1"}, "dataset_version"),
        ({"simulated": "maybe"}, "simulated"),
        ({"pool_versions": "often"}, "pool_versions"),
    ],
)
def test_stats_reject_bad_query(stats_client, query, field):
    response = stats_client.get("/stats", query_string=query)

    assert response.status_code == 422
    payload = response.get_json()
    assert payload["code"] == 422
    assert field in payload["errors"]["query"]
    assert field in payload["message"]


def test_stats_empty_selection_has_no_groups(stats_client):
    body = get_stats(stats_client, model="no-runs-for-this-model")

    assert body["groups"] == []
    assert body["simulated"] is False
    assert body["filters"] == {"model": "no-runs-for-this-model"}


def test_openapi_lists_stats_and_stream(stats_client):
    paths = stats_client.get("/openapi.json").get_json()["paths"]

    assert "get" in paths["/stats"]
    assert "post" in paths["/stream"]
