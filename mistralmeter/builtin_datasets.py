"""Load the prompt sets shipped in the repository's ``datasets/`` folder.

Each set is a folder ``datasets/<name>/`` with a ``manifest.json``::

    {"name": ..., "kind": "prompts" | "pairwise_annotations", "description": ...,
     "license": ..., "source": ..., "format": "items_jsonl" | "mt_bench" | "llmbar_pairs",
     "files": {"<role>": "<file name in the folder>", ...}}

Only ``"kind": "prompts"`` folders are evaluation datasets; other kinds (such as the LLMBar
human-versus-judge pairs) ship in the same folder tree but are read by their own importers.
Every item goes through the same validation as an uploaded file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mistralmeter.dataset_files import (
    DatasetItem,
    dataset_version,
    items_from_records,
    parse_dataset,
    validate_dataset_name,
)

DATASETS_DIR: Path = Path(__file__).resolve().parents[1] / "datasets"

PROMPTS_KIND = "prompts"
KINDS = (PROMPTS_KIND, "pairwise_annotations")
MANIFEST_FILE = "manifest.json"
_MANIFEST_KEYS = ("name", "kind", "description", "license", "source", "format", "files")


@dataclass(frozen=True)
class BuiltinDataset:
    """A prompt set shipped with the product, with its licence, source and content version."""

    name: str
    description: str
    license: str
    source: str
    items: list[DatasetItem]
    version: str


def list_builtin() -> list[str]:
    """Return the names of the shipped prompt sets, sorted; annotation sets are left out."""
    return sorted(
        name for name, manifest in _read_all_manifests().items() if manifest["kind"] == PROMPTS_KIND
    )


def load_builtin(name: str) -> BuiltinDataset:
    """Load and validate one shipped prompt set; raise KeyError naming the known sets."""
    manifests = _read_all_manifests()
    manifest = manifests.get(name)
    if manifest is None or manifest["kind"] != PROMPTS_KIND:
        known = ", ".join(list_builtin())
        if manifest is None:
            raise KeyError(f"unknown builtin dataset {name!r}; builtin datasets: {known}")
        raise KeyError(
            f"builtin dataset {name!r} is a {manifest['kind']} set, not a prompt set; builtin "
            f"prompt sets: {known}"
        )

    folder = DATASETS_DIR / name
    items = _load_items(folder, manifest)
    return BuiltinDataset(
        name=name,
        description=manifest["description"],
        license=manifest["license"],
        source=manifest["source"],
        items=items,
        version=dataset_version(items),
    )


def load_all_builtin() -> list[BuiltinDataset]:
    """Load every shipped prompt set, in name order."""
    return [load_builtin(name) for name in list_builtin()]


# --- manifests ----------------------------------------------------------------------------


def _read_all_manifests() -> dict[str, dict[str, Any]]:
    if not DATASETS_DIR.is_dir():
        raise FileNotFoundError(f"builtin dataset folder {DATASETS_DIR} does not exist")
    return {
        folder.name: _read_manifest(folder)
        for folder in sorted(DATASETS_DIR.iterdir())
        if (folder / MANIFEST_FILE).is_file()
    }


def _read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check one manifest; a broken one is a packaging bug, so it raises ValueError."""
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: the manifest must be a JSON object")

    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path}: missing keys {', '.join(missing)}")
    if manifest["name"] != folder.name:
        raise ValueError(
            f"{path}: name {manifest['name']!r} does not match the folder name {folder.name!r}"
        )
    validate_dataset_name(manifest["name"])
    if manifest["kind"] not in KINDS:
        raise ValueError(
            f"{path}: unknown kind {manifest['kind']!r}; expected one of {', '.join(KINDS)}"
        )

    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{path}: 'files' must be a non-empty object of role to file name")
    for role, file_name in files.items():
        if not isinstance(file_name, str) or Path(file_name).name != file_name:
            raise ValueError(f"{path}: file {role!r} must be a plain file name in the folder")
        if not (folder / file_name).is_file():
            raise ValueError(f"{path}: file {file_name!r} ({role}) does not exist")
    return manifest


# --- items per format ---------------------------------------------------------------------


def _load_items(folder: Path, manifest: dict[str, Any]) -> list[DatasetItem]:
    data_format = manifest["format"]
    if data_format == "items_jsonl":
        return _load_items_jsonl(folder / manifest["files"]["items"])
    if data_format == "mt_bench":
        return items_from_records(_mt_bench_records(folder, manifest))
    raise ValueError(
        f"{folder / MANIFEST_FILE}: format {data_format!r} is not a prompt set format; "
        "expected items_jsonl or mt_bench"
    )


def _load_items_jsonl(path: Path) -> list[DatasetItem]:
    data = path.read_bytes()
    # Shipped files are trusted not to be oversized, so the size limit is the file's own size.
    return parse_dataset(data, format="jsonl", max_bytes=max(len(data), 1))


def _mt_bench_records(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Map FastChat question records (MT-Bench, Vicuna bench) to dataset item records.

    The first turn is the prompt and all turns stay in metadata. A question's own
    "reference" field is preferred; otherwise the reference answers file, when the manifest
    lists one, supplies choices[0].turns.
    """
    files = manifest["files"]
    questions_path = folder / files["questions"]
    answers_file = files.get("reference_answers")
    answers = _reference_answers(folder / answers_file) if answers_file else {}

    records = []
    for line, question in _read_jsonl_objects(questions_path):
        turns = question.get("turns")
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{questions_path}, line {line}: 'turns' must be a non-empty list")

        question_id = question.get("question_id")
        metadata: dict[str, Any] = {"turns": turns, "source": manifest["name"]}
        if "reference" in question:
            reference_turns, reference_file = question["reference"], files["questions"]
        elif question_id in answers:
            reference_turns, reference_file = answers[question_id], answers_file
        else:
            reference_turns, reference_file = None, None
        if reference_turns is not None:
            metadata["reference_turns"] = reference_turns
            metadata["reference_file"] = reference_file

        records.append(
            {
                "id": question_id,
                "prompt": turns[0],
                "category": question.get("category"),
                "reference": _first_turn(reference_turns),
                "metadata": metadata,
            }
        )
    return records


def _first_turn(turns: Any) -> str | None:
    # Some MT-Bench references leave the first turn empty and give only the second one.
    if isinstance(turns, list) and turns and isinstance(turns[0], str) and turns[0].strip():
        return turns[0]
    return None


def _reference_answers(path: Path) -> dict[int, list[Any]]:
    answers = {}
    for line, record in _read_jsonl_objects(path):
        try:
            answers[record["question_id"]] = record["choices"][0]["turns"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(
                f"{path}, line {line}: expected question_id and choices[0].turns"
            ) from exc
    return answers


def _read_jsonl_objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
    objects = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError(f"{path}, line {line_number}: expected a JSON object")
        objects.append((line_number, value))
    return objects
