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
import apiclient
from apiclient import System, assert_error, bin_dir_or_skip, metric, prometheus

J = "/api/integrations/jobs"


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
    t0 = time.monotonic()
    d = api.enqueue(body={"delayMs": 4000})
    status, _, data = api.post(J + "/runs/%s/cancel" % d["id"])
    assert status == 200, data
    assert data["status"] == "cancelled" and data["previousStatus"] == "delayed", data
    time.sleep(max(0.0, 5.5 - (time.monotonic() - t0)))   # past its due time
    # it must still be cancelled, never started
    run = api.run(d["id"])
    assert run["status"] == "cancelled" and run["startedAt"] is None, run
    err = assert_error(api.post(J + "/runs/%s/cancel" % d["id"]), 409, "already_finished")
    assert "cancelled" in err["message"]
    _, _, text = api.get("/metrics")
    _, samples = prometheus(text)
    assert metric(samples, "jobrunner_runs_cancelled_total", job="noop") >= 1


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
    redis = apiclient.redis_for(mode)
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


# ---- search -------------------------------------------------------------------


def test_search_filters_and_pages(system):
    api = system.api
    tag = "org-s-%d" % int(time.time() * 1000)
    ids = [api.enqueue(body={"orgId": tag})["id"] for _ in range(7)]
    other = api.enqueue(body={"orgId": tag + "-x"})["id"]
    for i in ids + [other]:
        api.wait_status(i, "succeeded")
    # newest first, pages of 3 with an opaque cursor
    seen, cursor = [], None
    for _ in range(5):
        q = J + "/runs?orgId=%s&limit=3" % tag + ("&cursor=" + cursor if cursor else "")
        status, _, data = api.get(q)
        assert status == 200, data
        seen += [r["id"] for r in data["runs"]]
        assert all(r["orgId"] == tag for r in data["runs"]), data
        cursor = data["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True), (seen, ids)
    # job + status + time window
    since = iso(now_utc() - datetime.timedelta(minutes=5))
    status, _, data = api.get(J + "/runs?job=noop&status=succeeded&orgId=%s&since=%s" % (tag, since))
    assert status == 200 and len(data["runs"]) == 7, data
    status, _, data = api.get(J + "/runs?orgId=%s&until=2001-01-01T00:00:00Z" % tag)
    assert status == 200 and data["runs"] == [] and data["nextCursor"] is None, data
    status, _, data = api.get(J + "/runs?status=cancelled&orgId=%s" % tag)
    assert status == 200 and data["runs"] == [], data
    status, _, data = api.get(J + "/runs?limit=1")
    assert status == 200 and len(data["runs"]) == 1 and data["nextCursor"], data


@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
    ("cursor=zz", "cursor"), ("cursor=", "cursor"), ("status=bogus", "status"),
    ("since=yesterday", "since"), ("until=2026-02-30T00:00:00Z", "until"),
    ("job=nope", "job"), ("color=red", "color"),
])
def test_search_bad_input(system, query, field):
    err = assert_error(system.api.get(J + "/runs?" + query), 400, "bad_request")
    assert field in err["message"], err


# ---- bulk redrive ---------------------------------------------------------------


def test_bulk_redrive(system):
    api = system.api
    tag = "org-d-%d" % int(time.time() * 1000)
    dead = [api.enqueue(body={"orgId": tag, "payload": {"failAlways": True}})["id"] for _ in range(3)]
    keep = api.enqueue(body={"orgId": tag + "-keep", "payload": {"failAlways": True}})["id"]
    for i in dead + [keep]:
        api.wait_status(i, "dead", timeout=30)
    status, _, data = api.post(J + "/dead/retry", {"job": "noop", "orgId": tag, "limit": 2})
    assert status == 200 and data["retried"] == 2 and len(data["ids"]) == 2, data
    status, _, data2 = api.post(J + "/dead/retry", {"orgId": tag})
    assert status == 200 and data2["retried"] == 1, data2
    assert sorted(data["ids"] + data2["ids"]) == sorted(dead)
    for i in dead:   # fresh attempts: they run (and die) again, as retries
        run = api.wait_run(i, lambda r: r["source"] == "retry" and r["status"] == "dead", timeout=30)
        assert run["attempts"] == 2, run
    assert api.run(keep)["source"] == "adhoc"
    # the single-run retry keeps working
    status, _, one = api.post(J + "/dead/%s/retry" % keep)
    assert status == 202 and one["id"] == keep, one
    api.wait_run(keep, lambda r: r["source"] == "retry" and r["status"] == "dead", timeout=30)
    status, _, none = api.post(J + "/dead/retry", {"orgId": "org-without-dead-runs"})
    assert status == 200 and none == {"retried": 0, "ids": []}, none


@pytest.mark.parametrize("body,field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"job": "nope"}, "job"),
    ({"since": "soon"}, "since"), ({"orgId": 5}, "orgId"), ({"color": "red"}, "unknown field"),
    ([1], "JSON object"),
])
def test_bulk_redrive_bad_input(system, body, field):
    err = assert_error(system.api.post(J + "/dead/retry", body), 400, "bad_request")
    assert field in err["message"], err


# ---- races ----------------------------------------------------------------------


def test_cancel_race_busy_pool(fresh):
    """Many concurrent cancels (some twice at once) against three busy
    consumers: every run ends in exactly one final state, an accepted cancel
    (200 or 202) always ends cancelled, a 200 run never started, a 409 run
    had finished in the state the record keeps, and runs nobody cancelled
    succeed."""
    import random
    s = fresh(consumers=0)
    for i in range(3):
        s.add_consumer("race-c%d" % i)
    api = s.api
    rnd = random.Random(1234)
    bodies = [{"orgId": "race", "payload": {"sleepMs": rnd.choice([0, 5, 50, 200, 400])}}
              for _ in range(240)]
    _, _, data = api.post(J + "/noop/run", bodies)
    ids = data["ids"]
    targets = rnd.sample(ids, 160)
    targets += rnd.sample(targets, 40)               # 40 runs cancelled twice, concurrently
    rnd.shuffle(targets)
    answers = {}
    lock = threading.Lock()

    def worker(chunk):
        for i in chunk:
            time.sleep(rnd.random() * 0.02)
            status, _, body = api.post(J + "/runs/%s/cancel" % i)
            with lock:
                answers.setdefault(i, []).append((status, body))
    threads = [threading.Thread(target=worker, args=(targets[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)

    def final():
        rows = s.db.query("select id, status, started_at is not null from job_runs where id = any(%s)",
                          (ids,))
        return rows if len(rows) == len(ids) and all(
            r[1] in ("succeeded", "cancelled", "dead", "failed") and r[1] not in ("failed",)
            for r in rows) else None
    rows = harness.wait_until(final, timeout=120, interval=0.5, msg="every run final")
    state = {r[0]: (r[1], r[2]) for r in rows}
    counts = {}
    for i in ids:
        st, started = state[i]
        codes = sorted(a[0] for a in answers.get(i, []))
        counts[st] = counts.get(st, 0) + 1
        assert all(c in (200, 202, 409) for c in codes), (i, answers[i])
        for c, body in answers.get(i, []):     # a 409 names the state the record keeps
            if c == 409:
                assert body["error"]["message"].endswith("(%s)" % st), (i, st, answers[i])
        if not codes:
            assert st == "succeeded", (i, st)
        elif 200 in codes or 202 in codes:
            assert st == "cancelled", (i, st, answers[i])
            assert codes.count(200) + codes.count(202) == 1 or codes == [200, 202] \
                or codes == [202, 202], (i, answers[i])
            if 200 in codes and 202 not in codes:
                assert not started, (i, "a 200-cancelled run started", answers[i])
        else:
            assert st == "succeeded", (i, st, answers[i])
    assert counts.get("cancelled", 0) > 0 and counts.get("succeeded", 0) > 0, counts


def test_cancel_found_cancelled_keeps_its_request(fresh):
    """Redis mode, two cancels at once: A is the first into jr:cancel, B the
    first to reach job_runs (it turns the queued row cancelled and answers
    200).  A then finds the row cancelled and answers 409; it must not take
    the request out of jr:cancel, which is what keeps the queued entry from
    running (it did: the run then started and ended succeeded after B's 200).
    B's update is made here by hand, so the order is certain."""
    s = fresh(consumers=0)
    if s.mode != "redis":
        pytest.skip("jr:cancel and the history writer exist in Redis mode only")
    run_id = s.api.enqueue(body={"payload": {}})["id"]
    harness.wait_until(lambda: s.db.query("select status from job_runs where id = %s",
                                          (run_id,)) == [("queued",)],
                       timeout=30, msg="the queued row written")
    s.db.execute("update job_runs set status = 'cancelled', cancel_requested_at = now(),"
                 " finished_at = now(), error = 'cancelled before it started' where id = %s",
                 (run_id,))
    err = assert_error(s.api.post(J + "/runs/%s/cancel" % run_id), 409, "already_finished")
    assert "(cancelled)" in err["message"], err
    assert s.redis.client().zscore("jr:cancel", run_id) is not None, "the request was removed"
    s.add_consumer("keep-c1")
    marker = s.api.enqueue(body={"payload": {}})["id"]    # read after the cancelled entry
    s.api.wait_status(marker, "succeeded", timeout=60)
    rows = s.db.query("select status, started_at is null from job_runs where id = %s", (run_id,))
    assert rows == [("cancelled", True)], rows


# ---- the CLI ------------------------------------------------------------------------


def _cli(system, *args, **env_over):
    import json
    import os
    import jrcli
    e = {k: str(v) for k, v in system.base_env.items()}
    e.update({k: str(v) for k, v in env_over.items()})
    p = jrcli.run(os.path.join(os.environ["JR_BIN"], "producer"), list(args), e, timeout=60)
    out = None
    if "--json" in args and p.returncode == 0:
        out = json.loads(p.stdout)
    return p, out


def test_cli_delay_show_list_cancel(system):
    tag = "org-cli-%d" % int(time.time() * 1000)
    p, _ = _cli(system, "enqueue", "noop", "--org", tag, "--delay-ms", "60000")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.strip()
    run = harness.wait_until(lambda: _cli(system, "runs", "show", rid, "--json")[1], timeout=20,
                             msg="runs show")
    assert run["status"] == "delayed" and run["orgId"] == tag, run
    p, page = _cli(system, "runs", "list", "--org", tag, "--status", "delayed", "--json")
    assert p.returncode == 0 and [r["id"] for r in page["runs"]] == [rid], (p.stderr, page)
    p, _ = _cli(system, "runs", "list", "--org", tag)
    assert p.returncode == 0 and rid in p.stdout and "delayed" in p.stdout, p.stdout
    p, out = _cli(system, "runs", "cancel", rid, "--json")
    assert p.returncode == 0 and out["status"] == "cancelled", (p.stderr, out)
    p, _ = _cli(system, "runs", "cancel", rid)
    assert p.returncode == 1 and "already finished" in p.stderr, p.stderr
    p, _ = _cli(system, "runs", "show", "0190c2c4-0000-7000-8000-000000000000")
    assert p.returncode == 1, p.stderr
    p, _ = _cli(system, "runs", "cancel", "0190c2c4-0000-7000-8000-000000000000")
    assert p.returncode == 1, p.stderr
    p, _ = _cli(system, "enqueue", "noop", "--run-at", "2030-01-01T00:00:00Z", "--delay-ms", "5")
    assert p.returncode == 2, p.stderr
    p, _ = _cli(system, "enqueue", "noop", "--delay-ms", "-5")
    assert p.returncode == 2 and "--delay-ms" in p.stderr, p.stderr


def test_cli_pause_resume_retry(system):
    p, out = _cli(system, "pause", "noop", "--json")
    assert p.returncode == 0 and out == {"job": "noop", "paused": True}, (p.stderr, out)
    _, _, m = system.api.get(J + "/metrics")
    assert [j for j in m["jobs"] if j["name"] == "noop"][0]["paused"] is True
    p, _ = _cli(system, "resume", "noop")
    assert p.returncode == 0 and "resumed" in p.stdout, p.stderr
    _, _, m = system.api.get(J + "/metrics")
    assert [j for j in m["jobs"] if j["name"] == "noop"][0]["paused"] is False
    p, _ = _cli(system, "pause", "nope")
    assert p.returncode == 1, p.stderr
    tag = "org-clid-%d" % int(time.time() * 1000)
    ids = [system.api.enqueue(body={"orgId": tag, "payload": {"failAlways": True}})["id"]
           for _ in range(2)]
    for i in ids:
        system.api.wait_status(i, "dead", timeout=30)
    p, out = _cli(system, "runs", "retry", "--dead", "--org", tag, "--json")
    assert p.returncode == 0 and sorted(out["ids"]) == sorted(ids), (p.stderr, out)
    for i in ids:
        system.api.wait_run(i, lambda r: r["source"] == "retry" and r["status"] == "dead", timeout=30)
    p, _ = _cli(system, "runs", "retry", ids[0])
    assert p.returncode == 0 and ids[0] in p.stdout, p.stderr
    p, _ = _cli(system, "runs", "retry", "0190c2c4-0000-7000-8000-000000000000")
    assert p.returncode == 1, p.stderr


@pytest.mark.parametrize("args", [
    ["runs"], ["runs", "frob"], ["runs", "list", "--limit", "0"], ["runs", "list", "--status", "x"],
    ["runs", "list", "--cursor", "zz"], ["runs", "list", "--since", "now"], ["runs", "show"],
    ["runs", "retry"], ["runs", "retry", "x", "--dead"], ["runs", "cancel", "x", "--job", "noop"],
    ["pause"], ["runs", "list", "--frob"],
])
def test_cli_usage(system, args):
    p, _ = _cli(system, *args)
    assert p.returncode == 2 and "usage" in p.stderr, (args, p.returncode, p.stderr)


def test_cli_database_unreachable(system):
    closed = "postgresql://postgres@127.0.0.1:%d/nowhere" % harness.free_port()
    p, _ = _cli(system, "runs", "list", DATABASE_URL=closed, STARTUP_TIMEOUT_MS=500)
    assert p.returncode == 3, (p.returncode, p.stderr)


def test_pause_race_busy_pool(fresh):
    """A job paused while three consumers are busy with it: within a second
    no run of it starts any more (none runs twice either), the rest stay
    queued without an attempt counted, and all succeed once resumed."""
    s = fresh(consumers=0)
    for i in range(3):
        s.add_consumer("prace-c%d" % i)
    api = s.api
    _, _, data = api.post(J + "/noop/run", [{"orgId": "prace", "payload": {"sleepMs": 20}}
                                            for _ in range(400)])
    ids = data["ids"]
    harness.wait_until(lambda: s.db.scalar(
        "select count(*) from job_runs where id = any(%s) and status = 'succeeded'", (ids,)) >= 20,
        timeout=60, msg="the pool is busy")
    assert api.post(J + "/noop/pause")[0] == 200
    paused_at = s.db.scalar("select now()")
    time.sleep(3.0)
    late = s.db.scalar("select count(*) from job_runs where id = any(%s) and started_at > %s"
                       " + interval '1 second'", (ids, paused_at))
    assert late == 0, "%d runs started more than 1 s after the pause" % late
    waiting = s.db.scalar("select count(*) from job_runs where id = any(%s) and status in ('queued')",
                          (ids,))
    assert waiting > 0
    assert api.post(J + "/noop/resume")[0] == 200
    rows = harness.wait_until(lambda: (lambda r: r if len(r) == len(ids) and all(
        x[1] == "succeeded" for x in r) else None)(
        s.db.query("select id, status, attempts from job_runs where id = any(%s)", (ids,))),
        timeout=120, interval=0.5, msg="all runs succeed after resume")
    assert all(r[2] == 1 for r in rows), [r for r in rows if r[2] != 1][:5]


def test_delayed_run_waits_on_postgres_during_redis_outage(mode, pg):
    """Redis down: the producer puts a delayed run on the PostgreSQL queue,
    where it still waits for its time."""
    if mode != "redis":
        pytest.skip("Redis mode only: the outage fallback")
    bin_dir_or_skip()
    redis = harness.Redis()
    s = System("redis", pg.create_database(), redis, consumers=1, tag="ctl-outage")
    try:
        redis.stop()
        status, _, d = s.api.post(J + "/noop/run", {"delayMs": 3000})
        assert status == 202 and d["status"] == "delayed", d
        row = s.db.query("select transport, status, run_at > now() + interval '1 second'"
                         " from job_runs where id = %s", (d["id"],))
        assert row and row[0][0] == "pg" and row[0][1] == "queued" and row[0][2], row
        run = s.api.wait_run(d["id"], lambda r: r["status"] in ("delayed", "succeeded"))
        assert run["status"] == "delayed", run
        run = s.api.wait_status(d["id"], "succeeded", timeout=30)
        assert parse_iso(run["startedAt"]) >= parse_iso(d["runAt"]) - datetime.timedelta(milliseconds=5)
    finally:
        s.stop()
        redis.cleanup()


def test_bulk_redrive_race(system):
    """Four operators redrive the same dead runs at once: each run is
    requeued by exactly one of them."""
    api = system.api
    tag = "org-rr-%d" % int(time.time() * 1000)
    _, _, data = api.post(J + "/noop/run", [{"orgId": tag, "payload": {"failAlways": True}}
                                            for _ in range(24)])
    ids = data["ids"]
    for i in ids:
        api.wait_status(i, "dead", timeout=60)
    # paused: a requeued run stays queued (it cannot die again and be
    # requeued a second time, legitimately, by a later redrive)
    assert api.post(J + "/noop/pause")[0] == 200
    try:
        time.sleep(1.5)
        got, lock = [], threading.Lock()

        def redrive():
            status, _, body = api.post(J + "/dead/retry", {"orgId": tag, "limit": 10})
            with lock:
                got.append((status, body))
        threads = [threading.Thread(target=redrive) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(s == 200 for s, _ in got), got
        requeued = [i for _, b in got for i in b["ids"]]
        assert len(requeued) == len(set(requeued)), "a run was requeued twice: %r" % got
        assert set(requeued) <= set(ids) and sum(b["retried"] for _, b in got) == len(requeued)
    finally:
        assert api.post(J + "/noop/resume")[0] == 200
    assert len(requeued) == 24, got            # 4 x 10 asked, 24 there: all of them, once
