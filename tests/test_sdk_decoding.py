"""The SDK's serializers return the same values with their wrapper classes reused."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from mistralai.client import models
from mistralai.client.utils import serializers
from mistralai.client.utils.unmarshal_json_response import unmarshal_json_response

from workers.sdk_decoding import cached_create_model, install_cached_decoding

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
EVENTS = {
    "role only": {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
    "content": {"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]},
    "last with usage": {
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    },
}


@pytest.fixture(autouse=True)
def installed():
    assert install_cached_decoding() is True
    return serializers.create_model


@pytest.fixture()
def uncached(monkeypatch):
    """Run a block with the SDK's own create_model, which builds a new class on every call."""

    def run(function, *args):
        with monkeypatch.context() as patch:
            patch.setattr(serializers, "create_model", serializers.create_model.sdk_original)
            return function(*args)

    return run


def event_json(fields: dict[str, Any]) -> str:
    return json.dumps({"data": {**CHUNK, **fields}})


def test_install_is_idempotent(installed):
    assert install_cached_decoding() is True
    assert serializers.create_model is installed
    assert installed.sdk_original is pydantic.create_model


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_streamed_event_equals_sdk_decoding(name: str, uncached):
    raw = event_json(EVENTS[name])
    expected = uncached(unmarshal_json_response, models.CompletionEvent, None, raw)

    decoded = unmarshal_json_response(models.CompletionEvent, None, raw)

    assert isinstance(decoded, models.CompletionEvent)
    assert decoded == expected
    assert decoded.model_dump() == expected.model_dump()


def test_chunks_reuse_one_class(installed):
    unmarshal_json_response(models.CompletionEvent, None, event_json(EVENTS["content"]))
    classes_before = len(installed.cached_classes)

    for name in sorted(EVENTS):
        unmarshal_json_response(models.CompletionEvent, None, event_json(EVENTS[name]))

    assert len(installed.cached_classes) == classes_before


def test_decoded_values_are_read():
    content = unmarshal_json_response(models.CompletionEvent, None, event_json(EVENTS["content"]))
    last = unmarshal_json_response(
        models.CompletionEvent, None, event_json(EVENTS["last with usage"])
    )

    assert content.data.choices[0].delta.content == "hello"
    assert last.data.choices[0].finish_reason == "stop"
    assert last.data.usage.prompt_tokens == 7
    assert last.data.usage.completion_tokens == 3


def test_request_encoding_equals_sdk(uncached):
    request = models.ChatCompletionStreamRequest(
        model="mistral-small-latest",
        messages=[{"role": "user", "content": "Hello"}],
        temperature=0.2,
        max_tokens=64,
    )
    expected = uncached(serializers.marshal_json, request, models.ChatCompletionStreamRequest)

    encoded = serializers.marshal_json(request, models.ChatCompletionStreamRequest)

    assert encoded == expected
    assert json.loads(encoded)["max_tokens"] == 64


def test_invalid_event_raises_validation_error():
    invalid = {"data": {**CHUNK, "choices": "not a list"}}
    with pytest.raises(pydantic.ValidationError):
        serializers.unmarshal(invalid, models.CompletionEvent)


def test_unhashable_arguments_are_not_cached():
    calls: list[str] = []

    def spy(model_name, **fields):
        calls.append(model_name)
        return pydantic.create_model(model_name, **fields)

    create_model = cached_create_model(spy)
    config = pydantic.ConfigDict(populate_by_name=True)

    first = create_model("Wrapper", body=(int, ...), __config__=config)
    second = create_model("Wrapper", body=(int, ...), __config__=config)
    unhashable = create_model("Wrapper", body=(int, pydantic.Field(default=1)), __config__=config)

    assert first is second
    assert unhashable is not first
    assert calls == ["Wrapper", "Wrapper"]
    assert first(body="3").body == 3
