"""Estimated cost of a call from its token counts and a per-model price table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# USD per million tokens (input, output).
# NOTE: these defaults are Mistral's list prices as we recorded them on PRICES_AS_OF; nothing
# here can reach the live pricing page, so check them and override through MISTRALMETER_PRICES.
PRICES_AS_OF = "2025-06-01"
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "mistral-large-latest": (2.0, 6.0),
    "mistral-medium-latest": (0.4, 2.0),
    "mistral-small-latest": (0.1, 0.3),
    "open-mistral-nemo": (0.15, 0.15),
    "ministral-8b-latest": (0.1, 0.1),
    "ministral-3b-latest": (0.04, 0.04),
    "codestral-latest": (0.3, 0.9),
}


@dataclass(frozen=True)
class Price:
    input_per_million: float
    output_per_million: float


class PriceTable:
    """Default prices with user overrides merged over them."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._prices = {name: Price(*pair) for name, pair in DEFAULT_PRICES.items()}
        for name, value in (overrides or {}).items():
            self._prices[name] = _parse_override(name, value)

    def price_for(self, model: str) -> Price | None:
        return self._prices.get(model)

    def cost_usd(self, model: str, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """Return the estimated cost, or None when the model has no price or counts are missing."""
        price = self.price_for(model)
        if price is None or input_tokens is None or output_tokens is None:
            return None
        return (
            input_tokens * price.input_per_million + output_tokens * price.output_per_million
        ) / 1_000_000


def _parse_override(model: str, value: Any) -> Price:
    try:
        input_price = float(value["input"])
        output_price = float(value["output"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"price override for {model!r} must look like "
            '{"input": <USD per million>, "output": <USD per million>}'
        ) from exc
    if input_price < 0 or output_price < 0:
        raise ValueError(f"price override for {model!r} must not be negative")
    return Price(input_price, output_price)
