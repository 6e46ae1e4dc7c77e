"""Scheduled benchmarks: creation, firing once per due time, regression flags and the webhook."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
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
        ({"cron": "0 3 31 2 *"}, 422, "cron: never fires"),
        ({"cron": "* * * * * *"}, 422, "cron: has 6 fields"),
        ({"limit": 99999999999999999999}, 422, "limit"),
        ({"version": "a" * 81}, 422, "version"),
        ({"judge_model": "sim-small"}, 422, "judge_model"),
        ({"models": []}, 422, "models"),
        ({"models": ["sim-small", "sim-small"]}, 422, "twice"),
        ({"webhook_url": "ftp://example.invalid/x"}, 422, "webhook_url"),
        ({"webhook_url": "http://"}, 422, "webhook_url: must name a host"),
        ({"webhook_url": "http://[::1/x"}, 422, "webhook_url: is not a valid URL"),
        ({"dataset": "no-such-dataset"}, 404, "no-such-dataset"),
        ({"models": ["no-such-model"]}, 422, "models.0"),
    ],
)
def test_schedule_rejects_bad_input(client, db_session, overrides, status, text):
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


# The four models of the test simulator and no judge: a schedule allows at most four models,
# so with runs = 100 each prompt makes 400 runs.
FOUR_MODELS = {
    "models": ["sim-small", "sim-large", "sim-no-usage", "sim-judge"],
    "judge_model": None,
}


def count_schedules(db_session, name: str | None = None) -> int:
    db_session.expire_all()
    statement = select(func.count()).select_from(Schedule)
    if name is not None:
        statement = statement.where(Schedule.name == name)
    return db_session.execute(statement).scalar_one()


def stored_schedule(db_session, name: str) -> Schedule:
    db_session.expire_all()
    return db_session.execute(select(Schedule).where(Schedule.name == name)).scalar_one()


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        # February has no day 31 or 30, and April and June have no day 31.
        ("0 3 31 2 *", "never fires: no date matches '0 3 31 2 *'"),
        ("0 3 30 2 *", "never fires: no date matches '0 3 30 2 *'"),
        ("0 3 31 4,6 *", "never fires: no date matches '0 3 31 4,6 *'"),
        # croniter reads a sixth field as seconds and a seventh as years.
        ("* * * * * *", "has 6 fields (seconds and years are not supported)"),
        ("* * * * * * *", "has 7 fields (seconds and years are not supported)"),
        ("0 3 * *", "has 4 fields; use five fields"),
        ("@reboot", "has 1 field; use five fields"),
        ("0 " * 60 + "3 * * *", "must be at most 120 characters long"),
    ],
)
def test_schedule_cron_rejected_with_reason(client, db_session, cron, message):
    name = f"cron-{uuid.uuid4().hex[:6]}"
    response = client.post("/schedules", json=schedule_body(name, "mt_bench", cron=cron))

    assert response.status_code == 422
    body = response.get_json()
    (detail,) = body["errors"]["json"]["cron"]
    assert detail.startswith(message)
    assert body["message"] == f"invalid request: cron: {detail}"
    assert count_schedules(db_session, name) == 0


@pytest.mark.parametrize(
    ("cron", "expected_next"),
    [
        ("@daily", datetime(2030, 1, 2, 0, 0, tzinfo=timezone.utc)),
        ("@WEEKLY", datetime(2030, 1, 6, 0, 0, tzinfo=timezone.utc)),
        ("@annually", datetime(2031, 1, 1, 0, 0, tzinfo=timezone.utc)),
        # Fires only in leap years, which is rare but not never.
        ("0 0 29 2 *", datetime(2032, 2, 29, 0, 0, tzinfo=timezone.utc)),
        ("0 3 * * 1-5", datetime(2030, 1, 1, 3, 0, tzinfo=timezone.utc)),
    ],
)
def test_schedule_cron_accepts_five_fields_and_aliases(client, db_session, cron, expected_next):
    from workers.scheduling import next_fire_time

    name = f"cron-{uuid.uuid4().hex[:6]}"
    response = client.post(
        "/schedules", json=schedule_body(name, "mt_bench", cron=cron, enabled=False)
    )

    assert response.status_code == 201, response.get_json()
    assert stored_schedule(db_session, name).cron == cron
    # 2030-01-01 is a Tuesday.
    assert next_fire_time(cron, datetime(2030, 1, 1, 0, 0, tzinfo=timezone.utc)) == expected_next


def test_schedule_patch_rejects_cron_that_never_fires(client, db_session):
    name = f"cron-{uuid.uuid4().hex[:6]}"
    assert client.post("/schedules", json=schedule_body(name, "mt_bench")).status_code == 201

    response = client.patch(f"/schedules/{name}", json={"cron": "0 3 31 2 *"})

    assert response.status_code == 422
    assert response.get_json()["errors"]["json"]["cron"][0].startswith("never fires")
    assert stored_schedule(db_session, name).cron == "0 3 * * *"


@pytest.mark.parametrize(
    ("limit", "status"),
    # 50000 is the most items a dataset file may hold, and 2**31 would not fit the integer column.
    [(50000, 201), (50001, 422), (2**31, 422), (99999999999999999999, 422), (0, 422)],
)
def test_schedule_limit_bounded_by_dataset_size(client, db_session, limit, status):
    name = f"limit-{uuid.uuid4().hex[:6]}"
    body = schedule_body(name, "mt_bench", limit=limit, enabled=False)
    response = client.post("/schedules", json=body)

    assert response.status_code == status, response.get_json()
    if status == 201:
        assert stored_schedule(db_session, name).limit == limit
        return
    assert list(response.get_json()["errors"]["json"]) == ["limit"]
    assert response.get_json()["message"] == (
        "invalid request: limit: Must be greater than or equal to 1 and less than or equal to "
        "50000."
    )
    assert count_schedules(db_session, name) == 0


@pytest.mark.parametrize(
    ("limit", "total_runs"),
    # mt_bench has 80 prompts, so 4 models x 80 prompts x 100 runs is 32000.
    [(None, 32000), (51, 20400)],
)
def test_schedule_over_run_budget_rejected(client, db_session, settings, limit, total_runs):
    assert settings.max_runs_per_job == 20000
    name = f"budget-{uuid.uuid4().hex[:6]}"
    body = schedule_body(name, "mt_bench", runs=100, limit=limit, enabled=False, **FOUR_MODELS)
    before = count_schedules(db_session)

    response = client.post("/schedules", json=body)

    assert response.status_code == 422
    expected = (
        f"this job would make {total_runs} runs; the limit is 20000 "
        "(lower runs or use fewer prompts or models; dataset evaluations, comparisons and "
        "schedules also take limit, which keeps the first N items)"
    )
    assert response.get_json()["message"] == expected
    assert response.get_json()["errors"] == {"runs": [expected]}
    assert count_schedules(db_session) == before


def test_schedule_at_run_budget_accepted(client, db_session):
    name = f"budget-{uuid.uuid4().hex[:6]}"
    # 4 models x 50 prompts x 100 runs is exactly the limit of 20000.
    body = schedule_body(name, "mt_bench", runs=100, limit=50, enabled=False, **FOUR_MODELS)

    response = client.post("/schedules", json=body)

    assert response.status_code == 201, response.get_json()
    assert stored_schedule(db_session, name).runs == 100


def grown_dataset_schedule(client, db_session, *, enabled: bool) -> str:
    """Create a schedule at exactly 20000 runs, then grow its dataset by one prompt."""
    dataset = f"grow-{uuid.uuid4().hex[:8]}"
    items = [{"id": f"q{index}", "prompt": f"Question {index}?"} for index in range(51)]
    upload_dataset(client, dataset, items[:50])
    name = f"budget-{dataset}"
    body = schedule_body(name, dataset, runs=100, enabled=enabled, **FOUR_MODELS)
    created = client.post("/schedules", json=body)
    assert created.status_code == 201, created.get_json()

    # The schedule follows the latest version, which now has 51 prompts: 20400 runs.
    upload_dataset(client, dataset, items)
    return name


def test_schedule_patch_enable_rechecks_run_budget(client, db_session):
    name = grown_dataset_schedule(client, db_session, enabled=False)

    enabled = client.patch(f"/schedules/{name}", json={"enabled": True, "alpha": 0.01})

    assert enabled.status_code == 422
    message = enabled.get_json()["message"]
    assert message.startswith("this job would make 20400 runs; the limit is 20000")
    assert list(enabled.get_json()["errors"]) == ["runs"]
    stored = stored_schedule(db_session, name)
    assert stored.enabled is False
    assert stored.alpha == 0.05


def test_schedule_over_budget_can_still_be_disabled(client, db_session):
    name = grown_dataset_schedule(client, db_session, enabled=True)

    webhook = client.patch(f"/schedules/{name}", json={"webhook_url": "http://127.0.0.1:9/x"})
    disabled = client.patch(f"/schedules/{name}", json={"enabled": False})

    assert webhook.status_code == 422
    assert webhook.get_json()["message"].startswith("this job would make 20400 runs")
    assert disabled.status_code == 200, disabled.get_json()
    assert disabled.get_json()["enabled"] is False
    assert stored_schedule(db_session, name).webhook_url is None


def test_schedule_over_budget_skipped_when_due(client, settings, db_session, caplog):
    name = grown_dataset_schedule(client, db_session, enabled=True)
    schedule = stored_schedule(db_session, name)
    due_at = schedule.next_run_at

    with caplog.at_level("ERROR", logger="workers.scheduling"):
        started = fire(settings, db_session, str(schedule.id))

    assert started == []
    stored = stored_schedule(db_session, name)
    assert stored.next_run_at > due_at
    assert stored.last_job_id is None
    (record,) = [
        r for r in caplog.records if getattr(r, "fields", {}).get("schedule_id") == str(schedule.id)
    ]
    assert record.getMessage() == "schedule skipped: job would exceed max_runs_per_job"
    assert record.fields["runs"] == 20400
    assert record.fields["max_runs_per_job"] == 20000
