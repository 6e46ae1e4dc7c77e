"""Comparison differences: per-prompt means of each model's valid runs, paired by prompt."""

from __future__ import annotations

import random
import uuid

import pytest
from scipy import stats as scipy_stats

from mistralmeter.statistics import bootstrap_mean_ci
from models.db import session_scope
from models.jobs import Job
from models.judgements import Judgement
from models.runs import Run
from workers.comparison_results import comparison_section
from workers.job_results import load_run_rows

pytestmark = pytest.mark.services

MODEL_A = "sim-large"
MODEL_B = "sim-small"

# (prompt, model, repetition, run status, output_tokens, judgement status, overall_score).
# A failed run has no judgement. Prompt p5 has no run of model_a at all, as in a cancelled job.
RUNS = [
    ("p1", MODEL_A, 0, "succeeded", 100, "scored", 8.0),
    ("p1", MODEL_A, 1, "succeeded", 120, "scored", 6.0),
    ("p1", MODEL_B, 0, "succeeded", 90, "scored", 5.0),
    ("p1", MODEL_B, 1, "failed", None, None, None),
    ("p2", MODEL_A, 0, "succeeded", 50, "scored", 9.0),
    ("p2", MODEL_A, 1, "succeeded", 70, "unscored", None),
    ("p2", MODEL_B, 0, "succeeded", 60, "scored", 4.0),
    ("p2", MODEL_B, 1, "succeeded", 40, "scored", 6.0),
    ("p3", MODEL_A, 0, "failed", None, None, None),
    ("p3", MODEL_A, 1, "failed", None, None, None),
    ("p3", MODEL_B, 0, "succeeded", 80, "scored", 7.0),
    ("p3", MODEL_B, 1, "succeeded", 80, "scored", 7.0),
    ("p4", MODEL_A, 0, "succeeded", 30, "scored", 6.0),
    ("p4", MODEL_A, 1, "succeeded", 50, "scored", 8.0),
    ("p4", MODEL_B, 0, "succeeded", 20, "unscored", None),
    ("p4", MODEL_B, 1, "succeeded", 40, "unscored", None),
    ("p5", MODEL_B, 0, "succeeded", 10, "scored", 3.0),
]

# quality_score, per prompt, model_a's mean minus model_b's mean:
#   p1: a (8 + 6) / 2 = 7, b 5 (repetition 1 failed)           -> 2
#   p2: a 9 (repetition 1 unscored), b (4 + 6) / 2 = 5          -> 4
#   p3: a has no succeeded run; p4: b has no scored run; p5: a has no run -> left out
QUALITY_DIFFERENCES = [2.0, 4.0]

# output_tokens, counted on every succeeded run whether or not it was scored:
#   p1: a (100 + 120) / 2 = 110, b 90  -> 20
#   p2: a (50 + 70) / 2 = 60, b (60 + 40) / 2 = 50  -> 10
#   p4: a (30 + 50) / 2 = 40, b (20 + 40) / 2 = 30  -> 10
#   p3 and p5: a has no value -> left out
TOKEN_DIFFERENCES = [20.0, 10.0, 10.0]


def store_comparison(settings) -> uuid.UUID:
    """Write a comparison job with the runs and judgements of RUNS, and return its id."""
    prompts = sorted({prompt for prompt, *_ in RUNS})
    items = [{"id": prompt, "prompt": f"Question {prompt}?"} for prompt in prompts]
    with session_scope(settings.database_url) as session:
        job = Job(
            kind="comparison",
            # Finished, so that no recovery in another test takes it for a stalled job.
            status="succeeded",
            request={},
            items=items,
            models=[MODEL_A, MODEL_B],
            repetitions=2,
            total_runs=len(RUNS),
            judge_model="sim-judge",
            simulated=True,
        )
        session.add(job)
        session.flush()

        for prompt, model, repetition, status, tokens, judged, score in RUNS:
            run = Run(
                job_id=job.id,
                item_id=prompt,
                repetition=repetition,
                model=model,
                provider="simulator",
                status=status,
                prompt=f"Question {prompt}?",
                params={},
                output_tokens=tokens,
                simulated=True,
            )
            session.add(run)
            session.flush()
            if judged is not None:
                session.add(
                    Judgement(
                        run_id=run.id,
                        judge_model="sim-judge",
                        status=judged,
                        overall_score=score,
                        parsed=judged == "scored",
                        unscored_reason=None if judged == "scored" else "refusal",
                    )
                )
        return job.id


def comparison_of(settings, job_id: uuid.UUID, *, shuffle_seed: int | None = None) -> dict:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        rows = load_run_rows(session, job_id)
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(rows)
        return comparison_section(job, rows, [])


def test_quality_difference_uses_prompt_means(settings):
    job_id = store_comparison(settings)

    quality = comparison_of(settings, job_id)["differences"]["quality_score"]

    assert quality["n"] == 2
    assert quality["mean_difference"] == 3.0
    assert (quality["ci_low"], quality["ci_high"]) == bootstrap_mean_ci(QUALITY_DIFFERENCES)
    assert quality["p_value"] == float(scipy_stats.wilcoxon(QUALITY_DIFFERENCES).pvalue)
    assert quality["note"] is None


def test_token_difference_uses_prompt_means(settings):
    job_id = store_comparison(settings)

    tokens = comparison_of(settings, job_id)["differences"]["output_tokens"]

    assert tokens["n"] == 3
    assert tokens["mean_difference"] == 40 / 3
    assert (tokens["ci_low"], tokens["ci_high"]) == bootstrap_mean_ci(TOKEN_DIFFERENCES)
    assert tokens["p_value"] == float(scipy_stats.wilcoxon(TOKEN_DIFFERENCES).pvalue)


def test_metric_without_values_has_no_pairs(settings):
    job_id = store_comparison(settings)

    latency = comparison_of(settings, job_id)["differences"]["total_ms"]

    assert latency["n"] == 0
    assert latency["mean_difference"] is None
    assert latency["note"] == "No pairs to compare."


def test_run_pairs_count_includes_failed_runs(settings):
    job_id = store_comparison(settings)

    comparison = comparison_of(settings, job_id)

    # p1 to p4 each have both repetitions stored for both models; p5 has no run of model_a.
    assert comparison["pairs"] == 8
    assert comparison["model_a"] == MODEL_A
    assert comparison["model_b"] == MODEL_B


def test_differences_ignore_row_order(settings):
    job_id = store_comparison(settings)

    ordered = comparison_of(settings, job_id)["differences"]
    shuffled = comparison_of(settings, job_id, shuffle_seed=3)["differences"]

    assert shuffled == ordered
