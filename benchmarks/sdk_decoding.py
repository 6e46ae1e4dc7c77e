"""Measure the CPU time the mistralai SDK spends decoding one streamed chunk and encoding one
request, with and without the class cache that workers/sdk_decoding.py installs.

    python benchmarks/sdk_decoding.py                  # 5,000 chunks each way
    python benchmarks/sdk_decoding.py --chunks 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from mistralai.client import models
from mistralai.client.utils import serializers
from mistralai.client.utils.unmarshal_json_response import unmarshal_json_response

from workers.sdk_decoding import install_cached_decoding

CHUNK = json.dumps(
    {
        "data": {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench-model",
            "choices": [{"index": 0, "delta": {"content": " word"}, "finish_reason": None}],
        }
    }
)


def cpu_ms_per_chunk(chunks: int) -> float:
    """Decode the chunk `chunks` times the way the SDK's event stream does; return ms each."""
    started = time.process_time()
    for _ in range(chunks):
        unmarshal_json_response(models.CompletionEvent, None, CHUNK)
    return (time.process_time() - started) * 1000 / chunks


def cpu_ms_per_request(requests: int) -> float:
    """Encode a chat request `requests` times the way the SDK does before sending; return ms each."""
    request = models.ChatCompletionStreamRequest(
        model="bench-model", messages=[{"role": "user", "content": "Hello"}], max_tokens=64
    )
    started = time.process_time()
    for _ in range(requests):
        serializers.marshal_json(request, models.ChatCompletionStreamRequest)
    return (time.process_time() - started) * 1000 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000, help="chunks decoded each way")
    args = parser.parse_args()

    sdk_ms = cpu_ms_per_chunk(args.chunks)
    sdk_request_ms = cpu_ms_per_request(args.chunks)
    install_cached_decoding()
    cached_ms = cpu_ms_per_chunk(args.chunks)
    cached_request_ms = cpu_ms_per_request(args.chunks)
    assert serializers.create_model.sdk_original is not None

    print(f"python {platform.python_version()}, {platform.machine()}, {args.chunks} chunks each")
    print(f"SDK as shipped:  {sdk_ms:.3f} ms CPU per chunk, {sdk_request_ms:.3f} ms per request")
    print(
        f"classes reused:  {cached_ms:.3f} ms CPU per chunk, {cached_request_ms:.3f} ms per request"
    )


if __name__ == "__main__":
    main()
