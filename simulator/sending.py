"""Response bodies sent on the injected schedule: SSE streams and the "cut" fault.

Timing is measured from the request's arrival: the role chunk goes out at once, the first
content chunk at ttft_ms and every later one itl_ms after the previous one. Sleeps wait for
absolute deadlines on the event loop clock, so delays do not add up over a long stream.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import AsyncIterator

from starlette.types import Receive

from simulator.generation import Plan
from simulator.state import RequestRecord
from simulator.wire import SSE_DONE, completion_response, sse_event, stream_chunk, usage_block


class SimulatedStreamCut(Exception):
    """Raised inside a response body so that the server drops the connection (the "cut" fault)."""


@dataclass(frozen=True)
class Reply:
    """Inputs of a response body: ids, the plan and the event-loop time of the request's arrival."""

    completion_id: str
    model: str
    created: int
    plan: Plan
    include_usage: bool
    arrived: float

    def token_deadline(self, index: int) -> float:
        """Event-loop time at which content token ``index`` (0-based) is due."""
        return self.arrived + (self.plan.ttft_ms + max(index, 0) * self.plan.itl_ms) / 1000

    def full_response(self) -> dict:
        plan = self.plan
        usage = usage_block(plan.prompt_tokens, plan.output_tokens)
        return completion_response(self.completion_id, self.model, self.created, plan.text, plan.finish_reason, usage)


async def stream_body(reply: Reply, record: RequestRecord, cut: bool) -> AsyncIterator[bytes]:
    """Yield the SSE stream: the role chunk, one chunk per token on schedule, then [DONE].

    With ``cut`` the stream stops after half the tokens and the connection is dropped,
    without a finish_reason or [DONE]. When a busy server falls behind, the tokens already
    due go out in one write, each still its own SSE event. record.max_send_lag_ms keeps the
    worst lateness.
    """
    loop = asyncio.get_running_loop()
    plan = reply.plan
    role_delta = {"role": "assistant", "content": ""}
    yield sse_event(stream_chunk(reply.completion_id, reply.model, reply.created, role_delta))

    to_send = plan.output_tokens // 2 if cut else plan.output_tokens
    index = 0
    while index < to_send:
        await sleep_until(reply.token_deadline(index))
        now = loop.time()
        record.max_send_lag_ms = max(record.max_send_lag_ms, (now - reply.token_deadline(index)) * 1000)
        events = []
        while index < to_send and reply.token_deadline(index) <= now:
            events.append(_token_event(reply, index))
            index += 1
        yield b"".join(events)
        record.tokens_sent = index

    if cut:
        record.outcome = "cut"
        raise SimulatedStreamCut(f"stream cut after {to_send} of {plan.output_tokens} tokens")
    record.outcome = "completed"
    yield SSE_DONE


def _token_event(reply: Reply, index: int) -> bytes:
    """Encode content token ``index``; the last one carries finish_reason and usage."""
    plan = reply.plan
    is_last = index == plan.output_tokens - 1
    usage = usage_block(plan.prompt_tokens, plan.output_tokens) if is_last and reply.include_usage else None
    finish_reason = plan.finish_reason if is_last else None
    delta = {"content": plan.tokens[index]}
    return sse_event(stream_chunk(reply.completion_id, reply.model, reply.created, delta, finish_reason, usage))


async def cut_json_body(reply: Reply, record: RequestRecord) -> AsyncIterator[bytes]:
    """Send the first half of a non-streamed response body, then drop the connection."""
    await sleep_until(reply.token_deadline(reply.plan.output_tokens // 2))
    encoded = json.dumps(reply.full_response()).encode()
    yield encoded[: len(encoded) // 2]
    record.outcome = "cut"
    raise SimulatedStreamCut("response body cut in the middle")


async def sleep_until(deadline: float) -> None:
    """Sleep until the event-loop time ``deadline``, never waking before it."""
    loop = asyncio.get_running_loop()
    while (delay := deadline - loop.time()) > 0:
        await asyncio.sleep(delay)


async def sleep_or_disconnect(receive: Receive, delay_s: float) -> bool:
    """Sleep for delay_s seconds; return True early if the client disconnects meanwhile.

    Call it only after the request body was read, because it consumes ASGI receive messages.
    """
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
