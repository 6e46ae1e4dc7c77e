"""Tests for the prompt sets shipped in datasets/ and their loader."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from mistralmeter import builtin_datasets
from mistralmeter.builtin_datasets import (
    DATASETS_DIR,
    BuiltinDataset,
    list_builtin,
    load_all_builtin,
    load_builtin,
)
from mistralmeter.dataset_files import dataset_version

PROMPT_SETS = ["coding", "general_qa", "mt_bench", "vicuna_bench"]
OWN_SETS = ["coding", "general_qa"]
THIRD_PARTY_SETS = ["llmbar_mt_bench", "mt_bench", "vicuna_bench"]

# SHA-256 of the third-party files as copied from upstream; the records must stay unedited.
UPSTREAM_SHA256 = {
    "mt_bench/question.jsonl": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    "mt_bench/reference_answer_gpt-4.jsonl": (
        "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"
    ),
    "mt_bench/LICENSE": "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
    "vicuna_bench/question.jsonl": (
        "c248c5c98ba45bb0c2aadae2f270e643bd32679c6c306a3b2a503ac4254cdaa5"
    ),
    "vicuna_bench/LICENSE": "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
    "llmbar_mt_bench/dataset.json": (
        "c152249bc095d152485954bd2abd9ea79528ee5e4c045bfe9ef78755b03c20d8"
    ),
    "llmbar_mt_bench/gpt-4_vanilla_result.json": (
        "fdd926eaa67b74ee4e5b30e962358e47a602a3f4a7e1af27dd7d1b5013fb7f67"
    ),
    "llmbar_mt_bench/gpt-4_vanilla_statistics.json": (
        "4bb4ee2ff0fe2e5fdeb8d20285aeb0b8690b544a8162f43902848ab003ec5d8c"
    ),
    "llmbar_mt_bench/LICENSE": "8872dbf8660b00890b5e07ce1ea1f7a44fa7ae4e1857da56caba172b51dab3cb",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def mt_bench() -> BuiltinDataset:
    return load_builtin("mt_bench")


# --- listing ------------------------------------------------------------------------------


def test_datasets_dir_is_repository_folder():
    assert DATASETS_DIR == Path(__file__).resolve().parents[1] / "datasets"
    assert DATASETS_DIR.is_dir()


def test_list_builtin_names_prompt_sets_only():
    assert list_builtin() == PROMPT_SETS


def test_list_builtin_skips_llmbar_pairs():
    manifest = json.loads((DATASETS_DIR / "llmbar_mt_bench" / "manifest.json").read_text())

    assert "llmbar_mt_bench" not in list_builtin()
    assert manifest["kind"] == "pairwise_annotations"
    assert manifest["format"] == "llmbar_pairs"


def test_load_builtin_rejects_annotation_set():
    with pytest.raises(KeyError) as caught:
        load_builtin("llmbar_mt_bench")

    message = caught.value.args[0]
    assert "'llmbar_mt_bench' is a pairwise_annotations set, not a prompt set" in message
    assert "coding, general_qa, mt_bench, vicuna_bench" in message


@pytest.mark.parametrize("name", ["nope", "../datasets", "", "MT_BENCH"])
def test_load_builtin_unknown_name_lists_known(name):
    with pytest.raises(KeyError) as caught:
        load_builtin(name)

    assert caught.value.args[0] == (
        f"unknown builtin dataset {name!r}; builtin datasets: "
        "coding, general_qa, mt_bench, vicuna_bench"
    )


def test_load_all_builtin_in_name_order():
    datasets = load_all_builtin()

    assert [dataset.name for dataset in datasets] == PROMPT_SETS
    for dataset in datasets:
        assert dataset.version == dataset_version(dataset.items)
        assert dataset.description
        assert dataset.license
        assert dataset.source


def test_load_builtin_version_is_stable():
    assert load_builtin("general_qa").version == load_builtin("general_qa").version


# --- MT-Bench -----------------------------------------------------------------------------


def test_mt_bench_has_80_items_in_8_categories(mt_bench):
    categories = Counter(item.category for item in mt_bench.items)

    assert len(mt_bench.items) == 80
    assert categories == {
        "writing": 10,
        "roleplay": 10,
        "reasoning": 10,
        "math": 10,
        "coding": 10,
        "extraction": 10,
        "stem": 10,
        "humanities": 10,
    }
    assert mt_bench.license == "Apache-2.0"


def test_mt_bench_items_match_question_file(mt_bench):
    questions = read_jsonl(DATASETS_DIR / "mt_bench" / "question.jsonl")

    assert [item.id for item in mt_bench.items] == [str(q["question_id"]) for q in questions]
    for item, question in zip(mt_bench.items, questions):
        assert item.prompt == question["turns"][0]
        assert item.metadata["turns"] == question["turns"]
        assert len(item.metadata["turns"]) == 2
        assert item.metadata["source"] == "mt_bench"
        assert item.expected_style is None
        assert item.system is None


def test_mt_bench_references_from_source_files(mt_bench):
    folder = DATASETS_DIR / "mt_bench"
    questions = read_jsonl(folder / "question.jsonl")
    answers = {
        record["question_id"]: record["choices"][0]["turns"]
        for record in read_jsonl(folder / "reference_answer_gpt-4.jsonl")
    }
    expected_turns = {}
    for question in questions:
        if "reference" in question:
            expected_turns[str(question["question_id"])] = question["reference"]
        elif question["question_id"] in answers:
            expected_turns[str(question["question_id"])] = answers[question["question_id"]]
    expected_references = {
        question_id: turns[0] for question_id, turns in expected_turns.items() if turns[0].strip()
    }

    references = {item.id: item.reference for item in mt_bench.items if item.reference}
    turns = {
        item.id: item.metadata["reference_turns"]
        for item in mt_bench.items
        if "reference_turns" in item.metadata
    }
    assert len(expected_references) > 0
    assert references == expected_references
    assert turns == expected_turns


def test_mt_bench_own_reference_preferred_over_gpt4_answer(mt_bench):
    questions = read_jsonl(DATASETS_DIR / "mt_bench" / "question.jsonl")
    question = next(q for q in questions if q["question_id"] == 101)
    item = next(item for item in mt_bench.items if item.id == "101")

    answers = {
        record["question_id"]: record["choices"][0]["turns"]
        for record in read_jsonl(DATASETS_DIR / "mt_bench" / "reference_answer_gpt-4.jsonl")
    }

    assert item.reference == question["reference"][0]
    assert item.reference != answers[101][0]
    assert item.metadata["reference_file"] == "question.jsonl"


def test_mt_bench_gpt4_answer_fills_missing_reference(mt_bench):
    answers = {
        record["question_id"]: record["choices"][0]["turns"]
        for record in read_jsonl(DATASETS_DIR / "mt_bench" / "reference_answer_gpt-4.jsonl")
    }
    item = next(item for item in mt_bench.items if item.id == "123")

    assert item.reference == answers[123][0]
    assert item.metadata["reference_file"] == "reference_answer_gpt-4.jsonl"


def test_mt_bench_empty_reference_turn_skipped(mt_bench):
    item = next(item for item in mt_bench.items if item.id == "133")

    assert item.metadata["reference_turns"][0] == ""
    assert item.reference is None


def test_mt_bench_question_without_reference(mt_bench):
    item = next(item for item in mt_bench.items if item.id == "81")

    assert item.reference is None
    assert "reference_turns" not in item.metadata
    assert set(item.metadata) == {"turns", "source"}


# --- Vicuna bench -------------------------------------------------------------------------


def test_vicuna_bench_has_80_single_turn_items():
    dataset = load_builtin("vicuna_bench")
    questions = read_jsonl(DATASETS_DIR / "vicuna_bench" / "question.jsonl")

    assert len(dataset.items) == 80
    assert [item.prompt for item in dataset.items] == [q["turns"][0] for q in questions]
    assert Counter(item.category for item in dataset.items) == Counter(
        q["category"] for q in questions
    )
    assert all(len(item.metadata["turns"]) == 1 for item in dataset.items)
    assert all(item.reference is None for item in dataset.items)
    assert dataset.license == "Apache-2.0"


# --- our own sets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", OWN_SETS)
def test_own_set_items_complete(name):
    dataset = load_builtin(name)

    assert 15 <= len(dataset.items) <= 30
    assert dataset.license == "Apache-2.0"
    assert dataset.source == "MistralMeter authors"
    for item in dataset.items:
        assert item.id.startswith(f"{name.split('_')[0]}-"), item.id
        assert item.expected_style, item.id
        assert item.category, item.id
        assert item.reference is None or item.reference.strip(), item.id


@pytest.mark.parametrize("name", OWN_SETS)
def test_own_set_mixes_references_and_open_prompts(name):
    items = load_builtin(name).items
    with_reference = sum(1 for item in items if item.reference)

    assert with_reference >= len(items) // 2
    assert with_reference < len(items)


@pytest.mark.parametrize("name", OWN_SETS)
def test_own_set_categories_varied(name):
    categories = Counter(item.category for item in load_builtin(name).items)

    assert len(categories) >= 8
    assert max(categories.values()) <= 5


def test_general_qa_uses_system_prompt_once():
    items = load_builtin("general_qa").items

    assert [item.id for item in items if item.system] == ["general-20"]


# --- files and manifests ------------------------------------------------------------------


@pytest.mark.parametrize("relative_path", sorted(UPSTREAM_SHA256))
def test_third_party_files_unchanged(relative_path):
    digest = hashlib.sha256((DATASETS_DIR / relative_path).read_bytes()).hexdigest()

    assert digest == UPSTREAM_SHA256[relative_path]


@pytest.mark.parametrize("name", THIRD_PARTY_SETS)
def test_third_party_sets_have_license_and_source_note(name):
    folder = DATASETS_DIR / name
    note = (folder / "SOURCE.md").read_text(encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))

    assert (folder / "LICENSE").is_file()
    assert "Commit:" in note
    assert "Changes: none" in note
    assert manifest["source"].split(",")[0] in note


@pytest.mark.parametrize("name", PROMPT_SETS + ["llmbar_mt_bench"])
def test_manifest_lists_existing_files(name):
    folder = DATASETS_DIR / name
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))

    assert manifest["name"] == name
    for file_name in manifest["files"].values():
        assert (folder / file_name).is_file(), file_name


def test_datasets_readme_lists_every_set():
    readme = (DATASETS_DIR / "README.md").read_text(encoding="utf-8")

    for name in PROMPT_SETS + ["llmbar_mt_bench"]:
        assert f"`{name}`" in readme


# --- loader errors on a broken folder -----------------------------------------------------


def write_set(root: Path, name: str, manifest: dict, items: str) -> None:
    folder = root / name
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "items.jsonl").write_text(items, encoding="utf-8")


def manifest_for(name: str, **overrides) -> dict:
    manifest = {
        "name": name,
        "kind": "prompts",
        "description": "d",
        "license": "Apache-2.0",
        "source": "tests",
        "format": "items_jsonl",
        "files": {"items": "items.jsonl"},
    }
    manifest.update(overrides)
    return manifest


def test_load_builtin_reads_items_jsonl_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_datasets, "DATASETS_DIR", tmp_path)
    write_set(tmp_path, "tiny", manifest_for("tiny"), '{"id": 1, "prompt": "p"}\n')

    dataset = load_builtin("tiny")

    assert list_builtin() == ["tiny"]
    assert [item.to_dict() for item in dataset.items] == [{"id": "1", "prompt": "p"}]


def test_load_builtin_manifest_name_must_match_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_datasets, "DATASETS_DIR", tmp_path)
    write_set(tmp_path, "tiny", manifest_for("other"), '{"id": 1, "prompt": "p"}\n')

    with pytest.raises(ValueError, match="does not match the folder name 'tiny'"):
        list_builtin()


def test_load_builtin_manifest_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_datasets, "DATASETS_DIR", tmp_path)
    manifest = manifest_for("tiny", files={"items": "missing.jsonl"})
    write_set(tmp_path, "tiny", manifest, '{"id": 1, "prompt": "p"}\n')

    with pytest.raises(ValueError, match="file 'missing.jsonl' \\(items\\) does not exist"):
        list_builtin()


def test_load_builtin_manifest_unknown_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_datasets, "DATASETS_DIR", tmp_path)
    write_set(tmp_path, "tiny", manifest_for("tiny", kind="other"), '{"id": 1, "prompt": "p"}\n')

    with pytest.raises(ValueError, match="unknown kind 'other'"):
        list_builtin()


def test_load_builtin_invalid_item_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_datasets, "DATASETS_DIR", tmp_path)
    write_set(tmp_path, "tiny", manifest_for("tiny"), '{"id": 1}\n')

    with pytest.raises(ValueError, match=r"item 1 \(line 1\): missing required field 'prompt'"):
        load_builtin("tiny")
