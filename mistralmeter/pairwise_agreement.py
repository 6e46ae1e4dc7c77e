"""Agreement between people's pairwise preferences and the judge's verdicts in both orders.

The judge compares each pair twice: in the original order (a shown first) and swapped (b shown
first). Both verdicts are stored in terms of a and b, never of position. A pair's combined
verdict is the verdict when both orders agree and a tie when they differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sklearn.metrics import cohen_kappa_score

from mistralmeter.agreement import MIN_N, too_few_reason

VERDICTS = ("a", "b", "tie")
JUDGED_PAIRS = ("pairs judged in both orders", "pair judged in both orders")


@dataclass(frozen=True)
class PairRecord:
    """One pair of answers with the human preference and the judge's verdict in each order."""

    pair_id: str
    human: str  # "a", "b" or "tie"
    judge_original: str | None  # verdict with a shown first; None when that judgement failed
    judge_swapped: str | None  # verdict in terms of a/b (not position) with b shown first


def combined_verdict(original: str, swapped: str) -> str:
    """Return the verdict both orders agree on, or "tie" when the order changed it."""
    return original if original == swapped else "tie"


def _check_verdict(value: str | None, field: str, pair_id: str, optional: bool) -> None:
    if value is None and optional:
        return
    if value not in VERDICTS:
        allowed = '"a", "b", "tie" or None' if optional else '"a", "b" or "tie"'
        raise ValueError(f"pair {pair_id!r}: {field} must be {allowed}; got {value!r}")


def _rate(count: int, n: int, observations: tuple[str, str] = JUDGED_PAIRS) -> dict[str, Any]:
    """Build a {"n", "count", "rate", "reason"} figure, with rate None below MIN_N["pairwise"].

    ``observations`` names what is counted in ``n``, as (plural, singular), for the reason.
    """
    if n < MIN_N["pairwise"]:
        return {
            "n": n,
            "count": count,
            "rate": None,
            "reason": too_few_reason(MIN_N["pairwise"], n, *observations),
        }
    return {"n": n, "count": count, "rate": count / n, "reason": None}


def _kappa(first: list[str], second: list[str], sides: str) -> dict[str, Any]:
    """Compute unweighted Cohen's kappa over the labels a, b and tie with scikit-learn."""
    n = len(first)
    result: dict[str, Any] = {"n": n, "kappa": None, "reason": None}
    if n < MIN_N["kappa"]:
        result["reason"] = too_few_reason(MIN_N["kappa"], n, *JUDGED_PAIRS)
        return result

    # Chance agreement is 1 only when both sides use one and the same verdict, which
    # leaves kappa as 0/0.
    used = set(first) | set(second)
    if len(used) == 1:
        result["reason"] = f"{sides} used only one verdict ({used.pop()!r})"
        return result

    result["kappa"] = float(cohen_kappa_score(first, second, labels=list(VERDICTS)))
    return result


def _average_kappa(original: dict[str, Any], swapped: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"n": original["n"], "kappa": None, "reason": None}
    if original["kappa"] is None or swapped["kappa"] is None:
        result["reason"] = original["reason"] or swapped["reason"]
        return result
    result["kappa"] = (original["kappa"] + swapped["kappa"]) / 2
    return result


def _first_shown_wins(records: Sequence[PairRecord]) -> dict[str, Any]:
    """Count the non-tie verdicts, over both orders, in which the answer shown first won.

    In the original order a is shown first, in the swapped order b. A judge without
    position bias gives a rate near 0.5.
    """
    decided = 0
    first_won = 0
    for record in records:
        for verdict, shown_first in ((record.judge_original, "a"), (record.judge_swapped, "b")):
            if verdict == "tie":
                continue
            decided += 1
            first_won += verdict == shown_first
    return _rate(first_won, decided, ("non-tie verdicts", "non-tie verdict"))


def pairwise_agreement(records: Sequence[PairRecord]) -> dict[str, Any]:
    """Compare the human preference with the judge's verdicts, per order and combined.

    Only pairs with a verdict in both orders count, and the others are counted in
    ``n_excluded``. Every rate is a {"n", "count", "rate", "reason"} figure, and ``count``
    is the number of pairs (or verdicts) that meet the figure's condition. Raises
    ValueError on a verdict other than "a", "b", "tie" (or None for the judge).
    """
    for record in records:
        _check_verdict(record.human, "human", record.pair_id, optional=False)
        _check_verdict(record.judge_original, "judge_original", record.pair_id, optional=True)
        _check_verdict(record.judge_swapped, "judge_swapped", record.pair_id, optional=True)

    judged = [r for r in records if r.judge_original is not None and r.judge_swapped is not None]
    n = len(judged)
    human = [r.human for r in judged]
    original = [r.judge_original for r in judged]
    swapped = [r.judge_swapped for r in judged]
    combined = [combined_verdict(o, s) for o, s in zip(original, swapped)]

    original_correct = sum(h == o for h, o in zip(human, original))
    swapped_correct = sum(h == s for h, s in zip(human, swapped))
    both_correct = sum(h == o == s for h, o, s in zip(human, original, swapped))
    consistent = sum(o == s for o, s in zip(original, swapped))

    decisive = [(h, c) for h, c in zip(human, combined) if h != "tie" and c != "tie"]
    # The count is out of 2n order verdicts, so the rate is the mean of the two order rates.
    average = _rate(original_correct + swapped_correct, 2 * n)
    average["n"] = n

    kappa_original = _kappa(human, original, "people and the judge")
    kappa_swapped = _kappa(human, swapped, "people and the judge")

    return {
        "n": n,
        "n_excluded": len(records) - n,
        "original_order": _rate(original_correct, n),
        "swapped_order": _rate(swapped_correct, n),
        "average": average,
        "both_orders_correct": _rate(both_correct, n),
        "position_consistency": _rate(consistent, n),
        "with_ties": _rate(sum(h == c for h, c in zip(human, combined)), n),
        "without_ties": _rate(
            sum(h == c for h, c in decisive),
            len(decisive),
            (
                "pairs with a non-tie human preference and a non-tie combined judge verdict",
                "pair with a non-tie human preference and a non-tie combined judge verdict",
            ),
        ),
        "first_shown_win_rate": _first_shown_wins(judged),
        "cohen_kappa": {
            "original": kappa_original,
            "swapped": kappa_swapped,
            "average": _average_kappa(kappa_original, kappa_swapped),
            "between_orders": _kappa(original, swapped, "both orders"),
        },
    }
