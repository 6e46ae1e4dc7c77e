"""Read LLMBar judge result files and turn them into pairwise agreement records.

A result file (for example ``gpt-4_vanilla_result.json`` from princeton-nlp/LLMBar) is a JSON
list of records with ``input``, ``output_1``, ``output_2``, ``label`` and ``results``. The
label (1 or 2) names the output people preferred. The last entry of ``results`` contains the
judge's verdicts under ``"swap = False"`` (output_1 shown first) and ``"swap = True"``
(output_2 shown first). Each verdict's ``winner`` is "1", "2" or null and always names the
original output_1 or output_2, whatever the order shown. ``completion`` is
``[text, finish_reason]``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from mistralmeter.pairwise_agreement import PairRecord

ORDERS = {"no_swap": "swap = False", "swap": "swap = True"}
TYPE_NAMES = {str: "a string", int: "an integer", list: "a list"}
WINNER_TO_VERDICT = {1: "a", 2: "b"}


@dataclass(frozen=True)
class LLMBarPair:
    """One LLMBar record: a question, two answers, the human label and the judge's two verdicts."""

    index: int  # position in the file, from 0
    input: str
    output_1: str
    output_2: str
    label: int  # 1 or 2: the output people preferred
    judge_no_swap: int | None  # winner (1 or 2) with output_1 shown first; None if unparsed
    judge_swap: int | None  # winner (1 or 2) with output_2 shown first; None if unparsed
    completion_no_swap: str
    completion_swap: str


def _field(record: dict[str, Any], index: int, name: str, kind: type) -> Any:
    if name not in record:
        raise ValueError(f"record {index}: field {name!r} is missing")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(
            f"record {index}: field {name!r} must be {TYPE_NAMES[kind]}; got {value!r:.80}"
        )
    return value


def _verdict(results: list[Any], index: int, order_key: str) -> tuple[int | None, str]:
    """Return the winner and the completion text of one order from the last results entry."""
    where = f"results[-1][{order_key!r}]"
    final = results[-1]
    if not isinstance(final, dict) or not isinstance(final.get(order_key), dict):
        raise ValueError(f"record {index}: field {where} is missing or not an object")
    verdict = final[order_key]

    if "winner" not in verdict:
        raise ValueError(f'record {index}: field {where}["winner"] is missing')
    winner = verdict["winner"]
    if winner not in ("1", "2", None):
        raise ValueError(
            f'record {index}: field {where}["winner"] must be "1", "2" or null; got {winner!r}'
        )

    completion = verdict.get("completion")
    if not (isinstance(completion, list) and completion and isinstance(completion[0], str)):
        raise ValueError(
            f'record {index}: field {where}["completion"] must be a list starting with the text; '
            f"got {completion!r:.80}"
        )
    return (None if winner is None else int(winner)), completion[0]


def _parse_record(record: Any, index: int) -> LLMBarPair:
    if not isinstance(record, dict):
        raise ValueError(f"record {index} must be a JSON object; got {type(record).__name__}")

    label = _field(record, index, "label", int)
    if label not in (1, 2):
        raise ValueError(f"record {index}: field 'label' must be 1 or 2; got {label!r}")
    results = _field(record, index, "results", list)
    if not results:
        raise ValueError(f"record {index}: field 'results' is empty")

    # The last entry contains the verdicts. In vanilla result files it is the only one, and in
    # LLMBar's multi-step evaluators the earlier entries are intermediate outputs.
    judge_no_swap, completion_no_swap = _verdict(results, index, ORDERS["no_swap"])
    judge_swap, completion_swap = _verdict(results, index, ORDERS["swap"])

    return LLMBarPair(
        index=index,
        input=_field(record, index, "input", str),
        output_1=_field(record, index, "output_1", str),
        output_2=_field(record, index, "output_2", str),
        label=label,
        judge_no_swap=judge_no_swap,
        judge_swap=judge_swap,
        completion_no_swap=completion_no_swap,
        completion_swap=completion_swap,
    )


def load_llmbar(path: str | os.PathLike[str]) -> list[LLMBarPair]:
    """Read an LLMBar result file.

    Raises ValueError naming the record and the field when the file is not valid JSON or a
    record does not have the structure described in this module's docstring.
    OSError propagates when the file cannot be read.
    """
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{os.fspath(path)} is not valid JSON: {exc}") from exc

    if not isinstance(data, list):
        raise ValueError(
            f"{os.fspath(path)} must contain a JSON list of records; got {type(data).__name__}"
        )
    return [_parse_record(record, index) for index, record in enumerate(data)]


def to_pair_records(pairs: list[LLMBarPair]) -> list[PairRecord]:
    """Convert LLMBar pairs to PairRecords: output_1 is a, output_2 is b, pair_id is the index.

    LLMBar winners already name the original outputs in both orders, so no swap is undone.
    """
    return [
        PairRecord(
            pair_id=str(pair.index),
            human=WINNER_TO_VERDICT[pair.label],
            judge_original=(
                None if pair.judge_no_swap is None else WINNER_TO_VERDICT[pair.judge_no_swap]
            ),
            judge_swapped=None if pair.judge_swap is None else WINNER_TO_VERDICT[pair.judge_swap],
        )
        for pair in pairs
    ]
