"""The producer's HTTP API, row by row of docs/operations.md ("Endpoints"), over real HTTP against the
real producer and consumer with real PostgreSQL (and Redis in Redis mode).

Every test runs in both modes: Redis-less (no REDIS_URL: PostgreSQL is the
queue) and Redis mode (REDIS_URL set, consumers on the stream; skipped while
the Redis transport is not on this tree, see apiclient.REDIS_SKIP).  In
Redis mode a run's row in job_runs is written behind the stream, so reads
of a fresh run poll.

Most tests share one system per mode (module scope); those that need an
empty queue or no consumer start their own.
"""

import os
import threading
import time

import pytest

import harness
from apiclient import assert_error, is_iso, metric, prometheus

RUN_FIELDS = {"id", "job", "orgId", "status", "attempts", "enqueuedAt", "startedAt",
              "finishedAt", "durationMs", "error", "consumer"}


# ---- health ---------------------------------------------------------------


def test_health(system):
    status, headers, data = system.api.get("/api/health", token="")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert data == {"status": "ok"}


def test_health_extended_fields(system):
    status, _, data = system.api.get("/api/health/extended", token="")
    assert status == 200, data
    for k in ("status", "mode", "jobRunner", "queueBackend", "checks", "version", "uptimeS"):
        assert k in data, (k, data)
    assert data["status"] == "ok"
    assert data["mode"] == "api"
    assert data["jobRunner"] == {"enabled": False, "workerMode": False}
    assert data["queueBackend"] == ("redis" if system.mode == "redis" else "postgres")
    for name in ("database", "redis"):
        c = data["checks"][name]
        assert c["ok"] is True, c
        assert isinstance(c["latencyMs"], (int, float)) and c["latencyMs"] >= 0
        assert "error" not in c
    assert isinstance(data["version"], str) and data["version"]
    assert isinstance(data["uptimeS"], (int, float)) and data["uptimeS"] >= 0


# ---- routing --------------------------------------------------------------


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/nope", 404, "not_found"),
    ("GET", "/api/health/", 404, "not_found"),
    ("GET", "/api/integrations/jobs", 404, "not_found"),
    ("POST", "/api/health", 405, "method_not_allowed"),
    ("DELETE", "/api/integrations/jobs/metrics", 405, "method_not_allowed"),
    ("GET", "/api/integrations/jobs/noop/run", 405, "method_not_allowed"),
    ("PUT", "/metrics", 405, "method_not_allowed"),
])
def test_unknown_path_and_wrong_method(system, method, path, status, code):
    resp = system.api.req(method, path)
    assert_error(resp, status, code)
    if status == 405:
        assert "allow" in resp[1], resp[1]


# ---- enqueue: single ------------------------------------------------------


def test_run_single_answer_and_record(system):
    api = system.api
    body = {"orgId": "org-single", "payload": {"sleepMs": 1, "tag": "x\u00e9"}}
    status, headers, data = api.post("/api/integrations/jobs/noop/run", body)
    assert status == 202, data
    assert headers["content-type"].startswith("application/json")
    assert set(data) == {"id", "job", "status"}
    assert data["job"] == "noop" and data["status"] == "queued"
    run = api.wait_status(data["id"], "succeeded")
    assert RUN_FIELDS <= set(run), run
    assert run["id"] == data["id"] and run["job"] == "noop" and run["orgId"] == "org-single"
    assert run["attempts"] == 1
    assert run["error"] is None
    assert run["consumer"] == system.consumers[0][0].name
    for k in ("enqueuedAt", "startedAt", "finishedAt"):
        assert is_iso(run[k]), (k, run)
    assert run["enqueuedAt"] <= run["startedAt"] <= run["finishedAt"]
    assert isinstance(run["durationMs"], int) and run["durationMs"] >= 0
    row = system.db.query("SELECT job, org_id, payload, source, status FROM job_runs WHERE id = %s",
                          (data["id"],))
    assert row == [("noop", "org-single", {"sleepMs": 1, "tag": "x\u00e9"}, "adhoc", "succeeded")]


@pytest.mark.parametrize("body", [None, "", "{}", {"orgId": None, "payload": None}])
def test_run_body_is_optional(system, body):
    data = system.api.enqueue("noop", body)
    run = system.api.wait_status(data["id"], "succeeded")
    assert run["orgId"] is None


def test_run_goes_from_running_to_succeeded(system):
    api = system.api
    rid = api.enqueue("noop", {"payload": {"sleepMs": 1500}})["id"]
    seen = []

    def done():
        r = api.run(rid)
        if r is not None and (not seen or seen[-1] != r["status"]):
            seen.append(r["status"])
        return r is not None and r["status"] == "succeeded"
    harness.wait_until(done, timeout=20, interval=0.05, msg="run to succeed")
    assert seen[-1] == "succeeded"
    assert "running" in seen, seen
    assert seen.index("running") < seen.index("succeeded")
    run = api.run(rid)
    assert run["durationMs"] >= 1400, run
    assert set(seen) <= {"queued", "running", "succeeded"}, seen


def test_run_goes_from_queued_to_succeeded(fresh):
    """A run waits, visibly queued, while the only consumer (one slot) is busy
    with another, then runs and succeeds: all through the status endpoint."""
    s = fresh(consumers=1, consumer_env={"WORKER_CONCURRENCY": 1})
    api = s.api
    blocker = api.enqueue("noop", {"payload": {"sleepMs": 2500}})["id"]
    if s.mode == "redisless":
        api.wait_status(blocker, "running", timeout=10)
    rid = api.enqueue("noop", {"orgId": "o-q"})["id"]
    run = api.wait_status(rid, "queued", timeout=10)
    assert run["attempts"] == 0 and run["startedAt"] is None and run["finishedAt"] is None
    assert run["consumer"] is None and run["durationMs"] is None and run["error"] is None
    assert is_iso(run["enqueuedAt"])
    run = api.wait_status(rid, "succeeded", timeout=20)
    assert run["consumer"] == s.consumers[0][0].name and run["attempts"] == 1
    first = api.run(blocker)
    assert first["status"] == "succeeded"
    assert run["startedAt"] >= first["finishedAt"], (first, run)


def test_run_waits_for_a_consumer(fresh):
    """A run accepted while no consumer runs is visible as queued (Redis mode:
    the producer's own history writer records it) and runs once a consumer
    starts."""
    s = fresh(consumers=0)
    rid = s.api.enqueue("noop", {"orgId": "o-late"})["id"]
    s.api.wait_status(rid, "queued", timeout=10)
    s.add_consumer("late-consumer")
    run = s.api.wait_status(rid, "succeeded")
    assert run["consumer"] == "late-consumer" and run["attempts"] == 1


def test_unknown_job_is_404(system):
    resp = system.api.post("/api/integrations/jobs/no_such_job/run", {})
    err = assert_error(resp, 404, "unknown_job")
    assert "no_such_job" in err["message"]


@pytest.mark.parametrize("body,needle", [
    ("{", "not valid JSON"),
    ("{\"orgId\": \"a\"} trailing", "after the JSON"),
    ("\"text\"", "object or an array"),
    ("42", "object or an array"),
    ("[]", "empty"),
    ("[1]", "item 0"),
    ("[{}, {\"orgId\": 5}]", "item 1: orgId must be a string"),
    ({"orgId": 5}, "orgId must be a string"),
    ({"orgId": ""}, "orgId must be 1 to"),
    ({"orgId": "o" * 129}, "orgId must be 1 to 128"),
    ({"payload": [1]}, "payload must be a JSON object"),
    ({"payload": "x"}, "payload must be a JSON object"),
    ({"idempotencyKey": 7}, "idempotencyKey must be a string"),
    ({"idempotencyKey": "k" * 201}, "idempotencyKey must be 1 to 200"),
    ({"orgid": "a"}, "unknown field 'orgid'"),
    ("{\"orgId\":\"a\",\"orgId\":\"b\"}", "appears twice"),
])
def test_bad_body_is_400_with_a_message(system, body, needle):
    resp = system.api.post("/api/integrations/jobs/noop/run", body)
    err = assert_error(resp, 400, "bad_request")
    assert needle in err["message"], err


# ---- enqueue: bulk --------------------------------------------------------


def test_bulk_10000_runs(system):
    api, db = system.api, system.db
    _, _, before = api.get("/metrics", token="")
    enq0 = metric(prometheus(before)[1], "jobrunner_runs_enqueued_total", job="noop") or 0
    items = [{"orgId": "bulk-%d" % (i % 7)} if i % 2 else {} for i in range(10000)]
    t0 = time.monotonic()
    status, _, data = api.post("/api/integrations/jobs/noop/run", items, timeout=120)
    took = time.monotonic() - t0
    assert status == 202, data
    assert set(data) == {"ids"}
    ids = data["ids"]
    assert len(ids) == 10000 and len(set(ids)) == 10000
    print("bulk of 10000 accepted in %.3f s (%.0f runs/s), mode %s"
          % (took, 10000 / took, system.mode))
    _, _, after = api.get("/metrics", token="")
    enq1 = metric(prometheus(after)[1], "jobrunner_runs_enqueued_total", job="noop")
    assert enq1 - enq0 == 10000
    # every run is recorded (Redis mode: behind the stream) and runs
    harness.wait_until(
        lambda: db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'",
                          (ids,)) == 10000,
        timeout=120, interval=0.5, msg="10000 bulk runs to succeed")
    assert db.scalar("SELECT count(DISTINCT org_id) FROM job_runs WHERE id = ANY(%s)", (ids,)) == 7
    assert api.run(ids[1])["orgId"] == "bulk-1"


def test_bulk_over_10000_is_413(system):
    db = system.db
    adhoc = "SELECT count(*) FROM job_runs WHERE source = 'adhoc'"
    before = db.scalar(adhoc)
    _, _, text = system.api.get("/metrics", token="")
    enq0 = metric(prometheus(text)[1], "jobrunner_runs_enqueued_total", job="noop") or 0
    resp = system.api.post("/api/integrations/jobs/noop/run", [{}] * 10001, timeout=60)
    err = assert_error(resp, 413, "too_many_runs")
    assert "10000" in err["message"]
    _, _, text = system.api.get("/metrics", token="")
    assert (metric(prometheus(text)[1], "jobrunner_runs_enqueued_total", job="noop") or 0) == enq0
    # nothing was enqueued: no row appears (Redis mode writes rows within ~1 s)
    time.sleep(1.5)
    assert db.scalar(adhoc) == before


# ---- idempotency ----------------------------------------------------------


def test_idempotency_key_returns_the_first_run(system):
    api = system.api
    key = "idem-%s" % time.monotonic_ns()
    first = api.enqueue("noop", {"idempotencyKey": key, "orgId": "o1"})["id"]
    again = api.enqueue("noop", {"idempotencyKey": key, "orgId": "o2"})["id"]
    assert again == first
    api.wait_status(first, "succeeded")
    # after it ran, too
    assert api.enqueue("noop", {"idempotencyKey": key})["id"] == first
    # the key is per job
    other = api.enqueue("no_reply_scan", {"idempotencyKey": key})["id"]
    assert other != first
    # in a bulk: repeated inside the request and already used before
    key2 = key + "-b"
    ids = api.enqueue("noop", [{"idempotencyKey": key2}, {}, {"idempotencyKey": key2},
                               {"idempotencyKey": key}])["ids"]
    assert len(ids) == 4
    assert ids[0] == ids[2] and ids[1] != ids[0] and ids[3] == first
    harness.wait_until(lambda: system.db.scalar(
        "SELECT count(*) FROM job_runs WHERE job = 'noop' AND idempotency_key IN (%s, %s)",
        (key, key2)) == 2, timeout=10, msg="rows of both keys")
    assert system.db.scalar("SELECT count(*) FROM job_runs WHERE job = 'noop' AND idempotency_key = %s",
                            (key,)) == 1


def test_idempotency_key_under_concurrent_requests(system):
    api = system.api
    key = "race-%s" % time.monotonic_ns()
    results, errors = [], []
    start = threading.Barrier(12)

    def client():
        try:
            start.wait()
            results.append(api.enqueue("noop", {"idempotencyKey": key}, expect=202)["id"])
        except Exception as e:  # reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(results)) == 1, results
    run = api.wait_status(results[0], "succeeded")
    assert run["id"] == results[0]


# ---- runs and the dead list -----------------------------------------------


def test_run_not_found(system):
    assert_error(system.api.get("/api/integrations/jobs/runs/01890000-0000-7000-8000-000000000000"),
                 404, "unknown_run")
    assert_error(system.api.get("/api/integrations/jobs/runs/no%20such%27id"), 404, "unknown_run")
    assert_error(system.api.get("/api/integrations/jobs/runs/" + "a" * 300), 404)


def test_dead_list_and_retry(system):
    api = system.api
    ids = [api.enqueue("noop", {"orgId": "dead-%d" % i, "payload": {"failAlways": True}})["id"]
           for i in range(3)]
    runs = [api.wait_status(i, "dead") for i in ids]
    for r in runs:
        assert r["attempts"] == 2 and r["error"] and "failAlways" in r["error"], r
        assert is_iso(r["finishedAt"])

    status, _, data = api.get("/api/integrations/jobs/dead")
    assert status == 200 and set(data) == {"runs"}
    listed = [r["id"] for r in data["runs"]]
    assert set(ids) <= set(listed)
    for r in data["runs"]:
        assert RUN_FIELDS <= set(r) and r["status"] == "dead"
    fin = [r["finishedAt"] for r in data["runs"]]
    assert fin == sorted(fin, reverse=True), "most recent first"

    status, _, one = api.get("/api/integrations/jobs/dead?limit=1")
    assert status == 200 and len(one["runs"]) == 1
    assert one["runs"][0]["id"] == data["runs"][0]["id"]
    status, _, two = api.get("/api/integrations/jobs/dead?limit=2")
    assert [r["id"] for r in two["runs"]] == listed[:2]
    for bad in ("0", "-1", "abc", "1001", "1.5", ""):
        assert_error(api.get("/api/integrations/jobs/dead?limit=" + bad), 400, "bad_request")

    # retry: queued again with fresh attempts, runs again (and, still
    # failing, dies again after JOB_MAX_ATTEMPTS=2 new attempts, not 0)
    target = ids[1]
    died_at = api.run(target)["finishedAt"]
    status, _, data = api.post("/api/integrations/jobs/dead/%s/retry" % target)
    assert status == 202, data
    assert data == {"id": target, "job": "noop", "status": "queued"}
    r = api.wait_run(target, lambda r: r["status"] == "dead" and r["finishedAt"] > died_at,
                     msg="the retried run to run its attempts again")
    assert r["attempts"] == 2, r
    assert system.db.scalar("SELECT source FROM job_runs WHERE id = %s", (target,)) == "retry"
    status, _, data = api.get("/api/integrations/jobs/dead?limit=1")
    assert data["runs"][0]["id"] == target, "the run that died last is first"

    # a run that is not dead, or does not exist, cannot be retried
    ok = api.enqueue("noop", {})["id"]
    api.wait_status(ok, "succeeded")
    assert_error(api.post("/api/integrations/jobs/dead/%s/retry" % ok), 404, "unknown_run")
    assert_error(api.post("/api/integrations/jobs/dead/01890000-0000-7000-8000-000000000000/retry"),
                 404, "unknown_run")
    assert_error(api.get("/api/integrations/jobs/dead/%s/retry" % target), 405)


def test_retried_run_can_succeed(system):
    """A dead run retried after its cause is gone succeeds: here the cause is
    the payload (failAlways), edited in the record as an operator would fix
    the data a run depends on."""
    api = system.api
    rid = api.enqueue("noop", {"payload": {"failAlways": True}})["id"]
    api.wait_status(rid, "dead")
    system.db.execute("UPDATE job_runs SET payload = '{}' WHERE id = %s", (rid,))
    assert api.post("/api/integrations/jobs/dead/%s/retry" % rid)[0] == 202
    run = api.wait_status(rid, "succeeded")
    assert run["attempts"] == 1 and run["error"] is None


# ---- job metrics ----------------------------------------------------------


JOB_FIELDS = {"name", "enabled", "intervalMs", "lastRunAt", "lastRunDurationMs", "lastStatus",
              "runCount", "failureCount", "paused"}


def test_jobs_metrics_reads_job_runner_state(system):
    api, db = system.api, system.db

    def cycled():
        status, _, data = api.get("/api/integrations/jobs/metrics", token="")
        assert status == 200, data
        return data if data["lastRunAt"] else None
    harness.wait_until(cycled, timeout=20, msg="a cycle to be recorded")

    def matches():
        _, _, data = api.get("/api/integrations/jobs/metrics", token="")
        want = db.query("SELECT to_char(\"lastRunAt\" AT TIME ZONE 'UTC',"
                        " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \"lastRunDurationMs\""
                        " FROM job_runner_state WHERE id = 'job_runner'")[0]
        return data if (data["lastRunAt"], data["lastRunDurationMs"]) == want else None
    data = harness.wait_until(matches, timeout=10, msg="metrics to match job_runner_state")
    assert is_iso(data["lastRunAt"])
    assert isinstance(data["lastRunDurationMs"], int)
    names = [j["name"] for j in data["jobs"]]
    assert "noop" in names and "no_reply_scan" in names
    for j in data["jobs"]:
        assert set(j) == JOB_FIELDS, j
        assert isinstance(j["enabled"], bool)
        assert j["intervalMs"] is None or isinstance(j["intervalMs"], int)
        assert j["lastRunAt"] is None or is_iso(j["lastRunAt"])
        assert isinstance(j["runCount"], int) and isinstance(j["failureCount"], int)
    scan = next(j for j in data["jobs"] if j["name"] == "no_reply_scan")
    assert scan["intervalMs"] == 300000
    q = data["queue"]
    assert {"backend", "queued", "running", "delayed", "dead", "consumers"} <= set(q)
    assert q["backend"] == ("redis" if system.mode == "redis" else "postgres")
    for k in ("queued", "running", "delayed", "dead"):
        assert isinstance(q[k], int) and q[k] >= 0
    assert isinstance(q["consumers"], list)
    for c in q["consumers"]:
        assert set(c) == {"name", "pending", "idleMs"}, c
    if system.mode == "redis":
        assert system.consumers[0][0].name in [c["name"] for c in q["consumers"]]


def test_jobs_metrics_values_and_queue_counts(fresh):
    s = fresh(consumers=0)
    api, db = s.api, s.db
    db.execute("""INSERT INTO job_runner_state (id, "lastRunAt", "lastRunDurationMs", "lastStatus",
                  "runCount", "failureCount", "updatedAt")
                  VALUES ('job_runner', '2026-01-02T03:04:05.678Z', 1234, 'succeeded', 9, 1, now()),
                         ('no_reply_scan', '2026-01-02T03:04:05Z', 56, 'failed', 7, 2, now())
                  ON CONFLICT (id) DO UPDATE SET "lastRunAt" = excluded."lastRunAt",
                     "lastRunDurationMs" = excluded."lastRunDurationMs",
                     "lastStatus" = excluded."lastStatus", "runCount" = excluded."runCount",
                     "failureCount" = excluded."failureCount" """)
    for _ in range(3):
        api.enqueue("noop", {})
    db.execute("INSERT INTO job_runs (id, job, status, attempts, finished_at, error)"
               " VALUES ('dead-fixture-1', 'noop', 'dead', 5, now(), 'boom')")
    db.execute("INSERT INTO job_runs (id, job, status, attempts, run_at)"
               " VALUES ('delayed-fixture-1', 'noop', 'failed', 1, now() + interval '1 hour')")

    def counts():
        _, _, data = api.get("/api/integrations/jobs/metrics", token="")
        q = data["queue"]
        return data if (q["queued"], q["dead"]) == (3, 1) else None
    data = harness.wait_until(counts, timeout=10, msg="queue counts 3 queued, 1 dead")
    assert data["lastRunAt"] == "2026-01-02T03:04:05.678Z"
    assert data["lastRunDurationMs"] == 1234
    scan = next(j for j in data["jobs"] if j["name"] == "no_reply_scan")
    assert scan["lastRunAt"] == "2026-01-02T03:04:05.000Z"
    assert (scan["lastRunDurationMs"], scan["lastStatus"], scan["runCount"], scan["failureCount"]) \
        == (56, "failed", 7, 2)
    noop = next(j for j in data["jobs"] if j["name"] == "noop")
    assert noop["lastRunAt"] is None and noop["runCount"] == 0
    assert data["queue"]["running"] == 0
    assert data["queue"]["delayed"] == 1
    # the same numbers in Prometheus, once the background probe (about
    # once a second) has read them; a CI run saw queued 3 with dead still
    # 0 in one scrape, so wait for all three
    def depth_seen():
        _, _, text = api.get("/metrics", token="")
        _, smp = prometheus(text)
        want = {"queued": 3, "dead": 1, "delayed": 1}
        return smp if all(metric(smp, "jobrunner_queue_depth", state=k) == v
                          for k, v in want.items()) else None
    samples = harness.wait_until(depth_seen, timeout=15, msg="queue depth in /metrics")
    assert metric(samples, "jobrunner_queue_depth", state="queued") == 3
    assert metric(samples, "jobrunner_queue_depth", state="dead") == 1
    assert metric(samples, "jobrunner_queue_depth", state="delayed") == 1


def test_jobs_metrics_without_any_cycle(fresh):
    s = fresh(consumers=0)
    status, _, data = s.api.get("/api/integrations/jobs/metrics", token="")
    assert status == 200
    assert data["lastRunAt"] is None and data["lastRunDurationMs"] is None
    assert data["queue"]["queued"] == 0


# ---- Prometheus -----------------------------------------------------------


PRODUCER_FAMILIES = {
    "jobrunner_runs_enqueued_total": "counter",
    "jobrunner_runs_started_total": "counter",
    "jobrunner_runs_succeeded_total": "counter",
    "jobrunner_runs_failed_total": "counter",
    "jobrunner_runs_dead_total": "counter",
    "jobrunner_run_duration_seconds": "histogram",
    "jobrunner_enqueue_to_start_seconds": "histogram",
    "jobrunner_queue_depth": "gauge",
    "jobrunner_cycle_duration_seconds": "histogram",
    "jobrunner_last_cycle_timestamp_seconds": "gauge",
    "jobrunner_reclaims_total": "counter",
    "jobrunner_reconnects_total": "counter",
    "jobrunner_history_rows_total": "counter",
}
CONSUMER_FAMILIES = {k: v for k, v in PRODUCER_FAMILIES.items() if k != "jobrunner_queue_depth"}
PROCESS_FAMILIES = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


def assert_process_metrics(text, proc):
    """The process_* families describe proc itself: its start, its resident
    size (against /proc's VmRSS), its descriptors (against /proc/PID/fd)."""
    types, samples = prometheus(text)
    for fam, kind in PROCESS_FAMILIES.items():
        assert types.get(fam) == kind, (fam, types.get(fam))
    assert abs(metric(samples, "process_start_time_seconds") - proc.started_at) < 5
    assert metric(samples, "process_cpu_seconds_total") > 0
    with open("/proc/%d/status" % proc.pid) as f:
        vmrss = int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1]) * 1024
    rss = metric(samples, "process_resident_memory_bytes")
    assert vmrss / 2 < rss < vmrss * 2, (rss, vmrss)
    assert metric(samples, "process_virtual_memory_bytes") >= rss
    fds = len(os.listdir("/proc/%d/fd" % proc.pid))
    assert 3 <= metric(samples, "process_open_fds") <= fds + 8, fds
    assert metric(samples, "process_max_fds") >= metric(samples, "process_open_fds")


def test_prometheus_on_producer_and_consumer(system):
    api = system.api
    proc, health = system.consumers[0]
    rid = api.enqueue("noop", {"payload": {"sleepMs": 20}})["id"]
    dead = api.enqueue("noop", {"payload": {"failAlways": True}})["id"]
    api.wait_status(rid, "succeeded")
    api.wait_status(dead, "dead")

    status, headers, text = api.get("/metrics", token="")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    types, samples = prometheus(text)
    for fam, kind in PRODUCER_FAMILIES.items():
        assert types.get(fam) == kind, (fam, types.get(fam))
    assert metric(samples, "jobrunner_runs_enqueued_total", job="noop") >= 2
    for state in ("queued", "running", "delayed", "dead"):
        assert metric(samples, "jobrunner_queue_depth", state=state) is not None, state
    assert metric(samples, "jobrunner_queue_depth", state="dead") >= 1
    assert_process_metrics(text, system.producer)

    def consumer_counts():
        st, hd, body = health.get("/metrics")
        assert st == 200 and hd["content-type"].startswith("text/plain; version=0.0.4")
        t, smp = prometheus(body)
        for fam, kind in CONSUMER_FAMILIES.items():
            assert t.get(fam) == kind, (fam, t.get(fam))
        ok = (metric(smp, "jobrunner_runs_succeeded_total", job="noop") or 0) >= 1 \
            and (metric(smp, "jobrunner_runs_dead_total", job="noop") or 0) >= 1 \
            and (metric(smp, "jobrunner_runs_failed_total", job="noop") or 0) >= 1 \
            and (metric(smp, "jobrunner_cycles_total") or 0) >= 1
        return smp if ok else None
    smp = harness.wait_until(consumer_counts, timeout=15, msg="consumer counters")
    assert metric(smp, "jobrunner_runs_started_total", job="noop") >= 3
    assert metric(smp, "jobrunner_run_duration_seconds_count", job="noop") >= 1
    assert metric(smp, "jobrunner_enqueue_to_start_seconds_count", job="noop") >= 1
    assert metric(smp, "jobrunner_last_cycle_timestamp_seconds") > time.time() - 3600
    assert metric(smp, "jobrunner_cycle_duration_seconds_count") >= 1
    for state in ("queued", "running", "delayed", "dead"):
        assert metric(smp, "jobrunner_queue_depth", state=state) is not None, state
    assert metric(smp, "jobrunner_queue_depth", state="dead") >= 1
    assert_process_metrics(health.get("/metrics")[2], proc)
    if system.mode == "redis":
        # the history writers (producer's and consumer's) count the rows they wrote
        def history_written():
            total = 0
            for st, _, body in (api.get("/metrics", token=""), health.get("/metrics")):
                assert st == 200
                total += metric(prometheus(body)[1], "jobrunner_history_rows_total",
                                result="written") or 0
            return total if total >= 2 else None
        harness.wait_until(history_written, timeout=15, msg="history rows counted")


# ---- the consumer's port --------------------------------------------------


def test_consumer_health_port(system):
    proc, health = system.consumers[0]
    status, _, data = health.get("/health")
    assert status == 200 and data["status"] == "ok"
    status, _, data = health.get("/health/ready")
    assert status == 200, data
    assert data["status"] == "ok"
    assert data["checks"]["database"]["ok"] is True
    if system.mode == "redis":
        assert data["checks"]["redis"]["ok"] is True
    assert_error(health.get("/nope"), 404, "not_found")
    assert_error(health.post("/health"), 405, "method_not_allowed")
    # no public API on the consumer
    assert_error(health.post("/api/integrations/jobs/noop/run", {}), 404)
