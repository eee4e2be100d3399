#!/usr/bin/python3
"""delay_bench.py -- how late a delayed run starts after its runAt, on an
idle system (the API promises within a second), in both modes.  A
benchmark, not a test: it prints figures.

    JR_BIN=build/bin /usr/bin/python3 tests/bench/delay_bench.py [--runs 10]

Enqueues --runs noop runs one after the other with delayMs 1500 and reads
startedAt - runAt from GET /runs/{id}: the median and the maximum.
"""

import argparse
import datetime
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from apiclient import System  # noqa: E402


def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    if not os.environ.get("JR_BIN"):
        raise SystemExit("set JR_BIN=<build>/bin")
    pg = harness.Postgres()
    try:
        for mode in ("redisless", "redis"):
            redis = harness.Redis() if mode == "redis" else None
            s = System(mode, pg.create_database(), redis, consumers=1, tag="delaybench-" + mode)
            try:
                lags = []
                for _ in range(args.runs):
                    d = s.api.enqueue(body={"delayMs": 1500})
                    r = s.api.wait_status(d["id"], "succeeded", timeout=30)
                    lags.append((ts(r["startedAt"]) - ts(d["runAt"])).total_seconds() * 1000)
                lags.sort()
                print("%-9s start after runAt: median %.0f ms, max %.0f ms (%d runs)"
                      % (mode, lags[len(lags) // 2], lags[-1], len(lags)))
            finally:
                s.stop()
                if redis is not None:
                    redis.cleanup()
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
