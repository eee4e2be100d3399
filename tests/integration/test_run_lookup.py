"""GET /runs/{id} of a run without a row (JOB_HISTORY=failures) answered from
Redis (common/runlookup.c, common/lua/lookup.lua), with the real producer,
consumer, redis-server and PostgreSQL: a success at the first attempt is
answered "succeeded" with "recorded": false while its entry is in jr:runs,
then 404 saying why once the trim has removed it; a queued, a delayed and a
running run are answered from their entry; a failed run from its row; in
Redis-less mode nothing is looked up (404 naming the setting).

Trimming is held without sleeping: an extra consumer group on jr:runs that
never reads keeps every entry (the trim never passes any group's
undelivered entries, common/lua/trim.lua); destroying it lets the next trim
remove them."""

import os
import re

import harness
import jrcli
import jrredis
from apiclient import TOKEN, Api

HOLD = "jr:test-hold"
DEPLOYMENT_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                             "deployment.md")
RUNS = "/api/integrations/jobs/runs/"


def _producer(spawn, db_url, redis_server, name, **kw):
    port = harness.free_port()
    env = (jrredis.env(db_url, redis_server, **kw) if redis_server is not None
           else jrcli.env(db_url, **kw))
    env.update(PORT=str(port), API_TOKEN=TOKEN, JOB_HISTORY="failures")
    p = spawn("producer", env=env, name=name)
    p.wait_for_log({"event": "producer_started"}, timeout=15)
    api = Api(port)
    harness.wait_until(api.up, timeout=15, msg="producer answers /api/health")
    return api


def _get(api, run_id):
    return api.get(RUNS + run_id)


def _wait_status(api, run_id, want, timeout=30):
    def check():
        status, _, body = _get(api, run_id)
        return body if status == 200 and body["status"] == want else None
    return harness.wait_until(check, timeout=timeout, interval=0.05,
                              msg="GET runs/%s answers %s" % (run_id, want))


def test_success_answered_from_redis_until_trimmed(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    r = redis_server.client()
    r.xgroup_create("jr:runs", HOLD, id="0", mkstream=True)   # nothing is trimmed while it exists
    api = _producer(spawn, db_url, redis_server, "lk-api")
    jrredis.consumer(spawn, db_url, redis_server, "lk-c", JOB_HISTORY="failures",
                     JOB_BACKOFF_BASE_MS=50)
    run_id = api.enqueue("noop", {"payload": {"n": 7}, "orgId": "org-lk"})["id"]
    dead_id = api.enqueue("noop", {"payload": {"failAlways": True}})["id"]

    body = _wait_status(api, run_id, "succeeded")
    assert body["recorded"] is False, body
    assert body["id"] == run_id and body["job"] == "noop" and body["orgId"] == "org-lk", body
    assert body["attempts"] == 1 and body["source"] == "adhoc", body
    assert body["payload"] == {"n": 7}, body
    assert body["enqueuedAt"] is not None, body
    # what an acknowledged entry does not tell is null, not invented
    assert body["finishedAt"] is None and body["durationMs"] is None, body
    assert body["startedAt"] is None and body["consumer"] is None and body["error"] is None, body
    assert db.scalar("SELECT count(*) FROM job_runs WHERE id = %s", (run_id,)) == 0

    # a run that failed is answered from its row (no "recorded" key)
    row = jrcli.wait_runs(db, [dead_id], "dead", timeout=60)[dead_id]
    status, _, body = _get(api, dead_id)
    assert status == 200 and body["status"] == "dead" and "recorded" not in body, (status, body)
    assert body["attempts"] == row["attempts"], (body, row)

    # still held: the success is still answered from Redis
    status, _, body = _get(api, run_id)
    assert status == 200 and body["status"] == "succeeded", (status, body)

    # release the hold: the consumer's trim removes the entry, and the
    # answer becomes a 404 that says why
    r.xgroup_destroy("jr:runs", HOLD)

    def trimmed():
        return not any(f.get("id") == run_id for _, f in r.xrange("jr:runs"))
    harness.wait_until(trimmed, timeout=30, msg="the trim removed the run's entry")
    status, _, body = _get(api, run_id)
    assert status == 404 and body["error"]["code"] == "unknown_run", (status, body)
    msg = body["error"]["message"]
    assert "no longer holds it" in msg and "JOB_HISTORY=failures" in msg, msg


def test_queued_delayed_and_running_answered_from_redis(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    api = _producer(spawn, db_url, redis_server, "lk-api2")
    # no consumer yet: queued and delayed runs wait in jr:runs (the delayed
    # one first: the trim never passes the sleeping run while it runs)
    later = api.enqueue("noop", {"delayMs": 3600000})["id"]
    queued = api.enqueue("noop", {"payload": {"sleepMs": 60000}})["id"]
    status, _, body = _get(api, queued)
    assert status == 200 and body["status"] == "queued" and body["recorded"] is False, (status, body)
    assert body["attempts"] == 0 and body["consumer"] is None, body
    status, _, body = _get(api, later)
    assert status == 200 and body["status"] == "delayed" and body["runAt"], (status, body)
    assert db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s)", ([queued, later],)) == 0

    # a consumer takes the sleeping run: running, with the consumer's name;
    # the delayed one is parked in jr:delayed and still answered delayed
    jrredis.consumer(spawn, db_url, redis_server, "lk-c2", JOB_HISTORY="failures")
    body = _wait_status(api, queued, "running")
    assert body["attempts"] == 1 and body["consumer"] and body["recorded"] is False, body
    r = redis_server.client()
    harness.wait_until(lambda: r.zcard("jr:delayed") == 1, timeout=30,
                       msg="the delayed run parked in jr:delayed")

    def delayed_trimmed():
        return not any(f.get("id") == later for _, f in r.xrange("jr:runs"))
    harness.wait_until(delayed_trimmed, timeout=30, msg="the delayed run's entry trimmed")
    status, _, body = _get(api, later)
    assert status == 200 and body["status"] == "delayed" and body["runAt"], (status, body)
    assert body["recorded"] is False, body

    # an id Redis never had: 404 saying why
    status, _, body = _get(api, "0190f5a2-1c3d-7e4f-8a9b-0c1d2e3f4a5b")
    assert status == 404 and "JOB_HISTORY=failures" in body["error"]["message"], (status, body)


def test_redis_down_answers_503_not_a_hang(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    api = _producer(spawn, db_url, redis_server, "lk-api3")
    run_id = api.enqueue("noop")["id"]
    status, _, body = _get(api, run_id)
    assert status == 200 and body["status"] == "queued", (status, body)
    redis_server.stop()
    status, _, body = _get(api, run_id)
    assert status == 503 and body["error"]["code"] == "queue_unavailable", (status, body)


def test_redisless_keeps_the_404(bins, db, db_url, spawn):
    jrcli.migrate(bins, db_url)
    api = _producer(spawn, db_url, None, "lk-api4")
    # Redis-less: job_runs is the queue, a queued run has its row
    run_id = api.enqueue("noop")["id"]
    status, _, body = _get(api, run_id)
    assert status == 200 and body["status"] == "queued" and "recorded" not in body, (status, body)
    status, _, body = _get(api, "0190f5a2-1c3d-7e4f-8a9b-0c1d2e3f4a5b")
    assert status == 404 and body["error"]["code"] == "unknown_run", (status, body)
    assert "JOB_HISTORY=failures" in body["error"]["message"], body


def test_run_waiting_in_a_fairness_lane_answered_queued(bins, db, db_url, redis_server, spawn):
    """fair.lua moves a backlog into per-org lanes and acknowledges the
    originals: an acknowledged entry without an event is not a success
    when its run waits in a lane.  Checked with the original still in
    jr:runs (its own lane searched) and after the trim removed it (the
    lanes of the ring searched)."""
    jrcli.migrate(bins, db_url)
    api = _producer(spawn, db_url, redis_server, "lk-api5")
    big = api.enqueue("noop", [{"orgId": "big", "payload": {"sleepMs": 300}}] * 150)["ids"]
    api.enqueue("noop", {"orgId": "small"})
    last = big[-1]
    r = redis_server.client()
    jrredis.consumer(spawn, db_url, redis_server, "lk-c5", JOB_HISTORY="failures",
                     WORKER_CONCURRENCY=1)

    raw = redis_server.client(decode_responses=False)   # lane members are MessagePack

    def in_lane():
        return any(last.encode() in m for m in raw.lrange("jr:lane:o:big", 0, -1))
    harness.wait_until(in_lane, timeout=30, msg="the last run of big waits in its lane")
    status, _, body = _get(api, last)
    assert status == 200 and body["status"] == "queued", (status, body)
    assert body["recorded"] is False and body["orgId"] == "big", body

    def original_trimmed():
        return not any(f.get("id") == last for _, f in r.xrange("jr:runs"))
    harness.wait_until(original_trimmed, timeout=30, msg="the original entry trimmed")
    assert in_lane(), "the run left its lane before the check (the backlog is ~45 s)"
    status, _, body = _get(api, last)
    assert status == 200 and body["status"] == "queued", (status, body)
    assert body["recorded"] is False and body["payload"] == {"sleepMs": 300}, body
    assert db.scalar("SELECT count(*) FROM job_runs WHERE id = %s", (last,)) == 0


def test_documented_acl_user_can_look_runs_up(bins, db, db_url, redis_server, spawn):
    """The ACL line of docs/deployment.md covers the lookup's commands: a
    success (with jr:delayed holding a parked run, so that its members are
    searched too) and a delayed run answered by a producer that connects as
    that user."""
    line = re.search(r"^ACL SETUSER jobrunner .*$", open(DEPLOYMENT_MD).read(), re.M).group(0)
    jrcli.migrate(bins, db_url)
    c = redis_server.client()
    c.xgroup_create("jr:runs", HOLD, id="0", mkstream=True)
    c.execute_command(*line.replace(">CHANGE-ME", ">aclpw").split())
    c.execute_command("ACL", "SETUSER", "default", "off")   # nobody else gets in
    url = "redis://jobrunner:aclpw@127.0.0.1:%d/0" % redis_server.port
    api = _producer(spawn, db_url, None, "lk-api6", REDIS_URL=url)
    spawn("consumer", [], env=jrcli.env(db_url, REDIS_URL=url, CONSUMER_NAME="lk-c6",
                                        JOB_HISTORY="failures"),
          name="lk-c6").wait_for_log({"event": "job_runner_started"}, timeout=20)
    later = api.enqueue("noop", {"delayMs": 3600000})["id"]
    ok = api.enqueue("noop")["id"]
    body = _wait_status(api, ok, "succeeded")
    assert body["recorded"] is False, body
    status, _, body = _get(api, later)
    assert status == 200 and body["status"] == "delayed", (status, body)
