"""Parse and validate LLM judge output, and turn judge verdicts into scores.

Pure functions with no network or database access. Output that cannot be repaired safely
raises JudgeOutputError with a short reason code. The caller then retries once or stores
the judgement as unscored, so a parse failure never becomes a low score or NaN.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CRITERIA = ("clarity", "accuracy", "completeness", "relevance", "style_match")
MIN_SCORE = 0
MAX_SCORE = 10
WINNERS = ("A", "B", "tie")

REJECTION_REASONS = frozenset(
    {
        "no_json",
        "invalid_json",
        "truncated",
        "refusal",
        "missing_criterion",
        "out_of_range",
        "not_a_number",
        "not_an_object",
        "invalid_winner",
    }
)

# Checked only when the output contains no "{" at all, so a JSON object whose feedback
# quotes a refusal is still parsed.
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|i cannot|i can'?t|i can not|i won'?t|"
    r"i will not|i'?m unable|i am unable|as an ai)\b",
    re.IGNORECASE,
)

# A fenced block, closed or cut off at the end of the text. Only its span is used: the
# object inside is found by the brace scan like any other.
_FENCE = re.compile(r"```(?:[A-Za-z0-9_+-]*[ \t]*\r?\n)?(.*?)(?:```|\Z)", re.DOTALL)

# Decimal numbers only. float() alone would also take "nan", "inf" and "1_0".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# Forms a judge uses for the pairwise winner, after brackets, quotes, asterisks and a final
# period are stripped and the text is lower-cased.
_WINNER_FORMS = {
    "a": "A",
    "answer a": "A",
    "assistant a": "A",
    "response a": "A",
    "b": "B",
    "answer b": "B",
    "assistant b": "B",
    "response b": "B",
    "tie": "tie",
    "draw": "tie",
}
_WINNER_STRIP = " \t\r\n[]()\"'*.`"

_JSON_TYPE_NAMES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class JudgeOutputError(ValueError):
    """Judge output that cannot be turned into a grading or a pairwise verdict.

    ``reason`` is one of REJECTION_REASONS. The message names the criterion or value.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # Celery pickles exceptions, and the default reduce would drop ``reason``.
        return (type(self), (self.reason, str(self)))


class InvalidWeightsError(ValueError):
    """Criterion weights that cannot be used. ``key`` is the offending criterion, if any."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self):
        return (type(self), (str(self), self.key))


@dataclass(frozen=True)
class Grading:
    """Scores from 0 to 10 per criterion, the judge's feedback and the repairs applied."""

    scores: dict[str, float]
    feedback: str
    repairs: tuple[str, ...]


@dataclass(frozen=True)
class PairwiseVerdict:
    """The better answer as shown to the judge ("A", "B" or "tie"), with its reason."""

    winner: str
    reason: str
    repairs: tuple[str, ...]


def _preview(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of each balanced "{" to the index of its "}".

    Braces inside JSON strings do not count. Quotes are tracked only inside braces, because
    prose around the object may contain unpaired quotes and apostrophes.
    """
    open_braces: list[int] = []
    matches: dict[int, int] = {}
    in_string = False
    escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"' and open_braces:
            in_string = True
        elif char == "{":
            open_braces.append(index)
        elif char == "}" and open_braces:
            matches[open_braces.pop()] = index
    return matches


def _fails_at_end(error: json.JSONDecodeError, content_end: int) -> bool:
    # The json module reports an unterminated string at the position of its opening quote.
    return error.msg.startswith("Unterminated string") or error.pos >= content_end


def _first_object(text: str) -> tuple[dict | None, int, bool, str | None]:
    """Find the first top-level JSON object in text.

    Returns the object (or None), its start index, whether the text ends inside an object,
    and the first decoding error. A "{" whose balanced span fails to decode is skipped with
    everything inside it, so an object nested in invalid JSON is never taken for the answer.

    NOTE: each failed attempt costs time proportional to its position, because
    JSONDecodeError counts the lines before it. Output with tens of thousands of stray
    braces takes about a second per 100 kB. Judge output is bounded by max_tokens.
    """
    decoder = json.JSONDecoder()
    matches: dict[int, int] | None = None
    first_error: str | None = None
    content_end = len(text.rstrip())
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as error:
            first_error = first_error or f"{error.msg} at character {error.pos}"
            if _fails_at_end(error, content_end):
                return None, start, True, first_error
        except (ValueError, RecursionError) as error:
            # An integer longer than Python's digit limit, or nesting deeper than the stack.
            first_error = first_error or str(error) or type(error).__name__
        else:
            return value, start, False, None
        if matches is None:
            matches = _matching_braces(text)
        start = text.find("{", matches.get(start, start) + 1)
    return None, -1, False, first_error


def _inside_fence(text: str, index: int) -> bool:
    return any(match.start(1) <= index < match.end(1) for match in _FENCE.finditer(text))


def _reject_without_object(text: str, finish_reason: str | None) -> JudgeOutputError:
    stripped = text.strip()
    if not stripped:
        return JudgeOutputError("no_json", "the judge output is empty")
    if _REFUSAL.search(stripped.replace("\u2019", "'")):
        return JudgeOutputError(
            "refusal",
            "the judge output reads like a refusal and contains no JSON object: "
            + _preview(stripped),
        )
    if finish_reason == "length":
        # Judges that reason before answering can be cut off before the JSON starts.
        return JudgeOutputError(
            "truncated", "the judge output was cut off at max_tokens before any JSON object"
        )
    return JudgeOutputError("no_json", f"no JSON object in the judge output: {_preview(stripped)}")


def _extract_object(text: str, finish_reason: str | None) -> tuple[dict, list[str]]:
    """Return the JSON object in a judge output and the repairs needed to get it."""
    if not isinstance(text, str):
        raise TypeError(f"judge output must be a str, got {type(text).__name__}")
    stripped = text.strip()
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        pass
    else:
        if isinstance(value, dict):
            return value, []
        kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
        raise JudgeOutputError(
            "not_an_object", f"the judge output is a JSON {kind}, not an object: {_preview(value)}"
        )

    if "{" not in text:
        raise _reject_without_object(text, finish_reason)

    found, start, ends_inside, error = _first_object(text)
    if found is None:
        if ends_inside or finish_reason == "length":
            if finish_reason == "length":
                cause = "was cut off at max_tokens (finish_reason 'length')"
            else:
                cause = "ends inside a JSON object"
            raise JudgeOutputError("truncated", f"the judge output {cause}: {error}")
        raise JudgeOutputError(
            "invalid_json", f"the JSON object in the judge output is invalid: {error}"
        )
    repair = "extracted_from_fence" if _inside_fence(text, start) else "extracted_from_prose"
    return found, [repair]


def _parse_score(criterion: str, value: object) -> tuple[float, bool]:
    """Return the score as a float and whether it was sent as a string."""
    if isinstance(value, bool):
        raise JudgeOutputError(
            "not_a_number",
            f"score for '{criterion}' is a boolean ({_preview(value)}), not a number",
        )
    from_string = isinstance(value, str)
    if from_string:
        if not _NUMBER.fullmatch(value.strip()):
            raise JudgeOutputError(
                "not_a_number", f"score for '{criterion}' is not a number: {_preview(value)}"
            )
        number = float(value.strip())
    elif isinstance(value, int):
        # Compared before float() because an integer with hundreds of digits overflows it.
        if not MIN_SCORE <= value <= MAX_SCORE:
            raise JudgeOutputError(
                "out_of_range",
                f"score for '{criterion}' is {_preview(value)}, outside {MIN_SCORE} to {MAX_SCORE}",
            )
        number = float(value)
    elif isinstance(value, float):
        number = value
    else:
        raise JudgeOutputError(
            "not_a_number", f"score for '{criterion}' is not a number: {_preview(value)}"
        )

    if math.isnan(number):
        raise JudgeOutputError("not_a_number", f"score for '{criterion}' is NaN")
    if not MIN_SCORE <= number <= MAX_SCORE:
        raise JudgeOutputError(
            "out_of_range",
            f"score for '{criterion}' is {_preview(value)}, outside {MIN_SCORE} to {MAX_SCORE}",
        )
    # Adding 0.0 turns -0.0 into 0.0.
    return number + 0.0, from_string


def _text_field(payload: dict, key: str) -> tuple[str, list[str]]:
    value = payload.get(key)
    if value is None:
        return "", []
    if isinstance(value, str):
        return value, []
    return str(value), [f"{key}_coerced_to_string"]


def _extra_keys_repair(payload: dict, known: Sequence[str]) -> list[str]:
    extra = [key for key in payload if key not in known]
    return ["dropped_extra_keys:" + ",".join(extra)] if extra else []


def parse_grading(text: str, *, finish_reason: str | None = None) -> Grading:
    """Parse a single-answer grading from judge output.

    Accepts plain JSON, JSON in a code fence or in prose, scores sent as strings and
    non-integer scores within 0 to 10. Extra keys are dropped and noted in ``repairs``.
    Raises JudgeOutputError for anything else, including out-of-range scores, which are
    never clamped.
    """
    payload, repairs = _extract_object(text, finish_reason)

    missing = [criterion for criterion in CRITERIA if criterion not in payload]
    if missing:
        names = ", ".join(f"'{criterion}'" for criterion in missing)
        noun = "criterion" if len(missing) == 1 else "criteria"
        raise JudgeOutputError(
            "missing_criterion",
            f"missing {noun} {names} in the judge output. "
            f"Required keys: {', '.join(CRITERIA)}, feedback",
        )

    scores: dict[str, float] = {}
    any_from_string = False
    for criterion in CRITERIA:
        scores[criterion], from_string = _parse_score(criterion, payload[criterion])
        any_from_string = any_from_string or from_string
    if any_from_string:
        repairs.append("numbers_from_strings")

    repairs.extend(_extra_keys_repair(payload, (*CRITERIA, "feedback")))
    feedback, feedback_repairs = _text_field(payload, "feedback")
    repairs.extend(feedback_repairs)
    return Grading(scores=scores, feedback=feedback, repairs=tuple(repairs))


def _normalize_winner(value: object) -> str:
    if isinstance(value, str):
        form = " ".join(value.strip(_WINNER_STRIP).lower().split())
        if form in _WINNER_FORMS:
            return _WINNER_FORMS[form]
    raise JudgeOutputError(
        "invalid_winner", f"winner must be 'A', 'B' or 'tie', got {_preview(value)}"
    )


def parse_pairwise(text: str, *, finish_reason: str | None = None) -> PairwiseVerdict:
    """Parse a pairwise verdict ({"winner": "A" | "B" | "tie", "reason": ...}).

    Extraction works as in parse_grading. The winner is accepted in any case and in forms
    such as "Answer A" or "[[A]]", and "draw" means "tie". Raises JudgeOutputError.
    """
    payload, repairs = _extract_object(text, finish_reason)
    if "winner" not in payload:
        raise JudgeOutputError(
            "invalid_winner",
            "missing key 'winner' in the judge output. Required keys: winner, reason",
        )
    winner = _normalize_winner(payload["winner"])
    if winner != payload["winner"]:
        repairs.append("normalized_winner")

    repairs.extend(_extra_keys_repair(payload, ("winner", "reason")))
    reason, reason_repairs = _text_field(payload, "reason")
    repairs.extend(reason_repairs)
    return PairwiseVerdict(winner=winner, reason=reason, repairs=tuple(repairs))


def validate_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Check criterion weights and return one float weight per criterion.

    None means equal weights. A criterion left out of ``weights`` gets weight 0. Raises
    InvalidWeightsError for an unknown criterion, a weight that is not a finite number
    >= 0, or weights that are all zero.
    """
    if weights is None:
        return {criterion: 1.0 for criterion in CRITERIA}
    if not isinstance(weights, Mapping):
        raise InvalidWeightsError(
            f"weights must map criterion names to numbers, got {type(weights).__name__}"
        )
    for key, value in weights.items():
        if key not in CRITERIA:
            raise InvalidWeightsError(
                f"unknown criterion {_preview(key)} in weights. "
                f"Known criteria: {', '.join(CRITERIA)}",
                key=str(key),
            )
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidWeightsError(
                f"weight for '{key}' must be a number, got {_preview(value)}", key=key
            )
        if not math.isfinite(value) or value < 0:
            raise InvalidWeightsError(
                f"weight for '{key}' must be a finite number >= 0, got {value}", key=key
            )

    validated = {criterion: float(weights.get(criterion, 0.0)) for criterion in CRITERIA}
    if not any(validated.values()):
        raise InvalidWeightsError(
            "weights are all zero. Give at least one criterion a weight above 0"
        )
    return validated


def overall_score(scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """Return the mean of the five criterion scores, or their weighted mean.

    Keys of ``scores`` other than the criteria are ignored. Raises ValueError when a
    criterion is missing, and InvalidWeightsError for invalid weights.
    """
    missing = [criterion for criterion in CRITERIA if criterion not in scores]
    if missing:
        raise ValueError(f"scores are missing criteria: {', '.join(missing)}")
    values = np.array([float(scores[criterion]) for criterion in CRITERIA])
    if weights is None:
        return float(values.mean())
    validated = validate_weights(weights)
    return float(np.average(values, weights=[validated[criterion] for criterion in CRITERIA]))


# Maps a verdict on the shown answers to the model that won. In the swapped order model_b
# is shown as A.
_MODEL_WINNER_AB = {"A": "a", "B": "b", "tie": "tie"}
_MODEL_WINNER_BA = {"A": "b", "B": "a", "tie": "tie"}


def combine_orders(verdict_ab: str, verdict_ba: str) -> dict:
    """Combine the verdicts of both presentation orders into one model-level outcome.

    ``verdict_ab`` comes from the order with model_a shown as A, ``verdict_ba`` from the
    swapped order with model_b shown as A. Both orders must name the same model for it to
    win. A verdict that flips with the order, or a tie in either order, gives "tie".
    Returns ``outcome`` ("a", "b" or "tie"), ``consistent`` (both orders gave the same
    model-level verdict), ``flipped`` (each order named a different model) and
    ``first_shown_won`` (how many of the two orders picked the answer shown first).
    """
    for name, verdict in (("verdict_ab", verdict_ab), ("verdict_ba", verdict_ba)):
        if verdict not in WINNERS:
            raise ValueError(f"{name} must be 'A', 'B' or 'tie', got {verdict!r}")
    winner_ab = _MODEL_WINNER_AB[verdict_ab]
    winner_ba = _MODEL_WINNER_BA[verdict_ba]
    consistent = winner_ab == winner_ba
    return {
        "outcome": winner_ab if consistent else "tie",
        "consistent": consistent,
        "flipped": {winner_ab, winner_ba} == {"a", "b"},
        "first_shown_won": int(verdict_ab == "A") + int(verdict_ba == "A"),
    }


def judge_sample_summary(
    gradings: Sequence[Grading], weights: Mapping[str, float] | None = None
) -> dict:
    """Summarise several judge samples of the same answer.

    Returns ``n``, ``criteria_means``, ``overall_scores`` (one per sample), ``overall_mean``
    and ``overall_std_dev``, the sample standard deviation (ddof=1) of the overall score,
    which is None for fewer than 2 samples. That spread is judge variance alone, because
    the answer is fixed.
    """
    if not gradings:
        raise ValueError("judge_sample_summary needs at least one grading")
    validated = validate_weights(weights) if weights is not None else None
    matrix = np.array(
        [[grading.scores[criterion] for criterion in CRITERIA] for grading in gradings]
    )
    overall = np.array([overall_score(grading.scores, validated) for grading in gradings])
    return {
        "n": len(gradings),
        "criteria_means": {
            criterion: float(matrix[:, column].mean()) for column, criterion in enumerate(CRITERIA)
        },
        "overall_scores": [float(value) for value in overall],
        "overall_mean": float(overall.mean()),
        "overall_std_dev": float(overall.std(ddof=1)) if len(gradings) >= 2 else None,
    }
