"""POST /datasets over HTTP: a bad file gets a 4xx naming the line and reason, and stores nothing."""

from __future__ import annotations

import dataclasses
import io
import json
import uuid

import pytest

from api import create_app

pytestmark = pytest.mark.services

UPLOAD_LIMIT_BYTES = 2_000


def unique_name() -> str:
    return f"upload-{uuid.uuid4().hex[:10]}"


def jsonl(count: int) -> bytes:
    lines = [json.dumps({"id": f"i{index}", "prompt": f"Question {index}"}) for index in range(count)]
    return ("\n".join(lines) + "\n").encode()


def upload(client, name: str, body: bytes, content_type: str = "application/x-ndjson"):
    return client.post(f"/datasets?name={name}", data=body, content_type=content_type)


def assert_not_stored(client, name: str) -> None:
    assert client.get(f"/datasets/{name}").status_code == 404
    names = [dataset["name"] for dataset in client.get("/datasets").get_json()]
    assert name not in names


@pytest.fixture(scope="module")
def small_limit_client(settings):
    """A client of an app whose upload limit is UPLOAD_LIMIT_BYTES."""
    app = create_app(dataclasses.replace(settings, max_upload_bytes=UPLOAD_LIMIT_BYTES))
    return app.test_client()


def test_upload_stores_version_once(client):
    name = unique_name()

    first = upload(client, name, jsonl(3))
    again = upload(client, name, jsonl(3))

    assert first.status_code == 201, first.get_json()
    assert first.get_json()["created"] is True
    assert first.get_json()["items_count"] == 3
    assert again.status_code == 200
    assert again.get_json()["created"] is False
    assert again.get_json()["version"] == first.get_json()["version"]


def test_upload_invalid_json_names_line(client):
    name = unique_name()
    lines = jsonl(6).decode().splitlines() + ['{"id": "i6", "prompt": ']

    response = upload(client, name, "\n".join(lines).encode())

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert "line 7" in message
    assert "JSON" in message
    assert_not_stored(client, name)


def test_upload_missing_prompt_names_item(client):
    name = unique_name()
    items = [{"id": f"i{index}", "prompt": "Question"} for index in range(11)] + [{"id": "i11"}]
    body = json.dumps(items).encode()

    response = upload(client, name, body, content_type="application/json")

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert "item 12" in message
    assert "prompt" in message
    assert_not_stored(client, name)


def test_upload_not_utf8_is_rejected(client):
    name = unique_name()
    body = '{"id": "a", "prompt": "caf\u00e9"}\n'.encode("latin-1")

    response = upload(client, name, body)

    assert response.status_code == 422
    assert "UTF-8" in response.get_json()["message"]
    assert_not_stored(client, name)


def test_upload_duplicate_ids_rejected(client):
    name = unique_name()
    body = b'{"id": "a", "prompt": "one"}\n{"id": "a", "prompt": "two"}\n'

    response = upload(client, name, body)

    assert response.status_code == 422
    assert "duplicate" in response.get_json()["message"]
    assert "'a'" in response.get_json()["message"]
    assert_not_stored(client, name)


def test_upload_csv_multipart_is_stored(client):
    name = unique_name()
    csv_body = b"id,prompt,category\nc1,Name a prime,math\nc2,Name a colour,art\n"

    response = client.post(
        "/datasets",
        data={"name": name, "file": (io.BytesIO(csv_body), "prompts.csv")},
        content_type="multipart/form-data",
    )

    assert response.status_code == 201, response.get_json()
    dataset = client.get(f"/datasets/{name}").get_json()
    assert [item["id"] for item in dataset["items"]] == ["c1", "c2"]
    assert dataset["items"][0]["category"] == "math"


def test_upload_over_limit_is_413(small_limit_client):
    name = unique_name()
    # Over the file limit but under the request limit, which leaves room for multipart framing.
    body = jsonl(60)
    assert len(body) > UPLOAD_LIMIT_BYTES

    response = upload(small_limit_client, name, body)

    assert response.status_code == 413
    payload = response.get_json()
    assert payload["code"] == 413
    assert "too large" in payload["message"]
    assert "limit" in payload["message"]
    assert payload["errors"] == {"file": [payload["message"]]}
    assert_not_stored(small_limit_client, name)


def test_request_over_body_limit_is_413(small_limit_client):
    name = unique_name()
    body = jsonl(3000)

    response = upload(small_limit_client, name, body)

    assert response.status_code == 413
    assert "larger than" in response.get_json()["message"]
    assert_not_stored(small_limit_client, name)


def test_form_encoded_upload_names_content_type(client):
    name = unique_name()

    response = client.post(
        f"/datasets?name={name}",
        data='[{"id": "a", "prompt": "x"}]',
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 422
    message = response.get_json()["message"]
    assert message.startswith("the body was sent as an HTML form")
    assert "--data-binary" in message
    assert_not_stored(client, name)


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        (b'{"id":"a","prompt":"x","metadata":{"k":1e400}}\n', "application/x-ndjson",
         "invalid JSON on line 1: 1e400 (beyond the range of a 64-bit float) is not a JSON value"),
        (b'[{"id":"a","prompt":"x","metadata":{"k":1e400}}]', "application/json",
         "invalid JSON: 1e400 (beyond the range of a 64-bit float) is not a JSON value"),
        (b'id,prompt,metadata\na,x,"{""k"":1e400}"\n', "text/csv",
         "metadata is not valid JSON: 1e400 (beyond the range of a 64-bit float)"),
    ],
)
def test_upload_out_of_range_number_rejected(client, body, content_type, text):
    name = unique_name()

    response = upload(client, name, body, content_type=content_type)

    assert response.status_code == 422
    assert text in response.get_json()["message"]
    assert_not_stored(client, name)
