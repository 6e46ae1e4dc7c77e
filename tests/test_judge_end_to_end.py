"""The judge misbehaves in the simulator; the stored judgements must say exactly what happened."""

from __future__ import annotations

import copy
import uuid

import pytest
from sqlalchemy import select

from models.judgements import Judgement, PairwiseJudgement
from models.runs import Run
from tests.conftest import TEST_SIMULATOR_CONFIG, simulator_config, wait_for_job
from tests.test_end_to_end import upload_dataset

pytestmark = pytest.mark.services


def config_with_judge(mode: str, retry_mode: str = "valid") -> dict:
    config = copy.deepcopy(TEST_SIMULATOR_CONFIG)
    config["models"]["sim-judge"]["judge"] = {"mode": mode, "retry_mode": retry_mode}
    return config


def evaluate_and_load(client, db_session, runs: int = 1) -> tuple[dict, list[Judgement]]:
    response = client.post(
        "/evaluate",
        json={
            "prompt": {"prompt": "Describe a sunset."},
            "model": "sim-small",
            "judge_model": "sim-judge",
            "runs": runs,
        },
    )
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["job_id"])
    db_session.expire_all()
    judgements = db_session.execute(
        select(Judgement)
        .join(Run, Run.id == Judgement.run_id)
        .where(Run.job_id == uuid.UUID(job["id"]))
    ).scalars().all()
    assert len(judgements) == runs
    return job, judgements


@pytest.mark.parametrize(
    ("mode", "repair"),
    [
        ("fenced", "extracted_from_fence"),
        ("prose", "extracted_from_prose"),
        ("strings", "numbers_from_strings"),
        ("extra_criterion", "dropped_extra_keys:creativity"),
    ],
)
def test_judge_output_repaired_is_scored(client, celery_worker, simulator_url, db_session,
                                         mode, repair):
    with simulator_config(simulator_url, config_with_judge(mode)):
        job, (judgement,) = evaluate_and_load(client, db_session)

    assert judgement.status == "scored"
    assert judgement.parsed is True
    assert repair in judgement.repairs
    assert judgement.attempts == 1
    assert 0 <= judgement.overall_score <= 10
    assert job["result"]["metrics"]["quality"]["score"] == judgement.overall_score


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("out_of_range", "out_of_range"),
        ("missing_criterion", "missing_criterion"),
        ("refusal", "refusal"),
        ("truncated", "truncated"),
    ],
)
def test_judge_output_rejected_twice_is_unscored(client, celery_worker, simulator_url,
                                                 db_session, mode, reason):
    with simulator_config(simulator_url, config_with_judge(mode, retry_mode=mode)):
        job, judgements = evaluate_and_load(client, db_session, runs=2)

    for judgement in judgements:
        assert judgement.status == "unscored"
        assert judgement.parsed is False
        assert judgement.overall_score is None
        assert judgement.clarity is None
        assert judgement.unscored_reason.startswith(reason)
        assert judgement.raw_output
        assert judgement.attempts == 2

    # The runs keep their other metrics, and quality statistics leave them out.
    quality = job["result"]["metrics"]["quality"]
    assert quality["score"]["n"] == 0
    assert quality["unscored_rate"] == 1.0
    assert job["result"]["metrics"]["latency"]["total_ms"]["n"] == 2


@pytest.mark.parametrize("mode", ["out_of_range", "missing_criterion", "refusal", "truncated"])
def test_judge_output_fixed_on_retry_is_scored(client, celery_worker, simulator_url,
                                               db_session, mode):
    with simulator_config(simulator_url, config_with_judge(mode, retry_mode="valid")):
        _, (judgement,) = evaluate_and_load(client, db_session)

    assert judgement.status == "scored"
    assert judgement.attempts == 2
    assert judgement.unscored_reason is None


def test_judge_samples_report_judge_spread(client, celery_worker, db_session):
    response = client.post(
        "/evaluate",
        json={
            "prompt": {"prompt": "Name a colour."},
            "model": "sim-small",
            "judge_model": "sim-judge",
            "judge": {"samples": 3, "temperature": 0.0},
        },
    )
    job = wait_for_job(client, response.get_json()["job_id"])
    judgement = db_session.execute(
        select(Judgement).join(Run, Run.id == Judgement.run_id)
        .where(Run.job_id == uuid.UUID(job["id"]))
    ).scalar_one()

    assert len(judgement.samples) == 3
    assert judgement.attempts == 3
    # The simulator's judge is deterministic per answer (temperature 0), so the spread is 0.
    assert judgement.score_std_dev == 0.0


def test_judge_weights_change_overall_score(client, celery_worker, db_session):
    response = client.post(
        "/evaluate",
        json={
            "prompt": {"prompt": "Name a fruit."},
            "model": "sim-small",
            "judge_model": "sim-judge",
            "judge": {"weights": {"accuracy": 3, "clarity": 1}},
        },
    )
    job = wait_for_job(client, response.get_json()["job_id"])
    judgement = db_session.execute(
        select(Judgement).join(Run, Run.id == Judgement.run_id)
        .where(Run.job_id == uuid.UUID(job["id"]))
    ).scalar_one()

    expected = (3 * judgement.accuracy + judgement.clarity) / 4
    assert judgement.overall_score == pytest.approx(expected)


def compare(client, **overrides) -> dict:
    body = {
        "prompt": {"prompt": "Write a haiku about rain."},
        "model_a": "sim-large",
        "model_b": "sim-small",
        "judge_model": "sim-judge",
        "runs": 6,
        **overrides,
    }
    body = {key: value for key, value in body.items() if value is not None}
    response = client.post("/compare", json=body)
    assert response.status_code == 202, response.get_json()
    return wait_for_job(client, response.get_json()["job_id"])


def test_compare_judges_both_orders_and_names_better_model(client, celery_worker, db_session):
    dataset = f"cmp-{uuid.uuid4().hex[:8]}"
    upload_dataset(client, dataset, [{"id": f"p{i}", "prompt": f"Prompt {i}"} for i in range(6)])
    job = compare(client, prompt=None, dataset=dataset, runs=2)
    comparison = job["result"]["comparison"]
    pairwise = comparison["pairwise"]

    # sim-large is configured with quality 8 and sim-small with 6: a consistent judge prefers it.
    assert job["status"] == "succeeded"
    assert pairwise["unit"] == "prompt"
    assert pairwise["verdicts"] == 12
    assert pairwise["n"] == 6
    assert pairwise["wins"] == 6
    assert pairwise["losses"] == 0
    assert pairwise["position_consistency"]["rate"] == 1.0
    assert pairwise["first_shown_win_rate"]["rate"] == 0.5
    assert pairwise["p_value"] == pytest.approx(2 / 64)
    assert pairwise["winner"] == "a"

    differences = comparison["differences"]
    assert differences["output_tokens"]["mean_difference"] == 10.0
    assert differences["output_tokens"]["n"] == 6
    assert differences["quality_score"]["mean_difference"] > 0
    assert set(job["result"]["summary"]) == {"sim-large", "sim-small"}

    stored = db_session.execute(
        select(PairwiseJudgement).where(PairwiseJudgement.job_id == uuid.UUID(job["id"]))
    ).scalars().all()
    assert len(stored) == 12
    assert all(p.verdict_original == "a" and p.verdict_swapped == "a" for p in stored)


def test_compare_repetitions_count_as_one_prompt(client, celery_worker):
    job = compare(client, runs=4)
    pairwise = job["result"]["comparison"]["pairwise"]

    assert pairwise["verdicts"] == 4
    assert pairwise["n"] == 1
    assert pairwise["wins"] == 1
    assert pairwise["winner"] is None
    assert pairwise["prompts_needed"] is not None


def test_compare_order_dependent_judge_gives_ties(client, celery_worker, simulator_url):
    with simulator_config(simulator_url, config_with_judge("first_position")):
        job = compare(client, runs=4)
    pairwise = job["result"]["comparison"]["pairwise"]

    assert pairwise["verdicts"] == 4
    assert pairwise["ties"] == 1
    assert pairwise["wins"] == 0
    assert pairwise["position_consistency"]["rate"] == 0.0
    assert pairwise["first_shown_win_rate"]["rate"] == 1.0
    assert pairwise["winner"] is None
    assert pairwise["verdict"] == "no significant difference"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"model_a": "sim-small", "model_b": "sim-small", "judge_model": "sim-judge"},
         "model_a and model_b are the same model"),
        ({"model_a": "sim-small", "model_b": "sim-large", "judge_model": "sim-small"},
         "judge_model equals model_a"),
        ({"model_a": "sim-small", "model_b": "sim-large", "judge_model": "sim-large"},
         "judge_model equals model_b"),
        ({"model_a": "sim-small", "model_b": "sim-large"}, "judge_model"),
    ],
)
def test_compare_rejects_bad_models(client, body, text):
    response = client.post("/compare", json={"prompt": {"prompt": "x"}, **body})

    assert response.status_code == 422
    assert text in response.get_json()["message"]


def test_compare_rejects_prompt_and_dataset_together(client):
    response = client.post(
        "/compare",
        json={
            "prompt": {"prompt": "x"},
            "dataset": "mt_bench",
            "model_a": "sim-small",
            "model_b": "sim-large",
            "judge_model": "sim-judge",
        },
    )

    assert response.status_code == 422
    assert "exactly one of prompt" in response.get_json()["message"]


def test_length_bias_reported_in_summary(client, celery_worker):
    response = client.post(
        "/evaluate/batch",
        json={
            "prompts": [{"prompt": f"Question {index}"} for index in range(5)],
            "model": "sim-small",
            "judge_model": "sim-judge",
        },
    )
    job = wait_for_job(client, response.get_json()["job_id"])
    bias = job["result"]["summary"]["sim-small"]["bias"]["score_vs_output_tokens_spearman"]

    # Every answer has 20 tokens, so the length is constant and the correlation is undefined.
    assert bias["n"] == 5
    assert bias["rho"] is None
    assert bias["note"]
