#!/usr/bin/python3
"""redis_throughput.py -- end-to-end run throughput in Redis mode.

Starts a throwaway PostgreSQL and redis-server, CONSUMERS consumers from
JR_BIN (Redis mode, noop runs), then times from the start of
`producer enqueue noop --count N` to the moment the last of the N runs is
'succeeded' in job_runs (written by the history writers), and prints the
runs per second.  The timing therefore includes the enqueue itself and the
history lag.

    JR_BIN=build/bin /usr/bin/python3 tests/bench/redis_throughput.py --consumers 1 -n 50000
    JR_BIN=build/bin /usr/bin/python3 tests/bench/redis_throughput.py --consumers 2 -n 50000
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))

import harness  # noqa: E402
import jrcli  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50000)
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4, help="WORKER_CONCURRENCY")
    args = ap.parse_args()
    bindir = os.path.abspath(os.environ.get("JR_BIN", "")) if os.environ.get("JR_BIN") else None
    if not bindir:
        sys.exit("set JR_BIN=<build>/bin")
    producer, consumer = os.path.join(bindir, "producer"), os.path.join(bindir, "consumer")
    pg = harness.Postgres()
    redis = harness.Redis()
    db = pg.create_database()
    base = jrcli.env(db.url, REDIS_URL=redis.url, LOG_LEVEL="info",
                     WORKER_CONCURRENCY=args.concurrency, JOB_LEASE_MS=30000)
    p = jrcli.run(consumer, ["--migrate-only"], base)
    assert p.returncode == 0, p.stderr
    procs = []
    for i in range(args.consumers):
        c = harness.Proc([consumer], env=dict(base, CONSUMER_NAME="bench-%d" % i), name="bench-%d" % i)
        c.wait_for_log({"event": "job_runner_started"}, timeout=20)
        procs.append(c)
    t0 = time.monotonic()
    p = jrcli.run(producer, ["enqueue", "noop", "--count", str(args.n)], base, timeout=600)
    t_enq = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    ids = p.stdout.split()
    assert len(ids) == args.n

    def done():
        return db.scalar("SELECT count(*) FROM job_runs WHERE status = 'succeeded'") >= args.n
    harness.wait_until(done, timeout=1200, interval=0.05, msg="all runs succeeded")
    t = time.monotonic() - t0
    attempts = db.query("SELECT attempts, count(*) FROM job_runs GROUP BY 1")
    print("consumers=%d concurrency=%d n=%d enqueue=%.2fs total=%.2fs -> %.0f runs/s (attempts %s)"
          % (args.consumers, args.concurrency, args.n, t_enq, t, args.n / t, attempts))
    for c in procs:
        c.cleanup()
    redis.cleanup()
    pg.cleanup()


if __name__ == "__main__":
    main()
