"""Text PostgreSQL cannot store is a 4xx naming where it was, in every part of a request."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models.jobs import Job

pytestmark = pytest.mark.services

SURROGATE = "\ud800"
NUL = "\x00"


def job_count(db_session) -> int:
    db_session.expire_all()
    return db_session.execute(select(func.count()).select_from(Job)).scalar_one()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/evaluate", {"prompt": {"prompt": "hi"}, "model": "sim-small",
                       "params": {"stop": [SURROGATE]}}, "params.stop.0"),
        ("/evaluate", {"prompt": {"prompt": "hi"}, "model": "sim-small",
                       "params": {"stop": [NUL]}}, "params.stop.0"),
        ("/evaluate/batch", {"model": "sim-small", "prompts": [{"prompt": "x"}],
                             "params": {"stop": [NUL]}}, "params.stop.0"),
        ("/compare", {"model_a": "sim-small", "model_b": "sim-judge", "judge_model": "sim-other",
                      "dataset": "cod" + SURROGATE}, "dataset"),
        ("/datasets/mt_bench/evaluate", {"model": "sim-small", "version": "a" + NUL}, "version"),
        ("/evaluate", {"prompt": {"prompt": "hi", "metadata": {"k" + NUL: 1}},
                       "model": "sim-small"}, "a key of prompt.metadata"),
    ],
)
def test_json_body_text_rejected(client, db_session, path, body, field):
    before = job_count(db_session)

    response = client.post(path, json=body)

    assert response.status_code == 422, response.get_json()
    payload = response.get_json()
    assert payload["message"].startswith(f"{field}: ")
    assert list(payload["errors"]) == [field]
    assert ("NUL" in payload["message"]) or ("unpaired surrogate" in payload["message"])
    assert job_count(db_session) == before


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("get", "/datasets/x%00", "name"),
        ("post", "/datasets/x%00/evaluate?model=sim-small", "name"),
        ("post", "/datasets/mt_bench/evaluate?model=sim-small&version=a%00", "version"),
        ("get", "/stats?dataset=x%00", "dataset"),
        ("post", "/datasets?name=d1&description=a%00b", "description"),
        ("get", "/jobs?status=%ED%A0%80", "status"),
    ],
)
def test_query_and_path_text_rejected(client, db_session, method, path, field):
    before = job_count(db_session)

    response = getattr(client, method)(path)

    assert response.status_code == 422, response.get_json()
    payload = response.get_json()
    assert field in payload["message"]
    assert list(payload["errors"]) == [field]
    assert job_count(db_session) == before


def test_invalid_percent_encoding_rejected(client):
    response = client.get("/stats?model=a%FF")

    assert response.status_code == 422
    payload = response.get_json()
    assert payload["message"].startswith("query parameter 'model' is not valid UTF-8")
    assert list(payload["errors"]) == ["model"]


def test_duplicate_json_key_rejected(client, db_session):
    before = job_count(db_session)
    body = '{"prompt": {"prompt": "hi"}, "model": "sim-small", "model": "sim-judge"}'

    response = client.post("/evaluate", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["message"] == (
        "invalid JSON body: key 'model' given twice in one object; give each key once"
    )
    assert job_count(db_session) == before


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"model": "caf\xe9"}', "not UTF-8 at byte 14"),
        (b'{"model": ', "Expecting value: line 1 column 11"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"1" * 5000, "Exceeds the limit"),
    ],
)
def test_invalid_json_body_says_why(client, body, text):
    response = client.post("/evaluate", data=body, content_type="application/json")

    assert response.status_code == 400
    message = response.get_json()["message"]
    assert message.startswith("invalid JSON body: ")
    assert text in message


def test_deep_json_rejected_before_walk(client):
    body = '{"prompt": {"prompt": "hi", "metadata": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}}"

    response = client.post("/evaluate", data=body, content_type="application/json")

    assert response.status_code == 422
    assert "nested more than 64 levels" in response.get_json()["message"]


def test_valid_unicode_accepted(client):
    response = client.post(
        "/evaluate/batch",
        json={"model": "sim-small", "prompts": [{"id": "é", "prompt": "Schreib über 🚀"}],
              "params": {"stop": ["\n\n"]}},
    )

    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/evaluate/batch", {"model": "sim-small", "prompts": [{"id": "", "prompt": "x"}]},
         "invalid request: prompts.0.id: must be 1 to 200 characters long"),
        ("/evaluate/batch", {"model": "sim-small", "prompts": ["hi"]},
         'invalid request: prompts.0: must be a JSON object such as '
         '{"prompt": "Explain TCP slow start."}'),
        ("/evaluate", {"prompt": "hi", "model": "sim-small"},
         'invalid request: prompt: must be a JSON object such as '
         '{"prompt": "Explain TCP slow start."}'),
        ("/evaluate", [], "invalid request: must be a JSON object"),
    ],
)
def test_validation_message_names_path(client, path, body, message):
    response = client.post(path, json=body)

    assert response.status_code == 422
    assert response.get_json()["message"] == message


@pytest.mark.parametrize(
    ("literal", "text"),
    [
        ("1e400", "number 1e400 is beyond the range of a 64-bit float"),
        ("-1e400", "number -1e400 is beyond the range of a 64-bit float"),
        ("NaN", "NaN is not a JSON value; send null or a string"),
        ("Infinity", "Infinity is not a JSON value; send null or a string"),
    ],
)
def test_non_finite_number_rejected(client, db_session, literal, text):
    before = job_count(db_session)
    body = '{"prompt": {"prompt": "Hello", "metadata": {"k": [%s]}}, "model": "sim-small"}'

    response = client.post("/evaluate", data=body % literal, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["message"] == f"invalid JSON body: {text}"
    assert job_count(db_session) == before


def test_empty_stop_sequence_rejected(client, db_session):
    before = job_count(db_session)

    response = client.post(
        "/evaluate", json={"prompt": {"prompt": "hi"}, "model": "sim-small", "params": {"stop": [""]}}
    )

    assert response.status_code == 422
    assert response.get_json()["message"].startswith("invalid request: params.stop.0: ")
    assert job_count(db_session) == before
