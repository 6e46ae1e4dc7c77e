"""Seeded generation plans: timing, output length and text of one simulated completion.

One token is one word and one stream chunk. The first token has no leading space and every
later one has one, so joining the tokens gives the text.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.profiles import ModelProfile

# Fixed so that the same seed gives the same text in every release.
VOCABULARY = tuple(
    """
    the a model answer latency token stream request response prompt result measure quality
    benchmark value number time first second fast slow large small medium judge score
    clear accurate complete relevant style example data test run batch queue worker cache
    limit rate error retry budget cost price table chart summary mean median percentile
    variance interval confidence sample estimate signal noise trend baseline target system
    user context window length short long simple detailed careful precise useful practical
    because therefore however while when where which this that these those each every
    many few more less most least often rarely always never usually typically mostly
    is are was were be been has have had can could should would will may might must
    and or but so yet also then thus still only even just not very quite rather
    compute memory network disk server client service endpoint deploy release version
    improve reduce increase compare choose select explain describe consider check verify
    """.split()
)


@dataclass(frozen=True)
class Plan:
    """What one request will send: the injected timing and the content tokens."""

    ttft_ms: float
    itl_ms: float
    tokens: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def output_tokens(self) -> int:
        return len(self.tokens)

    @property
    def total_ms(self) -> float:
        """Injected time from arrival to the last token."""
        return self.ttft_ms + max(self.output_tokens - 1, 0) * self.itl_ms


def stable_seed(*parts: Any) -> int:
    """Hash JSON-serialisable parts into a 64-bit seed that is the same in every process."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return int.from_bytes(hashlib.sha256(encoded).digest()[:8], "big")


def request_rng(config_seed: int, model: str, messages: list[Any], random_seed: int) -> np.random.Generator:
    """Return the generator for a request that sets random_seed: same inputs, same plan."""
    return np.random.default_rng(stable_seed(config_seed, model, messages, random_seed, "plan"))


def model_rng(config_seed: int, model: str, purpose: str) -> np.random.Generator:
    """Return a model's own generator for plans or faults; each draws a separate stream."""
    return np.random.default_rng(stable_seed(config_seed, model, purpose))


def message_text(message: dict[str, Any]) -> str:
    """Return the text of a chat message whose content is a string or a list of text chunks."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [chunk.get("text", "") for chunk in content if isinstance(chunk, dict)]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Estimate prompt tokens as ceil(characters / 4), at least 1, like a typical tokenizer."""
    characters = sum(len(message_text(message)) for message in messages)
    return max(1, math.ceil(characters / 4))


def split_into_tokens(text: str) -> tuple[str, ...]:
    """Split text at spaces into tokens that join back to exactly the same text."""
    words = text.split(" ")
    return tuple([words[0]] + [" " + word for word in words[1:]])


def generate_words(rng: np.random.Generator, count: int) -> tuple[str, ...]:
    indices = rng.integers(0, len(VOCABULARY), size=count)
    words = [VOCABULARY[i] for i in indices]
    return tuple([words[0]] + [" " + word for word in words[1:]]) if words else ()


def draw_timing(profile: ModelProfile, rng: np.random.Generator) -> tuple[float, float]:
    """Draw (ttft_ms, itl_ms) for one request."""
    return profile.ttft_ms.sample(rng), profile.itl_ms.sample(rng)


def plan_completion(
    profile: ModelProfile, rng: np.random.Generator, max_tokens: int | None, prompt_tokens: int
) -> Plan:
    """Plan an ordinary completion of random vocabulary words, cut at max_tokens."""
    ttft_ms, itl_ms = draw_timing(profile, rng)
    planned = max(1, round(profile.output_tokens.sample(rng)))
    tokens = generate_words(rng, planned)
    return _cut_at_max_tokens(ttft_ms, itl_ms, tokens, "stop", max_tokens, prompt_tokens)


def plan_fixed_text(
    profile: ModelProfile,
    rng: np.random.Generator,
    text: str,
    finish_reason: str,
    max_tokens: int | None,
    prompt_tokens: int,
) -> Plan:
    """Plan the sending of a given text (a judge output) with the profile's timing."""
    ttft_ms, itl_ms = draw_timing(profile, rng)
    return _cut_at_max_tokens(ttft_ms, itl_ms, split_into_tokens(text), finish_reason, max_tokens, prompt_tokens)


def _cut_at_max_tokens(
    ttft_ms: float,
    itl_ms: float,
    tokens: tuple[str, ...],
    finish_reason: str,
    max_tokens: int | None,
    prompt_tokens: int,
) -> Plan:
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        finish_reason = "length"
    return Plan(ttft_ms, itl_ms, tokens, finish_reason, prompt_tokens)
