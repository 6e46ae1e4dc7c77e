"""Pairwise judging of two runs of the same prompt, shown to the judge in both orders."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from mistralmeter.logging_setup import log_fields
from mistralmeter.pricing import PriceTable
from mistralmeter.settings import Settings
from models.db import session_scope
from models.jobs import Job
from models.judgements import PairwiseJudgement
from models.runs import Run
from workers.calls import call_model
from workers.judge import JUDGE_MAX_TOKENS, JudgeSettings
from workers.judge_parsing import JudgeOutputError, combine_orders, parse_pairwise
from workers.judge_prompts import build_corrective_messages, build_pairwise_messages

logger = logging.getLogger(__name__)

# In the swapped order model_b's answer is shown as "A"; map positions back to models.
POSITION_TO_MODEL = {
    "original": {"A": "a", "B": "b", "tie": "tie"},
    "swapped": {"A": "b", "B": "a", "tie": "tie"},
}


@dataclass
class OrderVerdict:
    winner: str | None
    raw: str | None
    reason: str | None
    input_tokens: int = 0
    output_tokens: int = 0


def ensure_pair_judged(settings: Settings, job_id: uuid.UUID, item_id: str, repetition: int) -> str:
    """Judge the pair for (item, repetition) once both runs succeeded; return what happened."""
    pair = _load_pair(settings, job_id, item_id, repetition)
    if pair is None:
        return "waiting"
    job_snapshot, run_a, run_b = pair

    judge = JudgeSettings.from_request(job_snapshot["judge_model"], job_snapshot["judge"])
    context = {"job_id": str(job_id), "item_id": item_id, "repetition": repetition}
    item = job_snapshot["item"]
    original = _judge_order(settings, judge, item, run_a["response"], run_b["response"], context)
    swapped = _judge_order(settings, judge, item, run_b["response"], run_a["response"], context)

    values = _pair_values(settings, judge, job_id, run_a, run_b, original, swapped)
    with session_scope(settings.database_url) as session:
        statement = (
            insert(PairwiseJudgement)
            .values(**values)
            .on_conflict_do_nothing(constraint="uq_pairwise_judgements_run_a_id_run_b_id_judge_model")
        )
        session.execute(statement)
    logger.info("pair judged", extra=log_fields(**context, outcome=values["outcome"]))
    return "judged"


def _load_pair(
    settings: Settings, job_id: uuid.UUID, item_id: str, repetition: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """Return the job details and both runs when the pair is complete and not judged yet."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        if job is None or job.kind != "comparison" or job.status == "cancelled":
            return None
        model_a, model_b = job.models
        runs = {
            run.model: run
            for run in session.execute(
                select(Run).where(
                    Run.job_id == job_id, Run.item_id == item_id, Run.repetition == repetition
                )
            ).scalars()
        }
        run_a, run_b = runs.get(model_a), runs.get(model_b)
        if run_a is None or run_b is None:
            return None
        if run_a.status != "succeeded" or run_b.status != "succeeded":
            return None
        if _already_judged(session, run_a.id, run_b.id, job.judge_model):
            return None

        item = next(item for item in job.items if item["id"] == item_id)
        snapshot = {"judge_model": job.judge_model, "judge": job.request.get("judge"), "item": item}
        return (
            snapshot,
            {"id": run_a.id, "response": run_a.response or ""},
            {"id": run_b.id, "response": run_b.response or ""},
        )


def _already_judged(session, run_a_id: uuid.UUID, run_b_id: uuid.UUID, judge_model: str) -> bool:
    statement = select(PairwiseJudgement.id).where(
        PairwiseJudgement.run_a_id == run_a_id,
        PairwiseJudgement.run_b_id == run_b_id,
        PairwiseJudgement.judge_model == judge_model,
    )
    return session.execute(statement).first() is not None


def _judge_order(
    settings: Settings,
    judge: JudgeSettings,
    item: dict[str, Any],
    first: str,
    second: str,
    context: dict[str, Any],
) -> OrderVerdict:
    """Ask which of two answers is better, with one corrective retry on unusable output."""
    messages = build_pairwise_messages(
        prompt=item["prompt"],
        answer_a=first,
        answer_b=second,
        expected_style=item.get("expected_style"),
        reference=item.get("reference"),
        system=item.get("system"),
    )
    params = {"temperature": judge.temperature, "max_tokens": JUDGE_MAX_TOKENS}
    verdict = OrderVerdict(winner=None, raw=None, reason=None)
    conversation = messages

    for _ in (1, 2):
        call = call_model(
            settings,
            model=judge.model,
            messages=conversation,
            params=params,
            json_mode=True,
            log_context=context,
        )
        if call.result is None:
            verdict.reason = f"judge call failed: {call.error}"
            return verdict
        verdict.input_tokens += call.result.input_tokens
        verdict.output_tokens += call.result.output_tokens
        verdict.raw = call.result.text or ""
        try:
            verdict.winner = parse_pairwise(verdict.raw, finish_reason=call.result.finish_reason).winner
        except JudgeOutputError as exc:
            verdict.reason = f"{exc.reason}: {exc}"
            conversation = build_corrective_messages(messages, verdict.raw, str(exc))
            continue
        verdict.reason = None
        return verdict
    return verdict


def _pair_values(
    settings: Settings,
    judge: JudgeSettings,
    job_id: uuid.UUID,
    run_a: dict[str, Any],
    run_b: dict[str, Any],
    original: OrderVerdict,
    swapped: OrderVerdict,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "job_id": job_id,
        "run_a_id": run_a["id"],
        "run_b_id": run_b["id"],
        "judge_model": judge.model,
        "raw_original": original.raw,
        "raw_swapped": swapped.raw,
        "verdict_original": POSITION_TO_MODEL["original"].get(original.winner or ""),
        "verdict_swapped": POSITION_TO_MODEL["swapped"].get(swapped.winner or ""),
        "cost_usd": PriceTable(settings.price_overrides).cost_usd(
            judge.model,
            original.input_tokens + swapped.input_tokens,
            original.output_tokens + swapped.output_tokens,
        ),
    }

    if original.winner is None or swapped.winner is None:
        # Without both orders there is no position-fair verdict; it is reported as unscored.
        reasons = [reason for reason in (original.reason, swapped.reason) if reason]
        values.update(outcome=None, consistent=None, unscored_reason="; ".join(reasons))
        return values

    combined = combine_orders(original.winner, swapped.winner)
    values.update(outcome=combined["outcome"], consistent=combined["consistent"])
    return values
