"""POST/GET /rate/{run_id} and /preferences on a real PostgreSQL, and migration 0002."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

import models
from models.db import session_scope
from models.jobs import Job
from models.judgements import Judgement
from models.ratings import PairwisePreference, Rating
from models.runs import Run

pytestmark = pytest.mark.services

CRITERIA_SCORES = {
    "clarity": 7.0,
    "accuracy": 6.0,
    "completeness": 5.0,
    "relevance": 8.0,
    "style_match": 4.0,
}


def create_job(settings, runs: list[dict[str, Any]], *, judge_model: str | None = None) -> list:
    """Store a succeeded job with the given runs (and judgements) directly through the ORM.

    Each run dict may set model, item_id, prompt, status, dataset_name and ``judge``: a dict
    of Judgement columns, stored with judge_model. Returns the run ids in order.
    """
    with session_scope(settings.database_url) as session:
        job = Job(
            kind="evaluation",
            status="succeeded",
            request={"test": "ratings"},
            items=[],
            models=sorted({spec.get("model", "model-a") for spec in runs}),
            repetitions=1,
            total_runs=len(runs),
            judge_model=judge_model,
            simulated=True,
        )
        session.add(job)
        session.flush()

        run_ids = []
        for index, spec in enumerate(runs):
            run = Run(
                id=uuid.uuid4(),
                job_id=job.id,
                item_id=spec.get("item_id", f"item-{index}"),
                repetition=spec.get("repetition", 0),
                model=spec.get("model", "model-a"),
                provider="simulator",
                status=spec.get("status", "succeeded"),
                dataset_name=spec.get("dataset_name"),
                prompt=spec.get("prompt", f"prompt {index}"),
                params={},
                response=None if spec.get("status") == "failed" else f"answer {index}",
                simulated=True,
                tokens_estimated=False,
                rate_limit_wait_ms=0.0,
                retry_wait_ms=0.0,
                attempts=1,
            )
            session.add(run)
            run_ids.append(run.id)
        session.flush()

        for run_id, spec in zip(run_ids, runs):
            if spec.get("judge") is not None:
                session.add(_judgement(run_id, judge_model, spec["judge"]))
    return run_ids


def _judgement(run_id: uuid.UUID, judge_model: str | None, values: dict[str, Any]) -> Judgement:
    status = values.get("status", "scored")
    return Judgement(
        run_id=run_id,
        judge_model=judge_model,
        status=status,
        overall_score=values.get("overall_score"),
        clarity=values.get("clarity"),
        accuracy=values.get("accuracy"),
        completeness=values.get("completeness"),
        relevance=values.get("relevance"),
        style_match=values.get("style_match"),
        feedback=values.get("feedback"),
        unscored_reason=values.get("unscored_reason"),
        parsed=status == "scored",
        samples=[],
        repairs=[],
        attempts=1,
    )


def count_rows(settings, model) -> int:
    with session_scope(settings.database_url) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def run_id(settings):
    return create_job(settings, [{"model": unique("rated-model")}])[0]


def test_rate_query_parameters_store_rating(client, settings, run_id):
    rater = unique("alice")
    response = client.post(f"/rate/{run_id}?rating=4&comment=clear+answer&rater={rater}")

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["run_id"] == str(run_id)
    assert body["rating"] == 4
    assert body["comment"] == "clear answer"
    assert body["rater"] == rater
    assert body["criterion"] == "overall"
    with session_scope(settings.database_url) as session:
        stored = session.execute(select(Rating).where(Rating.run_id == run_id)).scalar_one()
        assert (stored.rating, stored.comment, stored.rater) == (4, "clear answer", rater)
        assert str(stored.id) == body["id"]


def test_rate_json_body_stores_rating(client, run_id):
    response = client.post(
        f"/rate/{run_id}", json={"rating": 2, "criterion": "clarity", "comment": None}
    )

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["rating"], body["criterion"], body["rater"], body["comment"]) == (
        2,
        "clarity",
        "anonymous",
        None,
    )


def test_rate_query_and_body_combine(client, run_id):
    response = client.post(
        f"/rate/{run_id}?rating=5&rater=query-rater",
        json={"rating": 5, "comment": "from-body"},
    )

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["rating"] == 5
    assert body["comment"] == "from-body"
    assert body["rater"] == "query-rater"


def test_rate_conflicting_query_and_body_rejected(client, settings, run_id):
    before = count_rows(settings, Rating)
    response = client.post(
        f"/rate/{run_id}?rating=1&comment=from-query", json={"rating": 5, "comment": "x"}
    )

    assert response.status_code == 422
    assert "comment, rating given in both" in response.get_json()["message"]
    assert count_rows(settings, Rating) == before


def test_rate_again_replaces_rating(client, settings, run_id):
    first = client.post(f"/rate/{run_id}?rating=2&comment=meh&rater=carol")
    second = client.post(f"/rate/{run_id}?rating=5&rater=carol")

    assert first.status_code == 201
    assert second.status_code == 200, second.get_json()
    assert second.get_json()["id"] == first.get_json()["id"]
    assert second.get_json()["rating"] == 5
    # The new rating replaces the whole row, so a comment left out is cleared.
    assert second.get_json()["comment"] is None
    assert second.get_json()["created_at"] == first.get_json()["created_at"]
    assert second.get_json()["updated_at"] > first.get_json()["updated_at"]
    with session_scope(settings.database_url) as session:
        rows = session.execute(select(Rating).where(Rating.run_id == run_id)).scalars().all()
        assert [(row.rater, row.rating) for row in rows] == [("carol", 5)]


def test_rate_several_raters_and_criteria_are_kept(client, run_id):
    posts = [
        ("alice", "overall", 4),
        ("bob", "overall", 2),
        ("alice", "clarity", 5),
        ("bob", "accuracy", 1),
    ]
    for rater, criterion, rating in posts:
        response = client.post(
            f"/rate/{run_id}?rating={rating}&rater={rater}&criterion={criterion}"
        )
        assert response.status_code == 201, response.get_json()

    listed = client.get(f"/rate/{run_id}").get_json()["ratings"]
    got = sorted((r["rater"], r["criterion"], r["rating"]) for r in listed)
    assert got == sorted(posts)


def test_rate_get_shows_judge_scores(client, settings):
    judge_model = unique("judge")
    run_id = create_job(
        settings,
        [
            {
                "model": "model-x",
                "judge": {"overall_score": 6.5, **CRITERIA_SCORES, "feedback": "fine"},
            }
        ],
        judge_model=judge_model,
    )[0]
    client.post(f"/rate/{run_id}?rating=3&rater=dave")

    body = client.get(f"/rate/{run_id}").get_json()

    assert body["run"]["id"] == str(run_id)
    assert body["run"]["model"] == "model-x"
    assert body["run"]["status"] == "succeeded"
    assert body["judge"]["judge_model"] == judge_model
    assert body["judge"]["status"] == "scored"
    assert body["judge"]["overall_score"] == 6.5
    assert body["judge"]["criteria_scores"] == CRITERIA_SCORES
    assert body["judge"]["feedback"] == "fine"
    assert [(r["rater"], r["rating"]) for r in body["ratings"]] == [("dave", 3)]


def test_rate_get_without_judgement_has_null_judge(client, run_id):
    body = client.get(f"/rate/{run_id}").get_json()

    assert body["judge"] is None
    assert body["ratings"] == []


@pytest.mark.parametrize("value", ["0", "6", "4.5", "four", "true", "NaN", "", "-1", "1e0", " 4"])
def test_rate_rejects_bad_query_rating(client, settings, run_id, value):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}", query_string={"rating": value})

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert "rating" in message
    assert "1 to 5" in message
    assert count_rows(settings, Rating) == before


@pytest.mark.parametrize(
    "raw_rating",
    ["0", "6", "4.5", "4.0", '"4.5"', '"four"', '"4"', "true", "null", "[4]"],
)
def test_rate_rejects_bad_json_rating(client, settings, run_id, raw_rating):
    before = count_rows(settings, Rating)
    response = client.post(
        f"/rate/{run_id}", data=f'{{"rating": {raw_rating}}}', content_type="application/json"
    )

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert "rating" in message
    assert "1 to 5" in message
    assert count_rows(settings, Rating) == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_rate_rejects_non_json_number(client, settings, run_id, literal):
    before = count_rows(settings, Rating)
    # Raw text, because json.dumps would not write the literals Python's JSON parser accepts.
    response = client.post(
        f"/rate/{run_id}", data=f'{{"rating": {literal}}}', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.get_json()["message"] == (
        f"invalid JSON body: {literal} is not a JSON value; send null or a string"
    )
    assert count_rows(settings, Rating) == before


def test_rate_rejects_missing_rating(client, settings, run_id):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}?comment=no+rating")

    assert response.status_code == 422
    assert response.get_json()["errors"] == {"rating": [response.get_json()["message"]]}
    assert "rating is required" in response.get_json()["message"]
    assert count_rows(settings, Rating) == before


@pytest.mark.parametrize("location", ["query", "json"])
def test_rate_rejects_comment_over_limit(client, settings, run_id, location):
    before = count_rows(settings, Rating)
    comment = "x" * 2001
    if location == "query":
        response = client.post(f"/rate/{run_id}", query_string={"rating": "3", "comment": comment})
    else:
        response = client.post(f"/rate/{run_id}", json={"rating": 3, "comment": comment})

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert "comment" in message
    assert "2000" in message
    assert count_rows(settings, Rating) == before


def test_rate_accepts_comment_at_limit(client, run_id):
    response = client.post(f"/rate/{run_id}", json={"rating": 3, "comment": "é" * 2000})

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["comment"] == "é" * 2000


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"rating": 3, "criterion": "style"}, "criterion", "overall, clarity, accuracy"),
        ({"rating": 3, "rater": "judge:gpt-4"}, "rater", "judge:"),
        ({"rating": 3, "rater": ""}, "rater", "1 to 200"),
        ({"rating": 3, "rater": "   "}, "rater", "not only spaces"),
        ({"rating": 3, "rater": "r" * 201}, "rater", "1 to 200"),
        ({"rating": 3, "comment": "nul\u0000byte"}, "comment", "NUL"),
        ({"rating": 3, "ratng": 4}, "ratng", "Unknown field"),
    ],
)
def test_rate_rejects_bad_fields(client, settings, run_id, body, field, text):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}", json=body)

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert field in message
    assert text in message
    assert count_rows(settings, Rating) == before


def test_rate_rejects_unknown_query_parameter(client, settings, run_id):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}?rating=3&raiting=4")

    assert response.status_code == 422
    assert "raiting" in response.get_json()["message"]
    assert count_rows(settings, Rating) == before


def test_rate_rejects_non_json_body(client, settings, run_id):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}", data="rating=4", content_type="text/plain")

    assert response.status_code == 422
    assert "must be JSON" in response.get_json()["message"]
    assert count_rows(settings, Rating) == before


def test_rate_rejects_invalid_json(client, settings, run_id):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}", data="{rating: 4", content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.get_json()["message"]
    assert count_rows(settings, Rating) == before


@pytest.mark.parametrize("path_id", [str(uuid.uuid4()), "not-a-uuid", "12345"])
def test_rate_unknown_run_is_404(client, settings, path_id):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{path_id}?rating=4")

    assert response.status_code == 404
    assert path_id in response.get_json()["message"]
    assert client.get(f"/rate/{path_id}").status_code == 404
    assert count_rows(settings, Rating) == before


def test_rate_failed_run_is_rejected(client, settings):
    run_id = create_job(settings, [{"status": "failed"}])[0]
    before = count_rows(settings, Rating)

    response = client.post(f"/rate/{run_id}?rating=4")

    assert response.status_code == 409
    assert response.get_json()["message"] == f"run {run_id} failed; there is no response to rate"
    assert count_rows(settings, Rating) == before


@pytest.mark.parametrize(
    "raw_body",
    [
        # Python's json module raises ValueError beyond 4300 digits, not JSONDecodeError.
        '{"rating": 1' + "0" * 5000 + "}",
        # Nesting deeper than the recursion limit raises RecursionError.
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_rate_unparseable_json_is_400(client, settings, run_id, raw_body):
    before = count_rows(settings, Rating)
    response = client.post(f"/rate/{run_id}", data=raw_body, content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.get_json()["message"]
    assert count_rows(settings, Rating) == before


# Preferences


@pytest.fixture()
def pair(settings):
    """Two runs of one item of one job, and a run of another prompt in the same job."""
    return create_job(
        settings,
        [
            {"model": "model-a", "item_id": "q1", "prompt": "Same prompt"},
            {"model": "model-b", "item_id": "q1", "prompt": "Same prompt"},
            {"model": "model-b", "item_id": "q2", "prompt": "Other prompt"},
        ],
    )


def test_preferences_post_stores_and_replaces(client, settings, pair):
    run_a, run_b, _ = pair
    rater = unique("erin")
    body = {"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": "a", "rater": rater}

    created = client.post("/preferences", json={**body, "comment": "a is shorter"})
    replaced = client.post("/preferences", json={**body, "preference": "tie"})

    assert created.status_code == 201, created.get_json()
    assert created.get_json()["preference"] == "a"
    assert created.get_json()["comment"] == "a is shorter"
    assert replaced.status_code == 200, replaced.get_json()
    assert replaced.get_json()["id"] == created.get_json()["id"]
    assert replaced.get_json()["preference"] == "tie"
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(PairwisePreference).where(PairwisePreference.rater == rater)
        ).scalars().all()
        assert [(row.run_a_id, row.run_b_id, row.preference) for row in rows] == [
            (run_a, run_b, "tie")
        ]


def test_preferences_get_lists_runs_preferences(client, pair):
    run_a, run_b, _ = pair
    for rater, preference in (("p1", "a"), ("p2", "b")):
        response = client.post(
            "/preferences",
            json={"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": preference,
                  "rater": rater},
        )
        assert response.status_code == 201

    by_b = client.get(f"/preferences?run_id={run_b}").get_json()
    by_rater = client.get(f"/preferences?run_id={run_a}&rater=p2").get_json()

    assert [(p["rater"], p["preference"]) for p in by_b] == [("p1", "a"), ("p2", "b")]
    assert [(p["run_a_id"], p["rater"]) for p in by_rater] == [(str(run_a), "p2")]


def test_preferences_accepts_same_prompt_text_across_jobs(client, settings):
    prompt = f"Shared prompt {uuid.uuid4()}"
    run_a = create_job(settings, [{"prompt": prompt, "item_id": "x"}])[0]
    run_b = create_job(settings, [{"prompt": prompt, "item_id": "y"}])[0]

    response = client.post(
        "/preferences", json={"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": "b"}
    )

    assert response.status_code == 201, response.get_json()


def test_preferences_rejects_different_prompts(client, settings, pair):
    run_a, _, other = pair
    before = count_rows(settings, PairwisePreference)

    response = client.post(
        "/preferences", json={"run_a_id": str(run_a), "run_b_id": str(other), "preference": "a"}
    )

    assert response.status_code == 422
    assert "different prompts" in response.get_json()["message"]
    assert response.get_json()["errors"]["run_b_id"]
    assert count_rows(settings, PairwisePreference) == before


def test_preferences_rejects_reversed_duplicate(client, settings, pair):
    run_a, run_b, _ = pair
    rater = unique("frank")
    first = client.post(
        "/preferences",
        json={"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": "a", "rater": rater},
    )
    before = count_rows(settings, PairwisePreference)

    reversed_post = client.post(
        "/preferences",
        json={"run_a_id": str(run_b), "run_b_id": str(run_a), "preference": "b", "rater": rater},
    )

    assert first.status_code == 201
    assert reversed_post.status_code == 409
    assert f"run_a_id={run_a}" in reversed_post.get_json()["message"]
    assert count_rows(settings, PairwisePreference) == before


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"preference": "A"}, 422, "a, b, tie"),
        ({"preference": None}, 422, "preference"),
        ({"run_b_id": "same-as-a"}, 422, "same run"),
        ({"run_a_id": "not-a-uuid"}, 422, "run_a_id"),
        ({"run_b_id": "unknown"}, 404, "not found"),
        ({"rater": "judge:x"}, 422, "rater"),
        ({"extra": 1}, 422, "extra"),
    ],
)
def test_preferences_rejects_bad_input(client, settings, pair, change, status, text):
    run_a, run_b, _ = pair
    body = {"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": "a", **change}
    if body["run_b_id"] == "same-as-a":
        body["run_b_id"] = str(run_a)
    if body["run_b_id"] == "unknown":
        body["run_b_id"] = str(uuid.uuid4())
    before = count_rows(settings, PairwisePreference)

    response = client.post("/preferences", json=body)

    assert response.status_code == status
    assert text in response.get_json()["message"]
    assert count_rows(settings, PairwisePreference) == before


def test_preferences_rejects_failed_run(client, settings):
    run_a, run_b = create_job(
        settings,
        [
            {"model": "model-a", "item_id": "q", "prompt": "p"},
            {"model": "model-b", "item_id": "q", "prompt": "p", "status": "failed"},
        ],
    )
    before = count_rows(settings, PairwisePreference)

    response = client.post(
        "/preferences", json={"run_a_id": str(run_a), "run_b_id": str(run_b), "preference": "a"}
    )

    assert response.status_code == 409
    assert "no response to rate" in response.get_json()["message"]
    assert count_rows(settings, PairwisePreference) == before


@pytest.mark.parametrize(
    ("query", "status"),
    [(f"run_id={uuid.uuid4()}", 404), ("run_id=nope", 422), ("limit=0", 422), ("colour=red", 422)],
)
def test_preferences_get_rejects_bad_query(client, query, status):
    response = client.get(f"/preferences?{query}")

    assert response.status_code == status


def test_rating_deleted_with_its_run(client, settings, run_id):
    client.post(f"/rate/{run_id}?rating=4&rater=gina")

    with session_scope(settings.database_url) as session:
        session.execute(text("DELETE FROM runs WHERE id = :id"), {"id": run_id})
    with session_scope(settings.database_url) as session:
        left = session.execute(select(func.count()).where(Rating.run_id == run_id)).scalar_one()
    assert left == 0


def test_openapi_documents_rating_routes(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    assert {"post", "get"} <= set(paths["/rate/{run_id}"])
    assert {"post", "get"} <= set(paths["/preferences"])
    assert "get" in paths["/ratings/stats"]
    assert "get" in paths["/ratings/calibration"]
    query_names = {p["name"] for p in paths["/rate/{run_id}"]["post"]["parameters"]}
    assert {"rating", "comment", "rater", "criterion"} <= query_names


# Migration 0002


def _scratch_database(services) -> tuple[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(services.database_url)
    name = f"{info['dbname']}_m{uuid.uuid4().hex[:6]}"
    admin = psycopg.conninfo.make_conninfo(**{**info, "dbname": "postgres"})
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})
    return admin, url


def _diff_touches(entry, tables: set[str]) -> bool:
    """Tell whether one compare_metadata entry (a tuple, or a list of tuples) is on tables."""
    if isinstance(entry, list):
        return any(_diff_touches(item, tables) for item in entry)
    for part in entry:
        table = getattr(part, "table", None)
        name = getattr(table, "name", None) or getattr(part, "name", None)
        if name in tables or (isinstance(part, str) and part in tables):
            return True
    return False


def test_migration_0002_round_trip_matches_models(services, settings):
    from alembic.script import ScriptDirectory

    from models.migrate import alembic_config, downgrade_database, upgrade_database
    from tests.conftest import _dsn_url

    admin, conninfo = _scratch_database(services)
    url = _dsn_url(conninfo)
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(url, poolclass=NullPool)
    try:
        upgrade_database(url, "0002")
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), models.Base.metadata)
            connection.execute(text(
                "INSERT INTO jobs (kind, status, request, items, models, repetitions, total_runs, "
                "simulated) VALUES ('import', 'succeeded', '{}', '[]', '[]', 1, 0, false)"
            ))
            connection.commit()
        # Later revisions add other tables, so only the tables of 0002 must match the models.
        assert [d for d in diff if _diff_touches(d, {"ratings", "pairwise_preferences"})] == []

        downgrade_database(url, "0001")
        with engine.connect() as connection:
            tables = connection.execute(text(
                "SELECT to_regclass('ratings'), to_regclass('pairwise_preferences')"
            )).one()
            import_jobs = connection.execute(
                text("SELECT count(*) FROM jobs WHERE kind = 'import'")
            ).scalar_one()
        assert tables == (None, None)
        assert import_jobs == 0

        upgrade_database(url)
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert revision == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_rating_check_constraints_hold_in_database(settings, run_id):
    """The table rejects what the API rejects, for writers that bypass the API."""
    bad_rows = [
        {"rating": 0},
        {"rating": 6},
        {"rating": 3, "criterion": "style"},
        {"rating": 3, "comment": "x" * 2001},
        {"rating": 3, "rater": ""},
    ]
    for values in bad_rows:
        with pytest.raises(Exception) as caught:
            with session_scope(settings.database_url) as session:
                session.add(Rating(run_id=run_id, **values))
        assert "violates check constraint" in str(caught.value)


def test_rating_document_dates_are_iso(client, run_id):
    body = client.post(f"/rate/{run_id}?rating=3").get_json()

    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert json.loads(json.dumps(body)) == body
