"""Tests of the Mistral-compatible simulator, driven through the real mistralai SDK."""

from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import httpx2
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import HTTPValidationError, SDKError

from simulator import server
from simulator.generation import VOCABULARY
from simulator.judge import CRITERIA, REFUSAL_TEXT, AnswerQuality, QualityRegistry, render_single
from simulator.profiles import JUDGE_MODES, ConfigError, parse_config
from simulator.testing import run_simulator

FAST = {"ttft_ms": 40, "itl_ms": 4, "output_tokens": 20}
INSTANT = {"ttft_ms": 1, "itl_ms": 0.2, "output_tokens": 12}

CONFIG = {
    "seed": 7,
    "models": {
        "fast": FAST,
        "no-usage": {**INSTANT, "include_usage": False},
        "normal-timing": {
            "ttft_ms": {"distribution": "normal", "mean": 30, "sd": 10, "min": 5, "max": 60},
            "itl_ms": {"distribution": "uniform", "min": 1, "max": 3},
            "output_tokens": {"distribution": "lognormal", "median": 15, "sigma": 0.5, "min": 5, "max": 40},
        },
        "good": {**INSTANT, "quality": 9.0, "quality_sd": 0.3},
        "bad": {**INSTANT, "quality": 2.5, "quality_sd": 0.3},
        "steady": {**INSTANT, "output_tokens": 10, "quality": 6.0, "quality_sd": 0.01},
        "steady-long": {**INSTANT, "output_tokens": 110, "quality": 6.0, "quality_sd": 0.01},
        "fault-429": {**INSTANT, "faults": {"rate_429": 1, "retry_after_s": 0.2}},
        "fault-500": {**INSTANT, "faults": {"rate_500": 1}},
        "fault-cut": {**INSTANT, "output_tokens": 10, "faults": {"rate_cut": 1}},
        "fault-hang": {**INSTANT, "faults": {"rate_hang": 1, "hang_s": 30}},
        "fault-short-hang": {**INSTANT, "faults": {"rate_hang": 1, "hang_s": 0.3}},
        "limited": {**INSTANT, "rpm_limit": 3},
        "judge-retry": {**INSTANT, "judge": {"mode": "refusal", "retry_mode": "valid"}},
        "judge-length": {**INSTANT, "judge": {"length_bias": 3.0}},
        **{f"judge-{mode}": {**INSTANT, "judge": {"mode": mode}} for mode in JUDGE_MODES},
    },
}

USER = [{"role": "user", "content": "Explain time to first token in one paragraph."}]


@pytest.fixture(scope="module")
def base_url():
    with run_simulator(CONFIG) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return Mistral(api_key="sim", server_url=base_url)


def stream_contents(client, **kwargs):
    """Return (events, measured seconds to each event, stream response headers)."""
    started = time.perf_counter()
    stream = client.chat.stream(**kwargs)
    events, times = [], []
    for event in stream:
        events.append(event.data)
        times.append(time.perf_counter() - started)
    return events, times, stream.response.headers


def requests_log(base_url, limit=100):
    return httpx.get(f"{base_url}/v1/simulator/requests", params={"limit": limit}).json()["data"]


def single_prompt(answer):
    return [
        {"role": "system", "content": "You are a strict grader. Reply with a JSON object only."},
        {"role": "user", "content": f"Grade this answer.\n[The Start of Answer]\n{answer}\n[The End of Answer]"},
    ]


def pairwise_prompt(first, second):
    text = (
        "Which answer is better?\n"
        f"[The Start of Answer A]\n{first}\n[The End of Answer A]\n"
        f"[The Start of Answer B]\n{second}\n[The End of Answer B]"
    )
    return [{"role": "user", "content": text}]


def judge(client, judge_model, messages, **kwargs):
    response = client.chat.complete(
        model=judge_model, messages=messages, response_format={"type": "json_object"}, **kwargs
    )
    return response.choices[0].message.content, response.choices[0].finish_reason


def answer_from(client, model, seed):
    response = client.chat.complete(model=model, messages=USER, random_seed=seed)
    return response.choices[0].message.content


def test_stream_role_chunk_first_with_empty_content(client):
    events, _, _ = stream_contents(client, model="fast", messages=USER)

    first = events[0].choices[0]
    assert first.delta.role == "assistant"
    assert first.delta.content == ""
    assert first.finish_reason is None
    assert all(event.choices[0].delta.content for event in events[1:])


def test_stream_wire_format_ends_with_done(base_url):
    body = {"model": "fast", "messages": USER, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        raw = response.read().decode()

    blocks = [block for block in raw.split("\n\n") if block]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert all(block.startswith("data: ") for block in blocks)
    assert blocks[-1] == "data: [DONE]"
    last = json.loads(blocks[-2][len("data: ") :])
    assert last["object"] == "chat.completion.chunk"
    assert last["choices"][0]["finish_reason"] == "stop"
    assert set(last["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_stream_timing_not_shorter_than_injected(client):
    events, times, headers = stream_contents(client, model="fast", messages=USER)

    ttft_ms = float(headers["x-simulator-ttft-ms"])
    itl_ms = float(headers["x-simulator-itl-ms"])
    count = int(headers["x-simulator-output-tokens"])
    assert (ttft_ms, itl_ms, count) == (40.0, 4.0, 20)
    assert times[1] * 1000 >= ttft_ms
    assert times[-1] * 1000 >= ttft_ms + (count - 1) * itl_ms
    # Absolute deadlines keep the stream from drifting far past the plan.
    assert times[-1] * 1000 < ttft_ms + (count - 1) * itl_ms + 500


def test_stream_output_tokens_and_usage_exact(client):
    events, _, _ = stream_contents(client, model="fast", messages=USER)

    content = [event.choices[0].delta.content for event in events[1:]]
    assert len(content) == 20
    assert not content[0].startswith(" ")
    assert all(token.startswith(" ") for token in content[1:])
    assert all(token.strip() in VOCABULARY for token in content)
    assert events[-1].choices[0].finish_reason == "stop"
    usage = events[-1].usage
    assert usage.completion_tokens == 20
    assert usage.prompt_tokens == math.ceil(len(USER[0]["content"]) / 4)
    assert usage.total_tokens == usage.prompt_tokens + 20
    assert all(event.usage is None for event in events[:-1])


def test_stream_include_usage_false_omits_usage(client):
    events, _, _ = stream_contents(client, model="no-usage", messages=USER)

    assert len(events) == 13
    assert events[-1].choices[0].finish_reason == "stop"
    assert all(event.usage is None for event in events)


@pytest.mark.parametrize("stream", [True, False])
def test_max_tokens_cuts_with_finish_reason_length(client, stream):
    if stream:
        events, _, headers = stream_contents(client, model="fast", messages=USER, max_tokens=5)
        text = "".join(event.choices[0].delta.content for event in events)
        finish_reason = events[-1].choices[0].finish_reason
        usage = events[-1].usage
        assert headers["x-simulator-output-tokens"] == "5"
    else:
        response = client.chat.complete(model="fast", messages=USER, max_tokens=5)
        text = response.choices[0].message.content
        finish_reason = response.choices[0].finish_reason
        usage = response.usage

    assert len(text.split(" ")) == 5
    assert finish_reason == "length"
    assert usage.completion_tokens == 5


def test_complete_returns_response_schema(client, base_url):
    response = client.chat.complete(model="fast", messages=USER, random_seed=11)

    assert response.object == "chat.completion"
    assert response.model == "fast"
    assert response.choices[0].message.role == "assistant"
    assert len(response.choices[0].message.content.split(" ")) == 20
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 20
    record = requests_log(base_url, limit=1)[0]
    assert record["request_id"] == response.id
    assert record["stream"] is False
    assert record["outcome"] == "completed"


def test_random_seed_makes_plan_repeatable(client):
    kwargs = {"model": "normal-timing", "messages": USER}
    first, _, first_headers = stream_contents(client, random_seed=3, **kwargs)
    again, _, again_headers = stream_contents(client, random_seed=3, **kwargs)
    other, _, _ = stream_contents(client, random_seed=4, **kwargs)

    def text(events):
        return "".join(event.choices[0].delta.content for event in events)

    assert text(first) == text(again)
    for name in ("x-simulator-ttft-ms", "x-simulator-itl-ms", "x-simulator-output-tokens"):
        assert first_headers[name] == again_headers[name]
    assert text(first) != text(other)


def test_distribution_draws_stay_in_bounds(client, base_url):
    for _ in range(15):
        client.chat.complete(model="normal-timing", messages=USER)

    records = [r for r in requests_log(base_url, limit=15) if r["model"] == "normal-timing"]
    assert len(records) == 15
    assert all(5 <= r["ttft_ms"] <= 60 for r in records)
    assert all(1 <= r["itl_ms"] <= 3 for r in records)
    assert all(5 <= r["output_tokens"] <= 40 for r in records)
    assert len({r["ttft_ms"] for r in records}) > 1


def test_requests_log_reports_plan(client, base_url):
    _, _, headers = stream_contents(client, model="normal-timing", messages=USER, random_seed=21)

    record = requests_log(base_url, limit=1)[0]
    assert record["request_id"] == headers["x-request-id"]
    assert record["model"] == "normal-timing"
    assert record["kind"] == "completion"
    assert record["stream"] is True
    assert record["fault"] is None
    assert record["status"] == 200
    assert record["outcome"] == "completed"
    assert record["random_seed"] == 21
    assert record["ttft_ms"] == pytest.approx(float(headers["x-simulator-ttft-ms"]), abs=0.001)
    assert record["itl_ms"] == pytest.approx(float(headers["x-simulator-itl-ms"]), abs=0.001)
    assert record["output_tokens"] == int(headers["x-simulator-output-tokens"])
    assert record["tokens_sent"] == record["output_tokens"]
    assert 0 <= record["max_send_lag_ms"] < 100
    assert record["finished_at"] >= record["received_at"]


def test_requests_log_rejects_bad_limit(base_url):
    response = httpx.get(f"{base_url}/v1/simulator/requests", params={"limit": "0"})

    assert response.status_code == 422
    assert "limit" in response.json()["message"]


def test_every_response_marked_simulated(base_url):
    for method, path in [("GET", "/health"), ("GET", "/v1/simulator/config"), ("GET", "/no/such/path")]:
        response = httpx.request(method, f"{base_url}{path}")
        assert response.headers["x-mistralmeter-simulated"] == "true"
        assert len(response.headers["x-request-id"]) == 32
    assert httpx.get(f"{base_url}/no/such/path").json()["object"] == "error"


def test_models_list_shows_configured_models(client):
    models = client.models.list()

    names = {card.id for card in models.data}
    assert names == set(CONFIG["models"])
    assert {card.owned_by for card in models.data} == {"mistralmeter-simulator"}


def test_models_retrieve_known_and_unknown(client):
    card = client.models.retrieve(model_id="fast")
    with pytest.raises(SDKError) as caught:
        client.models.retrieve(model_id="no-such-model")

    assert card.id == "fast"
    assert card.owned_by == "mistralmeter-simulator"
    assert caught.value.status_code == 404


def test_unknown_model_without_default_is_400(client):
    with pytest.raises(SDKError) as caught:
        client.chat.complete(model="no-such-model", messages=USER)

    assert caught.value.status_code == 400
    body = json.loads(caught.value.body)
    assert body["message"] == "Invalid model: no-such-model"
    assert body["type"] == "invalid_model"


def test_invalid_request_body_is_422(client):
    with pytest.raises(HTTPValidationError) as caught:
        client.chat.complete(model="fast", messages=[])

    assert caught.value.status_code == 422
    assert caught.value.data.detail[0].loc == ["body", "messages"]


@pytest.mark.parametrize("stream", [True, False])
def test_fault_429_carries_retry_after(client, stream):
    call = client.chat.stream if stream else client.chat.complete
    with pytest.raises(SDKError) as caught:
        call(model="fault-429", messages=USER)

    assert caught.value.status_code == 429
    assert caught.value.raw_response.headers["Retry-After"] == "0.2"
    assert json.loads(caught.value.body)["type"] == "rate_limited"


def test_fault_500_raises_sdk_error(client):
    with pytest.raises(SDKError) as caught:
        client.chat.complete(model="fault-500", messages=USER)

    assert caught.value.status_code == 500
    assert json.loads(caught.value.body)["type"] == "internal_server_error"


def test_fault_cut_raises_during_stream(client, base_url):
    received = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for event in client.chat.stream(model="fault-cut", messages=USER):
            received.append(event.data)

    assert len(received) == 6
    assert all(event.choices[0].finish_reason is None for event in received)
    record = requests_log(base_url, limit=1)[0]
    assert record["fault"] == "cut"
    assert record["outcome"] == "cut"
    assert record["tokens_sent"] == 5


def test_fault_cut_raises_for_complete(client):
    with pytest.raises(httpx2.RemoteProtocolError):
        client.chat.complete(model="fault-cut", messages=USER)


def test_fault_hang_hits_client_timeout(client, base_url):
    started = time.perf_counter()
    with pytest.raises(httpx2.TimeoutException):
        client.chat.stream(model="fault-hang", messages=USER, timeout_ms=300)
    elapsed = time.perf_counter() - started

    assert 0.3 <= elapsed < 5
    record = _wait_for_record(base_url, lambda r: r["model"] == "fault-hang" and r["finished_at"] is not None)
    assert record["fault"] == "hang"
    assert record["outcome"] == "client_disconnected"
    assert record["status"] is None


def test_fault_hang_ends_after_hang_s(client):
    events, times, _ = stream_contents(client, model="fault-short-hang", messages=USER)

    assert times[0] >= 0.3
    assert len(events) == 13
    assert events[-1].choices[0].finish_reason == "stop"


def _wait_for_record(base_url, predicate, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        matches = [record for record in requests_log(base_url, limit=20) if predicate(record)]
        if matches:
            return matches[-1]
        time.sleep(0.05)
    raise AssertionError("no matching request record within the timeout")


def test_rpm_limit_rejects_fourth_request(client, base_url):
    for _ in range(3):
        client.chat.complete(model="limited", messages=USER)
    with pytest.raises(SDKError) as caught:
        client.chat.complete(model="limited", messages=USER)

    assert caught.value.status_code == 429
    retry_after = int(caught.value.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert requests_log(base_url, limit=1)[0]["fault"] == "rpm_limit"


@pytest.mark.parametrize("mode", JUDGE_MODES)
def test_judge_single_mode_output_shape(client, mode):
    text, finish_reason = judge(client, f"judge-{mode}", single_prompt("An answer to grade."))

    expected_finish = "length" if mode == "truncated" else "stop"
    assert finish_reason == expected_finish
    if mode == "refusal":
        assert text == REFUSAL_TEXT
        return
    if mode == "truncated":
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        assert text.startswith('{"clarity": ')
        return
    if mode == "fenced":
        assert text.startswith("```json\n")
        assert text.endswith("\n```")
        payload = json.loads(text[len("```json\n") : -len("\n```")])
    elif mode == "prose":
        assert not text.startswith("{")
        assert not text.endswith("}")
        payload = json.loads(text[text.index("{") : text.rindex("}") + 1])
    else:
        payload = json.loads(text)

    scores = {name: payload[name] for name in CRITERIA if name in payload}
    assert isinstance(payload["feedback"], str)
    if mode == "strings":
        assert all(isinstance(value, str) and value.isdigit() for value in scores.values())
        return
    if mode == "missing_criterion":
        assert set(payload) == set(CRITERIA) - {"style_match"} | {"feedback"}
    elif mode == "extra_criterion":
        assert set(payload) == set(CRITERIA) | {"feedback", "creativity"}
        assert payload["creativity"] == 7
    elif mode == "out_of_range":
        assert payload["accuracy"] == 11
        del scores["accuracy"]
    else:
        assert set(payload) == set(CRITERIA) | {"feedback"}
    assert all(isinstance(value, int) and 0 <= value <= 10 for value in scores.values())


def test_render_truncated_is_prefix_of_valid():
    scores = dict.fromkeys(CRITERIA, 7)
    valid = render_single("valid", scores)
    truncated = render_single("truncated", scores)

    assert truncated.finish_reason == "length"
    assert truncated.text == valid.text[: int(len(valid.text) * 0.6)]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("first_position", ("A", "A")), ("second_position", ("B", "B"))],
)
def test_judge_pairwise_position_bias(client, mode, expected):
    good = answer_from(client, "good", 1)
    bad = answer_from(client, "bad", 1)

    forward, _ = judge(client, f"judge-{mode}", pairwise_prompt(good, bad))
    backward, _ = judge(client, f"judge-{mode}", pairwise_prompt(bad, good))

    assert (json.loads(forward)["winner"], json.loads(backward)["winner"]) == expected


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("valid", lambda p: set(p) == {"winner", "reason"} and p["winner"] in {"A", "B", "tie"}),
        ("out_of_range", lambda p: p["winner"] == "C"),
        ("missing_criterion", lambda p: set(p) == {"reason"}),
        ("extra_criterion", lambda p: set(p) == {"winner", "reason", "confidence"}),
    ],
)
def test_judge_pairwise_mode_output_shape(client, mode, check):
    text, finish_reason = judge(client, f"judge-{mode}", pairwise_prompt("First answer.", "Second answer."))

    assert finish_reason == "stop"
    assert check(json.loads(text))


def test_judge_pairwise_prefers_better_model_in_both_orders(client):
    good = answer_from(client, "good", 2)
    bad = answer_from(client, "bad", 2)

    forward, _ = judge(client, "judge-valid", pairwise_prompt(good, bad))
    backward, _ = judge(client, "judge-valid", pairwise_prompt(bad, good))

    assert json.loads(forward)["winner"] == "A"
    assert json.loads(backward)["winner"] == "B"


def test_judge_same_answer_same_scores(client):
    answer = answer_from(client, "fast", 5)

    first, _ = judge(client, "judge-valid", single_prompt(answer))
    second, _ = judge(client, "judge-valid", single_prompt(f"  {answer}\n\n"))

    assert json.loads(first) == json.loads(second)


def test_judge_scores_follow_model_quality(client):
    def mean_score(model):
        scores = []
        for seed in range(4):
            text, _ = judge(client, "judge-valid", single_prompt(answer_from(client, model, seed)))
            scores.extend(json.loads(text)[name] for name in CRITERIA)
        return sum(scores) / len(scores)

    good, bad = mean_score("good"), mean_score("bad")
    assert good >= 8
    assert bad <= 4


def test_judge_length_bias_favours_long_answers(client):
    short = answer_from(client, "steady", 1)
    long = answer_from(client, "steady-long", 1)

    def scores(judge_model, answer):
        payload = json.loads(judge(client, judge_model, single_prompt(answer))[0])
        return [payload[name] for name in CRITERIA]

    # Both models have quality 6; the bias adds 3 points per 100 words (10 and 110 words).
    assert scores("judge-valid", long) == [6] * 5
    assert scores("judge-length", short) == [6] * 5
    assert scores("judge-length", long) == [9] * 5


def test_judge_retry_uses_retry_mode(client, base_url):
    prompt = single_prompt("An answer.")
    first, _ = judge(client, "judge-retry", prompt)
    retry_messages = prompt + [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Reply with the JSON object only."},
    ]
    second, _ = judge(client, "judge-retry", retry_messages)

    assert first == REFUSAL_TEXT
    assert set(json.loads(second)) == set(CRITERIA) | {"feedback"}
    assert requests_log(base_url, limit=1)[0]["kind"] == "judge_single"


def test_judge_streamed_output_matches_complete(client, base_url):
    messages = pairwise_prompt("One answer.", "Another answer.")
    complete_text, _ = judge(client, "judge-valid", messages)
    events, _, headers = stream_contents(
        client, model="judge-valid", messages=messages, response_format={"type": "json_object"}
    )

    streamed = "".join(event.choices[0].delta.content for event in events)
    assert streamed == complete_text
    assert int(headers["x-simulator-output-tokens"]) == len(events) - 1
    assert requests_log(base_url, limit=1)[0]["kind"] == "judge_pairwise"


def test_config_put_rejects_invalid_field():
    with run_simulator(CONFIG) as url:
        bad = {"models": {"m": {"faults": {"rate_500": 1.5}}}}
        response = httpx.put(f"{url}/v1/simulator/config", json=bad)
        unchanged = httpx.get(f"{url}/v1/simulator/config").json()
        replaced = httpx.put(f"{url}/v1/simulator/config", json={"seed": 1, "models": {"only": FAST}})
        listed = Mistral(api_key="sim", server_url=url).models.list()

    assert response.status_code == 422
    assert response.json()["field"] == "models.m.faults.rate_500"
    assert "models.m.faults.rate_500" in response.json()["message"]
    assert set(unchanged["models"]) == set(CONFIG["models"])
    assert replaced.status_code == 200
    assert replaced.json()["models"]["only"]["ttft_ms"] == 40
    assert [card.id for card in listed.data] == ["only"]


def test_config_get_round_trips_through_parse(base_url):
    exported = httpx.get(f"{base_url}/v1/simulator/config").json()

    assert parse_config(exported).to_json() == exported
    assert exported["models"]["normal-timing"]["ttft_ms"]["distribution"] == "normal"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"seed": -1}, "seed"),
        ({"models": {"m": {"ttft_ms": "fast"}}}, "models.m.ttft_ms"),
        ({"models": {"m": {"itl_ms": {"distribution": "poisson"}}}}, "models.m.itl_ms.distribution"),
        ({"models": {"m": {"itl_ms": {"distribution": "normal", "mean": 5}}}}, "models.m.itl_ms.sd"),
        ({"models": {"m": {"output_tokens": {"distribution": "uniform", "min": 9, "max": 3}}}}, "models.m.output_tokens.max"),
        ({"models": {"m": {"quality": 11}}}, "models.m.quality"),
        ({"models": {"m": {"include_usage": 1}}}, "models.m.include_usage"),
        ({"models": {"m": {"rpm_limit": 0}}}, "models.m.rpm_limit"),
        ({"models": {"m": {"judge": {"mode": "angry"}}}}, "models.m.judge.mode"),
        ({"models": {"m": {"faults": {"rate_429": 0.6, "rate_500": 0.6}}}}, "models.m.faults"),
        ({"models": {"m": {"ttft": 5}}}, "models.m.ttft"),
        ({"default": []}, "default"),
    ],
)
def test_parse_config_names_invalid_field(config, field):
    with pytest.raises(ConfigError) as caught:
        parse_config(config)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_builtin_config_profiles_are_fast_and_ordered():
    with run_simulator() as url:
        exported = httpx.get(f"{url}/v1/simulator/config").json()

    expected = {"mistral-small-latest", "mistral-medium-latest", "mistral-large-latest", "open-mistral-nemo", "ministral-8b-latest"}
    assert set(exported["models"]) == expected
    assert "default" in exported
    for profile in exported["models"].values():
        assert profile["ttft_ms"]["min"] >= 150
        assert profile["ttft_ms"]["max"] <= 600
        assert profile["itl_ms"]["min"] >= 2
        assert profile["itl_ms"]["max"] <= 10
        assert profile["output_tokens"]["min"] >= 40
        assert profile["output_tokens"]["max"] <= 150
    quality = {name: profile["quality"] for name, profile in exported["models"].items()}
    assert quality["mistral-large-latest"] > quality["mistral-medium-latest"] > quality["mistral-small-latest"]
    assert quality["mistral-small-latest"] > quality["open-mistral-nemo"] > quality["ministral-8b-latest"]


def test_reset_clears_log_and_stats():
    with run_simulator(CONFIG) as url:
        client = Mistral(api_key="sim", server_url=url)
        client.chat.complete(model="fast", messages=USER)
        before = httpx.get(f"{url}/v1/simulator/stats").json()
        httpx.post(f"{url}/v1/simulator/reset")
        after = httpx.get(f"{url}/v1/simulator/stats").json()
        log = requests_log(url)

    assert before["total_requests"] == 1
    assert before["by_status"] == {"200": 1}
    assert after == {"total_requests": 0, "by_status": {}, "max_concurrent": 0, "in_flight": 0, "client_disconnects": 0}
    assert log == []


def test_concurrent_streams_all_in_flight_together():
    config = {"models": {"slow-start": {"ttft_ms": 2500, "itl_ms": 5, "output_tokens": 5}}}
    count = 200

    async def one_stream(client):
        tokens = 0
        stream = await client.chat.stream_async(model="slow-start", messages=USER)
        async for event in stream:
            tokens += bool(event.data.choices[0].delta.content)
        return tokens

    async def run_all(url):
        async_http = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=None), timeout=30)
        client = Mistral(api_key="sim", server_url=url, async_client=async_http)
        try:
            return await asyncio.gather(*(one_stream(client) for _ in range(count)))
        finally:
            await async_http.aclose()

    with run_simulator(config) as url:
        token_counts = asyncio.run(run_all(url))
        stats = httpx.get(f"{url}/v1/simulator/stats").json()

    assert token_counts == [5] * count
    assert stats["total_requests"] == count
    assert stats["by_status"] == {"200": count}
    assert stats["max_concurrent"] == count
    assert stats["in_flight"] == 0


def test_quality_registry_evicts_oldest():
    registry = QualityRegistry(max_entries=2)
    for index, text in enumerate(["one", "two", "three"]):
        registry.register(f"  {text} ", AnswerQuality(float(index), 0.5, "m"))

    assert len(registry) == 2
    assert registry.lookup("three").quality == 2.0
    assert registry.lookup("one").model is None
    assert registry.lookup("one") == registry.lookup(" one\n")


def test_main_rejects_invalid_config_file(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"models": {"m": {"itl_ms": -1}}}))

    assert server.main(["--config", str(path), "--port", "0"]) == 2
    assert "models.m.itl_ms" in capsys.readouterr().err
