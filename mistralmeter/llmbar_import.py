"""Import an LLMBar result file as stored runs, human preferences and pairwise judgements.

Each record of the file becomes two runs of one prompt (output_1 as run a, output_2 as run b),
the human majority preference on them, and the judge's verdicts in both orders, all under one
job of kind "import". GET /ratings/stats then computes the judge-human agreement figures from
the database, the same way as for pairs that MistralMeter judged itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from mistralmeter.llmbar import WINNER_TO_VERDICT, LLMBarPair, load_llmbar
from mistralmeter.logging_setup import log_fields
from mistralmeter.pairwise_agreement import combined_verdict
from mistralmeter.settings import Settings
from models.db import session_scope
from models.jobs import Job
from models.judgements import PairwiseJudgement
from models.ratings import PairwisePreference
from models.runs import Run

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO_ROOT / "datasets" / "llmbar_mt_bench" / "gpt-4_vanilla_result.json"
SOURCE = "LLMBar MT-Bench, princeton-nlp/LLMBar"
JOB_KIND = "import"
PROVIDER = "import"
MODEL_A = "llmbar:output_1"
MODEL_B = "llmbar:output_2"
HUMAN_RATER = "llmbar:human-majority"
MAX_JUDGE_MODEL_CHARS = 128  # the width of pairwise_judgements.judge_model
UNPARSED_REASON = "the LLMBar file has no parsed winner for this order"

# LLMBar names result files <judge model>_<evaluation method>_result.json.
RESULT_FILE_NAME = re.compile(r"^(?P<judge>[^_]+)_.+_result\.json$")


@dataclass(frozen=True)
class ImportResult:
    """The import job, the number of pairs in the file, and whether this call stored them."""

    job_id: uuid.UUID
    pairs: int
    created: bool


def judge_model_from_file_name(path: Path) -> str:
    """Return the judge model that an LLMBar result file name starts with ("gpt-4_...")."""
    match = RESULT_FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(
            f"cannot tell the judge model from the file name {path.name!r} "
            "(expected <judge model>_<method>_result.json); pass judge_model"
        )
    return match.group("judge")


def display_path(path: Path) -> str:
    """Return the path relative to the repository when the file is inside it, else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(REPO_ROOT))
    except ValueError:
        return str(resolved)


def dataset_name_for(path: Path) -> str | None:
    """Return the dataset name from a manifest.json beside the file, if there is one."""
    manifest = path.resolve().parent / "manifest.json"
    try:
        name = json.loads(manifest.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and 0 < len(name) <= 64 else None


def _verdict(winner: int | None) -> str | None:
    return None if winner is None else WINNER_TO_VERDICT[winner]


def _advisory_lock_key(sha256_hex: str) -> int:
    # A signed 64-bit key from the content hash: concurrent imports of one file queue here.
    return int.from_bytes(bytes.fromhex(sha256_hex[:16]), "big", signed=True)


def find_import(session: Session, sha256_hex: str) -> Job | None:
    statement = select(Job).where(
        Job.kind == JOB_KIND, Job.request["sha256"].astext == sha256_hex
    )
    return session.execute(statement.limit(1)).scalar_one_or_none()


def import_llmbar(
    settings: Settings, path: str | os.PathLike[str] | None = None, *, judge_model: str | None = None
) -> ImportResult:
    """Store an LLMBar result file as one succeeded job of kind "import".

    The default file is the GPT-4 vanilla result on MT-Bench that ships in datasets/.
    ``judge_model`` defaults to the prefix of the file name ("gpt-4"). Importing a file
    whose content (SHA-256) was imported before stores nothing and returns the earlier job
    with ``created`` False. Raises ValueError on a malformed file, before writing anything.
    """
    file_path = Path(path) if path is not None else DEFAULT_PATH
    content = file_path.read_bytes()
    sha256_hex = hashlib.sha256(content).hexdigest()
    pairs = load_llmbar(file_path)
    judge = judge_model or judge_model_from_file_name(file_path)
    if not 0 < len(judge) <= MAX_JUDGE_MODEL_CHARS:
        raise ValueError(
            f"judge model name must be 1 to {MAX_JUDGE_MODEL_CHARS} characters long; "
            f"got {len(judge)}"
        )
    request = {
        "source": SOURCE,
        "path": display_path(file_path),
        "sha256": sha256_hex,
        "judge_model": judge,
    }

    with session_scope(settings.database_url) as session:
        session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _advisory_lock_key(sha256_hex)}
        )
        existing = find_import(session, sha256_hex)
        if existing is not None:
            logger.info("import found", extra=log_fields(job_id=str(existing.id)))
            return ImportResult(job_id=existing.id, pairs=len(pairs), created=False)

        job = _create_job(session, request, pairs, judge, dataset_name_for(file_path))
        runs = [_store_runs(session, job, pair) for pair in pairs]
        # The tables have no ORM relationships, so the flush order comes from explicit flushes.
        session.flush()
        for pair, (run_a, run_b) in zip(pairs, runs):
            _store_labels(session, job, pair, run_a, run_b, judge)
        job_id = job.id

    logger.info("import stored", extra=log_fields(job_id=str(job_id), pairs=len(pairs)))
    return ImportResult(job_id=job_id, pairs=len(pairs), created=True)


def _create_job(
    session: Session,
    request: dict[str, Any],
    pairs: list[LLMBarPair],
    judge: str,
    dataset_name: str | None,
) -> Job:
    now = datetime.now(timezone.utc)
    unparsed = sum(p.judge_no_swap is None or p.judge_swap is None for p in pairs)
    job = Job(
        kind=JOB_KIND,
        status="succeeded",
        request=request,
        items=[{"id": _item_id(pair), "prompt": pair.input} for pair in pairs],
        models=[MODEL_A, MODEL_B],
        repetitions=1,
        total_runs=2 * len(pairs),
        dataset_name=dataset_name,
        dataset_version=f"sha256:{request['sha256']}",
        judge_model=judge,
        simulated=False,
        result={
            "imported": {
                "pairs": len(pairs),
                "runs": 2 * len(pairs),
                "preferences": len(pairs),
                "pairwise_judgements": len(pairs),
                "pairs_without_both_verdicts": unparsed,
            }
        },
        started_at=now,
        finished_at=now,
    )
    session.add(job)
    session.flush()
    return job


def _item_id(pair: LLMBarPair) -> str:
    return f"llmbar-{pair.index}"


def _new_run(job: Job, pair: LLMBarPair, model: str, response: str) -> Run:
    return Run(
        id=uuid.uuid4(),
        job_id=job.id,
        item_id=_item_id(pair),
        repetition=0,
        model=model,
        provider=PROVIDER,
        status="succeeded",
        dataset_name=job.dataset_name,
        dataset_version=job.dataset_version,
        prompt=pair.input,
        params={},
        response=response,
        tokens_estimated=False,
        rate_limit_wait_ms=0.0,
        retry_wait_ms=0.0,
        attempts=1,
        simulated=False,
    )


def _store_runs(session: Session, job: Job, pair: LLMBarPair) -> tuple[Run, Run]:
    run_a = _new_run(job, pair, MODEL_A, pair.output_1)
    run_b = _new_run(job, pair, MODEL_B, pair.output_2)
    session.add_all([run_a, run_b])
    return run_a, run_b


def _store_labels(
    session: Session, job: Job, pair: LLMBarPair, run_a: Run, run_b: Run, judge: str
) -> None:
    """Add the human preference and the judge's verdicts on one stored pair of runs."""
    session.add(
        PairwisePreference(
            run_a_id=run_a.id,
            run_b_id=run_b.id,
            preference=WINNER_TO_VERDICT[pair.label],
            rater=HUMAN_RATER,
        )
    )

    # LLMBar winners name output_1 or output_2 in both orders, as the stored verdicts name
    # run a or run b, so no order has to be undone.
    original = _verdict(pair.judge_no_swap)
    swapped = _verdict(pair.judge_swap)
    both = original is not None and swapped is not None
    session.add(
        PairwiseJudgement(
            job_id=job.id,
            run_a_id=run_a.id,
            run_b_id=run_b.id,
            judge_model=judge,
            verdict_original=original,
            verdict_swapped=swapped,
            outcome=combined_verdict(original, swapped) if both else None,
            consistent=original == swapped if both else None,
            raw_original=pair.completion_no_swap,
            raw_swapped=pair.completion_swap,
            unscored_reason=None if both else UNPARSED_REASON,
        )
    )
