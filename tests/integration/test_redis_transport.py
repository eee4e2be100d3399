"""The Redis Streams transport end to end, with the real binaries: runs
enqueued by `producer enqueue` and by a raw XADD from "another service"
(docs/protocol.md) are run by `consumer --drain-once`; a malformed entry is
recorded as dead; ticks are deduplicated in Redis, and with two real
consumers cycles follow the ticks of 0, 1 or 3 producers."""

import json
import time

import pytest
import redis

import harness
import jrcli
import jrredis


def _env(redis_server, db_url, **extra):
    env = {"REDIS_URL": redis_server.url, "DATABASE_URL": db_url, "LOG_FORMAT": "json",
           "JOB_LEASE_MS": "2000", "JOB_BACKOFF_BASE_MS": "50", "JOB_BACKOFF_MAX_MS": "100"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _events(r):
    out = []
    for _id, fields in r.xrange("jr:events"):
        out.extend(json.loads(fields["e"]))
    return out


def test_enqueue_and_drain_through_redis(redis_server, db, db_url, spawn):
    r = redis_server.client()
    # the producer's enqueue path writes to the stream
    p = spawn("producer", ["--migrate-only"], env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    p = spawn("producer", ["enqueue", "noop", "--count", "3", "--payload", '{"x":1}'],
              env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    ids = [l.strip() for l in p.lines() if len(l.strip()) == 36]
    assert len(ids) == 3
    assert r.xlen("jr:runs") == 3
    # another service enqueues with one XADD, and one writes garbage
    r.xadd("jr:runs", {"v": "1", "type": "run", "id": "ext-1", "job": "noop",
                       "payload": '{"failTimes":1}', "src": "adhoc", "attempt": "0",
                       "max": "3"})
    r.xadd("jr:runs", {"v": "1", "type": "run", "job": "noop"})   # no id
    c = spawn("consumer", ["--drain-once"], env=_env(redis_server, db_url, WORKER_HTTP_PORT=0))
    rc = c.wait(60)
    assert rc in (0, 1), c.log_tail()
    ev = _events(r)
    by_id = {}
    for e in ev:
        if e["status"] != "running":
            by_id.setdefault(e["id"], []).append(e["status"])
    # quick runs are not announced as running: they go from queued to their end
    # (one is only if a hiccup held it past WORKER_ANNOUNCE_AFTER_MS)
    assert sum(e["status"] == "running" for e in ev) < 4
    for i in ids:
        assert by_id.get(i) == ["succeeded"], (i, by_id.get(i))
    dead = [e for e in ev if e["status"] == "dead"]
    assert len(dead) == 1 and dead[0]["error"].startswith("malformed entry:")
    # ext-1 failed once, then (after its backoff) succeeded on attempt 2 --
    # if the drain ended before the retry was due, it waits in jr:delayed
    assert by_id["ext-1"][0] == "failed"
    if len(by_id["ext-1"]) == 2:
        assert by_id["ext-1"][1] == "succeeded"
    else:
        assert r.zcard("jr:delayed") == 1
    assert r.xpending("jr:runs", "jr:workers")["pending"] == 0
    # the history writer of the consumer recorded the final states before exit
    for i in ids:
        assert db.query("SELECT status, attempts, transport, payload->>'x', consumer IS NOT NULL"
                        " FROM job_runs WHERE id = %s", (i,)) == [("succeeded", 1, "redis", "1", True)]
    assert db.scalar("SELECT count(*) FROM job_runs WHERE status = 'dead'"
                     " AND error LIKE 'malformed entry:%%'") == 1
    assert db.scalar("SELECT status FROM job_runs WHERE id = 'ext-1'") in ("failed", "succeeded")



def test_a_run_that_takes_a_while_is_announced_running(redis_server, db, db_url, spawn):
    """A run executing for longer than WORKER_ANNOUNCE_AFTER_MS (100 ms) is
    announced: job_runs shows it running, with its start, while it runs;
    then it succeeds."""
    p = spawn("producer", ["enqueue", "noop", "--payload", '{"sleepMs":2000}'],
              env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    rid = [l.strip() for l in p.lines() if len(l.strip()) == 36][0]
    c = spawn("consumer", [], env=_env(redis_server, db_url, WORKER_HTTP_PORT=0))
    row = harness.wait_until(
        lambda: (lambda r: r if r and r[0][0] != "queued" else None)(
            db.query("SELECT status, started_at IS NOT NULL, consumer FROM job_runs WHERE id = %s",
                     (rid,))),
        timeout=20, interval=0.05, msg="the run's row to leave queued")
    assert row[0][0] == "running" and row[0][1] and row[0][2], row
    harness.wait_until(lambda: db.scalar("SELECT status FROM job_runs WHERE id = %s", (rid,))
                       == "succeeded", timeout=20, msg="the run to succeed")
    c.terminate()


def test_three_producers_one_tick_per_slot(redis_server, db_url, spawn):
    r = redis_server.client()
    p = spawn("producer", ["--migrate-only"], env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    procs = []
    for i in range(3):
        procs.append(spawn("producer", [], name="producer-%d" % i,
                           env=_env(redis_server, db_url, PORT=harness.free_port(),
                                    JOB_RUNNER_INTERVAL_MS=200, API_TOKEN="t" * 32)))
    # play the consumer: take each tick as it comes (an undelivered tick
    # holds back the next ones)
    slots = []

    def take():
        try:
            got = r.xreadgroup("jr:workers", "tester", {"jr:runs": ">"}, count=10, block=100)
        except redis.exceptions.ResponseError as e:   # NOGROUP: no producer has opened yet
            assert "NOGROUP" in str(e)
            return False
        for _stream, entries in got or []:
            for eid, f in entries:
                assert f.get("type") == "tick"
                slots.append(int(f["slot"]))
                r.xack("jr:runs", "jr:workers", eid)
        return len(slots) >= 8
    harness.wait_until(take, timeout=20, interval=0.01, msg="8 ticks")
    for p in procs:
        p.terminate()
    assert len(slots) == len(set(slots)), slots         # never two ticks for one slot
    # one per slot unless all three producers were starved at once
    assert max(slots) - min(slots) + 1 <= 2 * len(slots), slots


@pytest.mark.parametrize("producers", [0, 1, 3])
def test_cycles_follow_the_ticks_of_0_1_3_producers(producers, bins, redis_server, db, db_url,
                                                     spawn):
    """Two real consumers, Redis up: with no producer nothing ticks and no
    cycle runs (the consumers' own timer is only for Redis outages); with one
    or three producers about one cycle per JOB_RUNNER_INTERVAL_MS, never more
    than one per slot."""
    interval = 300
    jrcli.migrate(bins, db_url)
    cons = [jrredis.consumer(spawn, db_url, redis_server, "tk-%d" % i,
                             JOB_RUNNER_INTERVAL_MS=interval) for i in range(2)]
    for i in range(producers):
        spawn("producer", [], name="producer-%d" % i,
              env=jrredis.env(db_url, redis_server, PORT=harness.free_port(), API_TOKEN="t" * 32,
                              CONSUMER_NAME="prod-%d" % i, JOB_RUNNER_INTERVAL_MS=interval))
    if producers:
        harness.wait_until(lambda: any(jrredis.cycles(c, "tick") for c in cons), timeout=15,
                           msg="a first tick-driven cycle")
    # the consumers are claiming: a run goes through
    jrcli.wait_runs(db, jrredis.enqueue(bins, db_url, redis_server), "succeeded", timeout=15)
    last0, count0 = jrredis.job_runner_state(db)
    logged0 = sum(len(jrredis.cycles(c)) for c in cons)
    t0 = time.time()
    time.sleep(3.0)   # a measurement window, not a wait for something
    t1 = time.time()
    last1, count1 = jrredis.job_runner_state(db)
    logged = sum(len(jrredis.cycles(c)) for c in cons) - logged0
    slots = int(t1 * 1000 // interval) - int(t0 * 1000 // interval)
    if producers == 0:
        assert logged == 0 and sum(len(jrredis.cycles(c)) for c in cons) == 0
        assert (last1, count1) == (last0, count0) == (None, 0)
        assert not redis_server.client().exists("jr:tick:last")
    else:
        cycles = count1 - count0
        assert last1 > last0
        assert slots // 3 <= cycles <= slots + 2, (cycles, slots)
        assert slots // 3 <= logged <= slots + 2, (logged, slots)
        assert all(e["trigger"] == "tick" for c in cons for e in jrredis.cycles(c))


def test_run_threads_share_the_housekeeping(redis_server, db, db_url, spawn):
    """The run threads of one consumer do the Redis housekeeping (promote,
    trim, consumer GC, the lease-expiry scan) once per interval for the
    process, not once per thread: at WORKER_CONCURRENCY=40 an idle consumer
    used to send Redis about 40 x 9 scripts a second (each thread promoting
    every 200 ms, scanning the pending list every 500 ms, trimming every
    second).  The housekeeping still happens: an entry left pending by a
    consumer that vanished is taken over after its lease, and a delayed run
    is promoted and run."""
    r = redis_server.client()
    p = spawn("producer", ["--migrate-only"], env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    # a consumer that vanished holds an entry (claimed, never acknowledged)
    try:
        r.xgroup_create("jr:runs", "jr:workers", id="0", mkstream=True)
    except redis.ResponseError:
        pass   # BUSYGROUP
    r.xadd("jr:runs", {"v": "1", "type": "run", "id": "orphan-1", "job": "noop", "payload": "{}",
                       "src": "adhoc", "attempt": "0", "max": "3"})
    assert r.xreadgroup("jr:workers", "ghost", {"jr:runs": ">"}, count=1)
    spawn("consumer", [], env=_env(redis_server, db_url, WORKER_HTTP_PORT=0, WORKER_CONCURRENCY=40,
                                   CONSUMER_NAME="hk"))
    harness.wait_until(lambda: sum(1 for c in r.client_list() if c["name"] == "jobrunner:consumer:hk")
                       >= 40, timeout=30, msg="the 40 run threads' Redis connections")
    harness.wait_until(lambda: db.scalar("SELECT status FROM job_runs WHERE id = 'orphan-1'")
                       == "succeeded", timeout=20, msg="the orphaned entry to be taken over and run")
    r.config_resetstat()
    time.sleep(2.0)   # a measurement window, not a wait for something
    calls = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    # shared: ~5 promotes, ~2 scans and 2 trims a second (and the history
    # writer's few); one per thread, it was over 300 a second
    assert calls < 120, calls
    p = spawn("producer", ["enqueue", "noop", "--delay-ms", "300"], env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    delayed = [l.strip() for l in p.lines() if len(l.strip()) == 36][0]
    jrcli.wait_runs(db, [delayed], "succeeded", timeout=20)


def _script_calls(r, sub):
    return r.info("commandstats").get("cmdstat_script|%s" % sub, {}).get("calls", 0)


def test_scripts_are_sent_only_when_the_server_lacks_them(redis_server, db, db_url, spawn):
    """A new connection asks SCRIPT EXISTS with the SHA1s the build computed
    and loads only what is missing: a second consumer's 20 connections load
    nothing.  After a SCRIPT FLUSH every script is loaded again where it is
    next needed (EVALSHA's NOSCRIPT), and runs keep succeeding."""
    r = redis_server.client()
    p = spawn("producer", ["--migrate-only"], env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    r.script_flush()
    spawn("consumer", [], env=_env(redis_server, db_url, WORKER_HTTP_PORT=0, WORKER_CONCURRENCY=4,
                                   CONSUMER_NAME="s1"))
    harness.wait_until(lambda: sum(1 for c in r.client_list() if c["name"] == "jobrunner:consumer:s1")
                       >= 4, timeout=30, msg="the first consumer's connections")
    loaded = _script_calls(r, "load")
    assert loaded >= 14, "the first connections found the scripts missing and loaded them"
    r.config_resetstat()
    spawn("consumer", [], env=_env(redis_server, db_url, WORKER_HTTP_PORT=0, WORKER_CONCURRENCY=20,
                                   CONSUMER_NAME="s2"))
    harness.wait_until(lambda: sum(1 for c in r.client_list() if c["name"] == "jobrunner:consumer:s2")
                       >= 20, timeout=30, msg="the second consumer's 20 run threads' connections")
    assert _script_calls(r, "exists") >= 20
    # 1: the start-up permission probe's SCRIPT LOAD "return 1" (app.c);
    # with every connection loading the 15 scripts it was 20 x 15 + 1
    assert _script_calls(r, "load") <= 1, "a connection sent scripts the server already had"
    p = spawn("producer", ["enqueue", "noop", "--count", "20"], env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    ids = [l.strip() for l in p.lines() if len(l.strip()) == 36]
    jrcli.wait_runs(db, ids, "succeeded", timeout=30)
    r.script_flush()
    p = spawn("producer", ["enqueue", "noop", "--count", "20", "--payload", '{"failTimes":1}'],
              env=_env(redis_server, db_url))
    assert p.wait(30) == 0
    more = [l.strip() for l in p.lines() if len(l.strip()) == 36]
    assert len(more) == 20
    jrcli.wait_runs(db, more, "succeeded", timeout=30)
    assert _script_calls(r, "load") + r.info("commandstats").get("cmdstat_eval", {}).get("calls", 0) > 0, \
        "after the flush the scripts were sent again"
