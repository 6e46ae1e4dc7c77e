"""Scheduled benchmarks: creation, firing once per due time, regression flags and the webhook."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from werkzeug.serving import make_server

from models.schedules import Schedule
from tests.conftest import TEST_SIMULATOR_CONFIG, simulator_config, wait_for_job
from tests.test_end_to_end import upload_dataset

pytestmark = pytest.mark.services


class WebhookReceiver:
    """A real HTTP server on loopback that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _app(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        self.bodies.append(json.loads(environ["wsgi.input"].read(length)))
        start_response("204 No Content", [])
        return [b""]

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()


def schedule_body(name: str, dataset: str, **overrides) -> dict:
    return {
        "name": name,
        "dataset": dataset,
        "models": ["sim-small"],
        "judge_model": "sim-judge",
        "runs": 1,
        "cron": "0 3 * * *",
        **overrides,
    }


def fire(settings, db_session, schedule_id: str) -> list[uuid.UUID]:
    """Tick as if the schedule's due time had passed; return the jobs started for it."""
    from models.jobs import Job
    from workers.scheduling import fire_due_schedules

    db_session.expire_all()
    schedule = db_session.get(Schedule, uuid.UUID(schedule_id))
    started = fire_due_schedules(settings, now=schedule.next_run_at + timedelta(seconds=1))
    return [
        job_id for job_id in started if db_session.get(Job, job_id).schedule_id == schedule.id
    ]


def test_schedule_fires_once_per_due_time(client, settings, db_session, celery_worker):
    dataset = f"sched-{uuid.uuid4().hex[:8]}"
    upload_dataset(client, dataset)
    created = client.post("/schedules", json=schedule_body(f"nightly-{dataset}", dataset))
    assert created.status_code == 201, created.get_json()
    schedule = created.get_json()

    first = fire(settings, db_session, schedule["id"])
    db_session.expire_all()
    stored = db_session.get(Schedule, uuid.UUID(schedule["id"]))
    from workers.scheduling import fire_due_schedules

    repeated = fire_due_schedules(settings, now=stored.last_run_at)

    assert len(first) == 1
    assert [job for job in repeated if job in first] == []
    job = wait_for_job(client, str(first[0]))
    assert job["kind"] == "scheduled"
    assert job["progress"]["total"] == 3
    assert job["result"]["regression"]["note"] == "first run of this schedule"
    shown = client.get(f"/schedules/{schedule['name']}").get_json()
    assert shown["recent_jobs"][0]["job_id"] == str(first[0])


def test_schedule_flags_quality_drop_and_posts_webhook(
    client, settings, db_session, celery_worker, simulator_url
):
    dataset = f"sched-{uuid.uuid4().hex[:8]}"
    items = [{"id": f"q{index}", "prompt": f"Question number {index}?"} for index in range(8)]
    upload_dataset(client, dataset, items)

    with WebhookReceiver() as receiver:
        created = client.post(
            "/schedules",
            json=schedule_body(f"drop-{dataset}", dataset, webhook_url=receiver.url),
        )
        schedule = created.get_json()
        assert schedule["webhook_url"] == f"http://127.0.0.1:{receiver.server.server_port}/..."

        (baseline,) = fire(settings, db_session, schedule["id"])
        wait_for_job(client, str(baseline))

        worse = copy.deepcopy(TEST_SIMULATOR_CONFIG)
        worse["models"]["sim-small"]["quality"] = 1.0
        with simulator_config(simulator_url, worse):
            (degraded,) = fire(settings, db_session, schedule["id"])
            job = wait_for_job(client, str(degraded))

        deadline = time.monotonic() + 30
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.2)

    regression = job["result"]["regression"]
    assert regression["compared_with"] == str(baseline)
    # Latency may also move between two runs on a busy machine; quality must have dropped.
    (flag,) = [flag for flag in regression["flags"] if flag["metric"] == "quality_score"]
    assert flag["model"] == "sim-small"
    assert flag["metric"] == "quality_score"
    assert flag["change"] == "drop"
    assert flag["n"] == 8
    assert flag["ci_high"] < 0
    # Eight prompts, all worse: the exact two-sided Wilcoxon p-value is 2 / 2**8.
    assert flag["p_value"] == pytest.approx(2 / 256)

    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "mistralmeter.regression"
    assert body["job_id"] == str(degraded)
    assert "quality_score" in [flag["metric"] for flag in body["flags"]]


@pytest.mark.parametrize(
    ("overrides", "status", "text"),
    [
        ({"cron": "every night"}, 422, "cron"),
        ({"judge_model": "sim-small"}, 422, "judge_model"),
        ({"models": []}, 422, "models"),
        ({"models": ["sim-small", "sim-small"]}, 422, "twice"),
        ({"webhook_url": "ftp://example.invalid/x"}, 422, "webhook_url"),
        ({"dataset": "no-such-dataset"}, 404, "no-such-dataset"),
        ({"models": ["no-such-model"]}, 422, "models.0"),
    ],
)
def test_schedule_rejects_bad_input(client, db_session, overrides, status, text):
    from sqlalchemy import func, select

    before = db_session.execute(select(func.count()).select_from(Schedule)).scalar_one()
    body = {**schedule_body(f"bad-{uuid.uuid4().hex[:6]}", "mt_bench"), **overrides}
    response = client.post("/schedules", json=body)

    assert response.status_code == status
    assert text in response.get_json()["message"]
    db_session.expire_all()
    assert db_session.execute(select(func.count()).select_from(Schedule)).scalar_one() == before


def test_schedule_name_must_be_unique_and_can_be_disabled(client):
    name = f"dup-{uuid.uuid4().hex[:6]}"
    assert client.post("/schedules", json=schedule_body(name, "mt_bench")).status_code == 201

    duplicate = client.post("/schedules", json=schedule_body(name, "mt_bench"))
    disabled = client.patch(f"/schedules/{name}", json={"enabled": False})
    deleted = client.delete(f"/schedules/{name}")

    assert duplicate.status_code == 409
    assert disabled.get_json()["enabled"] is False
    assert deleted.status_code == 204
    assert client.get(f"/schedules/{name}").status_code == 404
