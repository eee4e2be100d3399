"""JOB_HISTORY=failures in Redis mode, with the real binaries, redis-server
and PostgreSQL: runs that succeed at their first attempt leave no row in
job_runs; a run that failed keeps its row to its final state (succeeded
after a retry, or dead); GET /runs/{id} of an unrecorded run answers 404
saying why once Redis no longer holds it; the successes put no event on jr:events; a bad value stops start-up naming the variable.  The history
writer works behind the stream: every check polls."""

import json

import harness
import jrcli
import jrredis

TOKEN = "history-test-token-5d1c"


def _history_caught_up(r):
    """Nothing unread or pending in the history group of either stream."""
    for key in ("jr:runs", "jr:events"):
        groups = [g for g in r.xinfo_groups(key) if g["name"] == "jr:history"]
        if not groups or groups[0]["pending"] or groups[0].get("lag"):
            return False
    return True


def test_failures_mode_records_only_runs_that_failed(bins, db, db_url, redis_server, spawn):
    jrcli.migrate(bins, db_url)
    port = harness.free_port()
    jrredis.consumer(spawn, db_url, redis_server, "h-a", JOB_HISTORY="failures",
                     JOB_BACKOFF_BASE_MS=50, WORKER_HTTP_PORT=port)
    ok = jrredis.enqueue(bins, db_url, redis_server, count=300)
    [ft] = jrredis.enqueue(bins, db_url, redis_server, payload='{"failTimes":1}', JOB_MAX_ATTEMPTS=3)
    [fa] = jrredis.enqueue(bins, db_url, redis_server, payload='{"failAlways":true}',
                           JOB_MAX_ATTEMPTS=2)
    row = jrcli.wait_runs(db, [ft], "succeeded", timeout=30)[ft]
    assert row["attempts"] == 2, row
    row = jrcli.wait_runs(db, [fa], "dead", timeout=30)[fa]
    assert row["attempts"] == 2 and "failAlways" in (row["error"] or ""), row

    def all_succeeded():
        text = harness.http("GET", "http://127.0.0.1:%d/metrics" % port)[2]
        for line in str(text).splitlines():
            if line.startswith("jobrunner_runs_succeeded_total"):
                return float(line.split()[-1]) >= 301
        return False
    harness.wait_until(all_succeeded, timeout=60, msg="301 successes counted on /metrics")
    r = redis_server.client()
    harness.wait_until(lambda: _history_caught_up(r), timeout=30,
                       msg="the history writer read and acknowledged everything")
    assert db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s)", (ok,)) == 0
    assert db.scalar("SELECT count(*) FROM job_runs WHERE transport = 'redis'") == 2
    # the successes at the first attempt put no event on jr:events either:
    # what is there is ft's failure and success, fa's failure and death
    events = []
    for _, f in r.xrange("jr:events"):
        events += json.loads(f["e"])
    assert sorted((e["id"], e["status"]) for e in events) == sorted(
        [(ft, "failed"), (ft, "succeeded"), (fa, "failed"), (fa, "dead")]), events

    api_port = harness.free_port()
    api = spawn("producer", env=jrredis.env(db_url, redis_server, PORT=api_port, API_TOKEN=TOKEN,
                                            JOB_HISTORY="failures"), name="h-api")
    api.wait_for_log({"event": "producer_started"}, timeout=15)
    auth = {"Authorization": "Bearer " + TOKEN}
    base = "http://127.0.0.1:%d/api/integrations/jobs/runs/" % api_port
    # answered from Redis while jr:runs holds its entry (test_run_lookup.py),
    # then 404 once the trim has removed it
    harness.wait_until(lambda: not any(f.get("id") == ok[0] for _, f in r.xrange("jr:runs")),
                       timeout=30, msg="the trim removed the successes' entries")
    status, _, body = harness.http("GET", base + ok[0], headers=auth)
    assert status == 404, (status, body)
    assert body["error"]["code"] == "unknown_run"
    assert "JOB_HISTORY=failures" in body["error"]["message"], body
    status, _, body = harness.http("GET", base + ft, headers=auth)
    assert status == 200 and body["status"] == "succeeded", (status, body)


def test_bad_job_history_value_exits_2_naming_the_variable(bins, db_url, redis_server):
    p = jrcli.run(bins.consumer, [], jrredis.env(db_url, redis_server, JOB_HISTORY="some"))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "JOB_HISTORY" in p.stderr, p.stderr
