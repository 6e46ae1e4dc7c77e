"""Simulator configuration: per-model profiles parsed and validated from plain JSON dicts.

Every field of a profile is optional. A missing field takes the field default below, not the
value of the config's "default" profile, so a profile reads the same wherever it is placed.
Validation raises ConfigError, whose message and ``field`` attribute name the offending field
as a dotted path (``models.mistral-small-latest.faults.rate_429``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

JUDGE_MODES = (
    "valid",
    "fenced",
    "prose",
    "strings",
    "out_of_range",
    "missing_criterion",
    "extra_criterion",
    "refusal",
    "truncated",
    "first_position",
    "second_position",
)
DISTRIBUTIONS = ("normal", "uniform", "lognormal")
DEFAULT_HANG_S = 600.0


class ConfigError(ValueError):
    """A simulator config value is missing, of the wrong type or out of range."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field = field_path


@dataclass(frozen=True)
class Distribution:
    """A number drawn per request: fixed, normal, uniform or lognormal, clamped to [min, max]."""

    kind: str = "fixed"
    value: float = 0.0
    mean: float = 0.0
    sd: float = 0.0
    median: float = 0.0
    sigma: float = 0.0
    min: float | None = None
    max: float | None = None

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed":
            return self.value
        if self.kind == "normal":
            drawn = float(rng.normal(self.mean, self.sd))
        elif self.kind == "uniform":
            drawn = float(rng.uniform(self.min, self.max))
        else:
            drawn = float(self.median * math.exp(rng.normal(0.0, self.sigma)))
        if self.min is not None:
            drawn = max(drawn, self.min)
        if self.max is not None:
            drawn = min(drawn, self.max)
        return drawn

    def to_json(self) -> float | dict[str, Any]:
        if self.kind == "fixed":
            return self.value
        out: dict[str, Any] = {"distribution": self.kind}
        if self.kind == "normal":
            out.update(mean=self.mean, sd=self.sd)
        elif self.kind == "lognormal":
            out.update(median=self.median, sigma=self.sigma)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


@dataclass(frozen=True)
class FaultProfile:
    """Probabilities of injected failures; the four rates together must not exceed 1."""

    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_500: float = 0.0
    rate_hang: float = 0.0
    hang_s: float = DEFAULT_HANG_S
    rate_cut: float = 0.0


@dataclass(frozen=True)
class JudgeProfile:
    """Judge behaviour of a model, used when a request sets JSON mode."""

    mode: str = "valid"
    retry_mode: str = "valid"
    length_bias: float = 0.0


@dataclass(frozen=True)
class ModelProfile:
    ttft_ms: Distribution = Distribution(value=200.0)
    itl_ms: Distribution = Distribution(value=10.0)
    output_tokens: Distribution = Distribution(value=100.0)
    include_usage: bool = True
    quality: float = 7.0
    quality_sd: float = 1.0
    faults: FaultProfile = FaultProfile()
    rpm_limit: int | None = None
    judge: JudgeProfile = JudgeProfile()

    def to_json(self) -> dict[str, Any]:
        return {
            "ttft_ms": self.ttft_ms.to_json(),
            "itl_ms": self.itl_ms.to_json(),
            "output_tokens": self.output_tokens.to_json(),
            "include_usage": self.include_usage,
            "quality": self.quality,
            "quality_sd": self.quality_sd,
            "faults": vars(self.faults).copy(),
            "rpm_limit": self.rpm_limit,
            "judge": vars(self.judge).copy(),
        }


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 0
    models: Mapping[str, ModelProfile] = field(default_factory=dict)
    default: ModelProfile | None = None

    def profile_for(self, model: str) -> ModelProfile | None:
        """Return the model's profile, else the default profile, else None (unknown model)."""
        return self.models.get(model, self.default)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seed": self.seed,
            "models": {name: profile.to_json() for name, profile in self.models.items()},
        }
        if self.default is not None:
            out["default"] = self.default.to_json()
        return out


def parse_config(raw: Any) -> SimulatorConfig:
    """Validate a config dict and return it as a SimulatorConfig; raise ConfigError if invalid."""
    if not isinstance(raw, dict):
        raise ConfigError("config", f"must be a JSON object, got {_type_name(raw)}")
    _reject_unknown_keys(raw, {"seed", "models", "default"}, "config")
    seed = raw.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")

    models_raw = raw.get("models", {})
    if not isinstance(models_raw, dict):
        raise ConfigError("models", f"must be an object of model name to profile, got {_type_name(models_raw)}")
    models = {}
    for name, profile_raw in models_raw.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("models", f"model names must be non-empty strings, got {name!r}")
        models[name] = parse_profile(profile_raw, f"models.{name}")

    default = None
    if raw.get("default") is not None:
        default = parse_profile(raw["default"], "default")
    return SimulatorConfig(seed=seed, models=models, default=default)


def parse_profile(raw: Any, path: str) -> ModelProfile:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must be an object, got {_type_name(raw)}")
    _reject_unknown_keys(raw, set(ModelProfile.__dataclass_fields__), path)
    base = ModelProfile()
    values: dict[str, Any] = {}
    if "ttft_ms" in raw:
        values["ttft_ms"] = parse_distribution(raw["ttft_ms"], f"{path}.ttft_ms")
    if "itl_ms" in raw:
        values["itl_ms"] = parse_distribution(raw["itl_ms"], f"{path}.itl_ms")
    if "output_tokens" in raw:
        values["output_tokens"] = parse_distribution(raw["output_tokens"], f"{path}.output_tokens", minimum=1.0)
    if "include_usage" in raw:
        values["include_usage"] = _require_bool(raw["include_usage"], f"{path}.include_usage")
    if "quality" in raw:
        values["quality"] = _require_number(raw["quality"], f"{path}.quality", low=0.0, high=10.0)
    if "quality_sd" in raw:
        values["quality_sd"] = _require_number(raw["quality_sd"], f"{path}.quality_sd", low=0.0)
    if "faults" in raw:
        values["faults"] = parse_faults(raw["faults"], f"{path}.faults")
    if raw.get("rpm_limit") is not None:
        limit = raw["rpm_limit"]
        if not _is_int(limit) or limit < 1:
            raise ConfigError(f"{path}.rpm_limit", f"must be an integer >= 1 or null, got {limit!r}")
        values["rpm_limit"] = limit
    if "judge" in raw:
        values["judge"] = parse_judge(raw["judge"], f"{path}.judge")
    return ModelProfile(**{**vars(base), **values})


def parse_distribution(raw: Any, path: str, minimum: float = 0.0) -> Distribution:
    """Parse a number or a distribution object; every drawn value is clamped to >= ``minimum``."""
    if _is_number(raw):
        return Distribution(value=_require_number(raw, path, low=minimum))
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must be a number or a distribution object, got {_type_name(raw)}")
    kind = raw.get("distribution")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{path}.distribution", f"must be one of {', '.join(DISTRIBUTIONS)}, got {kind!r}")
    allowed = {"normal": {"mean", "sd"}, "uniform": set(), "lognormal": {"median", "sigma"}}[kind]
    _reject_unknown_keys(raw, allowed | {"distribution", "min", "max"}, path)

    low = _optional_number(raw, "min", path, low=minimum)
    high = _optional_number(raw, "max", path, low=minimum)
    if kind == "uniform" and (low is None or high is None):
        raise ConfigError(path, "a uniform distribution needs both min and max")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"{path}.max", f"must be >= min ({low}), got {high}")
    # Clamping at the field minimum keeps a wide normal from producing negative delays.
    low = minimum if low is None else low

    if kind == "normal":
        mean = _require_number(raw.get("mean"), f"{path}.mean")
        sd = _require_number(raw.get("sd"), f"{path}.sd", low=0.0)
        return Distribution(kind="normal", mean=mean, sd=sd, min=low, max=high)
    if kind == "lognormal":
        median = _require_number(raw.get("median"), f"{path}.median", low=0.0)
        sigma = _require_number(raw.get("sigma"), f"{path}.sigma", low=0.0)
        return Distribution(kind="lognormal", median=median, sigma=sigma, min=low, max=high)
    return Distribution(kind="uniform", min=low, max=high)


def parse_faults(raw: Any, path: str) -> FaultProfile:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must be an object, got {_type_name(raw)}")
    _reject_unknown_keys(raw, set(FaultProfile.__dataclass_fields__), path)
    values: dict[str, float] = {}
    for name in ("rate_429", "rate_500", "rate_hang", "rate_cut"):
        if name in raw:
            values[name] = _require_number(raw[name], f"{path}.{name}", low=0.0, high=1.0)
    if "retry_after_s" in raw:
        values["retry_after_s"] = _require_number(raw["retry_after_s"], f"{path}.retry_after_s", low=0.0)
    if "hang_s" in raw:
        values["hang_s"] = _require_number(raw["hang_s"], f"{path}.hang_s", low=0.0)
    faults = FaultProfile(**values)
    total = faults.rate_429 + faults.rate_500 + faults.rate_hang + faults.rate_cut
    if total > 1.0 + 1e-9:
        raise ConfigError(path, f"rate_429 + rate_500 + rate_hang + rate_cut must be <= 1, got {total:g}")
    return faults


def parse_judge(raw: Any, path: str) -> JudgeProfile:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"must be an object, got {_type_name(raw)}")
    _reject_unknown_keys(raw, set(JudgeProfile.__dataclass_fields__), path)
    values: dict[str, Any] = {}
    for name in ("mode", "retry_mode"):
        if name in raw:
            if raw[name] not in JUDGE_MODES:
                raise ConfigError(f"{path}.{name}", f"must be one of {', '.join(JUDGE_MODES)}, got {raw[name]!r}")
            values[name] = raw[name]
    if "length_bias" in raw:
        values["length_bias"] = _require_number(raw["length_bias"], f"{path}.length_bias")
    return JudgeProfile(**values)


def _reject_unknown_keys(raw: dict, allowed: set[str], path: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        prefix = "" if path == "config" else f"{path}."
        raise ConfigError(f"{prefix}{unknown[0]}", f"unknown field; allowed fields are {', '.join(sorted(allowed))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_number(value: Any, path: str, low: float | None = None, high: float | None = None) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(path, f"must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(path, f"must be >= {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(path, f"must be <= {high:g}, got {value!r}")
    return float(value)


def _optional_number(raw: dict, name: str, path: str, low: float) -> float | None:
    if raw.get(name) is None:
        return None
    return _require_number(raw[name], f"{path}.{name}", low=low)


def _require_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"must be true or false, got {value!r}")
    return value


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if _is_number(value) else type(value).__name__)
