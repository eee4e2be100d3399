"""Start-up, configuration, migrations and `producer enqueue`, with the real
binaries (docs/operations.md, docs/configuration.md, docs/jobs.md).  Redis-less: REDIS_URL is never set here."""

import os
import socket
import time

import pytest

import harness
import jrcli

# A port nobody listens on: a binary that tried to reach PostgreSQL there
# would fail with exit 3 after its start-up timeout, not exit 2 at once.
CLOSED_URL = "postgresql://postgres@127.0.0.1:%d/nowhere" % harness.free_port()

# Variables of the operations guide (docs/operations.md): --help of both binaries lists every one.
SPEC_VARIABLES = [
    "NODE_ENV", "PORT", "DATABASE_URL", "WORKER_MODE", "JOB_RUNNER_ENABLED",
    "JOB_RUNNER_INTERVAL_MS", "NO_REPLY_SCAN_ENABLED", "NO_REPLY_SCAN_INTERVAL_MS",
    "META_SPEND_ENABLED", "META_TOKEN_REFRESH_ENABLED", "WORKER_RUN_ONCE", "REDIS_URL",
    "CONSUMER_NAME", "WORKER_CONCURRENCY", "WORKER_HTTP_PORT", "WORKER_SHUTDOWN_TIMEOUT_MS",
    "REDIS_FALLBACK_AFTER_MS", "ORG_CONCURRENCY", "API_TOKEN", "JOB_MAX_ATTEMPTS",
    "JOB_BACKOFF_BASE_MS", "JOB_BACKOFF_MAX_MS", "JOB_LEASE_MS", "HTTP_MAX_BODY_BYTES",
    "META_SPEND_INTERVAL_MS", "META_TOKEN_REFRESH_INTERVAL_MS", "META_GRAPH_URL",
    "META_APP_ID", "META_APP_SECRET", "META_SPEND_LOOKBACK_DAYS",
    "META_TOKEN_REFRESH_WINDOW_MS", "NO_REPLY_THRESHOLD_MS", "LOG_LEVEL", "LOG_FORMAT",
    "STARTUP_TIMEOUT_MS", "JOB_RUNNER_LOCK_KEY",
]


@pytest.fixture(scope="module")
def shared(pg, bins):
    """One migrated database for the tests that only read it or leave it as
    it was (cheaper than a database per parametrized case)."""
    db = pg.create_database()
    jrcli.migrate(bins, db.url)
    return db


# ---- configuration refusals ---------------------------------------------------

# (binary, environment, args, words the stderr message must contain)
REFUSALS = [
    ("consumer", {"WORKER_MODE": "maybe"}, [], ["WORKER_MODE", "maybe"]),
    ("producer", {"WORKER_MODE": "maybe"}, [], ["WORKER_MODE", "maybe"]),
    ("consumer", {"JOB_RUNNER_INTERVAL_MS": "-5"}, [], ["JOB_RUNNER_INTERVAL_MS", "-5"]),
    ("producer", {"JOB_RUNNER_INTERVAL_MS": "-5"}, [], ["JOB_RUNNER_INTERVAL_MS", "-5"]),
    ("consumer", {"JOB_RUNNER_INTERVAL_MS": "5000ms"}, [], ["JOB_RUNNER_INTERVAL_MS", "5000ms"]),
    ("producer", {"PORT": "99999"}, [], ["PORT", "99999"]),
    ("consumer", {"PORT": "0"}, [], ["PORT", "0"]),
    ("consumer", {"JOB_RUNNER_ENABLED": "perhaps"}, [], ["JOB_RUNNER_ENABLED", "perhaps"]),
    ("producer", {"JOB_RUNNER_ENABLED": "2"}, [], ["JOB_RUNNER_ENABLED", "2"]),
    ("consumer", {"WORKER_RUN_ONCE": "once"}, [], ["WORKER_RUN_ONCE", "once"]),
    ("consumer", {"WORKER_CONCURRENCY": "0"}, [], ["WORKER_CONCURRENCY", "0"]),
    ("consumer", {"JOB_LEASE_MS": "1e3"}, [], ["JOB_LEASE_MS", "1e3"]),
    ("consumer", {"JOB_MAX_ATTEMPTS": " 5"}, [], ["JOB_MAX_ATTEMPTS"]),
    ("consumer", {"JOB_RUNNER_LOCK_KEY": "99999999999999999999"}, [], ["JOB_RUNNER_LOCK_KEY"]),
    ("consumer", {"LOG_LEVEL": "loud"}, [], ["LOG_LEVEL", "loud"]),
    ("consumer", {"ORG_RATE_LIMIT": "abc"}, [], ["ORG_RATE_LIMIT", "abc"]),
    ("consumer", {"ORG_RATE_LIMIT": "0/1s"}, [], ["ORG_RATE_LIMIT", "0/1s"]),
    ("consumer", {"ORG_RATE_LIMIT": "5/0s"}, [], ["ORG_RATE_LIMIT", "5/0s"]),
    ("producer", {"ORG_RATE_LIMIT": "5/1d"}, [], ["ORG_RATE_LIMIT"]),
    ("consumer", {"META_SPEND_ORG_RATE_LIMIT": "100/"}, [], ["META_SPEND_ORG_RATE_LIMIT"]),
    ("producer", {"LOG_FORMAT": "xml"}, [], ["LOG_FORMAT", "xml"]),
    ("consumer", {"REDIS_URL": "http://127.0.0.1:6379"}, [], ["REDIS_URL"]),
    ("consumer", {"CONSUMER_NAME": "two words"}, [], ["CONSUMER_NAME"]),
    ("consumer", {"JOB_BACKOFF_BASE_MS": "5000", "JOB_BACKOFF_MAX_MS": "100"}, [],
     ["JOB_BACKOFF_MAX_MS"]),
    # a flag is named as the flag
    ("consumer", {}, ["--interval-ms=abc"], ["--interval-ms", "abc"]),
    ("producer", {}, ["--port", "70000"], ["--port", "70000"]),
    ("consumer", {}, ["--bogus"], ["--bogus"]),
    ("consumer", {}, ["--concurrency"], ["--concurrency"]),
    ("consumer", {}, ["stray-argument"], ["stray-argument"]),
    ("producer", {}, ["frobnicate"], ["frobnicate"]),
    # the other role's WORKER_MODE: the message says which binary to run
    ("producer", {"WORKER_MODE": "1"}, [], ["WORKER_MODE", "`consumer`"]),
    ("consumer", {"WORKER_MODE": "0"}, [], ["WORKER_MODE", "`producer`"]),
    ("producer", {"WORKER_MODE": "true"}, [], ["WORKER_MODE", "`consumer`"]),
    ("consumer", {"WORKER_MODE": "OFF"}, [], ["WORKER_MODE", "`producer`"]),
]


@pytest.mark.parametrize("binary,environ,args,words", REFUSALS,
                         ids=["%s-%s" % (r[0], "-".join(list(r[1]) + r[2]) or "none")
                              for r in REFUSALS])
def test_invalid_configuration_exits_2_naming_the_variable(bins, binary, environ, args, words):
    # Refused before it tries the database: with a ten-minute start-up
    # timeout on a closed port, a binary that tried would still be waiting
    # when jrcli.run gives up (subprocess.TimeoutExpired), on any machine.
    e = dict(jrcli.FAST, DATABASE_URL=CLOSED_URL, STARTUP_TIMEOUT_MS="600000")
    e.update(environ)
    p = jrcli.run(getattr(bins, binary), args, e, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    for w in words:
        assert w in p.stderr, "stderr %r does not name %r" % (p.stderr, w)
    assert "\n" not in p.stderr.strip(), "one message line, got %r" % p.stderr


@pytest.mark.parametrize("binary", ["producer", "consumer"])
def test_missing_database_url_exits_2(bins, binary):
    p = jrcli.run(getattr(bins, binary), [], dict(jrcli.FAST))
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "DATABASE_URL" in p.stderr


@pytest.mark.parametrize("binary", ["producer", "consumer"])
def test_empty_variables_count_as_unset(bins, shared, binary):
    # compose files write VAR: "" -- that is no value, not an invalid one
    e = jrcli.env(shared.url, WORKER_MODE="", JOB_RUNNER_INTERVAL_MS="", PORT="", LOG_LEVEL="")
    p = jrcli.run(getattr(bins, binary), ["--migrate-only"], e)
    assert p.returncode == 0, (p.stdout, p.stderr)


@pytest.mark.parametrize("value", ["1", "TRUE", "Yes", "on", "0", "false", "NO", "Off"])
def test_booleans_accept_any_case(bins, shared, value):
    e = jrcli.env(shared.url, JOB_RUNNER_ENABLED=value, NO_REPLY_SCAN_ENABLED=value)
    p = jrcli.run(bins.consumer, ["--migrate-only"], e)
    assert p.returncode == 0, (p.stdout, p.stderr)


@pytest.mark.parametrize("binary", ["producer", "consumer"])
def test_help_exits_0_and_lists_every_variable(bins, binary):
    p = jrcli.run(getattr(bins, binary), ["--help"], {})
    assert p.returncode == 0, p.stderr
    missing = [v for v in SPEC_VARIABLES if v not in p.stdout]
    assert not missing, "--help of %s does not list %s" % (binary, missing)
    for flag in ("--interval-ms", "--concurrency", "--drain-once", "--migrate-only"):
        assert flag in p.stdout
    assert "1785684594" in p.stdout   # the lock key's documented default


def test_help_never_touches_the_database(bins):
    p = jrcli.run(bins.consumer, ["--help"], {"DATABASE_URL": CLOSED_URL})
    assert p.returncode == 0
    assert "usage: consumer" in p.stdout


@pytest.mark.parametrize("binary,args", [
    ("consumer", []),
    ("consumer", ["--drain-once"]),
    ("producer", []),
    ("producer", ["enqueue", "noop"]),
    ("consumer", ["--migrate-only"]),
])
def test_unreachable_database_exits_3_after_startup_timeout(bins, binary, args):
    url = "postgresql://postgres:s3cretpassw0rd@127.0.0.1:%d/x" % harness.free_port()
    e = dict(jrcli.FAST, DATABASE_URL=url, STARTUP_TIMEOUT_MS="500")
    t0 = time.monotonic()
    p = jrcli.run(getattr(bins, binary), args, e, timeout=30)
    elapsed = time.monotonic() - t0
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    # (a lower bound only: a busy machine makes it later, never earlier; the
    # run's timeout above bounds it)
    assert elapsed >= 0.45, "gave up after %.2fs, before STARTUP_TIMEOUT_MS=500" % elapsed
    out = p.stdout + p.stderr
    assert "startup_failed" in out
    assert "s3cretpassw0rd" not in out, "the database password was logged"


# ---- migrations ------------------------------------------------------------------

TABLES = {"job_runner_state", "job_runner_lock", "job_runs", "conversations", "reminders",
          "meta_connections", "meta_spend_daily", "schema_migrations"}


def _tables(db):
    return {r[0] for r in db.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


@pytest.mark.parametrize("binary", ["consumer", "producer"])
def test_migrate_only_twice(bins, db, db_url, binary):
    path = getattr(bins, binary)
    p = jrcli.run(path, ["--migrate-only"], jrcli.env(db_url))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert TABLES <= _tables(db)
    first = db.query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert first, "no schema_migrations rows"
    versions = [r[0] for r in first]
    assert len(versions) == len(set(versions))
    # --migrate-only exits: it neither runs cycles nor claims runs
    assert db.scalar("SELECT count(*) FROM job_runner_state") == 0

    p = jrcli.run(path, ["--migrate-only"], jrcli.env(db_url))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert db.query("SELECT version, name, applied_at FROM schema_migrations ORDER BY version") == first
    assert "migrations_applied" not in p.stdout + p.stderr   # nothing left to apply


def test_port_in_use_exits_2(bins, db_url):
    """The API's port is taken: the producer says so and exits 2 (a usage
    error), after the database was reached."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = jrcli.run(bins.producer, [], jrcli.env(db_url, PORT=port, API_TOKEN="t" * 32),
                      timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "cannot serve HTTP" in p.stdout + p.stderr


def test_concurrent_migrations_on_an_empty_database(bins, db, db_url):
    procs = [harness.Proc([bins.consumer if i % 2 else bins.producer, "--migrate-only"],
                          env=jrcli.env(db_url), name="migrate-%d" % i) for i in range(4)]
    try:
        codes = [p.wait(timeout=30) for p in procs]
        assert codes == [0] * 4, "\n".join(p.log_tail() for p in procs)
    finally:
        for p in procs:
            p.cleanup()
    versions = [r[0] for r in db.query("SELECT version FROM schema_migrations")]
    assert versions and len(versions) == len(set(versions))
    assert TABLES <= _tables(db)


# ---- producer enqueue --------------------------------------------------------------

def test_enqueue_stdout_holds_only_run_ids_on_a_fresh_database(bins, db_url):
    p = jrcli.run(bins.producer, ["enqueue", "noop", "--count", "2"], jrcli.env(db_url))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2 and all(not l.startswith("{") for l in lines), lines


def test_enqueue_prints_one_id_per_line_and_queues_runs(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    p = jrcli.run(bins.producer, ["enqueue", "noop", "--org", "org-7", "--payload",
                                  '{"sleepMs": 5, "tag": "x"}', "--count", "3"],
                  jrcli.env(db_url))
    assert p.returncode == 0, p.stderr
    ids = p.stdout.splitlines()
    assert len(ids) == 3 and len(set(ids)) == 3 and all(ids)
    rows = db.query("SELECT id, job, org_id, payload, source, status, attempts, consumer"
                    " FROM job_runs ORDER BY id")
    assert sorted(r[0] for r in rows) == sorted(ids)
    for r in rows:
        assert r[1:] == ("noop", "org-7", {"sleepMs": 5, "tag": "x"}, "adhoc", "queued", 0, None)


def test_enqueue_many_in_batches(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    ids = jrcli.enqueue(bins, db_url, "noop", count=2500)
    assert len(set(ids)) == 2500
    assert db.scalar("SELECT count(*) FROM job_runs WHERE status = 'queued'") == 2500


def test_enqueue_idempotency_key_returns_the_first_id(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    first = jrcli.enqueue(bins, db_url, "noop", key="k-1")
    again = jrcli.enqueue(bins, db_url, "noop", key="k-1")
    other_job = jrcli.enqueue(bins, db_url, "no_reply_scan", key="k-1")
    assert again == first
    assert other_job != first
    assert db.scalar("SELECT count(*) FROM job_runs") == 2


@pytest.mark.parametrize("args,words", [
    (["enqueue", "no_such_job"], ["no_such_job"]),
    (["enqueue", "noop", "--payload", "{not json"], ["payload"]),
    (["enqueue", "noop", "--payload", "[1, 2]"], ["payload"]),
    (["enqueue", "noop", "--payload", "42"], ["payload"]),
    (["enqueue", "noop", "--count", "0"], ["--count"]),
    (["enqueue", "noop", "--count", "ten"], ["--count"]),
    (["enqueue", "noop", "--org"], ["--org"]),
    (["enqueue", "noop", "--org", ""], ["orgId"]),
    (["enqueue", "noop", "--frob"], ["--frob"]),
    (["enqueue"], ["JOB"]),
    (["enqueue", "noop", "extra"], ["extra"]),
    (["enqueue", "noop", "--count", "2", "--idempotency-key", "k"], ["--idempotency-key"]),
])
def test_enqueue_usage_errors_exit_2_and_queue_nothing(bins, shared, args, words):
    db = shared
    p = jrcli.run(bins.producer, args, jrcli.env(db.url))
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    for w in words:
        assert w in p.stderr, (w, p.stderr)
    assert db.scalar("SELECT count(*) FROM job_runs") == 0


# ---- producer: API mode and monolith mode ---------------------------------------

def test_producer_api_mode_never_runs_jobs(bins, spawn, db, db_url):
    api = spawn("producer", env=jrcli.env(db_url, PORT=harness.free_port()), name="api")
    api.wait_for_log({"event": "producer_started"}, timeout=15)
    ids = jrcli.enqueue(bins, db_url, "noop")
    # Absence needs a window: 1.5 s is over 7 intervals and many claim
    # timeouts; a claiming process takes a queued run within milliseconds.
    time.sleep(1.5)
    assert api.returncode is None, api.log_tail()
    out = "\n".join(api.lines())
    assert "Starting job runner" not in out
    assert "job_runner_cycle_complete" not in out
    assert jrcli.runs(db, ids)[ids[0]]["status"] == "queued"
    assert db.scalar("SELECT count(*) FROM job_runner_state") == 0
    # a consumer then takes the run: it was waiting, not lost
    c = spawn("consumer", env=jrcli.env(db_url, CONSUMER_NAME="the-consumer"))
    row = jrcli.wait_runs(db, ids, "succeeded")[ids[0]]
    assert row["consumer"] == "the-consumer"
    assert api.terminate() == 0
    assert "Starting job runner" not in "\n".join(api.lines())
    c.terminate()


@pytest.mark.parametrize("setting", ["false", "0", "no"])
def test_producer_explicitly_disabled_runs_nothing(bins, spawn, db, db_url, setting):
    api = spawn("producer", env=jrcli.env(db_url, PORT=harness.free_port(),
                                          JOB_RUNNER_ENABLED=setting, WORKER_MODE="0"))
    api.wait_for_log({"event": "producer_started", "jobRunnerEnabled": "false"}, timeout=15)
    assert "Starting job runner" not in "\n".join(api.lines())
    assert api.terminate() == 0


def test_producer_monolith_mode_runs_jobs_and_warns(bins, spawn, db, db_url):
    api = spawn("producer", env=jrcli.env(db_url, PORT=harness.free_port(),
                                          JOB_RUNNER_ENABLED="true", CONSUMER_NAME="mono"),
                name="monolith")
    warn = api.wait_for_log({"event": "monolith_mode"}, timeout=15)
    assert warn["level"] == "warn"
    api.wait_for_log(r"Starting job runner", timeout=5)
    ids = jrcli.enqueue(bins, db_url, "noop", count=3)
    rows = jrcli.wait_runs(db, ids, "succeeded")
    assert {r["consumer"] for r in rows.values()} == {"mono"}
    # and, Redis-less, it runs cycles on its own timer like the monolith did
    api.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=10)
    assert db.scalar("SELECT \"runCount\" FROM job_runner_state WHERE id = 'job_runner'") >= 1
    assert api.terminate() == 0


def test_consumer_disabled_claims_nothing(bins, spawn, db, db_url):
    c = spawn("consumer", env=jrcli.env(db_url, JOB_RUNNER_ENABLED="false"))
    c.wait_for_log({"event": "job_runner_disabled"}, timeout=15)
    ids = jrcli.enqueue(bins, db_url, "noop")
    time.sleep(1.0)   # absence needs a window (5 intervals)
    assert jrcli.runs(db, ids)[ids[0]]["status"] == "queued"
    assert "Starting job runner" not in "\n".join(c.lines())
    assert db.scalar("SELECT count(*) FROM job_runner_state") == 0
    assert c.terminate() == 0


def test_consumer_logs_start_in_worker_mode(spawn, db_url):
    c = spawn("consumer", env=jrcli.env(db_url, WORKER_MODE="1", CONSUMER_NAME="w-1"))
    start = c.wait_for_log({"event": "job_runner_started"}, timeout=15)
    assert start["msg"] == "Starting job runner in WORKER mode"
    assert start["consumer"] == "w-1"
    assert start["queueBackend"] == "postgres"
    cyc = c.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=10)
    assert cyc["trigger"] == "timer"
    assert isinstance(cyc["durationMs"], int) and cyc["durationMs"] >= 0
    assert "no_reply_scan=succeeded(0 reminders)" in cyc["ran"]
    assert c.terminate() == 0


def test_text_log_format(spawn, db_url):
    c = spawn("consumer", env=jrcli.env(db_url, LOG_FORMAT="text"))
    line = c.wait_for_log(r"Starting job runner in WORKER mode", timeout=15)
    assert isinstance(line, str) and not line.lstrip().startswith("{")
    assert c.terminate() == 0
