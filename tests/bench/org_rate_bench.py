#!/usr/bin/python3
"""org_rate_bench.py -- what a rate-limited backlog costs a consumer
(ORG_RATE_LIMIT): N runs of one org queued under a limit far below what
the consumer could run, in each mode.  Prints the consumer's CPU use (% of
one core) over a window after the first pass (every run claimed once and
deferred to about when a start is free for it), the runs started in that
window, and the claims the deferrals cost (deferrals per run).  The
integration tests (tests/integration/test_org_fairness.py) check the limit
itself; this prints what it costs.

    JR_BIN=build/bin /usr/bin/python3 tests/bench/org_rate_bench.py [--runs 2000] [--window 10] [--quick]

Prints one JSON object per mode.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))

import harness  # noqa: E402
import jrcli  # noqa: E402


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(mode, bins, pg, runs, window, limit):
    db = pg.create_database()
    jrcli.migrate(bins, db.url)
    redis = harness.Redis() if mode == "redis" else None
    try:
        extra = {"REDIS_URL": redis.url} if redis else {}
        env = jrcli.env(db.url, CONSUMER_NAME="bench", NO_REPLY_SCAN_ENABLED="false",
                        ORG_RATE_LIMIT=limit, WORKER_CONCURRENCY=4, **extra)
        c = harness.Proc([bins.consumer], env=env, name="bench-consumer")
        try:
            c.wait_for_log({"event": "job_runner_started"}, timeout=30)
            ids = jrcli.enqueue(bins, db.url, "noop", org="big", count=runs, **extra)
            # the first pass: every run claimed once (and deferred, but the first few)
            harness.wait_until(lambda: db.scalar(
                "SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'queued'"
                " AND run_at > now()", (ids,)) >= runs - 50, timeout=120, interval=0.5,
                msg="the first pass")
            time.sleep(1.0)
            done0 = db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'",
                              (ids,))
            t0, c0 = time.monotonic(), cpu_s(c.pid)
            time.sleep(window)
            t1, c1 = time.monotonic(), cpu_s(c.pid)
            done1 = db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'",
                              (ids,))
            return {"mode": mode, "runs": runs, "limit": limit, "window_s": window,
                    "consumer_cpu_pct": round(100.0 * (c1 - c0) / (t1 - t0), 2),
                    "started_in_window": done1 - done0}
        finally:
            c.cleanup()
    finally:
        if redis:
            redis.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--limit", default="10/1s")
    ap.add_argument("--quick", action="store_true", help="500 runs, a 5 s window")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.window = 500, 5.0
    d = os.environ.get("JR_BIN", "build/bin")
    bins = type("B", (), {"producer": os.path.join(d, "producer"), "consumer": os.path.join(d, "consumer")})
    pg = harness.Postgres()
    try:
        for mode in ("redisless", "redis"):
            print(json.dumps(one(mode, bins, pg, a.runs, a.window, a.limit)), flush=True)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
