"""min_replicas_ack.py -- the latency cost of REDIS_MIN_REPLICAS_ACK
(docs/deployment.md quotes its output).

Starts a throwaway PostgreSQL, a Redis master and one replica (the test
harness), then for REDIS_MIN_REPLICAS_ACK=0 and =1 a producer, and times
POST /api/integrations/jobs/noop/run: 300 single runs and 100 bulks of
100, after 50 warm-up requests.  Prints p50 and p99 per case.

    JR_BIN=build/bin /usr/bin/python3 tests/bench/min_replicas_ack.py

Not part of `make test` or `make bench` (it measures one setting).
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from apiclient import System  # noqa: E402


def main():
    os.environ.setdefault("JR_BIN", os.path.join(HERE, "..", "..", "build", "bin"))
    pg = harness.Postgres()
    master = harness.Redis()
    replica = harness.Redis(extra_args=["--replicaof", "127.0.0.1", str(master.port)])
    harness.wait_until(lambda: replica.client().execute_command("ROLE")[3] == "connected",
                       timeout=30, ignore=(Exception,), msg="replica in sync")
    for acks in (0, 1):
        s = System("redis", pg.create_database(), master, consumers=0, tag="ack%d" % acks,
                   env={"REDIS_MIN_REPLICAS_ACK": acks})
        for _ in range(50):
            s.api.post("/api/integrations/jobs/noop/run", {})
        for bulk, n in ((1, 300), (100, 100)):
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                st, _, _ = s.api.post("/api/integrations/jobs/noop/run",
                                      {} if bulk == 1 else [{}] * bulk)
                lat.append((time.perf_counter() - t0) * 1000)
                assert st == 202, st
            lat.sort()
            print("REDIS_MIN_REPLICAS_ACK=%d bulk=%d p50=%.2f ms p99=%.2f ms"
                  % (acks, bulk, lat[len(lat) // 2], lat[int(len(lat) * 0.99)]))
        s.stop()
    harness.cleanup_all()


if __name__ == "__main__":
    main()
