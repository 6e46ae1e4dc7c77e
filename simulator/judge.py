"""Judge behaviour: find the graded answers in a judge prompt, score them, render the output.

A request is a judge request when it sets response_format {"type": "json_object"}. The answer
to grade sits between "[The Start of Answer]" and "[The End of Answer]"; a pairwise prompt
uses the same markers with " A" and " B". Scores come from the quality of the model that
produced the answer, which the QualityRegistry keeps by a hash of the answer text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.generation import message_text, stable_seed

CRITERIA = ("clarity", "accuracy", "completeness", "relevance", "style_match")
REFUSAL_TEXT = "I'm sorry, but I can't evaluate this answer."
TIE_MARGIN = 0.25
# Pairwise noise is this fraction of the answer's quality_sd, so close models often tie.
PAIRWISE_NOISE_FRACTION = 0.5
TRUNCATE_FRACTION = 0.6

_SINGLE = re.compile(r"\[The Start of Answer\](.*?)\[The End of Answer\]", re.DOTALL)
_ANSWER_A = re.compile(r"\[The Start of Answer A\](.*?)\[The End of Answer A\]", re.DOTALL)
_ANSWER_B = re.compile(r"\[The Start of Answer B\](.*?)\[The End of Answer B\]", re.DOTALL)


@dataclass(frozen=True)
class AnswerQuality:
    quality: float
    quality_sd: float
    model: str | None


@dataclass(frozen=True)
class JudgeTask:
    """A parsed judge request: its kind and the answers it grades (one, or A and B)."""

    kind: str
    answers: tuple[str, ...]
    is_retry: bool


@dataclass(frozen=True)
class JudgeOutput:
    text: str
    finish_reason: str


def text_key(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()


class QualityRegistry:
    """LRU map from the sha256 of a generated answer (whitespace-stripped) to its quality."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, AnswerQuality] = OrderedDict()
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, text: str, quality: AnswerQuality) -> None:
        key = text_key(text)
        self._entries[key] = quality
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def lookup(self, text: str) -> AnswerQuality:
        """Return the registered quality; text the simulator did not generate gets one from its hash."""
        key = text_key(text)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        # Spreads unknown answers over 2.0 to 8.0, the same value for the same text.
        return AnswerQuality(quality=2.0 + (int(key[:8], 16) % 6001) / 1000, quality_sd=1.0, model=None)


def is_judge_request(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") == "json_object"


def parse_judge_task(messages: list[dict[str, Any]]) -> JudgeTask:
    """Find the graded answers; a JSON-mode request without markers grades the last user message."""
    prompt_text = "\n".join(message_text(m) for m in messages if m.get("role") != "assistant")
    is_retry = any(message.get("role") == "assistant" for message in messages)
    first, second = _ANSWER_A.search(prompt_text), _ANSWER_B.search(prompt_text)
    if first and second:
        return JudgeTask("judge_pairwise", (first.group(1).strip(), second.group(1).strip()), is_retry)
    single = _SINGLE.search(prompt_text)
    if single:
        return JudgeTask("judge_single", (single.group(1).strip(),), is_retry)
    user_texts = [message_text(m) for m in messages if m.get("role") == "user"]
    return JudgeTask("judge_single", ((user_texts[-1] if user_texts else "").strip(),), is_retry)


def score_answer(answer: str, quality: AnswerQuality, length_bias: float, seed: int) -> dict[str, int]:
    """Score each criterion as round(quality + length bias + noise), clamped to 0..10.

    The noise is drawn from N(0, quality_sd) by a generator seeded from the answer text, so
    the same judge gives the same answer the same scores, as a judge at temperature 0 would.
    """
    rng = np.random.default_rng(stable_seed(seed, answer.strip()))
    noise = rng.normal(0.0, quality.quality_sd or 1.0, size=len(CRITERIA))
    centre = quality.quality + length_bias * len(answer.split()) / 100
    return {name: int(min(10, max(0, round(centre + n)))) for name, n in zip(CRITERIA, noise)}


def pick_winner(answers: tuple[str, str], qualities: tuple[AnswerQuality, AnswerQuality], length_bias: float, seed: int) -> str:
    """Return "A", "B" or "tie" (merits within TIE_MARGIN) from the answers' seeded merits."""
    merits = []
    for answer, quality in zip(answers, qualities):
        rng = np.random.default_rng(stable_seed(seed, answer.strip(), "pairwise"))
        noise = rng.normal(0.0, PAIRWISE_NOISE_FRACTION * (quality.quality_sd or 1.0))
        merits.append(quality.quality + length_bias * len(answer.split()) / 100 + noise)
    if abs(merits[0] - merits[1]) <= TIE_MARGIN:
        return "tie"
    return "A" if merits[0] > merits[1] else "B"


def render_single(mode: str, scores: dict[str, int]) -> JudgeOutput:
    """Render single-answer scores in the given judge mode (position modes act as valid)."""
    mean = sum(scores.values()) / len(scores)
    payload: dict[str, Any] = dict(scores)
    if mode == "strings":
        payload = {name: str(value) for name, value in scores.items()}
    elif mode == "out_of_range":
        payload["accuracy"] = 11
    elif mode == "missing_criterion":
        del payload["style_match"]
    elif mode == "extra_criterion":
        payload["creativity"] = 7
    payload["feedback"] = _single_feedback(mean)
    return _wrap(mode, payload)


def render_pairwise(mode: str, winner: str) -> JudgeOutput:
    """Render a pairwise verdict in the given judge mode."""
    if mode == "first_position":
        winner = "A"
    elif mode == "second_position":
        winner = "B"
    payload: dict[str, Any] = {"winner": winner, "reason": _pairwise_reason(winner)}
    if mode == "out_of_range":
        payload["winner"] = "C"
    elif mode == "missing_criterion":
        del payload["winner"]
    elif mode == "extra_criterion":
        payload["confidence"] = 0.9
    return _wrap(mode, payload)


def _wrap(mode: str, payload: dict[str, Any]) -> JudgeOutput:
    encoded = json.dumps(payload)
    if mode == "refusal":
        return JudgeOutput(REFUSAL_TEXT, "stop")
    if mode == "fenced":
        return JudgeOutput(f"```json\n{encoded}\n```", "stop")
    if mode == "prose":
        return JudgeOutput(f"Here is my evaluation of the answer.\n{encoded}\nI hope this helps.", "stop")
    if mode == "truncated":
        return JudgeOutput(encoded[: int(len(encoded) * TRUNCATE_FRACTION)], "length")
    return JudgeOutput(encoded, "stop")


def _single_feedback(mean: float) -> str:
    if mean >= 8:
        verdict = "clear, accurate and complete"
    elif mean >= 6:
        verdict = "mostly correct but misses some detail"
    elif mean >= 4:
        verdict = "partly relevant and leaves out important points"
    else:
        verdict = "unclear and largely inaccurate"
    return f"The answer is {verdict}."


def _pairwise_reason(winner: str) -> str:
    if winner == "tie":
        return "Both answers are of similar quality."
    loser = "B" if winner == "A" else "A"
    return f"Answer {winner} is clearer and more complete than Answer {loser}."
