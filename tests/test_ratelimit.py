"""Tests of the shared rate limiter against the real Redis, db 5, one key prefix per test."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid

import pytest
import redis

from mistralmeter.settings import Settings
from workers.ratelimit import (
    Limits,
    RateLimiter,
    RateLimitTimeout,
    RequestTooLarge,
    limiter_for,
    resolve_limits,
)

pytestmark = pytest.mark.services

REDIS_URL = "redis://127.0.0.1:6379/5"
KEY = "mistral:mistral-small-latest"
DEFAULTS = Limits(max_in_flight=8, requests_per_minute=600, tokens_per_minute=2_000_000)

# INCR a concurrency counter and keep the highest value seen, atomically.
_ENTER_LUA = """
local current = redis.call('INCR', KEYS[1])
local highest = tonumber(redis.call('GET', KEYS[2]) or '0')
if current > highest then
  redis.call('SET', KEYS[2], current)
end
return current
"""


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    prefix = f"mm:test:rl:{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)


def make_limiter(redis_client, prefix, **options) -> RateLimiter:
    limits = Limits(
        max_in_flight=options.pop("max_in_flight", 100),
        requests_per_minute=options.pop("requests_per_minute", 10_000),
        tokens_per_minute=options.pop("tokens_per_minute", 10_000_000),
    )
    options.setdefault("max_poll_s", 0.02)
    return RateLimiter(redis_client, KEY, limits, prefix=prefix, **options)


# Limits and their resolution from settings


def test_limits_from_dict_merges_over_defaults():
    limits = Limits.from_dict({"max_in_flight": 3}, DEFAULTS)

    assert limits == Limits(max_in_flight=3, requests_per_minute=600, tokens_per_minute=2_000_000)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_in_flight", 0),
        ("requests_per_minute", -5),
        ("tokens_per_minute", "100"),
        ("max_in_flight", True),
        ("requests_per_minute", 2.5),
        ("tokens_per_minute", None),
    ],
)
def test_limits_from_dict_rejects_invalid_value(field, value):
    with pytest.raises(ValueError, match=field):
        Limits.from_dict({field: value}, DEFAULTS)


def test_limits_from_dict_rejects_unknown_field():
    with pytest.raises(ValueError, match="'rpm'"):
        Limits.from_dict({"rpm": 5}, DEFAULTS)


def test_limits_from_dict_rejects_non_mapping():
    with pytest.raises(ValueError, match="JSON object"):
        Limits.from_dict([1, 2, 3], DEFAULTS)


def test_resolve_limits_applies_layers_in_order():
    settings = Settings(
        rate_limits={
            "mistral-small-latest": {"max_in_flight": 4, "tokens_per_minute": 5000},
            "mistral:mistral-small-latest": {"max_in_flight": 2},
        },
        default_max_in_flight=8,
        default_requests_per_minute=600,
        default_tokens_per_minute=100_000,
    )

    exact = resolve_limits("mistral", "mistral-small-latest", settings, {"requests_per_minute": 7})
    model_only = resolve_limits("openai-compatible", "mistral-small-latest", settings)
    unlisted = resolve_limits("mistral", "mistral-large-latest", settings)

    assert exact == Limits(max_in_flight=2, requests_per_minute=7, tokens_per_minute=5000)
    assert model_only == Limits(max_in_flight=4, requests_per_minute=600, tokens_per_minute=5000)
    assert unlisted == Limits(max_in_flight=8, requests_per_minute=600, tokens_per_minute=100_000)


def test_resolve_limits_names_bad_settings_entry():
    settings = Settings(rate_limits={"mistral:mistral-tiny": {"requests_per_minute": 0}})

    expected = r"rate_limits\['mistral:mistral-tiny'\].*requests_per_minute"
    with pytest.raises(ValueError, match=expected):
        resolve_limits("mistral", "mistral-tiny", settings)


def test_resolve_limits_names_bad_override():
    with pytest.raises(ValueError, match="overrides.*max_in_flight"):
        resolve_limits("mistral", "m", Settings(), {"max_in_flight": -1})


def test_limiter_for_builds_provider_model_key(redis_client):
    settings = Settings(rate_limits={"mistral:mistral-tiny": {"max_in_flight": 3}})

    limiter = limiter_for(redis_client, "mistral", "mistral-tiny", settings)

    assert limiter.key == "mistral:mistral-tiny"
    assert limiter.limits.max_in_flight == 3
    assert limiter.limits.requests_per_minute == settings.default_requests_per_minute


# In-flight slots


def _hold_slots_in_threads(prefix: str, limit: int, threads: int, iterations: int) -> None:
    """Run in a child process: many threads acquire, count themselves in, sleep and release."""
    client = redis.Redis.from_url(REDIS_URL)
    limiter = make_limiter(client, prefix, max_in_flight=limit, lease_s=10, max_poll_s=0.005)
    enter = client.register_script(_ENTER_LUA)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(iterations):
                with limiter.acquire(1, timeout_s=30):
                    enter(keys=[f"{prefix}:test:current", f"{prefix}:test:max"])
                    client.incr(f"{prefix}:test:grants")
                    time.sleep(random.uniform(0.001, 0.008))
                    client.decr(f"{prefix}:test:current")
        except BaseException as error:  # reported through the exit code
            errors.append(error)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    os._exit(1 if errors else 0)


def test_acquire_in_flight_limit_across_processes(redis_client, prefix):
    """Three processes with ten threads each never hold more than max_in_flight slots."""
    limit, processes, threads, iterations = 4, 3, 10, 6
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_hold_slots_in_threads, args=(prefix, limit, threads, iterations))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)

    assert [child.exitcode for child in children] == [0, 0, 0]
    assert int(redis_client.get(f"{prefix}:test:grants")) == processes * threads * iterations
    assert int(redis_client.get(f"{prefix}:test:max")) == limit
    assert int(redis_client.get(f"{prefix}:test:current")) == 0
    assert make_limiter(redis_client, prefix).current_in_flight() == 0


def test_lease_context_manager_releases_once(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, max_in_flight=1)

    with limiter.acquire(10, timeout_s=1) as lease:
        assert limiter.current_in_flight() == 1
        assert lease.waited_s < 0.5
    assert lease.released
    assert limiter.current_in_flight() == 0

    lease.release()
    assert limiter.current_in_flight() == 0


def test_acquire_timeout_reports_wait(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, max_in_flight=1)
    blocking_lease = limiter.acquire(1, timeout_s=1)

    started = time.monotonic()
    with pytest.raises(RateLimitTimeout) as raised:
        limiter.acquire(1, timeout_s=0.5)
    elapsed = time.monotonic() - started
    blocking_lease.release()

    assert raised.value.blocked_by == ("max_in_flight",)
    assert 0.5 <= raised.value.waited_s <= elapsed
    assert elapsed < 0.8
    assert KEY in str(raised.value)


def test_acquire_granted_when_slot_frees(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, max_in_flight=1)
    blocking_lease = limiter.acquire(1, timeout_s=1)
    threading.Timer(0.3, blocking_lease.release).start()

    with limiter.acquire(1, timeout_s=3) as lease:
        assert 0.25 <= lease.waited_s < 1.0


def test_lease_renewal_keeps_slot(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, max_in_flight=1, lease_s=0.6)
    lease = limiter.acquire(1, timeout_s=1)

    time.sleep(1.5)

    assert limiter.current_in_flight() == 1
    assert not lease.lost
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(1, timeout_s=0)
    lease.release()
    assert limiter.current_in_flight() == 0


def _acquire_and_die(prefix: str, death: str, ready) -> None:
    """Run in a child process: take the only slot, then die without releasing it."""
    client = redis.Redis.from_url(REDIS_URL)
    limiter = make_limiter(client, prefix, max_in_flight=1, lease_s=1)
    limiter.acquire(1, timeout_s=5)
    if death == "os_exit":
        os._exit(0)
    ready.set()
    time.sleep(60)  # The parent sends SIGKILL while the renewal thread runs.


@pytest.mark.parametrize("death", ["os_exit", "sigkill"])
def test_lease_of_dead_holder_is_reclaimed(redis_client, prefix, death):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_acquire_and_die, args=(prefix, death, ready))
    child.start()
    if death == "sigkill":
        assert ready.wait(timeout=20)
        time.sleep(0.5)  # Longer than the renewal interval of lease_s / 3.
        os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=20)
    limiter = make_limiter(redis_client, prefix, max_in_flight=1, lease_s=1)

    assert child.exitcode == (0 if death == "os_exit" else -signal.SIGKILL)
    assert limiter.current_in_flight() == 1
    with limiter.acquire(1, timeout_s=3) as lease:
        assert 0.1 <= lease.waited_s <= 1.2


# Requests per minute


def test_acquire_rpm_grants_limit_then_waits(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, requests_per_minute=30, window_s=2)
    started = time.monotonic()

    grants = 0
    while True:
        try:
            limiter.acquire(1, timeout_s=0).release()
        except RateLimitTimeout as error:
            assert error.blocked_by == ("requests_per_minute",)
            break
        grants += 1
    filled_s = time.monotonic() - started
    lease = limiter.acquire(1, timeout_s=3)
    granted_after_s = time.monotonic() - started
    lease.release()

    assert filled_s < 1.0
    assert grants == 30
    assert 1.95 <= granted_after_s < 2.6


# Tokens per minute


def test_acquire_tpm_blocks_when_tokens_exceed(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, tokens_per_minute=1000)
    first = limiter.acquire(600, timeout_s=0)
    second = limiter.acquire(400, timeout_s=0)

    with pytest.raises(RateLimitTimeout) as raised:
        limiter.acquire(1, timeout_s=0.1)
    first.release()
    second.release()

    assert raised.value.blocked_by == ("tokens_per_minute",)


def test_acquire_tpm_frees_tokens_after_window(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, tokens_per_minute=1000, window_s=1)
    limiter.acquire(700, timeout_s=0).release()
    time.sleep(0.3)
    limiter.acquire(300, timeout_s=0).release()

    # 700 tokens leave the window at about 1.0 s; the 300 stay until about 1.3 s.
    lease = limiter.acquire(600, timeout_s=3)
    lease.release()

    assert 0.55 <= lease.waited_s < 1.0


def test_lease_settle_corrects_token_count(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, tokens_per_minute=1000)
    estimated = limiter.acquire(900, timeout_s=0)
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(300, timeout_s=0)

    assert estimated.settle(200) is True
    assert estimated.tokens == 200
    second = limiter.acquire(300, timeout_s=0)
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(501, timeout_s=0)
    third = limiter.acquire(500, timeout_s=0)

    for lease in (estimated, second, third):
        lease.release()


def test_lease_settle_upward_blocks_more(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, tokens_per_minute=1000)
    with limiter.acquire(100, timeout_s=0) as lease:
        lease.settle(950)

    with pytest.raises(RateLimitTimeout):
        limiter.acquire(100, timeout_s=0)
    limiter.acquire(50, timeout_s=0).release()


def test_lease_settle_after_window_returns_false(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, window_s=0.3)
    lease = limiter.acquire(100, timeout_s=0)
    lease.release()
    time.sleep(0.4)

    assert lease.settle(50) is False
    assert lease.tokens == 100


def test_acquire_rejects_request_over_tpm(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, tokens_per_minute=1000)

    with pytest.raises(RequestTooLarge, match="1001 tokens"):
        limiter.acquire(1001, timeout_s=5)


@pytest.mark.parametrize("tokens", [-1, 1.5, True])
def test_acquire_rejects_invalid_tokens(redis_client, prefix, tokens):
    limiter = make_limiter(redis_client, prefix)

    with pytest.raises(ValueError, match="tokens"):
        limiter.acquire(tokens, timeout_s=0)


# Adaptive in-flight limit


def test_adaptive_limit_halves_and_recovers(redis_client, prefix):
    limiter = make_limiter(
        redis_client, prefix, max_in_flight=8, aimd_cooldown_s=0, successes_per_increase=2
    )

    halvings = [limiter.on_rate_limited() for _ in range(4)]
    assert halvings == [4, 2, 1, 1]
    assert limiter.effective_max_in_flight() == 1

    only_lease = limiter.acquire(1, timeout_s=0)
    with pytest.raises(RateLimitTimeout) as raised:
        limiter.acquire(1, timeout_s=0.05)
    only_lease.release()
    assert raised.value.blocked_by == ("max_in_flight",)

    limits_after_success = [limiter.on_success() for _ in range(16)]
    assert limits_after_success == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 8]
    assert limiter.effective_max_in_flight() == 8


def test_adaptive_limit_ignores_burst_within_cooldown(redis_client, prefix):
    limiter = make_limiter(redis_client, prefix, max_in_flight=8, aimd_cooldown_s=5)

    assert limiter.on_rate_limited() == 4
    assert limiter.on_rate_limited() == 4
    assert limiter.effective_max_in_flight() == 4


def test_adaptive_limit_shared_between_limiters(redis_client, prefix):
    lowering = make_limiter(redis_client, prefix, max_in_flight=8, aimd_cooldown_s=0)
    other_worker = make_limiter(redis_client, prefix, max_in_flight=8)
    fixed = make_limiter(redis_client, prefix, max_in_flight=8, adaptive=False)
    lowering.on_rate_limited()
    lowering.on_rate_limited()
    lowering.on_rate_limited()

    adaptive_lease = other_worker.acquire(1, timeout_s=0)
    with pytest.raises(RateLimitTimeout):
        other_worker.acquire(1, timeout_s=0)
    fixed_lease = fixed.acquire(1, timeout_s=0)

    assert other_worker.effective_max_in_flight() == 1
    assert fixed.effective_max_in_flight() == 8
    assert fixed.on_rate_limited() == 8
    adaptive_lease.release()
    fixed_lease.release()


def test_rate_limiter_rejects_braces_in_key(redis_client):
    with pytest.raises(ValueError, match="braces"):
        RateLimiter(redis_client, "mistral:{x}", DEFAULTS)
