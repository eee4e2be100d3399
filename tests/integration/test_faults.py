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


# ---- items 1, 2, 8: one idempotency key, one run ---------------------------

def _count_runs(db):
    return db.scalar("SELECT count(*) FROM job_runs WHERE job = 'noop'")


def test_a_key_retried_while_redis_is_stopped_is_one_run(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    jrredis.consumer(spawn, db_url, redis_server, "k1-a")
    _prod, url = _producer(spawn, db_url, redis_server)
    body = {"idempotencyKey": "k1", "payload": {"sleepMs": 50}}
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        answers = [_post(url, "noop", body) for _ in range(2)]
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    ids = {b["id"] for st, _h, b in answers if st == 202}
    assert all(st in (202, 503) for st, _h, _b in answers), answers
    assert len(ids) == 1, answers
    [rid] = ids
    jrcli.wait_runs(db, [rid], "succeeded", timeout=30)
    # whatever Redis applies late, and whatever the history writer records,
    # the key has one run, and only one run exists at all
    time.sleep(2.5)
    assert _count_runs(db) == 1, db.query("SELECT id, status, transport, idempotency_key"
                                          " FROM job_runs")
    # a repeat answers that run with its current status
    st, _h, b = _post(url, "noop", body)
    assert (st, b["id"], b["status"]) == (202, rid, "succeeded"), b


def test_a_key_first_used_while_redis_is_down_holds_once_it_is_back(bins, db, db_url,
                                                                   redis_aof, spawn):
    jrcli.migrate(bins, db_url)
    jrredis.consumer(spawn, db_url, redis_aof, "k2-a")
    _prod, url = _producer(spawn, db_url, redis_aof)
    body = {"idempotencyKey": "k2"}
    redis_aof.kill()
    st, _h, first = _post(url, "noop", body)
    assert st == 202, first
    redis_aof.start()
    # once Redis answers again (an unkeyed enqueue goes through it) ...
    harness.wait_until(lambda: _post(url, "noop", {})[2].get("id"), timeout=20,
                       msg="an enqueue accepted after the restart")
    st, _h, again = _post(url, "noop", body)
    assert st == 202 and again["id"] == first["id"], (first, again)
    rows = db.query("SELECT id FROM job_runs WHERE idempotency_key = 'k2'")
    assert rows == [(first["id"],)], rows
    jrcli.wait_runs(db, [first["id"]], "succeeded", timeout=30)
    # the CLI path agrees
    assert jrredis.enqueue(bins, db_url, redis_aof, key="k2") == [first["id"]]


# ---- item 3: runs that fell back to PostgreSQL drain promptly --------------

def _drain_s(db, ids):
    return db.scalar("SELECT extract(epoch from max(finished_at) - min(enqueued_at))"
                     " FROM job_runs WHERE id = ANY(%s)", (ids,))


def test_the_postgresql_queue_drains_as_fast_as_redis_once_redis_is_back(bins, db, db_url,
                                                                        redis_server, spawn):
    jrcli.migrate(bins, db_url)
    jrredis.consumer(spawn, db_url, redis_server, "d3-a", WORKER_CONCURRENCY=4)
    n, payload = 120, '{"sleepMs":50}'
    via_redis = jrredis.enqueue(bins, db_url, redis_server, count=n, payload=payload)
    jrcli.wait_runs(db, via_redis, "succeeded", timeout=60)
    # what a producer accepts while Redis is down goes to the PostgreSQL
    # queue (transport 'pg'): a producer without REDIS_URL writes the same
    via_pg = jrcli.enqueue(bins, db_url, "noop", count=n, payload=payload)
    # and a run enqueued through Redis meanwhile is not held behind them
    time.sleep(0.3)
    [fresh] = jrredis.enqueue(bins, db_url, redis_server)
    jrcli.wait_runs(db, via_pg, "succeeded", timeout=120)
    row = jrcli.wait_runs(db, [fresh], "succeeded", timeout=30)[fresh]
    t_redis, t_pg = float(_drain_s(db, via_redis)), float(_drain_s(db, via_pg))
    wait = db.scalar("SELECT extract(epoch from started_at - enqueued_at) FROM job_runs"
                     " WHERE id = %s", (fresh,))
    print("drain of %d runs: redis %.2f s, postgres %.2f s; fresh run waited %.3f s"
          % (n, t_redis, t_pg, wait))
    assert t_pg <= 2 * t_redis + 1.0, (t_redis, t_pg)
    assert wait < 3.0, (wait, row)
