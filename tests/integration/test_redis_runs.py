"""Runs in Redis mode with the real binaries, redis-server and PostgreSQL:
exactly-once under normal load, consumers that die (kill -9), pause past
their lease (SIGSTOP) or hold a run longer than the lease, retries and dead
runs, malformed entries, drain-once and SIGTERM.  job_runs is written behind
the stream by the history writers: every check on it polls."""

import json
import signal

import harness
import jrcli
import jrredis

# Tests in this file use leases of 1 s (jrcli.FAST) unless they say otherwise.


def _migrated(bins, db_url):
    jrcli.migrate(bins, db_url)


def _one_run_in_hand(bins, db, db_url, redis_server, spawn, name, sleep_ms):
    """A consumer of concurrency 1 running one run of sleep_ms: (consumer, run id)."""
    _migrated(bins, db_url)
    c = jrredis.consumer(spawn, db_url, redis_server, name, WORKER_CONCURRENCY=1)
    [rid] = jrredis.enqueue(bins, db_url, redis_server, payload='{"sleepMs":%d}' % sleep_ms)
    jrredis.wait_running(db, rid, name)
    return c, rid


def test_two_thousand_runs_over_two_consumers_each_once(bins, db, db_url, redis_server, spawn):
    _migrated(bins, db_url)
    a = jrredis.consumer(spawn, db_url, redis_server, "c-a")
    b = jrredis.consumer(spawn, db_url, redis_server, "c-b")
    ids = jrredis.enqueue(bins, db_url, redis_server, count=2000)
    assert len(set(ids)) == 2000
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=90)
    assert {r["attempts"] for r in rows.values()} == {1}
    by = {}
    for r in rows.values():
        by[r["consumer"]] = by.get(r["consumer"], 0) + 1
    assert set(by) == {"c-a", "c-b"}, by          # both took some
    assert db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND transport <> 'redis'",
                     (ids,)) == 0
    for p in (a, b):
        assert not jrredis.events(p, "run_fenced")
        assert not jrredis.events(p, "run_dead")
    r = redis_server.client()
    harness.wait_until(lambda: r.xpending("jr:runs", "jr:workers")["pending"] == 0,
                       timeout=10, msg="nothing pending in jr:workers")


def _metric(port, series):
    """The value of one series (name with its labels) on a consumer's /metrics."""
    status, _, text = harness.http("GET", "http://127.0.0.1:%d/metrics" % port)
    assert status == 200, (status, text)
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError("no series %s in /metrics" % series)


def test_kill9_mid_batch_runs_finish_on_the_other_consumer(bins, db, db_url, redis_server, spawn):
    """...and the takeover shows in jobrunner_reclaims_total and the health
    counts, a Redis restart in jobrunner_reconnects_total{backend="redis"}."""
    _migrated(bins, db_url)
    a = jrredis.consumer(spawn, db_url, redis_server, "k-a", WORKER_CONCURRENCY=4)
    ids = jrredis.enqueue(bins, db_url, redis_server, count=4, payload='{"sleepMs":2500}')
    for i in ids:
        jrredis.wait_running(db, i, "k-a")
    assert a.kill9() == -9
    port = harness.free_port()
    b = jrredis.consumer(spawn, db_url, redis_server, "k-b", WORKER_CONCURRENCY=4,
                         WORKER_HTTP_PORT=port)
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=30)
    for i in ids:
        assert rows[i]["consumer"] == "k-b", rows[i]
        assert rows[i]["attempts"] == 2, rows[i]   # the interrupted attempt counts
    assert not jrredis.events(b, "run_fenced")
    assert redis_server.client().xpending("jr:runs", "jr:workers")["pending"] == 0
    assert _metric(port, "jobrunner_reclaims_total") == 4
    assert harness.http("GET", "http://127.0.0.1:%d/health/ready" % port)[2]["runs"]["reclaimed"] == 4
    before = _metric(port, 'jobrunner_reconnects_total{backend="redis"}')
    redis_server.kill()
    redis_server.start()
    harness.wait_until(lambda: _metric(port, 'jobrunner_reconnects_total{backend="redis"}') > before,
                       timeout=30, msg="a Redis reconnect counted on /metrics")


def test_sigstop_past_the_lease_is_fenced(bins, db, db_url, redis_server, spawn):
    a, rid = _one_run_in_hand(bins, db, db_url, redis_server, spawn, "s-a", 2000)
    a.signal(signal.SIGSTOP)
    try:
        b = jrredis.consumer(spawn, db_url, redis_server, "s-b", WORKER_CONCURRENCY=1)
        row = jrcli.wait_runs(db, [rid], "succeeded", timeout=20)[rid]
        assert row["consumer"] == "s-b" and row["attempts"] == 2, row
    finally:
        a.signal(signal.SIGCONT)
    fenced = a.wait_for_log({"event": "run_fenced"}, timeout=15)
    assert fenced["runId"] == rid
    # A's late result changed nothing: let its history writer catch up (a
    # later run through A proves it is writing again) and look again
    [probe] = jrredis.enqueue(bins, db_url, redis_server)
    jrcli.wait_runs(db, [probe], "succeeded", timeout=20)
    b.terminate()
    later = jrredis.enqueue(bins, db_url, redis_server, count=3)
    jrcli.wait_runs(db, later, "succeeded", timeout=20)
    row2 = jrcli.runs(db, [rid])[rid]
    assert (row2["status"], row2["consumer"], row2["attempts"], row2["finished_at"]) == \
        ("succeeded", "s-b", 2, row["finished_at"]), row2
    assert not jrredis.events(b, "run_fenced")


def test_run_longer_than_the_lease_runs_once(bins, db, db_url, redis_server, spawn):
    a, rid = _one_run_in_hand(bins, db, db_url, redis_server, spawn, "l-a", 3000)
    b = jrredis.consumer(spawn, db_url, redis_server, "l-b", WORKER_CONCURRENCY=1)
    row = jrcli.wait_runs(db, [rid], "succeeded", timeout=20)[rid]
    assert row["attempts"] == 1 and row["consumer"] == "l-a", row
    assert row["duration_ms"] >= 3000, row
    for p in (a, b):
        assert not jrredis.events(p, "run_fenced"), p.name
    # b never started it: the run was delivered once
    assert redis_server.client().xpending("jr:runs", "jr:workers")["pending"] == 0


def test_retries_dead_and_malformed_entries(bins, db, db_url, redis_server, spawn):
    _migrated(bins, db_url)
    c = jrredis.consumer(spawn, db_url, redis_server, "f-a")
    # max attempts travels with the run: set on the enqueuing process only
    [ft] = jrredis.enqueue(bins, db_url, redis_server, payload='{"failTimes":2}', JOB_MAX_ATTEMPTS=3)
    [fa] = jrredis.enqueue(bins, db_url, redis_server, payload='{"failAlways":true}',
                           JOB_MAX_ATTEMPTS=3)
    r = redis_server.client()
    r.xadd("jr:runs", {"garbage": "yes", "x": "\x01\x02"})
    r.xadd("jr:runs", {"v": "1", "type": "run", "id": "bad-json-1", "job": "noop",
                       "payload": "{not json"})
    r.xadd("jr:runs", {"v": "9", "type": "run", "id": "bad-version-1", "job": "noop"})
    row = jrcli.wait_runs(db, [ft], "succeeded", timeout=20)[ft]
    assert (row["attempts"], row["max_attempts"]) == (3, 3), row
    row = jrcli.wait_runs(db, [fa], "dead", timeout=20)[fa]
    assert (row["attempts"], row["max_attempts"]) == (3, 3), row
    assert "failAlways" in (row["error"] or ""), row
    harness.wait_until(lambda: db.scalar("SELECT count(*) FROM job_runs WHERE status = 'dead'"
                                         " AND error LIKE 'malformed entry:%%'") == 3,
                       timeout=10, msg="3 malformed entries recorded dead")
    assert {x[0] for x in db.query("SELECT id FROM job_runs WHERE error LIKE 'malformed entry:%%'")} \
        >= {"bad-json-1", "bad-version-1"}
    # the consumer keeps working
    after = jrredis.enqueue(bins, db_url, redis_server, count=5)
    jrcli.wait_runs(db, after, "succeeded", timeout=20)
    assert c.returncode is None
    assert len([e for e in jrredis.events(c, "run_failed") if e.get("runId") == fa]) == 2
    assert [e["runId"] for e in jrredis.events(c, "run_dead")].count(fa) == 1


def test_drain_once_takes_every_kind_of_due_work(bins, db, db_url, redis_server, spawn):
    _migrated(bins, db_url)
    # r1: claimed by x, which dies: reclaimable after the lease
    x = jrredis.consumer(spawn, db_url, redis_server, "d-x", WORKER_CONCURRENCY=1)
    [r1] = jrredis.enqueue(bins, db_url, redis_server, payload='{"sleepMs":1500}')
    jrredis.wait_running(db, r1, "d-x")
    x.kill9()
    # r2: claimed by an earlier incarnation of the drain's own name
    # (a long lease: this one must not reclaim r1 itself)
    d = jrredis.consumer(spawn, db_url, redis_server, "d-own", WORKER_CONCURRENCY=1,
                         JOB_LEASE_MS=60000)
    [r2] = jrredis.enqueue(bins, db_url, redis_server, payload='{"sleepMs":1500}')
    jrredis.wait_running(db, r2, "d-own")
    d.kill9()
    # r3: new; r4: a retry that is due (in jr:delayed, as the protocol stores it)
    [r3] = jrredis.enqueue(bins, db_url, redis_server)
    r = redis_server.client()
    member = {"v": "1", "type": "run", "id": "retry-due-1", "job": "noop", "payload": "{}",
              "src": "adhoc", "attempt": "1", "max": "5"}
    r.zadd("jr:delayed", {json.dumps(member): 1})
    harness.wait_until(lambda: all(e["time_since_delivered"] >= 1100 for e in r.xpending_range(
        "jr:runs", "jr:workers", "-", "+", 10)), timeout=10, msg="leases expired")
    drain = jrredis.consumer(spawn, db_url, redis_server, "d-own", args=["--drain-once"],
                             JOB_RUNNER_INTERVAL_MS=100)
    rc = drain.wait(180)
    assert rc == 0, drain.log_tail()
    ids = [r1, r2, r3, "retry-due-1"]
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=10)
    assert rows[r1]["attempts"] == 2 and rows[r2]["attempts"] == 2, (rows[r1], rows[r2])
    assert rows[r3]["attempts"] == 1 and rows["retry-due-1"]["attempts"] == 2
    assert len(jrredis.cycles(drain)) == 1
    done = jrredis.events(drain, "drain_complete")[0]
    assert (done["cycles"], done["claimed"], done["succeeded"]) == (1, 4, 4), done
    assert {rows[i]["consumer"] for i in ids} == {"d-own"}
    assert r.zcard("jr:delayed") == 0
    assert r.xpending("jr:runs", "jr:workers")["pending"] == 0
    # a run that fails for good makes drain-once exit 1
    [bad] = jrredis.enqueue(bins, db_url, redis_server, payload='{"failAlways":true}',
                            JOB_MAX_ATTEMPTS=1)
    drain2 = jrredis.consumer(spawn, db_url, redis_server, "d-2", args=["--drain-once"])
    assert drain2.wait(60) == 1, drain2.log_tail()
    assert jrcli.wait_runs(db, [bad], "dead", timeout=10)[bad]["attempts"] == 1


def test_sigterm_with_a_run_in_hand_finishes_it(bins, db, db_url, redis_server, spawn):
    c, rid = _one_run_in_hand(bins, db, db_url, redis_server, spawn, "t-a", 1500)
    c.signal(signal.SIGTERM)
    assert c.wait(20) == 0, c.log_tail()
    row = jrcli.wait_runs(db, [rid], "succeeded", timeout=10)[rid]
    assert row["attempts"] == 1 and row["consumer"] == "t-a", row
    assert redis_server.client().xpending("jr:runs", "jr:workers")["pending"] == 0
