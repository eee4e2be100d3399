"""jrredis.py -- helpers of the Redis-mode integration tests (test_redis_*.py).

What: the environment of a binary in Redis mode (jrcli.FAST plus REDIS_URL
and a stable CONSUMER_NAME), starting a consumer and waiting until it
claims, waiting for a run to be in a consumer's hands (job_runs row
'running' with that consumer: the history writer records it within ~1 s),
and the log events of a process.

Why apart from jrcli.py: jrcli.py serves the Redis-less files and knows
nothing of REDIS_URL; these helpers are only for Redis mode.
"""

import harness
import jrcli


def env(db_url, redis, **overrides):
    """jrcli.env plus REDIS_URL of `redis` (a harness.Redis)."""
    return jrcli.env(db_url, REDIS_URL=redis.url, **overrides)


def consumer(spawn, db_url, redis, name, args=(), **overrides):
    """Starts `consumer` named `name` (CONSUMER_NAME) and waits for its
    job_runner_started line."""
    p = spawn("consumer", list(args), env=env(db_url, redis, CONSUMER_NAME=name, **overrides),
              name=name)
    if "--drain-once" not in args:
        p.wait_for_log({"event": "job_runner_started"}, timeout=20)
    return p


def enqueue(bins, db_url, redis, job="noop", **kw):
    """`producer enqueue` in Redis mode; returns the printed ids."""
    return jrcli.enqueue(bins, db_url, job, REDIS_URL=redis.url, **kw)


def wait_running(db, run_id, consumer_name, timeout=10.0):
    """Polls until job_runs shows run_id running on consumer_name; returns the row."""
    def check():
        row = jrcli.runs(db, [run_id]).get(run_id)
        return row if row and row["status"] == "running" and row["consumer"] == consumer_name else None
    return harness.wait_until(check, timeout=timeout, interval=0.05,
                              msg="run %s running on %s" % (run_id, consumer_name))


def events(proc, event):
    return jrcli.events(proc, event)


def cycles(proc, trigger=None):
    """proc's job_runner_cycle_complete events (with this trigger, if given)."""
    return [e for e in jrcli.events(proc, "job_runner_cycle_complete")
            if trigger is None or e.get("trigger") == trigger]


def job_runner_state(db):
    """(lastRunAt, runCount) of the 'job_runner' row, (None, 0) if absent."""
    rows = db.query('SELECT "lastRunAt", "runCount" FROM job_runner_state WHERE id = %s',
                    ("job_runner",))
    return rows[0] if rows else (None, 0)
