"""mistralmeter import-llmbar: the shipped GPT-4 file reproduces LLMBar's published figures."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mistralmeter.import_command import add_import_llmbar_parser
from mistralmeter.llmbar_import import DEFAULT_PATH, import_llmbar, judge_model_from_file_name
from models.db import session_scope
from models.jobs import Job
from models.judgements import PairwiseJudgement
from models.ratings import PairwisePreference
from models.runs import Run

pytestmark = pytest.mark.services

STATISTICS_PATH = DEFAULT_PATH.parent / "gpt-4_vanilla_statistics.json"


@pytest.fixture(scope="module")
def imported(settings):
    return import_llmbar(settings)


def rows_of_job(settings, job_id) -> dict[str, int]:
    with session_scope(settings.database_url) as session:
        run_ids = select(Run.id).where(Run.job_id == job_id)
        return {
            "runs": session.execute(
                select(func.count()).select_from(Run).where(Run.job_id == job_id)
            ).scalar_one(),
            "preferences": session.execute(
                select(func.count())
                .select_from(PairwisePreference)
                .where(PairwisePreference.run_a_id.in_(run_ids))
            ).scalar_one(),
            "judgements": session.execute(
                select(func.count())
                .select_from(PairwiseJudgement)
                .where(PairwiseJudgement.job_id == job_id)
            ).scalar_one(),
        }


def llmbar_record(label: int, winner_no_swap, winner_swap, marker: str) -> dict:
    return {
        "input": f"Question {marker}",
        "output_1": f"first answer {marker}",
        "output_2": f"second answer {marker}",
        "label": label,
        "results": [
            {
                "swap = False": {"completion": [f"Output (a) {marker}", "stop"], "winner": winner_no_swap},
                "swap = True": {"completion": [f"Output (b) {marker}", "stop"], "winner": winner_swap},
            }
        ],
    }


def write_result_file(tmp_path: Path, records: list[dict], name="judge-x_vanilla_result.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_import_llmbar_stores_job_runs_and_labels(settings, imported):
    with session_scope(settings.database_url) as session:
        job = session.get(Job, imported.job_id)
        assert job.kind == "import"
        assert job.status == "succeeded"
        assert job.simulated is False
        assert job.judge_model == "gpt-4"
        assert job.request["source"] == "LLMBar MT-Bench, princeton-nlp/LLMBar"
        assert job.request["path"] == "datasets/llmbar_mt_bench/gpt-4_vanilla_result.json"
        assert len(job.request["sha256"]) == 64
        assert job.models == ["llmbar:output_1", "llmbar:output_2"]
        assert job.total_runs == 400

        first = session.execute(
            select(Run).where(Run.job_id == job.id, Run.item_id == "llmbar-0").order_by(Run.model)
        ).scalars().all()
        source = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))[0]
        assert [run.model for run in first] == ["llmbar:output_1", "llmbar:output_2"]
        assert [run.response for run in first] == [source["output_1"], source["output_2"]]
        assert {run.prompt for run in first} == {source["input"]}
        assert {(run.status, run.provider, run.simulated) for run in first} == {
            ("succeeded", "import", False)
        }
        assert first[0].dataset_name == "llmbar_mt_bench"

    assert imported.pairs == 200
    assert imported.created is True
    assert rows_of_job(settings, imported.job_id) == {
        "runs": 400,
        "preferences": 200,
        "judgements": 200,
    }


def test_import_llmbar_twice_returns_existing_job(settings, imported):
    again = import_llmbar(settings, DEFAULT_PATH)

    assert again.job_id == imported.job_id
    assert again.created is False
    assert again.pairs == 200
    assert rows_of_job(settings, imported.job_id) == {
        "runs": 400,
        "preferences": 200,
        "judgements": 200,
    }


def test_ratings_stats_reproduce_llmbar_published_figures(client, imported):
    response = client.get(
        "/ratings/stats", query_string={"judge_model": "gpt-4", "job_id": str(imported.job_id)}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    pairwise = body["judges"]["gpt-4"]["pairwise"]

    assert body["preferences"] == 200
    assert pairwise["n"] == 200
    assert pairwise["n_excluded"] == 0
    # LLMBar's published figures for GPT-4 (vanilla prompt) on its MT-Bench set.
    published = json.loads(STATISTICS_PATH.read_text(encoding="utf-8"))
    assert published["correct_False"] == "159 / 200 = 79.5%"
    assert published["correct_True"] == "165 / 200 = 82.5%"
    assert published["correct_average"] == "81.0%"
    assert published["correct_both"] == "149 / 200 = 74.5%"
    assert published["equal"] == "174 / 200 = 87.0%"
    assert (pairwise["original_order"]["count"], pairwise["original_order"]["rate"]) == (159, 0.795)
    assert (pairwise["swapped_order"]["count"], pairwise["swapped_order"]["rate"]) == (165, 0.825)
    assert pairwise["average"]["rate"] == pytest.approx(0.81)
    assert pairwise["both_orders_correct"]["count"] == 149
    assert pairwise["both_orders_correct"]["rate"] == pytest.approx(0.745)
    assert pairwise["position_consistency"]["count"] == 174
    assert pairwise["position_consistency"]["rate"] == pytest.approx(0.87)
    assert pairwise["cohen_kappa"]["between_orders"]["kappa"] == pytest.approx(
        published["kappa_agreement"]
    )


def test_import_llmbar_maps_winners_to_verdicts(settings, tmp_path):
    marker = uuid.uuid4().hex
    records = [
        llmbar_record(1, "1", "1", f"{marker}-0"),  # agree on output_1
        llmbar_record(2, "1", "2", f"{marker}-1"),  # flips with the order
        llmbar_record(2, "2", None, f"{marker}-2"),  # no parsed winner with output_2 first
    ]
    result = import_llmbar(settings, write_result_file(tmp_path, records))

    with session_scope(settings.database_url) as session:
        judgements = session.execute(
            select(PairwiseJudgement, Run.item_id)
            .join(Run, Run.id == PairwiseJudgement.run_a_id)
            .where(PairwiseJudgement.job_id == result.job_id)
            .order_by(Run.item_id)
        ).all()
        preferences = session.execute(
            select(PairwisePreference.preference, PairwisePreference.rater, Run.item_id)
            .join(Run, Run.id == PairwisePreference.run_a_id)
            .where(Run.job_id == result.job_id)
            .order_by(Run.item_id)
        ).all()

    got = [
        (item_id, j.judge_model, j.verdict_original, j.verdict_swapped, j.outcome, j.consistent)
        for j, item_id in judgements
    ]
    assert got == [
        ("llmbar-0", "judge-x", "a", "a", "a", True),
        ("llmbar-1", "judge-x", "a", "b", "tie", False),
        ("llmbar-2", "judge-x", "b", None, None, None),
    ]
    assert judgements[0][0].raw_original == f"Output (a) {marker}-0"
    assert judgements[0][0].raw_swapped == f"Output (b) {marker}-0"
    assert judgements[2][0].unscored_reason is not None
    assert preferences == [
        ("a", "llmbar:human-majority", "llmbar-0"),
        ("b", "llmbar:human-majority", "llmbar-1"),
        ("b", "llmbar:human-majority", "llmbar-2"),
    ]


def test_import_llmbar_changed_content_is_new_job(settings, tmp_path):
    marker = uuid.uuid4().hex
    first = import_llmbar(
        settings, write_result_file(tmp_path, [llmbar_record(1, "1", "1", marker)])
    )
    second = import_llmbar(
        settings, write_result_file(tmp_path, [llmbar_record(2, "1", "1", marker)])
    )

    assert first.created is True
    assert second.created is True
    assert second.job_id != first.job_id


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("{not json", "judge-x_vanilla_result.json", "not valid JSON"),
        ('[{"input": "q"}]', "judge-x_vanilla_result.json", "field 'label' is missing"),
        ("[]", "results.json", "cannot tell the judge model"),
    ],
)
def test_import_llmbar_rejects_invalid_file(settings, tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with session_scope(settings.database_url) as session:
        before = session.execute(select(func.count()).select_from(Job)).scalar_one()

    with pytest.raises(ValueError, match=message):
        import_llmbar(settings, path)

    with session_scope(settings.database_url) as session:
        assert session.execute(select(func.count()).select_from(Job)).scalar_one() == before


def test_judge_model_from_file_name_takes_prefix():
    assert judge_model_from_file_name(Path("gpt-4_vanilla_result.json")) == "gpt-4"
    assert judge_model_from_file_name(Path("x/llama-2-70b_rules_result.json")) == "llama-2-70b"


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mistralmeter")
    add_import_llmbar_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_import_command_prints_job_and_exit_codes(settings, imported, tmp_path, capsys):
    assert run_command(["import-llmbar"]) == 0
    assert f"Already imported as job {imported.job_id}" in capsys.readouterr().out

    missing = tmp_path / "missing_vanilla_result.json"
    assert run_command(["import-llmbar", str(missing)]) == 2
    assert "No such file" in capsys.readouterr().err

    marker = uuid.uuid4().hex
    path = write_result_file(tmp_path, [llmbar_record(1, "2", "2", marker)], name="any.json")
    assert run_command(["import-llmbar", str(path), "--judge-model", "judge-y"]) == 0
    assert "Imported 1 pair as job" in capsys.readouterr().out
