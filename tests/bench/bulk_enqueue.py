#!/usr/bin/python3
"""bulk_enqueue.py -- the enqueue rate through the bulk endpoint.

Sends REQUESTS requests of BATCH noop runs each (POST
/api/integrations/jobs/noop/run with a JSON array) from CLIENTS parallel
clients, and prints the runs per second that the producer accepted (202).

Against a system of its own (a throwaway PostgreSQL, Redis in --mode redis,
the producer from JR_BIN, and --consumers consumers, default none, so that
what is measured is the enqueue path alone):

    JR_BIN=build/bin /usr/bin/python3 tests/bench/bulk_enqueue.py --mode redisless
    JR_BIN=build/bin /usr/bin/python3 tests/bench/bulk_enqueue.py --mode redis

Against a running system:

    /usr/bin/python3 tests/bench/bulk_enqueue.py --url http://127.0.0.1:4000 --token $API_TOKEN
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))


def post_bulk(host, port, token, body):
    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        conn.request("POST", "/api/integrations/jobs/noop/run", body=body,
                     headers={"Authorization": "Bearer " + token,
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def measure(url, token, requests, batch, clients, warmup=1):
    u = urllib.parse.urlparse(url)
    body = json.dumps([{} for _ in range(batch)]).encode()
    for _ in range(warmup):
        status, data = post_bulk(u.hostname, u.port, token, body)
        if status != 202:
            raise SystemExit("warm-up request failed: %d %s" % (status, data[:300]))
    todo = list(range(requests))
    lock = threading.Lock()
    latencies, failures = [], []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            t0 = time.monotonic()
            status, data = post_bulk(u.hostname, u.port, token, body)
            took = time.monotonic() - t0
            with lock:
                if status == 202 and len(json.loads(data)["ids"]) == batch:
                    latencies.append(took)
                else:
                    failures.append((status, data[:200]))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    runs = len(latencies) * batch
    latencies.sort()
    return {"runs": runs, "seconds": round(wall, 3), "runs_per_s": round(runs / wall),
            "requests": len(latencies), "failures": len(failures),
            "request_p50_ms": round(latencies[len(latencies) // 2] * 1000) if latencies else None,
            "request_max_ms": round(latencies[-1] * 1000) if latencies else None,
            "first_failure": failures[0] if failures else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["redisless", "redis"], default="redisless")
    ap.add_argument("--url", help="a running producer (no servers are started)")
    ap.add_argument("--token", default=os.environ.get("API_TOKEN", ""))
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=0)
    ap.add_argument("--fast-pg", action="store_true",
                    help="PostgreSQL with fsync off (the test harness's setting); default: fsync on")
    args = ap.parse_args()

    if args.url:
        res = measure(args.url, args.token, args.requests, args.batch, args.clients)
        print(json.dumps(dict(res, mode="external")))
        return

    import harness
    from apiclient import System
    if not os.environ.get("JR_BIN"):
        raise SystemExit("set JR_BIN=<build>/bin")
    durable = {} if args.fast_pg else {"fsync": "on", "full_page_writes": "on"}
    pg = harness.Postgres(settings=durable)
    redis = harness.Redis() if args.mode == "redis" else None
    system = System(args.mode, pg.create_database(), redis, consumers=args.consumers, tag="bench")
    try:
        res = measure(system.api.base, system.api.token, args.requests, args.batch, args.clients)
        res["rows_in_job_runs"] = system.db.scalar("SELECT count(*) FROM job_runs")
        # Redis mode: how long until the history writer has recorded every
        # run (warm-up included) in job_runs
        want = (args.requests + 1) * args.batch
        t0 = time.monotonic()
        while time.monotonic() - t0 < 300 and system.db.scalar("SELECT count(*) FROM job_runs") < want:
            time.sleep(0.2)
        res["all_rows_written_after_s"] = round(time.monotonic() - t0, 1)
        print(json.dumps(dict(res, mode=args.mode, clients=args.clients, batch=args.batch,
                              fsync=not args.fast_pg)))
    finally:
        system.stop()
        if redis is not None:
            redis.cleanup()
        pg.cleanup()


if __name__ == "__main__":
    main()
