"""POST /v1/chat/completions: validate, apply rate limit and faults, plan, then send.

Timing is measured from the moment the handler starts: the role chunk goes out at once, the
first content chunk at ttft_ms and every later one itl_ms after the previous one. Sleeps use
absolute deadlines on the event loop clock, so delays do not add up over a long stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from simulator import judge
from simulator.generation import (
    Plan,
    count_prompt_tokens,
    plan_completion,
    plan_fixed_text,
    request_rng,
    stable_seed,
)
from simulator.profiles import ModelProfile
from simulator.state import RequestRecord, SimulatorState
from simulator.wire import (
    SSE_DONE,
    completion_response,
    error_body,
    format_number,
    sse_event,
    stream_chunk,
    usage_block,
    validation_error_body,
)

logger = logging.getLogger("simulator")

MESSAGE_ROLES = ("system", "user", "assistant", "tool")


class SimulatedStreamCut(Exception):
    """Raised inside a response body so that the server drops the connection (the "cut" fault)."""


class RequestInvalid(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None
    random_seed: int | None
    is_judge: bool


async def chat_completions(request: Request) -> Any:
    state: SimulatorState = request.app.state.simulator
    state.stats.begin()
    record_holder: list[RequestRecord] = []
    try:
        response = await _respond(request, state, record_holder)
    except BaseException:
        if record_holder:
            _finish_record(record_holder[0], None)
        state.stats.end(None, disconnected=False)
        raise
    return TrackedResponse(response, state, record_holder[0] if record_holder else None)


class TrackedResponse:
    """ASGI wrapper that closes the request record and the in-flight count however sending ends."""

    def __init__(self, response: Any, state: SimulatorState, record: RequestRecord | None) -> None:
        self.response = response
        self.state = state
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent_status: int | None = None

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal sent_status
            if message["type"] == "http.response.start":
                sent_status = message["status"]
            await send(message)

        try:
            await self.response(scope, receive, tracking_send)
        finally:
            disconnected = sent_status is None
            if self.record is not None:
                _finish_record(self.record, sent_status)
                disconnected = self.record.outcome == "client_disconnected"
            self.state.stats.end(sent_status, disconnected)


class NoResponse:
    """Sends nothing, for a client that disconnected before the response started."""

    status_code = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def _finish_record(record: RequestRecord, status: int | None) -> None:
    record.status = status
    record.finished_at = time.time()
    if record.outcome == "in_progress":
        record.outcome = "client_disconnected"


async def _respond(request: Request, state: SimulatorState, record_holder: list[RequestRecord]) -> Any:
    loop = asyncio.get_running_loop()
    arrived = loop.time()
    try:
        chat = parse_chat_request(await request.body())
    except RequestInvalid as invalid:
        return invalid.response

    record = RequestRecord(
        request_id=request.state.request_id,
        model=chat.model,
        kind="completion",
        stream=chat.stream,
        received_at=time.time(),
        random_seed=chat.random_seed,
        prompt_tokens=count_prompt_tokens(chat.messages),
    )
    record_holder.append(record)
    state.log.add(record)

    profile = state.config.profile_for(chat.model)
    if profile is None:
        record.outcome = "error"
        body = error_body(f"Invalid model: {chat.model}", "invalid_model", code="1500")
        return JSONResponse(body, status_code=400)

    task = judge.parse_judge_task(chat.messages) if chat.is_judge else None
    record.kind = task.kind if task else "completion"

    rejection = _reject_by_limit_or_fault(state, chat.model, profile, record, loop.time())
    if rejection is not None:
        record.outcome = "error"
        return rejection

    if record.fault == "hang":
        logger.debug("simulator.fault_injected", extra={"fault": "hang", "request_id": record.request_id})
        if await sleep_or_disconnect(request.receive, profile.faults.hang_s):
            return NoResponse()
        # Timing starts again after the hang, as from a server that stalled before it began.
        arrived = loop.time()

    plan = _plan(state, chat, profile, task, record)
    headers = {
        "x-simulator-ttft-ms": format_number(plan.ttft_ms),
        "x-simulator-itl-ms": format_number(plan.itl_ms),
        "x-simulator-output-tokens": str(plan.output_tokens),
    }
    reply = _Reply(request.state.request_id, chat.model, int(time.time()), plan, profile.include_usage, arrived)
    cut = record.fault == "cut"
    if chat.stream:
        return StreamingResponse(stream_body(reply, record, cut), media_type="text/event-stream", headers=headers)
    if cut:
        return StreamingResponse(cut_json_body(reply, record), media_type="application/json", headers=headers)

    if await sleep_or_disconnect(request.receive, reply.token_deadline(plan.output_tokens - 1) - loop.time()):
        return NoResponse()
    record.tokens_sent = plan.output_tokens
    record.outcome = "completed"
    usage = usage_block(plan.prompt_tokens, plan.output_tokens)
    body = completion_response(reply.completion_id, reply.model, reply.created, plan.text, plan.finish_reason, usage)
    return JSONResponse(body, headers=headers)


def parse_chat_request(raw_body: bytes) -> ChatRequest:
    """Parse and validate the request body; raise RequestInvalid with a Mistral-style error."""
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestInvalid(JSONResponse(error_body(f"Invalid JSON body: {exc}", "invalid_request_error"), 400))
    if not isinstance(body, dict):
        raise _invalid([], "The request body must be a JSON object", "dict_type")

    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid(["body", "model"], "Field required: a non-empty model name", "missing")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid(["body", "messages"], "Field required: a non-empty list of messages", "missing")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            roles = ", ".join(MESSAGE_ROLES)
            raise _invalid(["body", "messages", str(index), "role"], f"Role must be one of {roles}", "literal_error")

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid(["body", "stream"], "Input should be a valid boolean", "bool_type")
    max_tokens = _optional_int(body, "max_tokens", minimum=1)
    random_seed = _optional_int(body, "random_seed", minimum=0)
    return ChatRequest(model, messages, stream, max_tokens, random_seed, judge.is_judge_request(body))


def _optional_int(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _invalid(["body", name], f"Input should be an integer >= {minimum}", "int_type")
    return value


def _invalid(location: list[str], message: str, error_type: str) -> RequestInvalid:
    return RequestInvalid(JSONResponse(validation_error_body(location, message, error_type), status_code=422))


def _reject_by_limit_or_fault(
    state: SimulatorState, model: str, profile: ModelProfile, record: RequestRecord, now: float
) -> Response | None:
    """Return a 429 or 500 response if the rpm limit or a drawn fault rejects the request.

    Sets record.fault to "rpm_limit", "429", "500", "hang" or "cut". Faults come from the
    model's own generator even when the request sets random_seed, so a retried request can
    succeed.
    """
    if profile.rpm_limit is not None:
        wait_s = state.limiter.acquire(model, profile.rpm_limit, now)
        if wait_s is not None:
            record.fault = "rpm_limit"
            return _rate_limited(str(math.ceil(wait_s)))

    faults = profile.faults
    draw = float(state.generator(model, "faults").random())
    thresholds = (
        ("429", faults.rate_429),
        ("500", faults.rate_500),
        ("hang", faults.rate_hang),
        ("cut", faults.rate_cut),
    )
    cumulative = 0.0
    for fault, rate in thresholds:
        cumulative += rate
        if draw < cumulative:
            record.fault = fault
            break
    if record.fault == "429":
        # NOTE: HTTP allows whole seconds only; a fractional retry_after_s is sent as given so
        # that tests can use short waits, and clients that parse it as a float accept it.
        return _rate_limited(format_number(faults.retry_after_s))
    if record.fault == "500":
        body = error_body("Internal server error (injected by the simulator)", "internal_server_error")
        return JSONResponse(body, status_code=500)
    return None


def _rate_limited(retry_after: str) -> Response:
    body = error_body("Requests rate limit exceeded", "rate_limited", code="1300")
    return JSONResponse(body, status_code=429, headers={"Retry-After": retry_after})


def _plan(state: SimulatorState, chat: ChatRequest, profile: ModelProfile, task: judge.JudgeTask | None, record: RequestRecord) -> Plan:
    """Draw the plan, register a completion's text for the judge, and copy the plan to the record."""
    if chat.random_seed is not None:
        rng = request_rng(state.config.seed, chat.model, chat.messages, chat.random_seed)
    else:
        rng = state.generator(chat.model, "plan")
    prompt_tokens = record.prompt_tokens or 1

    if task is None:
        plan = plan_completion(profile, rng, chat.max_tokens, prompt_tokens)
        quality = judge.AnswerQuality(profile.quality, profile.quality_sd, chat.model)
        state.registry.register(plan.text, quality)
    else:
        output = _judge_output(state, chat.model, profile, task)
        plan = plan_fixed_text(profile, rng, output.text, output.finish_reason, chat.max_tokens, prompt_tokens)

    record.ttft_ms = plan.ttft_ms
    record.itl_ms = plan.itl_ms
    record.output_tokens = plan.output_tokens
    record.finish_reason = plan.finish_reason
    return plan


def _judge_output(state: SimulatorState, model: str, profile: ModelProfile, task: judge.JudgeTask) -> judge.JudgeOutput:
    mode = profile.judge.retry_mode if task.is_retry else profile.judge.mode
    # The judge model is part of the seed, so two judges disagree but one judge is repeatable.
    seed = stable_seed(state.config.seed, model, "judge")
    qualities = tuple(state.registry.lookup(answer) for answer in task.answers)
    if task.kind == "judge_pairwise":
        winner = judge.pick_winner(task.answers, qualities, profile.judge.length_bias, seed)
        return judge.render_pairwise(mode, winner)
    scores = judge.score_answer(task.answers[0], qualities[0], profile.judge.length_bias, seed)
    return judge.render_single(mode, scores)


@dataclass(frozen=True)
class _Reply:
    """What a response body needs besides the record: ids, the plan and the start time."""

    completion_id: str
    model: str
    created: int
    plan: Plan
    include_usage: bool
    arrived: float

    def token_deadline(self, index: int) -> float:
        """Event-loop time at which content token ``index`` (0-based) is due."""
        return self.arrived + (self.plan.ttft_ms + max(index, 0) * self.plan.itl_ms) / 1000


async def stream_body(reply: _Reply, record: RequestRecord, cut: bool) -> AsyncIterator[bytes]:
    plan = reply.plan
    yield sse_event(stream_chunk(reply.completion_id, reply.model, reply.created, {"role": "assistant", "content": ""}))
    to_send = plan.output_tokens // 2 if cut else plan.output_tokens
    for index in range(to_send):
        await sleep_until(reply.token_deadline(index))
        is_last = index == plan.output_tokens - 1
        usage = usage_block(plan.prompt_tokens, plan.output_tokens) if is_last and reply.include_usage else None
        finish_reason = plan.finish_reason if is_last else None
        delta = {"content": plan.tokens[index]}
        yield sse_event(stream_chunk(reply.completion_id, reply.model, reply.created, delta, finish_reason, usage))
        record.tokens_sent = index + 1
    if cut:
        record.outcome = "cut"
        raise SimulatedStreamCut(f"stream cut after {to_send} of {plan.output_tokens} tokens")
    record.outcome = "completed"
    yield SSE_DONE


async def cut_json_body(reply: _Reply, record: RequestRecord) -> AsyncIterator[bytes]:
    """Send the first half of a non-streamed response body, then drop the connection."""
    plan = reply.plan
    await sleep_until(reply.token_deadline(plan.output_tokens // 2))
    usage = usage_block(plan.prompt_tokens, plan.output_tokens)
    body = completion_response(reply.completion_id, reply.model, reply.created, plan.text, plan.finish_reason, usage)
    encoded = json.dumps(body).encode()
    yield encoded[: len(encoded) // 2]
    record.outcome = "cut"
    raise SimulatedStreamCut("response body cut in the middle")


async def sleep_until(deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while (delay := deadline - loop.time()) > 0:
        await asyncio.sleep(delay)


async def sleep_or_disconnect(receive: Receive, delay_s: float) -> bool:
    """Sleep for delay_s seconds; return True early if the client disconnects meanwhile."""
    if delay_s <= 0:
        return False

    async def wait_for_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(wait_for_disconnect())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=delay_s)
        return watcher in done
    finally:
        watcher.cancel()
