"""Built-in config, used when the simulator starts without one.

Time to first token is in the range of Mistral's hosted models (150 to 600 ms). Inter-token
latency (2 to 10 ms) and answer length (40 to 150 tokens) are shorter than real ones, so that
the 80-prompt demo with a judge finishes in well under a minute. Quality (0 to 10) orders the
models from ministral-8b to mistral-large, so a demo comparison has a clear winner.
"""

from __future__ import annotations

import copy
from typing import Any


def _normal(mean: float, sd: float, low: float, high: float) -> dict[str, Any]:
    return {"distribution": "normal", "mean": mean, "sd": sd, "min": low, "max": high}


_DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 1234,
    "models": {
        "mistral-large-latest": {
            "ttft_ms": _normal(450, 70, 300, 600),
            "itl_ms": _normal(8, 1, 6, 10),
            "output_tokens": _normal(120, 20, 70, 150),
            "quality": 8.3,
            "quality_sd": 0.8,
        },
        "mistral-medium-latest": {
            "ttft_ms": _normal(350, 60, 220, 550),
            "itl_ms": _normal(6, 1, 4, 9),
            "output_tokens": _normal(105, 20, 60, 150),
            "quality": 7.7,
            "quality_sd": 0.9,
        },
        "mistral-small-latest": {
            "ttft_ms": _normal(250, 50, 150, 450),
            "itl_ms": _normal(4, 0.8, 3, 7),
            "output_tokens": _normal(90, 20, 50, 140),
            "quality": 7.0,
            "quality_sd": 1.0,
        },
        "open-mistral-nemo": {
            "ttft_ms": _normal(220, 40, 150, 400),
            "itl_ms": _normal(3, 0.6, 2, 5),
            "output_tokens": _normal(80, 20, 40, 130),
            "quality": 6.3,
            "quality_sd": 1.1,
        },
        "ministral-8b-latest": {
            "ttft_ms": _normal(180, 30, 150, 300),
            "itl_ms": _normal(2.5, 0.4, 2, 4),
            "output_tokens": _normal(70, 20, 40, 120),
            "quality": 5.6,
            "quality_sd": 1.2,
        },
    },
    "default": {
        "ttft_ms": _normal(300, 60, 150, 600),
        "itl_ms": _normal(5, 1, 2, 10),
        "output_tokens": _normal(90, 25, 40, 150),
        "quality": 6.5,
        "quality_sd": 1.0,
    },
}


def default_config() -> dict[str, Any]:
    """Return a fresh copy of the built-in config dict, safe for the caller to change."""
    return copy.deepcopy(_DEFAULT_CONFIG)
