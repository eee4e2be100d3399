"""Operator control (delayed runs, cancel, pause/resume, run search, bulk
redrive) over real HTTP against the real producer and consumers, with real
PostgreSQL (and Redis in Redis mode).  Every test runs in both modes.

Runs are slow noop runs (payload sleepMs) where a test needs them running;
waits poll for the condition with generous deadlines (the machine is
shared), and nothing asserts a short duration except the ones the API
promises, with slack: a cancelled running built-in job ends within 2 s (5 s
allowed here), a due delayed run starts within 1 s (3 s allowed).
"""

import datetime
import threading
import time

import pytest

import harness
from apiclient import MODES, System, assert_error, bin_dir_or_skip, metric, prometheus

J = "/api/integrations/jobs"


@pytest.fixture(scope="module", params=MODES)
def mode(request):
    return request.param


def _redis_for(mode):
    return harness.Redis() if mode == "redis" else None


@pytest.fixture(scope="module")
def system(mode, pg):
    bin_dir_or_skip()
    redis = _redis_for(mode)
    s = System(mode, pg.create_database(), redis, consumers=1, tag="ctl-" + mode)
    yield s
    s.stop()
    if redis is not None:
        redis.cleanup()


@pytest.fixture
def fresh(mode, pg):
    """factory: a system of its own (consumers=0 by default)."""
    bin_dir_or_skip()
    made = []

    def make(**kw):
        redis = _redis_for(mode)
        kw.setdefault("consumers", 0)
        s = System(mode, pg.create_database(), redis, tag="ctlf-" + mode, **kw)
        made.append((s, redis))
        return s
    yield make
    for s, redis in made:
        s.stop()
        if redis is not None:
            redis.cleanup()


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def parse_iso(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


# ---- delayed runs -----------------------------------------------------------


def test_delay_ms_waits_then_runs(system):
    api = system.api
    data = api.enqueue(body={"delayMs": 2500, "payload": {}})
    assert data["status"] == "delayed", data
    due = parse_iso(data["runAt"])
    run = api.wait_run(data["id"], lambda r: r["status"] in ("delayed", "succeeded"))
    if run["status"] == "delayed":
        assert run["startedAt"] is None
    run = api.wait_status(data["id"], "succeeded", timeout=30)
    started = parse_iso(run["startedAt"])
    assert started >= due - datetime.timedelta(milliseconds=5), (run, due)
    assert started <= due + datetime.timedelta(seconds=3), (run, due)


def test_run_at_in_future_and_past(system):
    api = system.api
    at = now_utc() + datetime.timedelta(seconds=2)
    d = api.enqueue(body={"runAt": iso(at)})
    assert d["status"] == "delayed"
    past = api.enqueue(body={"runAt": "2001-01-01T00:00:00Z"})
    assert past["status"] == "queued", past        # in the past means now
    api.wait_status(past["id"], "succeeded")
    run = api.wait_status(d["id"], "succeeded", timeout=30)
    assert parse_iso(run["startedAt"]) >= at - datetime.timedelta(milliseconds=5), run


@pytest.mark.parametrize("body,field", [
    ({"runAt": "tomorrow"}, "runAt"),
    ({"runAt": "2026-13-01T00:00:00Z"}, "runAt"),
    ({"runAt": 12}, "runAt"),
    ({"delayMs": -1}, "delayMs"),
    ({"delayMs": 90 * 86400 * 1000 + 1}, "delayMs"),
    ({"delayMs": 1.5}, "delayMs"),
    ({"delayMs": "10"}, "delayMs"),
    ({"delayMs": 10, "runAt": "2030-01-01T00:00:00Z"}, "runAt and delayMs"),
])
def test_delay_bad_input(system, body, field):
    err = assert_error(system.api.post(J + "/noop/run", body), 400, "bad_request")
    assert field in err["message"], err


# ---- cancel -------------------------------------------------------------------


def test_cancel_delayed_never_starts(system):
    api = system.api
    d = api.enqueue(body={"delayMs": 1500})
    status, _, data = api.post(J + "/runs/%s/cancel" % d["id"])
    assert status == 200, data
    assert data["status"] == "cancelled" and data["previousStatus"] == "delayed", data
    time.sleep(3.0)     # past its due time: it must still be cancelled, never started
    run = api.run(d["id"])
    assert run["status"] == "cancelled" and run["startedAt"] is None, run
    err = assert_error(api.post(J + "/runs/%s/cancel" % d["id"]), 409, "already_finished")
    assert "cancelled" in err["message"]


def test_cancel_running_stops_within_2s(system):
    api = system.api
    d = api.enqueue(body={"payload": {"sleepMs": 60000}})
    api.wait_status(d["id"], "running", timeout=30)
    t0 = time.monotonic()
    status, _, data = api.post(J + "/runs/%s/cancel" % d["id"])
    assert status == 202, data
    assert data["status"] == "running" and data["cancelRequested"] is True, data
    run = api.wait_status(d["id"], "cancelled", timeout=20)
    assert time.monotonic() - t0 < 5.0, "cancelled after %.1f s" % (time.monotonic() - t0)
    assert run["startedAt"] is not None and run["finishedAt"] is not None, run
    assert run["durationMs"] < 10000, run


def test_cancel_finished_and_unknown(system):
    api = system.api
    d = api.enqueue(body={})
    api.wait_status(d["id"], "succeeded")
    assert_error(api.post(J + "/runs/%s/cancel" % d["id"]), 409, "already_finished")
    assert_error(api.post(J + "/runs/0190c2c4-0000-7000-8000-000000000000/cancel"), 404, "unknown_run")
    assert_error(api.post(J + "/runs/bad%20id/cancel"), 404, "unknown_run")
    assert_error(api.post(J + "/runs/x/cancel", token="wrong"), 401)


# ---- pause / resume -----------------------------------------------------------


def test_pause_holds_runs_and_resume_releases(system):
    api = system.api
    status, _, data = api.post(J + "/noop/pause")
    assert status == 200 and data == {"job": "noop", "paused": True}, data
    assert api.post(J + "/noop/pause")[0] == 200           # idempotent
    try:
        time.sleep(1.5)                                     # every consumer sees it within 1 s
        ids = [api.enqueue(body={})["id"] for _ in range(5)]   # enqueueing still works
        time.sleep(2.5)
        for i in ids:
            run = api.run(i)
            assert run is None or run["status"] in ("queued", "delayed"), run
            assert run is None or run["attempts"] == 0, run
        _, _, m = api.get(J + "/metrics")
        noop = [j for j in m["jobs"] if j["name"] == "noop"][0]
        assert noop["paused"] is True, m
        _, _, text = api.get("/metrics")
        _, samples = prometheus(text if isinstance(text, str) else text.decode())
        assert metric(samples, "jobrunner_job_paused", job="noop") == 1.0
        assert metric(samples, "jobrunner_job_paused", job="meta_spend") == 0.0
    finally:
        status, _, data = api.post(J + "/noop/resume")
    assert status == 200 and data == {"job": "noop", "paused": False}, data
    assert api.post(J + "/noop/resume")[0] == 200
    for i in ids:
        run = api.wait_status(i, "succeeded", timeout=30)
        assert run["attempts"] == 1, run                    # handed back without counting


def test_pause_unknown_job(system):
    assert_error(system.api.post(J + "/nope/pause"), 404, "unknown_job")
    assert_error(system.api.post(J + "/nope/resume"), 404, "unknown_job")
    assert_error(system.api.post(J + "/noop/pause", token="wrong"), 401)


def _runs_of(db, job):
    return int(db.query("select count(*) from job_runs where job = '%s'" % job)[0][0])


def test_pause_survives_restart_and_skips_cycle(mode, pg):
    """Paused in PostgreSQL: a producer and consumers started afterwards on
    the same database see it; the cycle skips the paused periodic job (here
    no_reply_scan, due every 500 ms) until it is resumed."""
    bin_dir_or_skip()
    db = pg.create_database()
    env = {"NO_REPLY_SCAN_INTERVAL_MS": 500, "META_SPEND_ENABLED": "false",
           "META_TOKEN_REFRESH_ENABLED": "false"}
    redis = _redis_for(mode)
    s1 = System(mode, db, redis, consumers=0, env=env, tag="ctlp1-" + mode)
    try:
        assert s1.api.post(J + "/no_reply_scan/pause")[0] == 200
    finally:
        s1.stop()
    s2 = System(mode, db, redis, consumers=1, env=env, tag="ctlp2-" + mode)
    try:
        _, _, m = s2.api.get(J + "/metrics")
        assert [j for j in m["jobs"] if j["name"] == "no_reply_scan"][0]["paused"] is True
        time.sleep(4.0)                                  # several cycles (1 s ticks)
        assert _runs_of(db, "no_reply_scan") == 0
        assert s2.api.post(J + "/no_reply_scan/resume")[0] == 200
        harness.wait_until(lambda: _runs_of(db, "no_reply_scan") > 0, timeout=30,
                           msg="no_reply_scan runs again after resume")
    finally:
        s2.stop()
        if redis is not None:
            redis.cleanup()
