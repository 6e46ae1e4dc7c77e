"""LLMBar result files: the loader, and the published GPT-4 agreement figures on MT-Bench pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score

from mistralmeter.llmbar import LLMBarPair, load_llmbar, to_pair_records
from mistralmeter.pairwise_agreement import PairRecord, pairwise_agreement

REPOSITORY = Path(__file__).resolve().parent.parent
# NOTE: the second folder is the unshipped source copy, used only until the dataset is
# shipped under datasets/llmbar_mt_bench with its licence. Remove it then.
LLMBAR_FOLDERS = [
    REPOSITORY / "datasets" / "llmbar_mt_bench",
    Path("/work/shared/datasets/llmbar_mt_bench"),
]


def llmbar_file(name: str) -> Path:
    for folder in LLMBAR_FOLDERS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} not found in any of {[str(f) for f in LLMBAR_FOLDERS]}")


@pytest.fixture(scope="module")
def gpt4_pairs() -> list[LLMBarPair]:
    return load_llmbar(llmbar_file("gpt-4_vanilla_result.json"))


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(llmbar_file("gpt-4_vanilla_statistics.json").read_text(encoding="utf-8"))


def test_load_llmbar_reads_all_records(gpt4_pairs):
    assert len(gpt4_pairs) == 200
    first = gpt4_pairs[0]
    assert first.index == 0
    assert first.input.startswith("Explain what's base rate fallacy")
    assert first.label == 1
    assert first.judge_no_swap == 1
    assert first.judge_swap == 1
    assert first.completion_no_swap == "Output (a)"
    # With output_2 shown first, "Output (b)" is output_1, which LLMBar records as winner "1".
    assert first.completion_swap == "Output (b)"
    assert {pair.label for pair in gpt4_pairs} == {1, 2}


def test_to_pair_records_output_mapping(gpt4_pairs):
    records = to_pair_records(gpt4_pairs)

    assert records[0] == PairRecord("0", human="a", judge_original="a", judge_swapped="a")
    for pair, record in zip(gpt4_pairs, records):
        assert record.human == {1: "a", 2: "b"}[pair.label]
        assert record.judge_original == {1: "a", 2: "b"}[pair.judge_no_swap]
        assert record.judge_swapped == {1: "a", 2: "b"}[pair.judge_swap]


def test_pairwise_agreement_published_gpt4_figures(gpt4_pairs, published):
    result = pairwise_agreement(to_pair_records(gpt4_pairs))

    assert result["n"] == 200
    assert result["original_order"]["count"] == 159
    assert result["original_order"]["n"] == 200
    assert round(result["original_order"]["rate"], 3) == 0.795
    assert result["swapped_order"]["count"] == 165
    assert round(result["swapped_order"]["rate"], 3) == 0.825
    assert round(result["average"]["rate"], 3) == 0.81
    assert result["both_orders_correct"]["count"] == 149
    assert round(result["both_orders_correct"]["rate"], 3) == 0.745
    assert result["position_consistency"]["count"] == 174
    assert round(result["position_consistency"]["rate"], 3) == 0.87

    assert published["correct_False"] == "159 / 200 = 79.5%"
    assert published["correct_True"] == "165 / 200 = 82.5%"
    assert published["correct_average"] == "81.0%"
    assert published["correct_both"] == "149 / 200 = 74.5%"
    assert published["equal"] == "174 / 200 = 87.0%"


def test_kappa_between_orders_matches_published(gpt4_pairs, published):
    kappa = pairwise_agreement(to_pair_records(gpt4_pairs))["cohen_kappa"]

    assert kappa["between_orders"]["kappa"] == pytest.approx(
        published["kappa_agreement"], abs=1e-12
    )


def test_published_kappa_uses_llmbar_recoding(gpt4_pairs, published):
    """The published kappa_False/True are not kappas between people and the judge.

    LLMBar's scorer recodes the judge's winner "2" as 0 but keeps the human label 2, so a
    judge that agrees on output_2 counts as disagreeing. Recoding the same way reproduces
    the published figures exactly, while the kappa between the label and the verdict
    (output_1 = a, output_2 = b) is about 0.59 and 0.65.
    """
    kappa = pairwise_agreement(to_pair_records(gpt4_pairs))["cohen_kappa"]

    assert kappa["original"]["kappa"] == pytest.approx(0.5899179835967194, abs=1e-12)
    assert kappa["swapped"]["kappa"] == pytest.approx(0.6500699860027994, abs=1e-12)
    assert kappa["average"]["kappa"] == pytest.approx(0.6199939847997594, abs=1e-12)

    labels = [pair.label for pair in gpt4_pairs]
    recoded_no_swap = [1 if pair.judge_no_swap == 1 else 0 for pair in gpt4_pairs]
    recoded_swap = [1 if pair.judge_swap == 1 else 0 for pair in gpt4_pairs]
    assert cohen_kappa_score(recoded_no_swap, labels) == pytest.approx(
        published["kappa_False"], abs=1e-12
    )
    assert cohen_kappa_score(recoded_swap, labels) == pytest.approx(
        published["kappa_True"], abs=1e-12
    )
    assert kappa["original"]["kappa"] != pytest.approx(published["kappa_False"], abs=0.1)


# --- malformed input ----------------------------------------------------------------------


def valid_record() -> dict:
    return {
        "input": "Q",
        "output_1": "first",
        "output_2": "second",
        "label": 2,
        "results": [
            {
                "swap = False": {"completion": ["Output (b)", "stop"], "winner": "2"},
                "swap = True": {"completion": ["Output (a)", "stop"], "winner": "2"},
            }
        ],
    }


def write_json(tmp_path: Path, data) -> Path:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_llmbar_small_valid_file(tmp_path):
    pairs = load_llmbar(write_json(tmp_path, [valid_record()]))

    assert pairs == [
        LLMBarPair(
            index=0,
            input="Q",
            output_1="first",
            output_2="second",
            label=2,
            judge_no_swap=2,
            judge_swap=2,
            completion_no_swap="Output (b)",
            completion_swap="Output (a)",
        )
    ]
    assert to_pair_records(pairs) == [
        PairRecord("0", human="b", judge_original="b", judge_swapped="b")
    ]


def test_load_llmbar_uses_last_results_entry(tmp_path):
    record = valid_record()
    record["results"].insert(0, ["auxiliary output", "stop"])

    pairs = load_llmbar(write_json(tmp_path, [record]))

    assert pairs[0].judge_no_swap == 2


def test_load_llmbar_null_winner_is_excluded_pair(tmp_path):
    record = valid_record()
    record["results"][0]["swap = True"]["winner"] = None

    pairs = load_llmbar(write_json(tmp_path, [valid_record(), record]))
    result = pairwise_agreement(to_pair_records(pairs))

    assert pairs[1].judge_swap is None
    assert result["n"] == 1
    assert result["n_excluded"] == 1


def broken(change):
    record = valid_record()
    change(record)
    return [valid_record(), record]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"records": []}, "must contain a JSON list of records"),
        ([valid_record(), "text"], "record 1 must be a JSON object"),
        (broken(lambda r: r.pop("output_2")), "record 1: field 'output_2' is missing"),
        (broken(lambda r: r.update(input=5)), "record 1: field 'input' must be a string; got 5"),
        (broken(lambda r: r.update(label=3)), "record 1: field 'label' must be 1 or 2; got 3"),
        (
            broken(lambda r: r.update(label="1")),
            "record 1: field 'label' must be an integer; got '1'",
        ),
        (
            broken(lambda r: r.update(label=True)),
            "record 1: field 'label' must be an integer; got True",
        ),
        (broken(lambda r: r.update(results={})), "record 1: field 'results' must be a list"),
        (broken(lambda r: r.update(results=[])), "record 1: field 'results' is empty"),
        (
            broken(lambda r: r["results"][0].pop("swap = True")),
            r"record 1: field results\[-1\]\['swap = True'\] is missing",
        ),
        (
            broken(lambda r: r["results"][0]["swap = False"].update(winner="3")),
            r"record 1: field results\[-1\]\['swap = False'\]\[\"winner\"\] "
            r"must be \"1\", \"2\" or null; got '3'",
        ),
        (
            broken(lambda r: r["results"][0]["swap = False"].pop("winner")),
            r"record 1: field results\[-1\]\['swap = False'\]\[\"winner\"\] is missing",
        ),
        (
            broken(lambda r: r["results"][0]["swap = False"].update(winner=1)),
            r"\[\"winner\"\] must be \"1\", \"2\" or null; got 1",
        ),
        (
            broken(lambda r: r["results"][0]["swap = True"].update(completion="Output (a)")),
            r"record 1: field results\[-1\]\['swap = True'\]\[\"completion\"\] must be a list",
        ),
    ],
)
def test_load_llmbar_rejects_malformed_record(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        load_llmbar(write_json(tmp_path, data))


def test_load_llmbar_rejects_invalid_json(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("[{", encoding="utf-8")

    with pytest.raises(ValueError, match="is not valid JSON"):
        load_llmbar(path)


def test_load_llmbar_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_llmbar(tmp_path / "absent.json")
