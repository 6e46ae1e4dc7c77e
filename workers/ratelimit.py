"""Rate limits per "provider:model", shared by every worker process on every host through Redis.

Three limits are checked and taken together in one Lua script, so no two workers can both see
the last free unit:

- in-flight calls: leases in a sorted set scored by expiry (ms). The holder renews its lease
  while the call runs. A lease whose holder died (kill -9, lost host) expires after lease_s, and
  the next acquire removes it.
- requests per minute: a sorted set of grant times, one member per request, over a sliding
  window of window_s (60 s outside tests).
- tokens per minute: a sorted set with members "<lease id>:<tokens>" scored by grant time, plus
  a running sum. Lease.settle() swaps the member for the real usage once the call is done.

Every timestamp comes from Redis TIME inside the scripts, so workers with skewed clocks agree.
The design and the settings format are described in docs/rate-limits.md.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any, Mapping

import redis

from mistralmeter.logging_setup import log_fields
from mistralmeter.settings import Settings

logger = logging.getLogger(__name__)

# A lowered in-flight limit expires after this long without a 429 or a success.
_ADAPTIVE_MEMORY_MS = 600_000

# Bits of the "blocked by" mask that the acquire script returns.
_BLOCKED_BY = (
    (1, "max_in_flight"),
    (2, "requests_per_minute"),
    (4, "tokens_per_minute"),
)

_LUA_PRELUDE = """
-- Keys outlive their newest entry by this much, so that a key never expires while in use.
local TTL_SLACK_MS = 1000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function extend_ttl(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

local function member_tokens(member)
  return tonumber(string.match(member, ':(%d+)$'))
end
"""

# KEYS: leases, requests, tokens, tokens_used, adaptive.
# ARGV: lease id, token member, tokens, max in flight, rpm, tpm, lease ms, window ms,
#       adaptive flag ("1" or "0").
# Returns {1, 0, 0} when granted, else {0, wait hint in ms, blocked-by mask}.
_ACQUIRE_LUA = _LUA_PRELUDE + """
local lease_id, token_member = ARGV[1], ARGV[2]
local tokens = tonumber(ARGV[3])
local max_in_flight, rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lease_ms, window_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
local cutoff = now - window_ms

-- Leases whose holder stopped renewing them free their slot here.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)

local freed = 0
local leaving = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff)
for _, member in ipairs(leaving) do
  freed = freed + member_tokens(member)
end
if #leaving > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
end

local stored = redis.call('GET', KEYS[4])
local used = (tonumber(stored) or 0) - freed
local sum_changed = freed > 0
if (not stored and redis.call('ZCARD', KEYS[3]) > 0) or used < 0 then
  -- The running sum went missing or wrong, so count it again from the members.
  used = 0
  sum_changed = true
  for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    used = used + member_tokens(member)
  end
end

local limit = max_in_flight
if ARGV[9] == '1' then
  local adaptive_limit = tonumber(redis.call('HGET', KEYS[5], 'limit'))
  if adaptive_limit and adaptive_limit < limit then
    limit = adaptive_limit
  end
end

local blocked, wait_ms = 0, 0
local in_flight = redis.call('ZCARD', KEYS[1])
if in_flight >= limit then
  blocked = blocked + 1
  local index = in_flight - limit
  local entry = redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')
  wait_ms = math.max(wait_ms, tonumber(entry[2]) - now)
end

local requests = redis.call('ZCARD', KEYS[2])
if requests >= rpm then
  blocked = blocked + 2
  local index = requests - rpm
  local entry = redis.call('ZRANGE', KEYS[2], index, index, 'WITHSCORES')
  wait_ms = math.max(wait_ms, tonumber(entry[2]) + window_ms - now)
end

if used + tokens > tpm then
  blocked = blocked + 4
  local excess, released = used + tokens - tpm, 0
  local entries = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    released = released + member_tokens(entries[i])
    if released >= excess then
      wait_ms = math.max(wait_ms, tonumber(entries[i + 1]) + window_ms - now)
      break
    end
  end
end

if blocked > 0 then
  if sum_changed and used > 0 then
    redis.call('SET', KEYS[4], used, 'KEEPTTL')
  elseif sum_changed then
    redis.call('DEL', KEYS[4])
  end
  return {0, math.max(wait_ms, 1), blocked}
end

redis.call('ZADD', KEYS[1], now + lease_ms, lease_id)
redis.call('ZADD', KEYS[2], now, lease_id)
redis.call('ZADD', KEYS[3], now, token_member)
redis.call('SET', KEYS[4], used + tokens, 'PX', window_ms + TTL_SLACK_MS)
extend_ttl(KEYS[1], lease_ms + TTL_SLACK_MS)
extend_ttl(KEYS[2], window_ms + TTL_SLACK_MS)
extend_ttl(KEYS[3], window_ms + TTL_SLACK_MS)
return {1, 0, 0}
"""

# KEYS: leases. ARGV: lease id, lease ms. Returns 1 when renewed, 0 when the lease is gone.
_RENEW_LUA = _LUA_PRELUDE + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local lease_ms = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now_ms() + lease_ms, ARGV[1])
extend_ttl(KEYS[1], lease_ms + TTL_SLACK_MS)
return 1
"""

# KEYS: tokens, tokens_used. ARGV: old member, new member, token difference, window ms.
# Returns 1 when corrected, 0 when the entry has already left the window.
_SETTLE_LUA = _LUA_PRELUDE + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now_ms() - tonumber(ARGV[4]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], score, ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBY', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: leases. Returns the number of leases that have not expired.
_IN_FLIGHT_LUA = _LUA_PRELUDE + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms(), '+inf')
"""

# KEYS: adaptive. ARGV: max in flight, cooldown ms, memory ms.
# Returns {limit, 1 if this call lowered it else 0}.
_DECREASE_LUA = _LUA_PRELUDE + """
local configured = tonumber(ARGV[1])
local now = now_ms()
local current = math.min(configured, tonumber(redis.call('HGET', KEYS[1], 'limit')) or configured)
local decreased_at = tonumber(redis.call('HGET', KEYS[1], 'decreased_at'))
if decreased_at and now - decreased_at < tonumber(ARGV[2]) then
  return {current, 0}
end
local reduced = math.max(1, math.floor(current / 2))
redis.call('HSET', KEYS[1], 'limit', reduced, 'successes', 0, 'decreased_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {reduced, 1}
"""

# KEYS: adaptive. ARGV: max in flight, successes per increase, memory ms. Returns the new limit.
_INCREASE_LUA = """
local configured = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'limit'))
if not current or current >= configured then
  redis.call('DEL', KEYS[1])
  return configured
end
local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
if successes >= tonumber(ARGV[2]) then
  current = current + 1
  if current >= configured then
    redis.call('DEL', KEYS[1])
    return configured
  end
  redis.call('HSET', KEYS[1], 'limit', current, 'successes', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return current
"""


@dataclass(frozen=True)
class Limits:
    """Limits for one "provider:model" key, summed over all workers."""

    max_in_flight: int
    requests_per_minute: int
    tokens_per_minute: int

    def __post_init__(self) -> None:
        for field in fields(self):
            _check_positive_int(field.name, getattr(self, field.name))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], defaults: Limits) -> Limits:
        """Build limits from the fields present in `d`, taking the rest from `defaults`.

        Raises ValueError naming the field when a value is not a positive integer or a key is
        not one of the three limit fields.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"rate limits must be a JSON object, got {type(d).__name__}")
        names = [field.name for field in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(
                f"unknown rate limit field {unknown[0]!r}, expected one of {', '.join(names)}"
            )
        values = {name: d.get(name, getattr(defaults, name)) for name in names}
        return cls(**values)


def _check_positive_int(name: str, value: Any) -> None:
    # bool is a subclass of int, but "max_in_flight": true is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rate limit field {name!r} must be a positive integer, got {value!r}")


class RateLimitTimeout(Exception):
    """acquire() could not get a slot within its timeout."""

    def __init__(self, key: str, waited_s: float, blocked_by: tuple[str, ...]) -> None:
        reason = ", ".join(blocked_by) or "unknown"
        super().__init__(
            f"rate limit for {key} not granted within {waited_s:.2f} s (blocked by {reason})"
        )
        self.key = key
        self.waited_s = waited_s
        self.blocked_by = blocked_by


class RequestTooLarge(ValueError):
    """A request needs more tokens than the whole tokens-per-minute limit, so it can never run."""


class Lease:
    """An in-flight slot held by one model call, usable as a context manager.

    A daemon thread renews the lease every lease_s / 3 until release(). If a renewal finds the
    lease gone (the process stalled for longer than lease_s), `lost` becomes True and the slot
    may already belong to another call.
    """

    def __init__(
        self, limiter: RateLimiter, lease_id: str, tokens: int, waited_s: float
    ) -> None:
        self.lease_id = lease_id
        self.tokens = tokens
        self.waited_s = waited_s
        self.lost = False
        self._limiter = limiter
        self._released = False
        self._release_lock = threading.Lock()
        self._stop_renewing = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_until_released, name=f"ratelimit-lease-{lease_id[:8]}", daemon=True
        )
        self._renewer.start()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def released(self) -> bool:
        return self._released

    def settle(self, actual_tokens: int) -> bool:
        """Replace the tokens counted at acquire time with the real usage.

        Returns False when the entry has already left the tokens-per-minute window, so there is
        nothing to correct. Works before or after release().
        """
        _check_token_count("actual_tokens", actual_tokens)
        corrected = self._limiter._settle(self.lease_id, self.tokens, actual_tokens)
        if corrected:
            self.tokens = actual_tokens
        return corrected

    def release(self) -> None:
        """Free the in-flight slot. Calling it again does nothing.

        A Redis error is logged and not raised, because the lease then expires after lease_s
        anyway and the caller's own result or exception matters more.
        """
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._stop_renewing.set()
        try:
            self._limiter._release(self.lease_id)
        except redis.RedisError as error:
            logger.warning(
                "rate limit lease release failed, the lease expires after lease_s",
                extra=log_fields(key=self._limiter.key, lease_id=self.lease_id, error=str(error)),
            )

    def _renew_until_released(self) -> None:
        interval_s = self._limiter.lease_s / 3
        while not self._stop_renewing.wait(interval_s):
            try:
                renewed = self._limiter._renew(self.lease_id)
            except redis.RedisError as error:
                logger.warning(
                    "rate limit lease renewal failed",
                    extra=log_fields(
                        key=self._limiter.key, lease_id=self.lease_id, error=str(error)
                    ),
                )
                continue
            if not renewed and not self._stop_renewing.is_set():
                self.lost = True
                logger.warning(
                    "rate limit lease expired while held",
                    extra=log_fields(
                        key=self._limiter.key, lease_id=self.lease_id, lease_s=self._limiter.lease_s
                    ),
                )
                return


def _check_token_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer of 0 or more, got {value!r}")


class RateLimiter:
    """Shared limits for one "provider:model" key.

    `window_s` is the length of the sliding window behind requests_per_minute and
    tokens_per_minute. Only tests shorten it. `max_poll_s` caps one sleep between attempts,
    because a slot freed by release() is only noticed at the next attempt. With `adaptive`, a
    429 halves the in-flight limit (at most once per `aimd_cooldown_s`, floor 1) and every
    `successes_per_increase` successes add one back, up to limits.max_in_flight.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        key: str,
        limits: Limits,
        *,
        lease_s: float = 60.0,
        adaptive: bool = True,
        prefix: str = "mm:rl",
        window_s: float = 60.0,
        max_poll_s: float = 0.25,
        aimd_cooldown_s: float = 1.0,
        successes_per_increase: int = 10,
    ) -> None:
        if not key or "{" in key or "}" in key:
            raise ValueError(f"rate limit key must be non-empty and free of braces, got {key!r}")
        durations = {"lease_s": lease_s, "window_s": window_s, "max_poll_s": max_poll_s}
        for name, value in durations.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if aimd_cooldown_s < 0:
            raise ValueError(f"aimd_cooldown_s must be 0 or more, got {aimd_cooldown_s!r}")
        _check_positive_int("successes_per_increase", successes_per_increase)

        self.key = key
        self.limits = limits
        self.lease_s = lease_s
        self.adaptive = adaptive
        self.window_s = window_s
        self.max_poll_s = max_poll_s
        self.aimd_cooldown_s = aimd_cooldown_s
        self.successes_per_increase = successes_per_increase

        self._redis = redis_client
        # The braces make a Redis Cluster hash tag, which keeps all keys of a limiter on one node
        # as a multi-key script requires.
        base = f"{prefix}:{{{key}}}"
        self._leases_key = f"{base}:leases"
        self._requests_key = f"{base}:requests"
        self._tokens_key = f"{base}:tokens"
        self._tokens_used_key = f"{base}:tokens_used"
        self._adaptive_key = f"{base}:adaptive"

        self._acquire_script = redis_client.register_script(_ACQUIRE_LUA)
        self._renew_script = redis_client.register_script(_RENEW_LUA)
        self._settle_script = redis_client.register_script(_SETTLE_LUA)
        self._in_flight_script = redis_client.register_script(_IN_FLIGHT_LUA)
        self._decrease_script = redis_client.register_script(_DECREASE_LUA)
        self._increase_script = redis_client.register_script(_INCREASE_LUA)

    def acquire(self, tokens: int, *, timeout_s: float) -> Lease:
        """Wait until an in-flight slot, a request and `tokens` tokens are free, and take them.

        `tokens` is the input plus the expected output tokens. Raises RateLimitTimeout after
        timeout_s, and RequestTooLarge when tokens exceed tokens_per_minute.
        """
        _check_token_count("tokens", tokens)
        if tokens > self.limits.tokens_per_minute:
            raise RequestTooLarge(
                f"request needs {tokens} tokens but {self.key} allows "
                f"{self.limits.tokens_per_minute} tokens per minute; lower max_tokens or raise "
                "tokens_per_minute"
            )

        lease_id = uuid.uuid4().hex
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            granted, wait_ms, blocked_mask = self._try_acquire(lease_id, tokens)
            if granted:
                return Lease(self, lease_id, tokens, time.monotonic() - started)

            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise RateLimitTimeout(
                    self.key, time.monotonic() - started, _blocked_by_names(blocked_mask)
                )
            time.sleep(self._sleep_before_retry(wait_ms / 1000, remaining_s))

    def on_rate_limited(self) -> int:
        """Halve the shared in-flight limit after a 429 and return the new limit.

        429s from one burst arrive together, so only the first within aimd_cooldown_s halves.
        """
        if not self.adaptive:
            return self.limits.max_in_flight
        limit, lowered = self._decrease_script(
            keys=[self._adaptive_key],
            args=[
                self.limits.max_in_flight,
                int(self.aimd_cooldown_s * 1000),
                _ADAPTIVE_MEMORY_MS,
            ],
        )
        if lowered:
            logger.info(
                "rate limit lowered after 429", extra=log_fields(key=self.key, max_in_flight=limit)
            )
        return int(limit)

    def on_success(self) -> int:
        """Count a successful call toward raising a lowered limit and return the effective limit."""
        if not self.adaptive:
            return self.limits.max_in_flight
        return int(
            self._increase_script(
                keys=[self._adaptive_key],
                args=[
                    self.limits.max_in_flight,
                    self.successes_per_increase,
                    _ADAPTIVE_MEMORY_MS,
                ],
            )
        )

    def current_in_flight(self) -> int:
        """Count the unexpired leases held by all workers."""
        return int(self._in_flight_script(keys=[self._leases_key]))

    def effective_max_in_flight(self) -> int:
        """Return the in-flight limit that acquire enforces now, after any adaptive lowering."""
        if not self.adaptive:
            return self.limits.max_in_flight
        stored = self._redis.hget(self._adaptive_key, "limit")
        if stored is None:
            return self.limits.max_in_flight
        return min(self.limits.max_in_flight, int(stored))

    def _try_acquire(self, lease_id: str, tokens: int) -> tuple[bool, int, int]:
        granted, wait_ms, blocked_mask = self._acquire_script(
            keys=[
                self._leases_key,
                self._requests_key,
                self._tokens_key,
                self._tokens_used_key,
                self._adaptive_key,
            ],
            args=[
                lease_id,
                _token_member(lease_id, tokens),
                tokens,
                self.limits.max_in_flight,
                self.limits.requests_per_minute,
                self.limits.tokens_per_minute,
                int(self.lease_s * 1000),
                int(self.window_s * 1000),
                "1" if self.adaptive else "0",
            ],
        )
        return bool(granted), int(wait_ms), int(blocked_mask)

    def _sleep_before_retry(self, hint_s: float, remaining_s: float) -> float:
        step_s = min(hint_s, self.max_poll_s)
        # Jitter spreads out waiters that were denied by the same full window.
        step_s += random.uniform(0, 0.1 * step_s + 0.005)
        return min(step_s, remaining_s)

    def _renew(self, lease_id: str) -> bool:
        renewed = self._renew_script(
            keys=[self._leases_key], args=[lease_id, int(self.lease_s * 1000)]
        )
        return bool(renewed)

    def _release(self, lease_id: str) -> None:
        self._redis.zrem(self._leases_key, lease_id)

    def _settle(self, lease_id: str, counted_tokens: int, actual_tokens: int) -> bool:
        corrected = self._settle_script(
            keys=[self._tokens_key, self._tokens_used_key],
            args=[
                _token_member(lease_id, counted_tokens),
                _token_member(lease_id, actual_tokens),
                actual_tokens - counted_tokens,
                int(self.window_s * 1000),
            ],
        )
        return bool(corrected)


def _token_member(lease_id: str, tokens: int) -> str:
    return f"{lease_id}:{tokens}"


def _blocked_by_names(mask: int) -> tuple[str, ...]:
    return tuple(name for bit, name in _BLOCKED_BY if mask & bit)


def resolve_limits(
    provider: str, model: str, settings: Settings, overrides: Mapping[str, Any] | None = None
) -> Limits:
    """Merge limits from the settings defaults, then settings.rate_limits, then `overrides`.

    In settings.rate_limits an entry keyed "model" applies to that model with any provider, and
    an entry keyed "provider:model" takes precedence over it. Each layer may set only some of
    the three fields.
    """
    limits = Limits(
        max_in_flight=settings.default_max_in_flight,
        requests_per_minute=settings.default_requests_per_minute,
        tokens_per_minute=settings.default_tokens_per_minute,
    )
    configured = settings.rate_limits or {}
    for entry_key in (model, f"{provider}:{model}"):
        if entry_key in configured:
            limits = _merge_layer(configured[entry_key], limits, f"rate_limits[{entry_key!r}]")
    if overrides:
        limits = _merge_layer(overrides, limits, "rate limit overrides")
    return limits


def _merge_layer(layer: Any, limits: Limits, source: str) -> Limits:
    try:
        return Limits.from_dict(layer, limits)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


def limiter_for(
    redis_client: redis.Redis,
    provider: str,
    model: str,
    settings: Settings,
    overrides: dict | None = None,
) -> RateLimiter:
    """Build the shared limiter for one provider and model, with limits from resolve_limits."""
    limits = resolve_limits(provider, model, settings, overrides)
    return RateLimiter(redis_client, f"{provider}:{model}", limits)
