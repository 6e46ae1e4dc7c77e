"""GET /ratings/stats and GET /ratings/calibration against hand-computed figures.

Every test reads only its own job (job_id filter), so data from other tests does not count.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import krippendorff
import numpy as np
import pytest

from models.db import session_scope
from models.judgements import PairwiseJudgement
from models.ratings import Rating
from tests.test_ratings_api import create_job

pytestmark = pytest.mark.services

# Student's t quantiles t(0.975, df), as scipy.stats.t.ppf(0.975, df) gives them.
T_975_DF4 = 2.7764451051977934
T_975_DF1 = 12.706204736174694


@dataclass(frozen=True)
class HandSet:
    job_id: str
    judge_model: str
    run_ids: list


def stats(client, **query) -> dict:
    response = client.get("/ratings/stats", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def job_of(settings, run_id) -> str:
    from models.runs import Run

    with session_scope(settings.database_url) as session:
        return str(session.get(Run, run_id).job_id)


@pytest.fixture(scope="module")
def hand_set(app, settings) -> HandSet:
    """Five runs of two models with judge scores 2, 4, 6, 8, 10 and 8 ratings by two people.

    Run means of people: 1.5, 2, 3.5, 3, 5. Clarity: people 2, 3, 5 on the first three runs,
    the judge 3, 5, 9.
    """
    judge_model = f"judge-{uuid.uuid4().hex[:8]}"
    clarity = [3.0, 5.0, 9.0, 6.0, 6.0]
    run_ids = create_job(
        settings,
        [
            {
                "model": "m1" if index < 3 else "m2",
                "item_id": f"q{index}",
                "judge": {"overall_score": score, "clarity": clarity[index]},
            }
            for index, score in enumerate([2.0, 4.0, 6.0, 8.0, 10.0])
        ],
        judge_model=judge_model,
    )
    client = app.test_client()
    overall = [
        (0, "alice", 1), (0, "bob", 2),
        (1, "alice", 2),
        (2, "alice", 4), (2, "bob", 3),
        (3, "alice", 3),
        (4, "alice", 5), (4, "bob", 5),
    ]
    for index, rater, rating in overall:
        response = client.post(f"/rate/{run_ids[index]}?rating={rating}&rater={rater}")
        assert response.status_code == 201
    for index, rating in enumerate([2, 3, 5]):
        response = client.post(
            f"/rate/{run_ids[index]}", json={"rating": rating, "rater": "alice", "criterion": "clarity"}
        )
        assert response.status_code == 201
    return HandSet(job_of(settings, run_ids[0]), judge_model, run_ids)


def test_ratings_stats_counts_and_distribution(client, hand_set):
    body = stats(client, job_id=hand_set.job_id)

    assert body["criterion"] == "overall"
    assert body["count"] == 8
    assert body["runs"] == 5
    assert body["raters"] == 2
    assert body["distribution"] == {"1": 1, "2": 2, "3": 2, "4": 1, "5": 2}
    assert body["preferences"] == 0


def test_ratings_stats_mean_per_model_and_rater(client, hand_set):
    body = stats(client, job_id=hand_set.job_id)

    means = body["mean_per_model"]
    assert means["m1"]["n"] == 5
    assert means["m1"]["mean"] == pytest.approx(2.4)
    assert means["m1"]["std_dev"] == pytest.approx(math.sqrt(5.2 / 4))
    assert means["m2"]["n"] == 3
    assert means["m2"]["mean"] == pytest.approx(13 / 3)
    assert means["m2"]["std_dev"] == pytest.approx(math.sqrt((8 / 3) / 2))

    by_rater = body["mean_per_model_and_rater"]
    assert by_rater["m1"]["alice"]["mean"] == pytest.approx(7 / 3)
    assert by_rater["m1"]["bob"]["mean"] == pytest.approx(2.5)
    assert by_rater["m2"]["alice"]["mean"] == pytest.approx(4.0)
    assert by_rater["m2"]["bob"] == {"n": 1, "mean": 5.0, "std_dev": None}


def test_ratings_stats_judge_agreement_by_hand(client, hand_set):
    body = stats(client, job_id=hand_set.job_id, judge_model=hand_set.judge_model)
    agreement = body["judges"][hand_set.judge_model]["agreement"]

    assert list(body["judges"]) == [hand_set.judge_model]
    assert agreement["n"] == 5
    # Ranks of people 1, 2, 4, 3, 5 against 1..5: sum d^2 = 2, rho = 1 - 6*2/(5*24).
    assert agreement["spearman"]["rho"] == pytest.approx(0.9)
    human = [1.5, 2.0, 3.5, 3.0, 5.0]
    judge = [2.0, 4.0, 6.0, 8.0, 10.0]
    assert agreement["pearson"]["r"] == pytest.approx(np.corrcoef(human, judge)[0, 1])
    # Labels: people 2, 2, 4, 3, 5 (halves up) and judge 2, 3, 3, 4, 5. Observed squared
    # disagreement 3/5, expected 2.44, so kappa = 1 - 0.6 / 2.44 = 46/61.
    assert agreement["quadratic_weighted_kappa"]["kappa"] == pytest.approx(46 / 61)
    # Judge on 1-5: 1.8, 2.6, 3.4, 4.2, 5.0. Differences 0.3, 0.6, -0.1, 1.2, 0: mean 0.4,
    # sample variance 1.1 / 4.
    offset = agreement["mean_offset"]
    half_width = T_975_DF4 * math.sqrt(0.275 / 5)
    assert offset["mean"] == pytest.approx(0.4)
    assert offset["ci_low"] == pytest.approx(0.4 - half_width)
    assert offset["ci_high"] == pytest.approx(0.4 + half_width)
    assert agreement["mean_offset_judge_scale"]["mean"] == pytest.approx(1.0)
    assert agreement["statement"].startswith("On 5 runs rated by both people and the judge")


def test_ratings_stats_krippendorff_alpha_includes_judge(client, hand_set):
    body = stats(client, job_id=hand_set.job_id, judge_model=hand_set.judge_model)
    alpha = body["judges"][hand_set.judge_model]["krippendorff_alpha"]

    nan = np.nan
    matrix = np.array(
        [
            [1, 2, 4, 3, 5],  # alice
            [2, nan, 3, nan, 5],  # bob
            [2, 3, 3, 4, 5],  # the judge, mapped to 1-5
        ]
    )
    expected = krippendorff.alpha(
        reliability_data=matrix, value_domain=[1, 2, 3, 4, 5], level_of_measurement="ordinal"
    )
    assert alpha["judge_rater"] == f"judge:{hand_set.judge_model}"
    assert alpha["n_units"] == 5
    assert alpha["n_raters"] == 3
    assert alpha["alpha"] == pytest.approx(expected)


def test_ratings_stats_inter_rater_agreement(client, hand_set):
    body = stats(client, job_id=hand_set.job_id)
    inter = body["inter_rater"]

    expected = krippendorff.alpha(
        reliability_data=np.array([[1, 4, 5], [2, 3, 5]]),
        value_domain=[1, 2, 3, 4, 5],
        level_of_measurement="ordinal",
    )
    assert inter["n_units"] == 3
    assert inter["n_raters"] == 2
    # Exact agreement per shared run: 0, 0, 1.
    assert inter["mean_pairwise_exact_agreement"] == pytest.approx(1 / 3)
    assert inter["alpha"] == pytest.approx(expected)


def test_ratings_stats_criterion_uses_judge_criterion_score(client, hand_set):
    body = stats(
        client, job_id=hand_set.job_id, judge_model=hand_set.judge_model, criterion="clarity"
    )
    agreement = body["judges"][hand_set.judge_model]["agreement"]

    assert body["criterion"] == "clarity"
    assert body["count"] == 3
    assert body["distribution"] == {"1": 0, "2": 1, "3": 1, "4": 0, "5": 1}
    assert agreement["n"] == 3
    assert agreement["spearman"]["rho"] == pytest.approx(1.0)
    # Judge clarity on 1-5: 2.2, 3.0, 4.6 against 2, 3, 5: mean offset -0.2 / 3.
    assert agreement["mean_offset"]["mean"] == pytest.approx(-0.2 / 3)


def test_ratings_stats_filters_model_and_rater(client, hand_set):
    by_model = stats(client, job_id=hand_set.job_id, model="m2")
    by_rater = stats(client, job_id=hand_set.job_id, rater="bob")

    assert by_model["count"] == 3
    assert list(by_model["mean_per_model"]) == ["m2"]
    assert by_rater["count"] == 3
    assert by_rater["distribution"] == {"1": 0, "2": 1, "3": 1, "4": 0, "5": 1}


def test_ratings_stats_unknown_judge_has_n_zero(client, hand_set):
    body = stats(client, job_id=hand_set.job_id, judge_model="no-such-judge")
    figures = body["judges"]["no-such-judge"]

    assert figures["agreement"]["n"] == 0
    assert figures["agreement"]["spearman"]["rho"] is None
    assert figures["pairwise"]["n"] == 0
    assert body["count"] == 8


def test_ratings_calibration_buckets(client, hand_set):
    response = client.get(
        "/ratings/calibration",
        query_string={"job_id": hand_set.job_id, "judge_model": hand_set.judge_model},
    )
    assert response.status_code == 200, response.get_json()
    calibration = response.get_json()["judges"][hand_set.judge_model]
    buckets = {bucket["bucket"]: bucket for bucket in calibration["buckets"]}

    assert calibration["n"] == 5
    assert [b["n"] for b in calibration["buckets"]] == [0, 1, 1, 1, 2]
    assert buckets["[0, 2)"]["human_mean"] is None
    assert buckets["[2, 4)"]["human_mean"] == pytest.approx(1.5)
    assert buckets["[4, 6)"]["human_mean"] == pytest.approx(2.0)
    assert buckets["[6, 8)"]["human_mean"] == pytest.approx(3.5)
    assert buckets["[6, 8)"]["reason"] == "need at least 2 rated runs in this bucket; have 1"
    top = buckets["[8, 10]"]
    assert top["human_mean"] == pytest.approx(4.0)
    assert top["gap"] == pytest.approx(4.0 - 4.6)
    # Ratings 3 and 5: s = sqrt(2), standard error 1.
    assert top["human_ci_low"] == pytest.approx(4.0 - T_975_DF1)
    assert top["human_ci_high"] == pytest.approx(4.0 + T_975_DF1)


@pytest.mark.parametrize("rated", [0, 1, 2])
def test_ratings_stats_small_n_null_with_reason(client, settings, rated):
    judge_model = f"judge-{uuid.uuid4().hex[:8]}"
    run_ids = create_job(
        settings,
        [
            {"model": "small", "item_id": f"q{i}", "judge": {"overall_score": score}}
            for i, score in enumerate([2.5, 7.5])
        ],
        judge_model=judge_model,
    )
    for run_id, rating in list(zip(run_ids, [2, 4]))[:rated]:
        assert client.post(f"/rate/{run_id}?rating={rating}").status_code == 201

    body = stats(client, job_id=job_of(settings, run_ids[0]), judge_model=judge_model)
    agreement = body["judges"][judge_model]["agreement"]

    assert body["count"] == rated
    assert agreement["n"] == rated
    assert agreement["spearman"]["rho"] is None
    assert agreement["spearman"]["reason"] == (
        f"need at least 3 runs rated by both people and the judge; have {rated}"
    )
    assert agreement["pearson"]["r"] is None
    assert agreement["statement"] == (
        "not enough runs rated by both people and the judge to say anything "
        f"(n={rated}; need at least 3)"
    )
    if rated < 2:
        assert agreement["quadratic_weighted_kappa"]["kappa"] is None
        assert agreement["quadratic_weighted_kappa"]["reason"] == (
            f"need at least 2 runs rated by both people and the judge; have {rated}"
        )
        assert agreement["mean_offset"]["mean"] is None
        assert agreement["mean_offset"]["reason"] == (
            f"need at least 2 runs rated by both people and the judge; have {rated}"
        )
    else:
        # People 2 and 4, the judge 2.5 -> 2 and 7.5 -> 4: full agreement, no offset.
        assert agreement["quadratic_weighted_kappa"]["kappa"] == pytest.approx(1.0)
        assert agreement["mean_offset"]["mean"] == pytest.approx(0.0)
        assert agreement["mean_offset"]["ci_low"] == pytest.approx(0.0)
    assert body["inter_rater"]["alpha"] is None
    assert body["inter_rater"]["reason"] == (
        "need at least 1 run rated by at least 2 people; have 0"
    )


def test_ratings_stats_ignores_unscored_judgements(client, settings):
    judge_model = f"judge-{uuid.uuid4().hex[:8]}"
    run_ids = create_job(
        settings,
        [{"judge": {"status": "unscored", "unscored_reason": "not JSON"}}],
        judge_model=judge_model,
    )
    client.post(f"/rate/{run_ids[0]}?rating=3")

    body = stats(client, job_id=job_of(settings, run_ids[0]))

    assert body["count"] == 1
    assert body["judges"] == {}


def test_ratings_stats_since_until_and_dataset(client, settings):
    dataset = f"ds-{uuid.uuid4().hex[:8]}"
    run_ids = create_job(
        settings,
        [{"item_id": "a", "dataset_name": dataset}, {"item_id": "b", "dataset_name": dataset}],
    )
    with session_scope(settings.database_url) as session:
        for run_id, rating, day in zip(run_ids, [2, 5], ["2020-01-01", "2021-01-01"]):
            created = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
            session.add(Rating(run_id=run_id, rating=rating, created_at=created, updated_at=created))

    everything = stats(client, dataset=dataset)
    after = stats(client, dataset=dataset, since="2020-06-01T00:00:00")
    before = stats(client, dataset=dataset, until="2020-06-01T00:00:00+00:00")
    window = stats(client, dataset=dataset, since="2020-01-01", until="2020-01-02")
    outside = stats(client, dataset=dataset, since="2022-01-01")

    assert everything["count"] == 2
    assert after["distribution"]["5"] == 1
    assert after["count"] == 1
    assert before["distribution"]["2"] == 1
    assert before["count"] == 1
    assert window["count"] == 1
    assert outside["count"] == 0
    assert outside["distribution"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}
    assert outside["mean_per_model"] == {}


def test_ratings_stats_pairwise_section(client, settings):
    """Preferences against verdicts in both orders, one judgement stored with a and b swapped."""
    judge_model = f"judge-{uuid.uuid4().hex[:8]}"
    specs = []
    for index in range(4):
        specs.append({"model": "ma", "item_id": f"p{index}", "prompt": f"prompt {index}"})
        specs.append({"model": "mb", "item_id": f"p{index}", "prompt": f"prompt {index}"})
    run_ids = create_job(settings, specs)
    pairs = [(run_ids[2 * i], run_ids[2 * i + 1]) for i in range(4)]
    rater = f"rater-{uuid.uuid4().hex[:6]}"
    for (run_a, run_b), human in zip(pairs, ["a", "b", "a", "tie"]):
        response = client.post(
            "/preferences",
            json={"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": human,
                  "rater": rater},
        )
        assert response.status_code == 201

    stored = [
        # (run_a_id, run_b_id, verdict with run_a shown first, verdict with run_b shown first)
        (pairs[0][0], pairs[0][1], "a", "a"),
        (pairs[1][0], pairs[1][1], "a", "b"),
        # Stored the other way round: "b" is the preference's run a in both orders.
        (pairs[2][1], pairs[2][0], "b", "b"),
    ]
    with session_scope(settings.database_url) as session:
        for run_a, run_b, original, swapped in stored:
            session.add(
                PairwiseJudgement(
                    run_a_id=run_a,
                    run_b_id=run_b,
                    judge_model=judge_model,
                    verdict_original=original,
                    verdict_swapped=swapped,
                )
            )

    body = stats(client, job_id=job_of(settings, run_ids[0]), judge_model=judge_model)
    pairwise = body["judges"][judge_model]["pairwise"]

    assert body["preferences"] == 4
    assert pairwise["n"] == 3
    assert pairwise["n_excluded"] == 1
    assert (pairwise["original_order"]["count"], pairwise["original_order"]["n"]) == (2, 3)
    assert pairwise["swapped_order"]["count"] == 3
    assert pairwise["average"]["rate"] == pytest.approx(5 / 6)
    assert pairwise["both_orders_correct"]["count"] == 2
    assert pairwise["position_consistency"]["count"] == 2
    assert pairwise["cohen_kappa"]["original"]["n"] == 3

    by_rater = stats(client, job_id=job_of(settings, run_ids[0]), rater="someone-else")
    assert by_rater["preferences"] == 0
    assert by_rater["judges"] == {}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"criterion": "style"}, "criterion"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2024-02-01", "until": "2024-01-01"}, "until"),
        ({"job_id": "12"}, "job_id"),
        ({"model": ""}, "model"),
        ({"rater": "nul\u0000"}, "rater"),
    ],
)
def test_ratings_stats_rejects_bad_query(client, query, field):
    for path in ("/ratings/stats", "/ratings/calibration"):
        response = client.get(path, query_string=query)

        assert response.status_code == 422
        assert field in response.get_json()["message"]
