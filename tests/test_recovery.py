"""Jobs whose tasks the broker lost are found and finished: nothing sent twice while queued."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from kombu import Connection
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError

from api import create_app
from models.jobs import Job
from models.runs import Run
from tests.conftest import wait_for_job
from workers.broker_queue import job_ids_with_tasks, remove_job_tasks, restore_unacked
from workers.recovery import RecoveryPlan, plan_recovery
from workers.job_completion import finalize_if_complete
from workers.tasks import (
    FAN_OUT_CHECK_EVERY,
    _recover_one,
    _send_again,
    recover_lost_tasks,
    run_task,
    start_job,
)

pytestmark = pytest.mark.services

MODEL = "sim-small"
PROMPTS = [{"id": f"q{index}", "prompt": f"Name {index} colours."} for index in range(3)]
REPETITIONS = 2
ALL_KEYS = sorted((item["id"], MODEL, repetition) for item in PROMPTS for repetition in range(2))


def submit_lost_job(client, monkeypatch) -> str:
    """Submit a batch whose start task is never published, as if the broker had lost it."""
    with monkeypatch.context() as patch:
        patch.setattr(start_job, "apply_async", lambda *args, **kwargs: None)
        response = client.post(
            "/evaluate/batch", json={"model": MODEL, "runs": REPETITIONS, "prompts": PROMPTS}
        )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def plan_for(settings, job_id: str, in_broker: set[str] | None = None, after_s: float = 1.0):
    """Plan recovery as if recovery_stall_s + after_s seconds had passed; keep this job's plan."""
    now = datetime.now(timezone.utc) + timedelta(seconds=settings.recovery_stall_s + after_s)
    plans = plan_recovery(settings, in_broker or set(), now=now)
    return [plan for plan in plans if str(plan.job_id) == job_id]


def run_keys(db_session, job_id: str) -> list[tuple[str, str, int]]:
    db_session.expire_all()
    rows = db_session.execute(
        select(Run.item_id, Run.model, Run.repetition).where(Run.job_id == uuid.UUID(job_id))
    )
    return sorted(tuple(row) for row in rows)


def test_lost_start_task_resends_every_run(client, celery_worker, settings, db_session, monkeypatch):
    job_id = submit_lost_job(client, monkeypatch)
    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "queued"

    [plan] = plan_for(settings, job_id)
    assert sorted(plan.run_keys) == ALL_KEYS
    assert plan.finalize is False

    assert _send_again(settings, plan) == len(ALL_KEYS)
    document = wait_for_job(client, job_id)
    assert document["status"] == "succeeded"
    assert document["progress"] == {"done": 6, "failed": 0, "total": 6}
    assert run_keys(db_session, job_id) == ALL_KEYS


def test_partly_written_job_resends_only_missing(client, celery_worker, settings, db_session):
    response = client.post(
        "/evaluate/batch", json={"model": MODEL, "runs": REPETITIONS, "prompts": PROMPTS}
    )
    job_id = response.get_json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "succeeded"

    # Two runs disappear, as if their tasks had been lost before writing.
    lost = [("q0", MODEL, 1), ("q2", MODEL, 0)]
    reopen_job(db_session, job_id, delete_keys=lost)

    [plan] = plan_for(settings, job_id)
    assert sorted(plan.run_keys) == sorted(lost)
    assert plan.finalize is False

    assert _send_again(settings, plan) == 2
    document = wait_for_job(client, job_id)
    assert document["status"] == "succeeded"
    assert document["progress"]["done"] == 6
    assert run_keys(db_session, job_id) == ALL_KEYS


def test_job_with_every_run_written_is_finalized(client, celery_worker, settings, db_session):
    response = client.post(
        "/evaluate/batch", json={"model": MODEL, "runs": REPETITIONS, "prompts": PROMPTS}
    )
    job_id = response.get_json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    reopen_job(db_session, job_id, delete_keys=[])

    [plan] = plan_for(settings, job_id)
    assert plan.run_keys == ()
    assert plan.finalize is True

    assert _send_again(settings, plan) == 0
    document = client.get(f"/jobs/{job_id}").get_json()
    assert document["status"] == "succeeded"
    assert document["result"] is not None
    assert document["result"]["summary"][MODEL]["runs"]["succeeded"] == 6


def test_job_with_task_in_broker_is_not_recovered(client, settings, monkeypatch):
    job_id = submit_lost_job(client, monkeypatch)

    assert plan_for(settings, job_id, in_broker={job_id}) == []
    assert len(plan_for(settings, job_id, in_broker={str(uuid.uuid4())})) == 1
    cancel(client, job_id)


def test_recently_active_job_is_not_recovered(client, settings, monkeypatch):
    job_id = submit_lost_job(client, monkeypatch)

    assert plan_for(settings, job_id, after_s=-5.0) == []
    assert len(plan_for(settings, job_id, after_s=1.0)) == 1
    cancel(client, job_id)


def test_cancelled_job_is_not_recovered(client, settings, monkeypatch):
    job_id = submit_lost_job(client, monkeypatch)
    cancel(client, job_id)

    assert plan_for(settings, job_id) == []


def test_recovery_skips_while_another_holds_lock(settings):
    client = redis.Redis.from_url(settings.redis_url)
    lock = client.lock(f"mistralmeter:recovery:{settings.queue_name}", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert recover_lost_tasks() == 0
    finally:
        lock.release()


def test_broker_scan_reads_queued_and_unacked(settings):
    queue = f"recovery-scan-{uuid.uuid4().hex[:8]}"
    delivered, queued_run, queued_start = (str(uuid.uuid4()) for _ in range(3))
    client = redis.Redis.from_url(settings.redis_url)

    run_task.apply_async(kwargs=run_kwargs(delivered), queue=queue)
    run_task.apply_async(kwargs=run_kwargs(queued_run), queue=queue)
    start_job.apply_async(args=[queued_start], queue=queue)
    client.lpush(queue, b"not json", json.dumps({"headers": {"task": "other.app.task"}}))

    with Connection(settings.redis_url) as connection:
        consumer = connection.SimpleQueue(queue)
        try:
            # Taken without an acknowledgement, so kombu keeps it in the unacked hash.
            message = consumer.get(timeout=5)
            assert message.payload[1]["job_id"] == delivered
            assert client.llen(queue) == 4

            found = job_ids_with_tasks(client, queue)
            assert delivered in found
            assert queued_run in found
            assert queued_start in found

            message.ack()
            client.delete(queue)
            after = job_ids_with_tasks(client, queue)
            assert {delivered, queued_run, queued_start}.isdisjoint(after)
        finally:
            consumer.close()


def run_kwargs(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "item_id": "q0", "model": MODEL, "repetition": 0}


def reopen_job(db_session, job_id: str, delete_keys: list[tuple[str, str, int]]) -> None:
    """Put a finished job back to running without its result, and delete the given runs."""
    identifier = uuid.UUID(job_id)
    for item_id, model, repetition in delete_keys:
        db_session.execute(
            delete(Run).where(
                Run.job_id == identifier,
                Run.item_id == item_id,
                Run.model == model,
                Run.repetition == repetition,
            )
        )
    db_session.execute(
        update(Job)
        .where(Job.id == identifier)
        .values(status="running", result=None, finished_at=None)
    )
    db_session.commit()


def cancel(client, job_id: str) -> None:
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code in (200, 202), response.get_json()


def test_recovery_plan_is_empty_without_work():
    assert RecoveryPlan(uuid.uuid4(), run_keys=(), finalize=False).is_empty
    assert not RecoveryPlan(uuid.uuid4(), run_keys=(), finalize=True).is_empty
    assert not RecoveryPlan(uuid.uuid4(), run_keys=(("q0", MODEL, 0),), finalize=False).is_empty


def test_result_error_fails_job_with_reason(client, celery_worker, settings, db_session,
                                            monkeypatch):
    response = client.post(
        "/evaluate/batch", json={"model": MODEL, "runs": REPETITIONS, "prompts": PROMPTS}
    )
    job_id = response.get_json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    reopen_job(db_session, job_id, delete_keys=[])

    def broken_result(job, rows):
        raise ValueError("statistics exploded")

    monkeypatch.setattr("workers.job_completion.build_result", broken_result)
    assert finalize_if_complete(settings, uuid.UUID(job_id)) is True

    document = client.get(f"/jobs/{job_id}").get_json()
    assert document["status"] == "failed"
    assert document["error"] == {
        "message": "the result could not be computed: ValueError: statistics exploded"
    }
    assert document["result"] is None


def test_recovery_error_does_not_stop_others(settings, monkeypatch):
    def broken(settings, plan):
        raise ValueError("broken job")

    monkeypatch.setattr("workers.tasks._send_again", broken)
    plan = RecoveryPlan(uuid.uuid4(), run_keys=(("q0", MODEL, 0),), finalize=False)

    assert _recover_one(settings, plan) == 0


def test_recovery_raises_service_errors(settings, monkeypatch):
    def database_down(settings, plan):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr("workers.tasks._send_again", database_down)
    plan = RecoveryPlan(uuid.uuid4(), run_keys=(), finalize=True)

    with pytest.raises(OperationalError):
        _recover_one(settings, plan)


def test_remove_job_tasks_keeps_others_in_order(settings):
    queue = f"remove-tasks-{uuid.uuid4().hex[:8]}"
    cancelled, other = str(uuid.uuid4()), str(uuid.uuid4())
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for index in range(3):
            run_task.apply_async(kwargs={**run_kwargs(cancelled), "item_id": f"c{index}"},
                                 queue=queue)
            run_task.apply_async(kwargs={**run_kwargs(other), "item_id": f"o{index}"},
                                 queue=queue)

        assert remove_job_tasks(client, queue, cancelled) == 3
        assert remove_job_tasks(client, queue, cancelled) == 0

        # kombu publishes with LPUSH and consumes from the right, so the oldest is last.
        remaining = [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
        assert [message["headers"]["kwargsrepr"].count(other) for message in remaining] == [1] * 3
        assert [f"'o{index}'" in message["headers"]["kwargsrepr"]
                for index, message in enumerate(remaining)] == [True] * 3
    finally:
        client.delete(queue)


def test_cancel_removes_queued_tasks(client, settings, monkeypatch):
    job_id = submit_lost_job(client, monkeypatch)
    other_job = str(uuid.uuid4())
    queue = f"busy-{uuid.uuid4().hex[:8]}"
    broker = redis.Redis.from_url(settings.redis_url)
    # An app whose queue no worker of this test consumes, as if every worker were busy.
    busy_client = create_app(dataclasses.replace(settings, queue_name=queue)).test_client()
    try:
        for item in PROMPTS:
            run_task.apply_async(kwargs={**run_kwargs(job_id), "item_id": item["id"]}, queue=queue)
        run_task.apply_async(kwargs=run_kwargs(other_job), queue=queue)
        assert broker.llen(queue) == 4

        response = busy_client.post(f"/jobs/{job_id}/cancel")

        assert response.status_code == 200
        assert response.get_json()["status"] == "cancelled"
        assert broker.llen(queue) == 1
        assert other_job in broker.lindex(queue, 0).decode()
    finally:
        broker.delete(queue)


def test_cancel_stops_fan_out(client, settings, monkeypatch):
    prompts = [{"id": f"f{index}", "prompt": "Name a colour."} for index in range(400)]
    with monkeypatch.context() as patch:
        patch.setattr(start_job, "apply_async", lambda *args, **kwargs: None)
        response = client.post("/evaluate/batch", json={"model": MODEL, "runs": 2,
                                                        "prompts": prompts})
    job_id = response.get_json()["job_id"]
    sent: list[dict] = []

    def send(*, kwargs):
        sent.append(kwargs)
        if len(sent) == 10:
            assert client.post(f"/jobs/{job_id}/cancel").status_code == 200

    monkeypatch.setattr(run_task, "apply_async", send)
    assert start_job.run(job_id) == FAN_OUT_CHECK_EVERY

    assert len(sent) == FAN_OUT_CHECK_EVERY
    assert {message["job_id"] for message in sent} == {job_id}


def test_restore_unacked_returns_tasks_of_queue(settings):
    client = redis.Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + "/13")
    queue, other_queue = f"restore-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    client.delete("unacked", "unacked_index")
    try:
        # Entries as kombu writes them on delivery: [message, exchange, routing_key].
        message = {"body": "e30=", "headers": {"task": "mistralmeter.run", "id": "t1"},
                   "properties": {"body_encoding": "base64", "delivery_info": {}},
                   "content-type": "application/json", "content-encoding": "utf-8"}
        client.hset("unacked", "tag-1", json.dumps([message, "", queue]))
        client.zadd("unacked_index", {"tag-1": 1.0})
        client.hset("unacked", "tag-2", json.dumps([message, "", other_queue]))
        client.zadd("unacked_index", {"tag-2": 1.0})

        assert restore_unacked(client, queue) == 1

        [restored] = client.lrange(queue, 0, -1)
        restored = json.loads(restored)
        assert restored["headers"] == message["headers"]
        assert restored["properties"]["delivery_info"]["redelivered"] is True
        assert client.hkeys("unacked") == [b"tag-2"]
        assert client.zrange("unacked_index", 0, -1) == [b"tag-2"]
        assert client.llen(other_queue) == 0
    finally:
        client.delete("unacked", "unacked_index", queue, other_queue)
