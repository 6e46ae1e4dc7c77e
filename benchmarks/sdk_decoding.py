"""Measure the CPU time the mistralai SDK spends decoding one streamed chunk, with and without
the cached TypeAdapter that workers/sdk_decoding.py installs.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000, help="chunks decoded each way")
    args = parser.parse_args()

    sdk_ms = cpu_ms_per_chunk(args.chunks)
    install_cached_decoding()
    cached_ms = cpu_ms_per_chunk(args.chunks)
    assert serializers.unmarshal.sdk_original is not None

    print(f"python {platform.python_version()}, {platform.machine()}, {args.chunks} chunks each")
    print(f"SDK unmarshal:        {sdk_ms:.3f} ms CPU per chunk")
    print(f"cached TypeAdapter:   {cached_ms:.3f} ms CPU per chunk ({sdk_ms / cached_ms:.1f}x less)")


if __name__ == "__main__":
    main()
