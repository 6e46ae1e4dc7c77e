"""POST /v1/chat/completions: validate, apply the rpm limit and faults, plan, then send."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from simulator import judge
from simulator.chat_request import ChatRequest, RequestInvalid, parse_chat_request
from simulator.generation import Plan, count_prompt_tokens, plan_completion, plan_fixed_text, request_rng, stable_seed
from simulator.profiles import ModelProfile
from simulator.sending import Reply, cut_json_body, sleep_or_disconnect, stream_body
from simulator.state import RequestRecord, SimulatorState
from simulator.wire import error_body, format_number

logger = logging.getLogger("simulator")


class RequestTracking:
    """Keeps the in-flight count and the request record right, however the request ends."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.record: RequestRecord | None = None
        state.stats.begin()

    def finish(self, status: int | None) -> None:
        """Close the record and the statistics; status is None when no response was started."""
        disconnected = status is None
        if self.record is not None:
            self.record.status = status
            self.record.finished_at = time.time()
            if self.record.outcome == "in_progress":
                self.record.outcome = "client_disconnected"
            disconnected = self.record.outcome == "client_disconnected"
        self.state.stats.end(status, disconnected)


class TrackedResponse:
    """ASGI wrapper that calls RequestTracking.finish once the response is sent or abandoned."""

    def __init__(self, response: Any, tracking: RequestTracking) -> None:
        self.response = response
        self.tracking = tracking

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
            self.tracking.finish(sent_status)


class NoResponse:
    """Sends nothing, for a client that disconnected before the response started."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


async def chat_completions(request: Request) -> TrackedResponse:
    tracking = RequestTracking(request.app.state.simulator)
    try:
        response = await _respond(request, tracking)
    except BaseException:
        tracking.finish(None)
        raise
    return TrackedResponse(response, tracking)


async def _respond(request: Request, tracking: RequestTracking) -> Any:
    state = tracking.state
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
    tracking.record = record
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
        if await sleep_or_disconnect(request.receive, profile.faults.hang_s):
            return NoResponse()
        # Timing starts again after the hang, as from a server that stalled before it began.
        arrived = loop.time()

    plan = _plan(state, chat, profile, task, record)
    reply = Reply(request.state.request_id, chat.model, int(time.time()), plan, profile.include_usage, arrived)
    headers = {
        "x-simulator-ttft-ms": format_number(plan.ttft_ms),
        "x-simulator-itl-ms": format_number(plan.itl_ms),
        "x-simulator-output-tokens": str(plan.output_tokens),
    }
    cut = record.fault == "cut"
    if chat.stream:
        return StreamingResponse(stream_body(reply, record, cut), media_type="text/event-stream", headers=headers)
    if cut:
        return StreamingResponse(cut_json_body(reply, record), media_type="application/json", headers=headers)

    if await sleep_or_disconnect(request.receive, reply.token_deadline(plan.output_tokens - 1) - loop.time()):
        return NoResponse()
    record.tokens_sent = plan.output_tokens
    record.outcome = "completed"
    return JSONResponse(reply.full_response(), headers=headers)


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
            logger.debug("simulator.fault_injected fault=%s model=%s request_id=%s", fault, model, record.request_id)
            break

    if record.fault == "429":
        # NOTE: HTTP allows whole seconds only. A fractional retry_after_s is sent as given, so
        # tests can use short waits with clients that parse the header as a float.
        return _rate_limited(format_number(faults.retry_after_s))
    if record.fault == "500":
        body = error_body("Internal server error (injected by the simulator)", "internal_server_error")
        return JSONResponse(body, status_code=500)
    return None


def _rate_limited(retry_after: str) -> Response:
    body = error_body("Requests rate limit exceeded", "rate_limited", code="1300")
    return JSONResponse(body, status_code=429, headers={"Retry-After": retry_after})


def _plan(
    state: SimulatorState,
    chat: ChatRequest,
    profile: ModelProfile,
    task: judge.JudgeTask | None,
    record: RequestRecord,
) -> Plan:
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
