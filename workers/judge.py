"""Score one answer with the judge model: JSON mode, one corrective retry, never a fake score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mistralmeter.pricing import PriceTable
from mistralmeter.settings import Settings
from workers.calls import call_model
from workers.judge_parsing import (
    CRITERIA,
    Grading,
    JudgeOutputError,
    judge_sample_summary,
    parse_grading,
)
from workers.judge_prompts import build_corrective_messages, build_grading_messages

# Enough room for five scores and a paragraph of feedback; a cut-off verdict is rejected.
JUDGE_MAX_TOKENS = 1024


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    temperature: float = 0.0
    samples: int = 1
    weights: dict[str, float] | None = None

    @classmethod
    def from_request(cls, model: str, judge: dict[str, Any] | None) -> "JudgeSettings":
        judge = judge or {}
        return cls(
            model=model,
            temperature=float(judge.get("temperature", 0.0)),
            samples=int(judge.get("samples", 1)),
            weights=judge.get("weights"),
        )


@dataclass
class JudgementOutcome:
    judge_model: str
    status: str
    overall_score: float | None = None
    criteria_scores: dict[str, float] = field(default_factory=dict)
    feedback: str | None = None
    score_std_dev: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    parsed: bool = False
    unscored_reason: str | None = None
    raw_output: str | None = None
    repairs: list[str] = field(default_factory=list)
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


def judge_answer(
    settings: Settings,
    judge: JudgeSettings,
    *,
    item: dict[str, Any],
    answer: str,
    limit_overrides: dict[str, Any] | None = None,
    log_context: dict[str, Any] | None = None,
) -> JudgementOutcome:
    """Grade an answer with `judge.samples` independent judge calls and combine them."""
    messages = build_grading_messages(
        prompt=item["prompt"],
        answer=answer,
        expected_style=item.get("expected_style"),
        reference=item.get("reference"),
        system=item.get("system"),
    )
    outcome = JudgementOutcome(judge_model=judge.model, status="unscored")
    gradings: list[Grading] = []

    for sample_index in range(judge.samples):
        sample = _judge_once(settings, judge, messages, limit_overrides, log_context, outcome)
        sample["sample"] = sample_index
        outcome.samples.append(sample)
        if sample["grading"] is not None:
            gradings.append(sample.pop("grading"))
        else:
            sample.pop("grading")

    outcome.cost_usd = PriceTable(settings.price_overrides).cost_usd(
        judge.model, outcome.input_tokens, outcome.output_tokens
    )
    if not gradings:
        last = outcome.samples[-1]
        outcome.unscored_reason = last.get("reason")
        outcome.raw_output = last.get("raw_output")
        return outcome

    _combine_gradings(outcome, gradings, judge.weights)
    return outcome


def _judge_once(
    settings: Settings,
    judge: JudgeSettings,
    messages: list[dict[str, str]],
    limit_overrides: dict[str, Any] | None,
    log_context: dict[str, Any] | None,
    outcome: JudgementOutcome,
) -> dict[str, Any]:
    """Make one judge call, and one corrective retry if its output is rejected."""
    params = {"temperature": judge.temperature, "max_tokens": JUDGE_MAX_TOKENS}
    conversation = messages
    reason = None
    raw = None

    for attempt in (1, 2):
        call = call_model(
            settings,
            model=judge.model,
            messages=conversation,
            params=params,
            json_mode=True,
            limit_overrides=limit_overrides,
            log_context=log_context,
        )
        outcome.attempts += 1
        if call.result is None:
            # The judge could not be reached at all; that is not a parsing problem to retry.
            return {"grading": None, "reason": f"judge call failed: {call.error}", "raw_output": None}

        outcome.input_tokens += call.result.input_tokens
        outcome.output_tokens += call.result.output_tokens
        raw = call.result.text or ""
        try:
            grading = parse_grading(raw, finish_reason=call.result.finish_reason)
        except JudgeOutputError as exc:
            reason = f"{exc.reason}: {exc}"
            conversation = build_corrective_messages(messages, raw, str(exc))
            continue
        return {
            "grading": grading,
            "scores": dict(grading.scores),
            "repairs": list(grading.repairs),
            "attempts": attempt,
            "raw_output": raw,
        }

    return {"grading": None, "reason": reason, "raw_output": raw, "attempts": 2}


def _combine_gradings(
    outcome: JudgementOutcome, gradings: list[Grading], weights: dict[str, float] | None
) -> None:
    summary = judge_sample_summary(gradings, weights)
    outcome.status = "scored"
    outcome.parsed = True
    outcome.criteria_scores = {name: summary["criteria_means"][name] for name in CRITERIA}
    outcome.overall_score = summary["overall_mean"]
    outcome.score_std_dev = summary["overall_std_dev"]
    outcome.feedback = gradings[0].feedback
    outcome.raw_output = outcome.samples[0].get("raw_output")
    outcome.repairs = sorted({repair for grading in gradings for repair in grading.repairs})
