"""jrcli.py -- small helpers shared by the Redis-less integration tests.

What: the environment a test gives the binaries (short intervals, leases
and backoffs so that every file stays fast), one-shot runs of a binary with
stdout and stderr kept apart (`run`), `producer enqueue` (`enqueue`),
polling of job_runs rows (`wait_runs`) and picking JSON log events out of a
harness.Proc (`events`).

Why a module apart from harness.py: harness.py knows nothing about the
jobrunner's tables and flags; these helpers do, and three test files share
them.
"""

import os
import subprocess

import harness

# Every test binary gets these unless the test overrides them: cycles every
# 200 ms, leases of 1 s, retries after 20-100 ms, no health port (two
# consumers on one machine must not collide), JSON logs.  The Meta jobs are
# off (they are on by default, and test_meta_jobs.py covers them): cycles
# run only what a test asks for.
FAST = {
    "META_SPEND_ENABLED": "false",
    "META_TOKEN_REFRESH_ENABLED": "false",
    "JOB_RUNNER_INTERVAL_MS": "200",
    "JOB_LEASE_MS": "1000",
    "JOB_BACKOFF_BASE_MS": "20",
    "JOB_BACKOFF_MAX_MS": "100",
    "WORKER_HTTP_PORT": "0",
    "WORKER_SHUTDOWN_TIMEOUT_MS": "10000",
    "STARTUP_TIMEOUT_MS": "10000",
    "LOG_FORMAT": "json",
}

DEFAULT_LOCK_KEY = 1785684594


def env(db_url, **overrides):
    """FAST plus DATABASE_URL plus overrides (values str()-ed; None removes)."""
    out = dict(FAST, DATABASE_URL=db_url)
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


def _base_env():
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for k in harness._PASSTHROUGH_ENV:
        if k in os.environ:
            base[k] = os.environ[k]
    return base


def run(path, args=(), environ=None, timeout=30.0):
    """Runs a binary to completion with only `environ` (over PATH and the
    sanitizer options); returns subprocess.CompletedProcess with text
    stdout and stderr kept apart."""
    e = _base_env()
    e.update({k: str(v) for k, v in (environ or {}).items() if v is not None})
    harness.register_env_secrets(e)
    p = subprocess.run([str(path), *map(str, args)], env=e, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    label = "output of %s %s" % (os.path.basename(str(path)), " ".join(map(str, args))[:60])
    harness.record_output(label + " (stdout)", p.stdout)
    harness.record_output(label + " (stderr)", p.stderr)
    return p


def migrate(bins, db_url):
    """`consumer --migrate-only` (asserts exit 0)."""
    p = run(bins.consumer, ["--migrate-only"], env(db_url))
    assert p.returncode == 0, "migrate-only failed (%s):\n%s%s" % (
        p.returncode, p.stdout, p.stderr)


def enqueue(bins, db_url, job, org=None, payload=None, count=None, key=None, **env_over):
    """`producer enqueue`; returns the printed run ids (asserts exit 0)."""
    args = ["enqueue", job]
    if org is not None:
        args += ["--org", org]
    if payload is not None:
        args += ["--payload", payload]
    if count is not None:
        args += ["--count", str(count)]
    if key is not None:
        args += ["--idempotency-key", key]
    p = run(bins.producer, args, env(db_url, **env_over))
    assert p.returncode == 0, "producer enqueue failed (%s):\n%s%s" % (
        p.returncode, p.stdout, p.stderr)
    ids = p.stdout.split()
    assert len(ids) == (count or 1), p.stdout
    return ids


def runs(db, ids):
    """{id: row dict} of the job_runs rows with these ids."""
    cols = ("id", "job", "org_id", "source", "status", "attempts", "max_attempts",
            "consumer", "error", "started_at", "finished_at", "lease_until", "run_at",
            "duration_ms", "payload")
    rows = db.query("SELECT %s FROM job_runs WHERE id = ANY(%%s)" % ", ".join(cols),
                    (list(ids),))
    return {r[0]: dict(zip(cols, r)) for r in rows}


def wait_runs(db, ids, status, timeout=20.0):
    """Polls until every run in ids has `status`; returns {id: row}."""
    ids = list(ids)

    def done():
        got = runs(db, ids)
        return got if len(got) == len(ids) and all(
            r["status"] == status for r in got.values()) else None

    try:
        return harness.wait_until(done, timeout=timeout, interval=0.05,
                                  msg="%d run(s) to be %s" % (len(ids), status))
    except AssertionError as e:
        seen = {}
        for r in runs(db, ids).values():
            seen[r["status"]] = seen.get(r["status"], 0) + 1
        raise AssertionError("%s; statuses now: %s" % (e, seen)) from None


def events(proc, event, after=0):
    """The JSON log objects of proc with this event (from line `after` on)."""
    out = []
    for line in proc.lines()[after:]:
        obj = harness._as_json_object(line)
        if obj is not None and obj.get("event") == event:
            out.append(obj)
    return out


def lock_key_parts(key=DEFAULT_LOCK_KEY):
    """(classid, objid) under which pg_locks shows advisory lock `key`."""
    k = key & 0xFFFFFFFFFFFFFFFF
    return (k >> 32, k & 0xFFFFFFFF)
