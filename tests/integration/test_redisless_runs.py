"""Runs in Redis-less mode: job_runs is the queue.  Claims by several
consumers, retries, dead runs, leases and their expiry after a crash, the
fencing of a stale result, --drain-once and SIGTERM (docs/architecture.md, "The run
lifecycle"; docs/guarantees.md)."""

import signal
import time

import pytest

import harness
import jrcli


def consumer_env(db_url, name, **kw):
    # no cycles' work in the way: these tests are about runs
    kw.setdefault("NO_REPLY_SCAN_ENABLED", "false")
    return jrcli.env(db_url, CONSUMER_NAME=name, **kw)


def start(spawn, db_url, name, **kw):
    p = spawn("consumer", env=consumer_env(db_url, name, **kw), name=name)
    p.wait_for_log({"event": "job_runner_started"}, timeout=15)
    return p


def stopped(proc):
    """SIGTERM; asserts exit 0; returns the counts of its "stopped" event."""
    assert proc.terminate(timeout=20) == 0, proc.log_tail()
    ev = jrcli.events(proc, "stopped")
    assert len(ev) == 1, proc.log_tail()
    return ev[0]


def run_events(proc, event, run_id):
    return [e for e in jrcli.events(proc, event) if e.get("runId") == run_id]


@pytest.fixture
def migrated(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    return db


# ---- many runs, two consumers -------------------------------------------------------

def test_2000_runs_over_two_consumers_each_succeed_exactly_once(bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A")
    b = start(spawn, db_url, "B")
    t0 = db.scalar("SELECT now()")
    ids = jrcli.enqueue(bins, db_url, "noop", count=2000)
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=60)
    ca, cb = stopped(a), stopped(b)

    assert all(r["attempts"] == 1 for r in rows.values()), "a run was claimed twice"
    by = {}
    for r in rows.values():
        by[r["consumer"]] = by.get(r["consumer"], 0) + 1
    assert set(by) == {"A", "B"}, "one consumer took everything: %r" % by
    # what each consumer says it did adds up to 2000, and matches the rows
    assert ca["succeeded"] + cb["succeeded"] == 2000
    assert (ca["succeeded"], cb["succeeded"]) == (by["A"], by["B"])
    assert ca["retried"] == cb["retried"] == ca["dead"] == cb["dead"] == 0
    for p in (a, b):
        assert jrcli.events(p, "run_fenced") == []
        assert jrcli.events(p, "run_failed") == []
    for r in rows.values():
        assert r["source"] == "adhoc" and r["error"] is None and r["lease_until"] is None
        assert t0 <= r["started_at"] <= r["finished_at"]
    assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in rows.values())


def test_a_live_consumer_keeps_its_lease(bins, migrated, spawn, db_url):
    """Runs longer than JOB_LEASE_MS stay with the consumer that runs them:
    its heartbeat extends the lease, so a hungry second consumer never takes
    them."""
    db = migrated
    a = start(spawn, db_url, "A")
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 2500}', count=4)
    jrcli.wait_runs(db, ids, "running")
    b = start(spawn, db_url, "B")
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=20)
    assert {(r["consumer"], r["attempts"]) for r in rows.values()} == {("A", 1)}
    assert stopped(b)["succeeded"] == 0
    assert stopped(a)["succeeded"] == 4
    assert jrcli.events(a, "run_fenced") == []


def test_a_row_locked_by_another_session_does_not_stall_the_heartbeat(
        bins, migrated, spawn, db_url):
    """The heartbeat extends each thread's runs in turn on one connection.  A
    run's row held locked by another session (a complete in flight, an
    operator's transaction) is skipped, not waited for: while one row stays
    locked for longer than the lease, the other runs' leases are still
    extended and a hungry second consumer takes none of them.  (A plain
    UPDATE waited there; extend and complete of the same batch then
    deadlocked for deadlock_timeout, long enough for leases to run out.)"""
    db = migrated
    a = start(spawn, db_url, "A", WORKER_CONCURRENCY=4)
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 3500}', count=4)
    jrcli.wait_runs(db, ids, "running")
    b = start(spawn, db_url, "B")
    conn = db.connect()
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM job_runs WHERE id = %s FOR UPDATE", (ids[0],))
        time.sleep(2.5)   # 2.5 leases
        cur.execute("ROLLBACK")
    finally:
        conn.close()
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=20)
    # the locked run may have lost its lease (nobody could extend it); the
    # other three never did
    for i in ids[1:]:
        assert (rows[i]["consumer"], rows[i]["attempts"]) == ("A", 1), rows[i]
        assert run_events(a, "run_fenced", i) == []
    stopped(b)
    stopped(a)


# ---- failures, retries, dead runs ------------------------------------------------------

def test_fail_times_2_succeeds_on_the_third_attempt(bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A")
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"failTimes": 2}')
    row = jrcli.wait_runs(db, ids, "succeeded")[ids[0]]
    assert row["attempts"] == 3
    assert row["error"] is None
    failed = run_events(a, "run_failed", ids[0])
    assert [e["attempt"] for e in failed] == [1, 2]
    assert all(e["level"] == "warn" and "failTimes" in e["error"] for e in failed)
    assert run_events(a, "run_dead", ids[0]) == []
    c = stopped(a)
    assert (c["succeeded"], c["retried"], c["dead"]) == (1, 2, 0)


def test_fail_always_is_dead_after_max_attempts(bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A", JOB_MAX_ATTEMPTS=3)
    # max_attempts is recorded per run when it is enqueued
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"failAlways": true}', JOB_MAX_ATTEMPTS=3)
    row = jrcli.wait_runs(db, ids, "dead")[ids[0]]
    assert (row["attempts"], row["max_attempts"]) == (3, 3)
    assert row["error"] == "noop: failAlways"
    assert row["finished_at"] is not None and row["lease_until"] is None
    assert [e["attempt"] for e in run_events(a, "run_failed", ids[0])] == [1, 2]
    dead = run_events(a, "run_dead", ids[0])
    assert len(dead) == 1 and dead[0]["level"] == "error" and dead[0]["attempt"] == 3
    c = stopped(a)
    assert (c["succeeded"], c["retried"], c["dead"]) == (0, 2, 1)
    # dead stays dead
    row = jrcli.runs(db, ids)[ids[0]]
    assert (row["status"], row["attempts"]) == ("dead", 3)


def test_a_run_of_an_unknown_job_is_dead_without_retries(migrated, spawn, db_url):
    db = migrated
    # written by a newer producer that knows a job this consumer does not
    db.execute("INSERT INTO job_runs (id, job, status, max_attempts) VALUES"
               " ('r-unknown', 'from_the_future', 'queued', 5),"
               " ('r-badpayload', 'noop', 'queued', 5)")
    db.execute("UPDATE job_runs SET payload = '[1]' WHERE id = 'r-badpayload'")
    a = start(spawn, db_url, "A")
    rows = jrcli.wait_runs(db, ["r-unknown", "r-badpayload"], "dead")
    assert rows["r-unknown"]["attempts"] == 1 and "from_the_future" in rows["r-unknown"]["error"]
    assert rows["r-badpayload"]["attempts"] == 1 and "payload" in rows["r-badpayload"]["error"]
    assert stopped(a)["dead"] == 2


# ---- crashes and leases -------------------------------------------------------------------

def test_kill9_mid_run_the_runs_finish_on_another_consumer_after_the_lease(
        bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A")
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 2000}', count=3)
    running = jrcli.wait_runs(db, ids, "running")
    assert {(r["consumer"], r["attempts"]) for r in running.values()} == {("A", 1)}
    assert a.kill9() == -9
    leases = {i: r["lease_until"] for i, r in jrcli.runs(db, ids).items()}
    b = start(spawn, db_url, "B")
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=20)
    for i, r in rows.items():
        assert (r["consumer"], r["attempts"]) == ("B", 2), r
        # B took it only once A's lease had run out
        assert r["started_at"] > leases[i], (r["started_at"], leases[i])
    assert stopped(b)["succeeded"] == 3


def test_a_silent_consumer_on_the_last_attempt_leaves_a_dead_run(bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A")
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 5000}', JOB_MAX_ATTEMPTS=1)
    jrcli.wait_runs(db, ids, "running")
    a.kill9()
    b = start(spawn, db_url, "B")
    row = jrcli.wait_runs(db, ids, "dead", timeout=15)[ids[0]]
    assert row["attempts"] == 1
    assert "lease expired" in row["error"] and "A" in row["error"]
    stopped(b)


def test_fencing_discards_a_stale_result(bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A", WORKER_CONCURRENCY=1)
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 2000}')
    jrcli.wait_runs(db, ids, "running")
    a.signal(signal.SIGSTOP)   # A hangs mid-run: no heartbeat, the lease runs out
    try:
        b = start(spawn, db_url, "B", WORKER_CONCURRENCY=1)
        row = jrcli.wait_runs(db, ids, "succeeded", timeout=20)[ids[0]]
        assert (row["consumer"], row["attempts"]) == ("B", 2)
    finally:
        a.signal(signal.SIGCONT)
    fenced = a.wait_for_log({"event": "run_fenced", "runId": ids[0]}, timeout=10)
    assert fenced["attempt"] == 1 and fenced["consumer"] == "A"
    # A's late result changed nothing
    after = jrcli.runs(db, ids)[ids[0]]
    assert after == row
    ca = stopped(a)
    assert (ca["succeeded"], ca["retried"], ca["dead"]) == (0, 0, 0)
    assert stopped(b)["succeeded"] == 1


def test_queue_connections_dropped_mid_stream_prepare_again_and_every_run_finishes(
        bins, migrated, spawn, db_url):
    """The claim and the complete are prepared statements, prepared once per
    connection.  When PostgreSQL drops the consumer's queue connections in the
    middle of a stream of runs, the new connections prepare them again: every
    run still succeeds (a run whose completion was lost with its connection
    runs again after its lease), and runs enqueued afterwards flow too."""
    db = migrated
    a = start(spawn, db_url, "A")
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 1}', count=2000)
    harness.wait_until(lambda: db.scalar(
        "SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'", (ids,)) >= 200,
        timeout=30, msg="the first runs to succeed")
    # the statements exist on the server side of the queue connections
    assert db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jobrunner-queue'") >= 1
    killed = db.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                       " WHERE application_name = 'jobrunner-queue'")
    assert killed >= 1
    rows = jrcli.wait_runs(db, ids, "succeeded", timeout=60)
    assert sum(1 for r in rows.values() if r["attempts"] == 1) > 1000
    more = jrcli.enqueue(bins, db_url, "noop", count=50)
    jrcli.wait_runs(db, more, "succeeded", timeout=20)
    assert jrcli.events(a, "run_fenced") == []
    ca = stopped(a)
    assert ca["dead"] == 0


def test_a_stale_result_is_fenced_when_the_run_went_back_to_the_queue(bins, migrated, spawn, db_url):
    """Fencing is the row's (attempts, consumer, status = 'running'): a result
    whose run was reset behind the consumer's back (an operator requeued it)
    is discarded, and the row keeps the newer state."""
    db = migrated
    a = start(spawn, db_url, "A", WORKER_CONCURRENCY=1)
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 1500}')
    jrcli.wait_runs(db, ids, "running")
    db.execute("UPDATE job_runs SET status = 'queued', run_at = now() + interval '1 hour',"
               " lease_until = null WHERE id = %s", (ids[0],))
    fenced = a.wait_for_log({"event": "run_fenced", "runId": ids[0]}, timeout=10)
    assert fenced["attempt"] == 1
    row = jrcli.runs(db, ids)[ids[0]]
    assert (row["status"], row["attempts"], row["finished_at"]) == ("queued", 1, None)
    stopped(a)


# ---- --drain-once ---------------------------------------------------------------------------

def drain(bins, db_url, args=("--drain-once",), **kw):
    p = jrcli.run(bins.consumer, args, consumer_env(db_url, "drainer", **kw), timeout=60)
    logs = [o for o in map(harness._as_json_object, p.stdout.splitlines()) if o]
    done = [o for o in logs if o.get("event") == "drain_complete"]
    return p.returncode, (done[0] if done else None), p


@pytest.mark.parametrize("how", ["flag", "env"])
def test_drain_once_exits_0_when_all_runs_succeed(bins, migrated, db_url, how):
    db = migrated
    ids = jrcli.enqueue(bins, db_url, "noop", count=50)
    slow = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 300}')
    if how == "flag":
        rc, done, p = drain(bins, db_url)
    else:
        rc, done, p = drain(bins, db_url, args=(), WORKER_RUN_ONCE="1")
    assert rc == 0, p.stdout + p.stderr
    assert (done["succeeded"], done["retried"], done["dead"], done["cycles"]) == (51, 0, 0, 1)
    rows = jrcli.runs(db, ids + slow)
    assert all(r["status"] == "succeeded" and r["consumer"] == "drainer" for r in rows.values())
    assert db.scalar("SELECT \"runCount\" FROM job_runner_state WHERE id = 'job_runner'") == 1


def test_drain_once_with_nothing_to_do_runs_one_cycle(bins, migrated, db_url):
    rc, done, p = drain(bins, db_url, NO_REPLY_SCAN_ENABLED="true")
    assert rc == 0, p.stdout + p.stderr
    assert (done["claimed"], done["cycles"]) == (0, 1)
    assert migrated.scalar("SELECT \"lastStatus\" FROM job_runner_state"
                           " WHERE id = 'no_reply_scan'") == "succeeded"


@pytest.mark.parametrize("payload,max_attempts,status,counts", [
    ('{"failAlways": true}', 1, "dead", (0, 0, 1)),
    ('{"failTimes": 1}', 3, "failed", (0, 1, 0)),
])
def test_drain_once_exits_1_when_a_run_failed(bins, migrated, db_url, payload, max_attempts,
                                              status, counts):
    db = migrated
    good = jrcli.enqueue(bins, db_url, "noop", count=3)
    bad = jrcli.enqueue(bins, db_url, "noop", payload=payload, JOB_MAX_ATTEMPTS=max_attempts)
    # a backoff longer than the drain: the retry is not due before it ends
    rc, done, p = drain(bins, db_url, JOB_BACKOFF_BASE_MS=60000, JOB_BACKOFF_MAX_MS=60000)
    assert rc == 1, p.stdout + p.stderr
    assert (done["succeeded"], done["retried"], done["dead"]) == (3 + counts[0],) + counts[1:]
    assert all(r["status"] == "succeeded" for r in jrcli.runs(db, good).values())
    row = jrcli.runs(db, bad)[bad[0]]
    assert (row["status"], row["attempts"]) == (status, 1)
    if status == "failed":
        # the retry waits for its backoff, and a later drain that finds it due succeeds
        assert row["run_at"] > db.scalar("SELECT now() + interval '20 seconds'")
        db.execute("UPDATE job_runs SET run_at = now() WHERE id = %s", (bad[0],))
        rc, done, p = drain(bins, db_url)
        assert rc == 0, p.stdout + p.stderr
        row = jrcli.runs(db, bad)[bad[0]]
        assert (row["status"], row["attempts"]) == ("succeeded", 2)


def test_drain_once_takes_due_retries_and_abandoned_runs_only(bins, migrated, db_url):
    db = migrated
    db.execute(
        "INSERT INTO job_runs (id, job, status, attempts, max_attempts, run_at, consumer, lease_until)"
        " VALUES"
        " ('due-retry', 'noop', 'failed', 1, 5, now() - interval '1 second', 'ghost', NULL),"
        " ('later-retry', 'noop', 'failed', 1, 5, now() + interval '1 hour', 'ghost', NULL),"
        " ('abandoned', 'noop', 'running', 1, 5, now() - interval '1 minute', 'ghost',"
        "   now() - interval '1 second'),"
        " ('leased', 'noop', 'running', 1, 5, now() - interval '1 minute', 'ghost',"
        "   now() + interval '1 hour'),"
        " ('abandoned-last', 'noop', 'running', 5, 5, now() - interval '1 minute', 'ghost',"
        "   now() - interval '1 second')")
    rc, done, p = drain(bins, db_url)
    assert rc == 0, p.stdout + p.stderr
    rows = jrcli.runs(db, ["due-retry", "later-retry", "abandoned", "leased", "abandoned-last"])
    got = {i: (r["status"], r["attempts"], r["consumer"]) for i, r in rows.items()}
    assert got == {
        "due-retry": ("succeeded", 2, "drainer"),
        "later-retry": ("failed", 1, "ghost"),
        "abandoned": ("succeeded", 2, "drainer"),
        "leased": ("running", 1, "ghost"),
        "abandoned-last": ("dead", 5, "ghost"),
    }
    assert done["succeeded"] == 2


# ---- shutdown ------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_finishes_the_run_in_hand_and_exits_0(bins, migrated, spawn, db_url, sig):
    db = migrated
    a = start(spawn, db_url, "A", WORKER_CONCURRENCY=1)
    ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 1500}', count=2)
    first = harness.wait_until(
        lambda: [i for i, r in jrcli.runs(db, ids).items() if r["status"] == "running"],
        timeout=60, msg="a run to start")[0]
    a.signal(sig)
    assert a.wait(timeout=120) == 0, a.log_tail()
    rows = jrcli.runs(db, ids)
    assert (rows[first]["status"], rows[first]["attempts"], rows[first]["error"]) == (
        "succeeded", 1, None), rows[first]
    assert rows[first]["duration_ms"] >= 1500
    (second,) = [i for i in ids if i != first]
    # it stopped claiming: the other run was never touched
    assert (rows[second]["status"], rows[second]["attempts"]) == ("queued", 0), rows[second]
    ev = jrcli.events(a, "stopped")
    assert len(ev) == 1 and (ev[0]["succeeded"], ev[0]["retried"]) == (1, 0)
    assert jrcli.events(a, "shutdown")[0]["signal"] == signal.Signals(sig).name


def test_sigterm_past_the_shutdown_timeout_gives_the_run_back(bins, migrated, spawn, db_url):
    """A rollout: a run cut off by the shutdown deadline is handed back
    without counting an attempt, and another consumer takes it at once
    (not after the lease)."""
    db = migrated
    b = start(spawn, db_url, "B", JOB_LEASE_MS=120000)
    a = start(spawn, db_url, "A", WORKER_SHUTDOWN_TIMEOUT_MS=300, JOB_LEASE_MS=120000)
    b.signal(signal.SIGSTOP)   # A must be the one that takes it
    try:
        ids = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 600000}')
        jrcli.wait_runs(db, ids, "running", timeout=60)
    finally:
        b.signal(signal.SIGCONT)
    assert jrcli.runs(db, ids)[ids[0]]["consumer"] == "A"
    a.signal(signal.SIGTERM)
    # The run takes ten minutes: a consumer that exits with the run handed
    # back did not wait for it (no clock is read).
    assert a.wait(timeout=120) == 0, a.log_tail()
    assert jrcli.events(a, "shutdown_timeout") == [] and len(jrcli.events(a, "stopped")) == 1
    # B takes it up long before the two-minute lease could have passed:
    # handed back, not reclaimed
    harness.wait_until(lambda: jrcli.runs(db, ids)[ids[0]]["consumer"] == "B",
                       timeout=60, msg="B to take the run again")
    row = jrcli.runs(db, ids)[ids[0]]
    # A's interrupted attempt did not count: B's is the first
    assert row["status"] == "running" and row["attempts"] == 1, row
    b.kill9()


def test_after_sigterm_no_new_run_is_claimed(bins, migrated, spawn, db_url):
    db = migrated
    a = start(spawn, db_url, "A", WORKER_CONCURRENCY=4)
    busy = jrcli.enqueue(bins, db_url, "noop", payload='{"sleepMs": 1500}')
    jrcli.wait_runs(db, busy, "running")
    a.signal(signal.SIGTERM)
    a.wait_for_log({"event": "shutdown"}, timeout=60)
    # a run arrives right after: inserted and announced as the enqueue path
    # does it (a producer process would take longer to start than the
    # window in which this consumer's idle threads are still waiting)
    db.execute("INSERT INTO job_runs (id, job) VALUES ('late', 'noop');"
               " SELECT pg_notify('jobrunner_runs', '')")
    assert a.wait(timeout=15) == 0, a.log_tail()
    assert jrcli.runs(db, busy)[busy[0]]["status"] == "succeeded"
    row = jrcli.runs(db, ["late"])["late"]
    assert (row["status"], row["attempts"], row["consumer"], row["error"]) == (
        "queued", 0, None, None), row
    assert jrcli.events(a, "run_deferred") == []
