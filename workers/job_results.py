"""Build a finished job's result from its stored runs and judgements."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mistralmeter.comparison_statistics import spearman
from mistralmeter.pricing import PRICES_AS_OF
from mistralmeter.statistics import describe, error_rate
from models.jobs import Job
from models.judgements import CRITERIA, Judgement
from models.runs import Run

LATENCY_FIELDS = (
    "total_ms",
    "time_to_first_token_ms",
    "tokens_per_second",
    "decode_tokens_per_second",
    "inter_token_latency_ms",
)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "total_tokens")

# Streams per worker process above which measured times carry client-side queueing; from
# benchmarks/measurement_error.py on a 2-vCPU machine (docs/benchmarks.md).
CROWDED_STREAMS = 10

# Client lag (ms) above which a run counts as measured by a CPU-starved process. One GIL
# hand-off waits up to CPython's default switch interval of 5 ms, and an idle 2-vCPU VM showed
# a max lag of 4 ms over 3 s, so 25 ms is well above ordinary scheduling noise.
# NOTE: the value is a judgment, not measured against timing errors.
STARVED_LAG_MS = 25.0


@dataclass(frozen=True)
class RunRow:
    run: Run
    judgement: Judgement | None


def load_run_rows(session: Session, job_id: Any) -> list[RunRow]:
    statement = (
        select(Run, Judgement)
        .outerjoin(Judgement, Judgement.run_id == Run.id)
        .where(Run.job_id == job_id)
        .order_by(Run.model, Run.item_id, Run.repetition)
    )
    return [RunRow(run, judgement) for run, judgement in session.execute(statement).all()]


def build_result(job: Job, rows: list[RunRow]) -> dict[str, Any]:
    """Return the result document stored on the job and served by GET /jobs/{id}."""
    by_model: dict[str, list[RunRow]] = defaultdict(list)
    for row in rows:
        by_model[row.run.model].append(row)

    result: dict[str, Any] = {
        "simulated": job.simulated,
        "summary": {model: summarise_model(by_model.get(model, [])) for model in job.models},
        "prompts": prompt_rows(job, rows),
        "results_url": f"/jobs/{job.id}/results",
    }
    if job.dataset_name:
        result["dataset"] = {"name": job.dataset_name, "version": job.dataset_version}
    if job.kind == "evaluation":
        result.update(evaluation_view(job, rows))
    return result


def summarise_model(rows: list[RunRow]) -> dict[str, Any]:
    """Statistics for one model's runs: failed runs count in the error rate only."""
    succeeded = [row for row in rows if row.run.status == "succeeded"]
    failed = len(rows) - len(succeeded)
    judged = [row.judgement for row in succeeded if row.judgement is not None]
    scored = [judgement for judgement in judged if judgement.status == "scored"]

    return {
        "runs": {"total": len(rows), "succeeded": len(succeeded), "failed": failed},
        "error_rate": error_rate(len(succeeded), failed),
        "errors": _error_counts(rows),
        "latency": {name: _describe_field(succeeded, name) for name in LATENCY_FIELDS},
        "tokens": {name: _describe_field(succeeded, name) for name in TOKEN_FIELDS},
        "tokens_estimated": any(row.run.tokens_estimated for row in succeeded),
        "waiting": {
            "rate_limit_wait_ms": _describe_field(rows, "rate_limit_wait_ms"),
            "retry_wait_ms": _describe_field(rows, "retry_wait_ms"),
        },
        "quality": _quality(judged, scored, _per_prompt_scores(succeeded)),
        "cost": _cost(rows, judged),
        "bias": _length_bias(succeeded),
        "measurement": _measurement(succeeded),
    }


def _per_prompt_scores(succeeded: list[RunRow]) -> list[float]:
    """Return each prompt's mean judged score over its repetitions."""
    scores: dict[str, list[float]] = defaultdict(list)
    for row in succeeded:
        judgement = row.judgement
        if judgement is not None and judgement.status == "scored":
            scores[row.run.item_id].append(judgement.overall_score)
    return [sum(values) / len(values) for values in scores.values()]


def _measurement(succeeded: list[RunRow]) -> dict[str, Any]:
    """Report crowding and CPU starvation of worker processes, because both inflate timings."""
    counts = [row.run.concurrent_streams for row in succeeded if row.run.concurrent_streams]
    peak = max(counts) if counts else None
    lags = [row.run.client_lag_ms for row in succeeded if row.run.client_lag_ms is not None]
    max_lag = max(lags) if lags else None
    starved = sum(1 for lag in lags if lag > STARVED_LAG_MS)

    notes = []
    if peak is not None and peak > CROWDED_STREAMS:
        notes.append(
            f"up to {peak} streams were open in one worker process; above about "
            f"{CROWDED_STREAMS} the client's own CPU time inflates latency and TTFT. For "
            "latency work run more worker processes with fewer threads each."
        )
    if starved:
        runs = "1 run" if starved == 1 else f"{starved} runs"
        notes.append(
            f"timings of {runs} may be inflated by up to about {max_lag:.0f} ms, "
            f"because the worker process was starved of CPU while they ran (client lag above "
            f"{STARVED_LAG_MS:g} ms). Give the workers idle cores, or fewer threads each."
        )
    return {
        "max_concurrent_streams_per_process": peak,
        "max_client_lag_ms": max_lag,
        "runs_with_client_lag": starved,
        "note": " ".join(notes) if notes else None,
    }


def _criterion(scored: list, name: str) -> dict[str, Any]:
    values = [getattr(judgement, name) for judgement in scored]
    return describe([value for value in values if value is not None])


def _describe_field(rows: Iterable[RunRow], name: str) -> dict[str, Any]:
    values = [getattr(row.run, name) for row in rows]
    return describe([value for value in values if value is not None])


def _error_counts(rows: list[RunRow]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.run.status == "failed":
            counts[row.run.error_reason or "unknown"] += 1
    return dict(counts)


def _quality(
    judged: list[Judgement], scored: list[Judgement], per_prompt: list[float]
) -> dict[str, Any]:
    unscored = len(judged) - len(scored)
    reasons: dict[str, int] = defaultdict(int)
    for judgement in judged:
        if judgement.status == "unscored":
            reasons[(judgement.unscored_reason or "unknown").split(":")[0]] += 1

    return {
        "score": describe([judgement.overall_score for judgement in scored]),
        # Repetitions of one prompt are not independent samples of the model's quality, so
        # this interval, over per-prompt means, is the one to quote when comparing models.
        "score_by_prompt": describe(per_prompt),
        # A judgement imported from elsewhere may carry only an overall score.
        "criteria_scores": {name: _criterion(scored, name) for name in CRITERIA},
        "judged": len(judged),
        "unscored": unscored,
        "unscored_rate": (unscored / len(judged)) if judged else None,
        "unscored_reasons": dict(reasons),
        "judge_score_std_dev": describe(
            [j.score_std_dev for j in scored if j.score_std_dev is not None]
        ),
    }


def _cost(rows: list[RunRow], judged: list[Judgement]) -> dict[str, Any]:
    candidate_costs = [row.run.cost_usd for row in rows if row.run.cost_usd is not None]
    judge_costs = [judgement.cost_usd for judgement in judged if judgement.cost_usd is not None]
    candidate = float(sum(candidate_costs))
    judge = float(sum(judge_costs))
    priced = len(candidate_costs)

    return {
        "candidate_usd": candidate,
        "judge_usd": judge,
        "total_usd": candidate + judge,
        # Per 1,000 prompts answered once (one run, judging included), so jobs with different
        # numbers of prompts and repetitions compare directly.
        "per_1000_prompts_usd": (candidate + judge) / priced * 1000 if priced else None,
        "unpriced_runs": sum(1 for row in rows if row.run.status == "succeeded")
        - priced,
        "estimate": True,
        "prices_as_of": PRICES_AS_OF,
    }


def _length_bias(succeeded: list[RunRow]) -> dict[str, Any]:
    pairs = [
        (row.judgement.overall_score, row.run.output_tokens)
        for row in succeeded
        if row.judgement is not None
        and row.judgement.status == "scored"
        and row.run.output_tokens is not None
    ]
    correlation = spearman([score for score, _ in pairs], [length for _, length in pairs])
    return {"score_vs_output_tokens_spearman": correlation}


def prompt_rows(job: Job, rows: list[RunRow]) -> list[dict[str, Any]]:
    """Build one row per (prompt, model) with its latency and quality means and its failures."""
    grouped: dict[tuple[str, str], list[RunRow]] = defaultdict(list)
    for row in rows:
        grouped[(row.run.item_id, row.run.model)].append(row)

    categories = {item["id"]: item.get("category") for item in job.items}
    output = []
    for (item_id, model), group in sorted(grouped.items()):
        succeeded = [row for row in group if row.run.status == "succeeded"]
        scores = [
            row.judgement.overall_score
            for row in succeeded
            if row.judgement is not None and row.judgement.status == "scored"
        ]
        output.append(
            {
                "item_id": item_id,
                "category": categories.get(item_id),
                "model": model,
                "runs": len(group),
                "failed": len(group) - len(succeeded),
                "total_ms_mean": _mean([row.run.total_ms for row in succeeded]),
                "time_to_first_token_ms_mean": _mean(
                    [row.run.time_to_first_token_ms for row in succeeded]
                ),
                "quality_mean": _mean(scores),
                "errors": sorted({row.run.error_reason for row in group if row.run.error_reason}),
            }
        )
    return output


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return describe(present)["mean"] if present else None


def evaluation_view(job: Job, rows: list[RunRow]) -> dict[str, Any]:
    """Build the single-prompt shape: `response` and `metrics` for one run, `responses` for several."""
    model_rows = [row for row in rows if row.run.model == job.models[0]]
    if job.repetitions == 1 and len(model_rows) == 1:
        return single_run_view(model_rows[0])

    summary = summarise_model(model_rows)
    responses = [run_view(row) for row in model_rows]
    best = _best_response(model_rows)
    return {
        "responses": responses,
        "best_response": run_view(best) if best is not None else None,
        "metrics": {
            "tokens": summary["tokens"],
            "latency": summary["latency"],
            "quality": {
                "score": summary["quality"]["score"],
                "criteria_scores": summary["quality"]["criteria_scores"],
                "unscored_rate": summary["quality"]["unscored_rate"],
            },
            "cost": summary["cost"],
            "error_rate": summary["error_rate"],
        },
    }


def single_run_view(row: RunRow) -> dict[str, Any]:
    view = run_view(row)
    return {"response": view["response"], "metrics": view["metrics"], "run_id": view["run_id"]}


def run_view(row: RunRow) -> dict[str, Any]:
    """Describe one run in the documented names: response, metrics.tokens/latency/quality."""
    run, judgement = row.run, row.judgement
    quality = None
    if judgement is not None:
        quality = {
            "score": judgement.overall_score,
            "feedback": judgement.feedback,
            "criteria_scores": {name: getattr(judgement, name) for name in CRITERIA},
            "status": judgement.status,
            "unscored_reason": judgement.unscored_reason,
            "judge_model": judgement.judge_model,
        }
    return {
        "run_id": str(run.id),
        "item_id": run.item_id,
        "repetition": run.repetition,
        "model": run.model,
        "status": run.status,
        "error": None
        if run.status == "succeeded"
        else {"reason": run.error_reason, "message": run.error_message, "attempts": run.attempts},
        "response": run.response,
        "metrics": {
            "tokens": {
                "input_tokens": run.input_tokens,
                "output_tokens": run.output_tokens,
                "total_tokens": run.total_tokens,
                "estimated": run.tokens_estimated,
            },
            "latency": {name: getattr(run, name) for name in LATENCY_FIELDS},
            "waiting": {
                "rate_limit_wait_ms": run.rate_limit_wait_ms,
                "retry_wait_ms": run.retry_wait_ms,
                "attempts": run.attempts,
            },
            "quality": quality,
            "cost": {"usd": run.cost_usd, "estimate": True, "prices_as_of": PRICES_AS_OF},
        },
        "simulated": run.simulated,
    }


def _best_response(rows: list[RunRow]) -> RunRow | None:
    scored = [
        row
        for row in rows
        if row.run.status == "succeeded"
        and row.judgement is not None
        and row.judgement.status == "scored"
    ]
    if not scored:
        return None
    return max(scored, key=lambda row: (row.judgement.overall_score, -row.run.repetition))
