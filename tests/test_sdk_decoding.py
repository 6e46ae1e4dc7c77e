"""The cached decoder returns what the SDK's own unmarshal returns, for every streamed event."""

from __future__ import annotations

import json
from typing import Any, Dict

import pydantic
import pytest
from mistralai.client import models
from mistralai.client.utils import serializers
from mistralai.client.utils.unmarshal_json_response import unmarshal_json_response

from workers.sdk_decoding import cached_unmarshal, install_cached_decoding

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
EVENTS = {
    "role only": {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
    "content": {"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]},
    "last with usage": {
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    },
}


def sdk_original():
    install_cached_decoding()
    return serializers.unmarshal.sdk_original


def event_json(fields: dict[str, Any]) -> str:
    return json.dumps({"data": {**CHUNK, **fields}})


def test_install_is_idempotent():
    assert install_cached_decoding() is True
    installed = serializers.unmarshal
    assert install_cached_decoding() is True
    assert serializers.unmarshal is installed
    assert installed.sdk_original is not installed


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_streamed_event_equals_sdk_decoding(name: str):
    raw = event_json(EVENTS[name])
    expected = sdk_original()(serializers.from_json(raw), models.CompletionEvent, coerce_iterables=False)

    # The path the SDK's event stream takes for every chunk.
    decoded = unmarshal_json_response(models.CompletionEvent, None, raw)

    assert isinstance(decoded, models.CompletionEvent)
    assert decoded == expected
    assert decoded.model_dump() == expected.model_dump()


def test_decoded_values_are_read():
    content = unmarshal_json_response(models.CompletionEvent, None, event_json(EVENTS["content"]))
    last = unmarshal_json_response(
        models.CompletionEvent, None, event_json(EVENTS["last with usage"])
    )

    assert content.data.choices[0].delta.content == "hello"
    assert last.data.choices[0].finish_reason == "stop"
    assert last.data.usage.prompt_tokens == 7
    assert last.data.usage.completion_tokens == 3


def test_invalid_event_raises_like_sdk():
    invalid = {"data": {**CHUNK, "choices": "not a list"}}
    with pytest.raises(pydantic.ValidationError):
        sdk_original()(invalid, models.CompletionEvent)
    with pytest.raises(pydantic.ValidationError):
        serializers.unmarshal(invalid, models.CompletionEvent)


def test_other_types_use_sdk_function():
    calls: list[Any] = []

    def spy(val, typ, coerce_iterables=True):
        calls.append(typ)
        return sdk_original()(val, typ, coerce_iterables=coerce_iterables)

    unmarshal = cached_unmarshal(spy, serializers)

    assert unmarshal({"a": 1}, Dict[str, Any]) == {"a": 1}
    assert calls == [Dict[str, Any]]
    unmarshal({"data": {**CHUNK, **EVENTS["content"]}}, models.CompletionEvent)
    assert calls == [Dict[str, Any]]
