"""Correct under faults, with the real binaries, redis-server and PostgreSQL:
one idempotency key is one run whatever transport took it and whatever
failed in between; runs that fell back to PostgreSQL drain promptly once
Redis is back; each run's record carries its own start and end; a short run
is not held behind a long one claimed with it; a run id the protocol allows
can be read back; a malformed entry keeps its entry's time; Redis data loss
is detected and what the record says was unfinished is requeued once.

job_runs is written behind the stream in Redis mode: every check polls."""

import json
import signal
import time

import harness
import jrcli
import jrredis

TOKEN = "f" * 32
API = "/api/integrations/jobs"


def _producer(spawn, db_url, redis=None, name="producer", **over):
    """A producer server (Redis mode when redis is given); (Proc, base URL)."""
    port = harness.free_port()
    extra = dict(PORT=port, API_TOKEN=TOKEN, CONSUMER_NAME=name, **over)
    env = jrredis.env(db_url, redis, **extra) if redis else jrcli.env(db_url, **extra)
    p = spawn("producer", [], name=name, env=env)
    p.wait_for_log({"event": "producer_started"}, timeout=20)
    return p, "http://127.0.0.1:%d" % port


def _post(url, job, body, timeout=30):
    return harness.http("POST", url + API + "/%s/run" % job, body,
                        headers={"Authorization": "Bearer " + TOKEN}, timeout=timeout)


def _get(url, path):
    return harness.http("GET", url + API + path, headers={"Authorization": "Bearer " + TOKEN})


def _pg_consumer(spawn, db_url, name, **over):
    p = spawn("consumer", [], env=jrcli.env(db_url, CONSUMER_NAME=name, **over), name=name)
    p.wait_for_log({"event": "job_runner_started"}, timeout=20)
    return p


def _intervals(rows, ids):
    return [(rows[i]["started_at"], rows[i]["finished_at"]) for i in ids]


def _assert_own_times(rows, ids, sleep_ms):
    """Runs executed one after the other on one thread: each record shows
    its own [start, end], about sleep_ms long, and they do not overlap."""
    iv = sorted(_intervals(rows, ids))
    for start, end in iv:
        assert start is not None and end is not None, iv
        took = (end - start).total_seconds() * 1000
        assert sleep_ms * 0.9 <= took < sleep_ms * 3, (took, iv)
    for (_s1, e1), (s2, _e2) in zip(iv, iv[1:]):
        assert e1 <= s2, "records of one thread overlap: %s" % iv


# ---- item 7: one definition of a valid run id ------------------------------

def test_a_run_id_the_protocol_allows_can_be_read_back_and_retried(bins, db, db_url,
                                                                   redis_server, spawn):
    jrcli.migrate(bins, db_url)
    jrredis.consumer(spawn, db_url, redis_server, "id-a")
    _prod, url = _producer(spawn, db_url, redis_server)
    r = redis_server.client()
    r.xadd("jr:runs", {"v": "1", "type": "run", "id": "order:42.a", "job": "noop"})
    r.xadd("jr:runs", {"v": "1", "type": "run", "id": "order:43.b", "job": "noop",
                       "payload": '{"failAlways":true}', "max": "1"})
    jrcli.wait_runs(db, ["order:42.a"], "succeeded", timeout=20)
    status, _h, body = _get(url, "/runs/order:42.a")
    assert status == 200 and body["id"] == "order:42.a", body
    jrcli.wait_runs(db, ["order:43.b"], "dead", timeout=20)
    status, _h, body = harness.http("POST", url + API + "/dead/order:43.b/retry",
                                    headers={"Authorization": "Bearer " + TOKEN})
    assert status == 202, body
    # an id outside the protocol's alphabet is still refused
    status, _h, _b = _get(url, "/runs/bad%20id")
    assert status == 404


# ---- item 8: a malformed entry keeps the stream entry's time ---------------

def test_a_malformed_entry_is_recorded_with_the_entry_time(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    jrredis.consumer(spawn, db_url, redis_server, "mal-a")
    r = redis_server.client()
    entry = r.xadd("jr:runs", {"garbage": "yes"})
    entry_ms = int(entry.split("-")[0])
    harness.wait_until(lambda: db.scalar("SELECT count(*) FROM job_runs WHERE status = 'dead'"
                                         " AND error LIKE 'malformed entry:%%'") == 1,
                       timeout=15, msg="the malformed entry recorded dead")
    enq = db.scalar("SELECT (extract(epoch from enqueued_at) * 1000)::bigint FROM job_runs"
                    " WHERE error LIKE 'malformed entry:%%'")
    assert abs(enq - entry_ms) <= 1, (enq, entry_ms)


# ---- item 5: each run's record carries its own start and end ---------------

def _grow_batch(enqueue, db, n=64):
    """Quick runs first, so that the consumer's batch has grown past 1."""
    ids = enqueue(n)
    jrcli.wait_runs(db, ids, "succeeded", timeout=30)


def test_redis_mode_records_each_run_with_its_own_times(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    jrredis.consumer(spawn, db_url, redis_server, "t5-a", WORKER_CONCURRENCY=1)
    _grow_batch(lambda n: jrredis.enqueue(bins, db_url, redis_server, count=n), db)
    # three sleeping runs land in the stream at once (MULTI), so that one
    # claim takes them together
    ids = ["t5-%d" % i for i in range(3)]
    p = redis_server.client().pipeline(transaction=True)
    for i in ids:
        p.xadd("jr:runs", {"v": "1", "type": "run", "id": i, "job": "noop",
                           "payload": '{"sleepMs":300}'})
    p.execute()
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=30)
    _assert_own_times(rows, ids, 300)


def test_redisless_mode_records_each_run_with_its_own_times(bins, db, db_url, spawn):
    jrcli.migrate(bins, db_url)
    _pg_consumer(spawn, db_url, "t5-p", WORKER_CONCURRENCY=1)
    _grow_batch(lambda n: jrcli.enqueue(bins, db_url, "noop", count=n), db)
    ids = jrcli.enqueue(bins, db_url, "noop", count=3, payload='{"sleepMs":300}')
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=30)
    _assert_own_times(rows, ids, 300)
