"""PostgreSQL as it is deployed: behind PgBouncer (transaction and session
pooling), frozen (SIGSTOP), out of connections, during rollouts, and with
passwords in the connection string.

Everything is real: Debian's pgbouncer in front of a throwaway PostgreSQL,
the producer and consumer binaries, redis-server where a test needs Redis.
"""

import json
import os
import signal
import socket
import threading
import time
import urllib.parse

import pytest

import harness
import jrcli

MIGRATE_KEY = 1785684593


def advisory_locks(db):
    return db.query("SELECT pid, classid, objid, objsubid FROM pg_locks WHERE locktype = 'advisory'")


def consumer_env(url, name, **kw):
    kw.setdefault("NO_REPLY_SCAN_INTERVAL_MS", 0)
    return jrcli.env(url, CONSUMER_NAME=name, **kw)


def all_output(*procs):
    return "\n".join(line for p in procs for line in p.lines())


# ---------------------------------------------------------------------------
# poolers
# ---------------------------------------------------------------------------

@pytest.fixture
def bouncer_tx(pg):
    b = harness.PgBouncer(pg, pool_mode="transaction", pool_size=4)
    yield b
    b.cleanup()


def test_transaction_pooler_without_direct_url_exits_2_and_leaves_no_lock(bins, db, bouncer_tx):
    url = bouncer_tx.url(db.dbname)
    p = jrcli.run(bins.consumer, [], consumer_env(url, "A"), timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "DATABASE_DIRECT_URL" in p.stdout + p.stderr
    # refused before touching anything: no migration ran, no lock is left
    assert db.scalar("SELECT to_regclass('schema_migrations')") is None
    assert advisory_locks(db) == []
    # the producer refuses the same way
    p = jrcli.run(bins.producer, [], jrcli.env(url, PORT=harness.free_port()), timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert advisory_locks(db) == []


def _intervals_overlap(rows):
    """Pairs of (start, end) intervals that overlap."""
    rows = sorted(rows)
    return [(a, b) for a, b in zip(rows, rows[1:]) if b[0] < a[1]]


@pytest.mark.parametrize("mode", ["redisless", "redis"])
def test_transaction_pooler_with_direct_url(bins, db, pg, bouncer_tx, spawn, mode, request):
    pooled, direct = bouncer_tx.url(db.dbname), db.url
    env = dict(DATABASE_DIRECT_URL=direct, ORG_CONCURRENCY=1, WORKER_CONCURRENCY=4,
               JOB_LEASE_MS=5000)
    procs = []
    if mode == "redis":
        # the producer ticks (cycles) and the history writers write job_runs,
        # all through the pooler
        env["REDIS_URL"] = request.getfixturevalue("redis_server").url
        procs.append(spawn("producer", env=jrcli.env(pooled, PORT=harness.free_port(), **env),
                           name="P"))
        procs[0].wait_for_log({"event": "producer_started"}, timeout=30)
    a = spawn("consumer", env=consumer_env(pooled, "A", **env), name="A")
    b = spawn("consumer", env=consumer_env(pooled, "B", **env), name="B")
    for p in (a, b):
        p.wait_for_log({"event": "job_runner_started"}, timeout=30)
    procs += [a, b]
    budget = jrcli.events(a, "connection_budget")[0]
    assert budget["databaseDirectUrl"] >= 2, budget
    # eight runs of one org (ORG_CONCURRENCY=1: one at a time across both
    # consumers), and eight of eight other orgs
    qenv = {k: env[k] for k in ("DATABASE_DIRECT_URL", "REDIS_URL") if k in env}
    one = jrcli.enqueue(bins, pooled, "noop", org="org-1", payload='{"sleepMs": 300}', count=8, **qenv)
    many = [jrcli.enqueue(bins, pooled, "noop", org="org-%d" % (10 + i), payload='{"sleepMs": 50}',
                          **qenv)[0] for i in range(8)]
    jrcli.wait_runs(db, one + many, "succeeded", timeout=60)
    if mode == "redisless":
        # LISTEN is on the direct connection, one listener per consumer
        assert db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                         " 'jobrunner-listen' AND query ILIKE 'listen%%'") == 2
    # cycles ran (the NOTIFY-woken claims and timer cycles went through the pooler)
    harness.wait_until(lambda: db.scalar("SELECT count(*) FROM job_runs WHERE source = 'cycle'") >= 4,
                       timeout=20, msg="cycles")
    for p in procs:
        assert p.terminate(timeout=30) == 0, p.log_tail()
    # ORG_CONCURRENCY=1 across eight threads in two processes: the 8 runs
    # of 300 ms each, enqueued at once, took at least 8 x 300 ms from the
    # enqueue to the last end (with the limit broken, in a process or
    # across them, they run side by side and end in a round or two); and
    # no attempt was spent on waiting
    span = db.scalar("SELECT extract(epoch from max(finished_at) - min(enqueued_at)) FROM job_runs"
                     " WHERE org_id = 'org-1'")
    assert span >= 2.4, span
    assert db.scalar("SELECT count(*) FROM job_runs WHERE org_id = 'org-1' AND attempts <> 1") == 0
    cycles = db.query("SELECT started_at, finished_at FROM job_runs WHERE source = 'cycle'")
    assert _intervals_overlap(cycles) == [], "two cycles at once"
    assert {r[0] for r in db.query("SELECT DISTINCT consumer FROM job_runs WHERE org_id = 'org-1'")} <= {"A", "B"}
    text = all_output(*procs) + pg.log_tail(2000) + bouncer_tx.log_tail(2000)
    assert "history_failed" not in text and "does not exist" not in text
    assert "prepared statement" not in text
    assert "jr_claim" not in text
    # no advisory lock left on any server connection, pooled ones included
    assert advisory_locks(db) == []


def test_session_pooler_with_a_small_pool(bins, db, pg, spawn):
    """Session pooling is a session: no DATABASE_DIRECT_URL needed, as long
    as the pool holds the budget the consumer announces."""
    jrcli.migrate(bins, db.url)
    env = dict(WORKER_CONCURRENCY=2, DATABASE_POOL_SIZE=1, ORG_CONCURRENCY=1)
    # the budget the consumer announces for these settings, read from a
    # consumer on the direct URL
    probe = spawn("consumer", env=consumer_env(db.url, "P", **env), name="P")
    probe.wait_for_log({"event": "connection_budget"}, timeout=30)
    need = jrcli.events(probe, "connection_budget")[0]["databaseUrlMax"]
    probe.terminate(timeout=20)
    b = harness.PgBouncer(pg, pool_mode="session", pool_size=need)
    try:
        url = b.url(db.dbname)
        a = spawn("consumer", env=consumer_env(url, "A", **env), name="A")
        a.wait_for_log({"event": "job_runner_started"}, timeout=30)
        ids = [jrcli.enqueue(bins, url, "noop", org="org-1", payload='{"sleepMs": 50}')[0]
               for _ in range(4)]
        jrcli.wait_runs(db, ids, "succeeded", timeout=60)
        harness.wait_until(lambda: db.scalar("SELECT count(*) FROM job_runs WHERE source = 'cycle'") >= 2,
                           timeout=20, msg="cycles through the session pooler")
        assert a.terminate(timeout=30) == 0
        assert advisory_locks(db) == []
    finally:
        b.cleanup()


# ---------------------------------------------------------------------------
# a frozen PostgreSQL
# ---------------------------------------------------------------------------

def pg_processes(postmaster_pid):
    """The postmaster and its children (each backend is in its own
    process group, so killpg() would reach the postmaster alone)."""
    pids = [postmaster_pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster_pid:
                pids.append(int(d))
    return pids


def signal_pg(server, sig):
    for pid in pg_processes(server.proc.pid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def timed_get(url, timeout):
    t0 = time.monotonic()
    status, _, body = harness.http("GET", url, timeout=timeout)
    return status, body, time.monotonic() - t0


def test_sigstopped_postgres_liveness_readiness_metrics(bins, pg_fresh, spawn):
    db = pg_fresh.create_database()
    port, pport = harness.free_port(), harness.free_port()
    c = spawn("consumer", env=consumer_env(db.url, "A", WORKER_HTTP_PORT=port), name="A")
    c.wait_for_log({"event": "job_runner_started"}, timeout=30)
    p = spawn("producer", env=jrcli.env(db.url, PORT=pport), name="P")
    p.wait_for_log({"event": "producer_started"}, timeout=30)
    base, pbase = "http://127.0.0.1:%d" % port, "http://127.0.0.1:%d" % pport
    harness.wait_until(lambda: timed_get(base + "/health/ready", 5)[0] == 200, timeout=20,
                       msg="ready before the stall")
    harness.wait_until(lambda: timed_get(pbase + "/api/health/extended", 5)[0] == 200, timeout=20,
                       msg="extended health before the stall")
    signal_pg(pg_fresh, signal.SIGSTOP)   # the postmaster and every backend
    try:
        time.sleep(3)   # past the probe's budget: its check is stuck now
        # probes as Kubernetes sends them, several at once: none may hold
        # a thread that liveness needs
        bg = [threading.Thread(target=lambda u=u: harness.http("GET", u, timeout=15))
              for u in [base + "/health/ready", base + "/metrics", pbase + "/api/health/extended",
                        pbase + "/metrics"] * 2]
        for t in bg:
            t.start()
        time.sleep(0.5)
        lat = []
        for _ in range(20):
            st, _, dt = timed_get(base + "/health", 2)
            assert st == 200
            lat.append(dt)
            st, _, dt = timed_get(pbase + "/api/health", 2)
            assert st == 200
            lat.append(dt)
        lat.sort()
        assert lat[len(lat) // 2] < 0.1, lat   # liveness from the process alone
        st, body, _ = timed_get(base + "/health/ready", 3)
        assert st == 503, body
        # the category of a public answer, or the text itself
        assert body["checks"]["database"]["error"] in ("database unreachable: timeout",
                                                       "database check timed out"), body
        st, body, _ = timed_get(pbase + "/api/health/extended", 3)
        assert st == 503 and body["checks"]["database"]["error"] in (
            "database unreachable: timeout", "database check timed out"), body
        for url in (base + "/metrics", pbase + "/metrics"):
            st, body, _ = timed_get(url, 3)
            assert st == 200 and "jobrunner_db_connections" in body
        for t in bg:
            t.join(20)
    finally:
        signal_pg(pg_fresh, signal.SIGCONT)
    harness.wait_until(lambda: timed_get(base + "/health/ready", 5)[0] == 200, timeout=30,
                       msg="ready again after SIGCONT")


def test_producer_liveness_while_enqueues_hang_on_a_stopped_redis(bins, db, redis_server, spawn):
    pport = harness.free_port()
    p = spawn("producer", env=jrcli.env(db.url, PORT=pport, REDIS_URL=redis_server.url,
                                        API_TOKEN="t0ken-for-it-0123456789abcdef"), name="P")
    p.wait_for_log({"event": "producer_started"}, timeout=30)
    base = "http://127.0.0.1:%d" % pport
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    results = []
    stop = threading.Event()

    def post():
        # enqueues, one after another, for as long as Redis is stopped: each
        # holds an API thread while it waits on Redis
        while not stop.is_set():
            try:
                results.append(harness.http("POST", base + "/api/integrations/jobs/noop/run", body={},
                                            headers={"Authorization": "Bearer t0ken-for-it-0123456789abcdef"},
                                            timeout=30)[0])
            except Exception as e:  # noqa: BLE001 -- recorded, asserted below
                results.append(repr(e))
    threads = [threading.Thread(target=post) for _ in range(12)]

    def start_all():
        for t in threads:
            # one at a time: each new connection goes to a polling thread
            # that is still free, so that they all get a handler to wait in
            t.start()
            time.sleep(0.15)
    starter = threading.Thread(target=start_all)
    try:
        starter.start()
        time.sleep(0.7)   # four enqueues wait on Redis now, one per API connection
        lat = []
        for _ in range(10):
            try:
                st, _, dt = timed_get(base + "/api/health", 3)
            except Exception:  # noqa: BLE001 -- a timeout is the failure measured
                st, dt = None, 3.0
            lat.append(dt)
            assert st in (200, None)
            time.sleep(0.1)
        lat.sort()
        # every answer prompt (the old producer took seconds here, once
        # every API thread was waiting on Redis)
        assert lat[-1] < 1.0 and lat[len(lat) // 2] < 0.1, lat
    finally:
        stop.set()
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        starter.join(60)
    for t in threads:
        t.join(60)
    assert results and all(isinstance(r, int) for r in results), results


# ---------------------------------------------------------------------------
# max_connections
# ---------------------------------------------------------------------------

def test_max_connections_exhausted(bins, spawn):
    server = harness.Postgres(settings={"max_connections": "30"})
    try:
        db = server.create_database()
        port = harness.free_port()
        c = spawn("consumer", env=consumer_env(db.url, "A", WORKER_HTTP_PORT=port, ORG_CONCURRENCY=1,
                                               WORKER_CONCURRENCY=2, JOB_LEASE_MS=30000), name="A")
        c.wait_for_log({"event": "job_runner_started"}, timeout=30)
        base = "http://127.0.0.1:%d" % port
        harness.wait_until(lambda: timed_get(base + "/health/ready", 5)[0] == 200, timeout=20,
                           msg="ready")
        keeper = db.connect()
        fillers = []
        while True:
            try:
                fillers.append(db.connect())
            except Exception as e:  # noqa: BLE001
                assert "too many clients" in str(e) or "reserved" in str(e), e
                break
            assert len(fillers) < 40
        try:
            # runs of an org: the slot needs the session connection, which
            # cannot be opened now
            with keeper.cursor() as cur:
                for i in range(3):
                    cur.execute("INSERT INTO job_runs (id, job, org_id, payload) VALUES (%s, 'noop', %s,"
                                " '{\"sleepMs\": 10}')", ("mc-%d" % i, "org-%d" % i))
                cur.execute("SELECT pg_notify('jobrunner_runs', '')")

            def refused():
                st, body, _ = timed_get(base + "/health/ready", 5)
                return st == 503 and "too many" in json.dumps(body) and body
            body = harness.wait_until(refused, timeout=20, msg="readiness to report the refusals")
            st, text, _ = timed_get(base + "/metrics", 5)
            line = [ln for ln in text.splitlines()
                    if ln.startswith('jobrunner_db_connect_failures_total{reason="too_many_connections"}')]
            assert line and float(line[0].split()[-1]) >= 1, text
            ev = jrcli.events(c, "db_connect_failed")
            assert ev and ev[0]["reason"] == "too_many_connections", c.log_tail()
            assert "too many clients" in ev[0]["error"]
            with keeper.cursor() as cur:
                cur.execute("SELECT count(*) FROM job_runs WHERE error LIKE '%%org concurrency%%'"
                            " OR (status = 'queued' AND attempts = 0 AND error IS NOT NULL)")
                assert cur.fetchone()[0] == 0
        finally:
            for f in fillers:
                f.close()
        jrcli.wait_runs(db, ["mc-0", "mc-1", "mc-2"], "succeeded", timeout=30)
        rows = jrcli.runs(db, ["mc-0", "mc-1", "mc-2"])
        assert all(r["attempts"] == 1 and r["error"] is None for r in rows.values()), rows
        keeper.close()
    finally:
        server.cleanup()


# ---------------------------------------------------------------------------
# rollouts
# ---------------------------------------------------------------------------

def test_sigterm_during_a_long_run_redis_mode(bins, db, redis_server, spawn):
    """Redis mode: a run cut off by the shutdown deadline is handed back
    without counting an attempt and another consumer takes it long before
    its lease (two minutes here) could pass."""
    env = dict(REDIS_URL=redis_server.url, JOB_LEASE_MS=120000)
    a = spawn("consumer", env=consumer_env(db.url, "A", WORKER_SHUTDOWN_TIMEOUT_MS=300, **env), name="A")
    a.wait_for_log({"event": "job_runner_started"}, timeout=30)
    ids = jrcli.enqueue(bins, db.url, "noop", payload='{"sleepMs": 600000}',
                        REDIS_URL=redis_server.url)
    jrcli.wait_runs(db, ids, "running", timeout=60)
    b = spawn("consumer", env=consumer_env(db.url, "B", **env), name="B")
    b.wait_for_log({"event": "job_runner_started"}, timeout=30)
    a.signal(signal.SIGTERM)
    assert a.wait(timeout=120) == 0, a.log_tail()
    t0 = time.monotonic()
    harness.wait_until(lambda: jrcli.runs(db, ids)[ids[0]]["consumer"] == "B"
                       and jrcli.runs(db, ids)[ids[0]]["status"] == "running",
                       timeout=60, msg="B to take the run again")
    print("taken up %.2f s after A exited" % (time.monotonic() - t0))
    row = jrcli.runs(db, ids)[ids[0]]
    assert row["attempts"] == 1, row


# ---------------------------------------------------------------------------
# start-up: the migration lock and signals
# ---------------------------------------------------------------------------

def test_sigterm_while_waiting_for_the_migration_lock(bins, db, spawn):
    holder = db.connect(application_name="it-migration-holder")
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s), pg_backend_pid()", (MIGRATE_KEY,))
        pid = cur.fetchone()[1]
    try:
        c = spawn("consumer", env=consumer_env(db.url, "A"), name="A")
        ev = c.wait_for_log({"event": "migration_lock_wait"}, timeout=30)
        assert "it-migration-holder" in ev["holder"] and str(pid) in ev["holder"], ev
        c.signal(signal.SIGTERM)
        assert c.wait(timeout=10) == 0, c.log_tail()
        assert jrcli.events(c, "job_runner_started") == []
    finally:
        holder.close()


def test_sigterm_while_waiting_for_postgres(bins, spawn):
    dead = "postgresql://postgres@127.0.0.1:%d/x" % harness.free_port()
    c = spawn("consumer", env=consumer_env(dead, "A", STARTUP_TIMEOUT_MS=600000), name="A")
    time.sleep(1)   # in the connect-retry loop now
    c.signal(signal.SIGTERM)
    # well before the ten-minute start-up timeout
    assert c.wait(timeout=60) == 0, c.log_tail()
    assert jrcli.events(c, "shutdown"), c.log_tail()


# ---------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------

SECRET = "p@ss:w/o%rd x"


def test_no_password_in_any_message(bins, db, pg, spawn):
    """Passwords with @ : / % and a space, in the key=value and the URL forms
    of DATABASE_URL: not in any log line or HTTP answer, also when start-up
    fails.  (The test cluster trusts every connection, so any password is
    accepted.)"""
    enc = urllib.parse.quote(SECRET, safe="")
    kv = "host=127.0.0.1 port=%d dbname=%s user=postgres password='%s'" % (
        pg.port, db.dbname, SECRET.replace("'", "\\'"))
    url = "postgresql://postgres:%s@127.0.0.1:%d/%s" % (enc, pg.port, db.dbname)
    dead = harness.free_port()
    bad_kv = "host=127.0.0.1 port=%d dbname=x user=postgres password='%s' connect_timeout=2" % (dead, SECRET)
    bad_url = "postgresql://postgres:%s@127.0.0.1:%d/x" % (enc, dead)
    outputs = []
    for bad in (bad_kv, bad_url, "host=127.0.0.1 password='%s" % SECRET,
                "postgresql://postgres:%s@[bad" % enc):
        p = jrcli.run(bins.consumer, [], consumer_env(bad, "X", STARTUP_TIMEOUT_MS=500), timeout=60)
        assert p.returncode in (2, 3), p.stdout + p.stderr
        outputs.append(p.stdout + p.stderr)
    hport, pport = harness.free_port(), harness.free_port()
    c = spawn("consumer", env=consumer_env(kv, "A", WORKER_HTTP_PORT=hport, DATABASE_DIRECT_URL=url),
              name="A")
    c.wait_for_log({"event": "job_runner_started"}, timeout=30)
    p = spawn("producer", env=jrcli.env(url, PORT=pport, API_TOKEN="tok-123456-0123456789abcdef"), name="P")
    p.wait_for_log({"event": "producer_started"}, timeout=30)
    answers = []
    for u in ("http://127.0.0.1:%d/health" % hport, "http://127.0.0.1:%d/health/ready" % hport,
              "http://127.0.0.1:%d/metrics" % hport, "http://127.0.0.1:%d/api/health/extended" % pport,
              "http://127.0.0.1:%d/metrics" % pport,
              "http://127.0.0.1:%d/api/integrations/jobs/metrics" % pport):
        answers.append(json.dumps(harness.http("GET", u, timeout=10)[2]))
    for proc in (c, p):
        proc.terminate(timeout=20)
    text = "\n".join(outputs + answers) + all_output(c, p)
    for form in (SECRET, enc, urllib.parse.quote(SECRET), "o%rd", "w/o"):
        assert form not in text, form
    assert "startup_failed" in "\n".join(outputs)


def test_no_kerberos_probe_where_kerberos_is_not_set_up(bins, db_url, tmp_path):
    """Where Kerberos is not set up (no /etc/krb5.conf, no credential cache,
    no KRB5CCNAME/KRB5_CONFIG/PGGSSENCMODE), connections ask for
    gssencmode=disable: libpq's default would initialise the Kerberos
    libraries on every connect (about 0.7 MiB resident per process).
    KRB5_TRACE shows it: libkrb5 creates the trace file when it initialises.
    gssencmode in DATABASE_URL still wins."""
    if os.path.exists("/etc/krb5.conf") or os.path.exists("/tmp/krb5cc_%d" % os.getuid()):
        pytest.skip("Kerberos is set up on this machine: libpq's default applies by design")
    trace = tmp_path / "krb5-default.trace"
    p = jrcli.run(bins.consumer, ["--migrate-only"], jrcli.env(db_url, KRB5_TRACE=trace))
    assert p.returncode == 0, p.stderr
    assert not trace.exists(), "Kerberos was initialised although it is not set up here"
    trace = tmp_path / "krb5-url.trace"
    sep = "&" if "?" in db_url else "?"
    p = jrcli.run(bins.consumer, ["--migrate-only"],
                  jrcli.env(db_url + sep + "gssencmode=prefer", KRB5_TRACE=trace))
    assert p.returncode == 0, p.stderr
    assert trace.exists(), "gssencmode=prefer in DATABASE_URL did not win"
