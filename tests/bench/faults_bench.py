#!/usr/bin/python3
"""faults_bench.py -- the figures of docs/guarantees.md that are measured,
not asserted (the integration tests in tests/integration/test_faults.py
check the behaviour with generous bounds; this prints what it costs):

  keyed      latency of POST .../noop/run with and without an idempotencyKey
             (Redis mode: a keyed run is one INSERT in PostgreSQL, an unkeyed
             one an XADD), sequential requests on one connection;
  window     how long a run accepted by Redis waits before the history
             writer has recorded it in job_runs (what a Redis data loss can
             take), idle and under a bulk load;
  loss       Redis (no persistence) killed under an enqueue loop and
             restarted: accepted runs that never reached job_runs, and how
             long before the kill they were accepted;
  hol        a 4 s run and a 50 ms run claimed in one batch: how long after
             the long one the short one starts (Redis mode and Redis-less).

    JR_BIN=build/bin /usr/bin/python3 tests/bench/faults_bench.py [--only keyed,window,loss,hol]
    (loss_bulk: the bulk half of loss alone)

Prints one JSON object per measurement.
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from apiclient import System  # noqa: E402


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


class Client:
    def __init__(self, api):
        self.token = api.token
        self.conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)

    def post(self, body):
        self.conn.request("POST", "/api/integrations/jobs/noop/run", body=json.dumps(body),
                          headers={"Authorization": "Bearer " + self.token,
                                   "Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None


def keyed(pg, n=1000):
    redis = harness.Redis()
    sysm = System("redis", pg.create_database(), redis, consumers=1, tag="keyed")
    try:
        c = Client(sysm.api)
        out = {}
        for label, make in (("unkeyed", lambda i: {}),
                            ("keyed", lambda i: {"idempotencyKey": "k-%d" % i}),
                            ("keyed_repeat", lambda i: {"idempotencyKey": "k-%d" % i})):
            lat = []
            for i in range(n):
                t0 = time.perf_counter()
                st, _b = c.post(make(i))
                lat.append((time.perf_counter() - t0) * 1e6)
                assert st == 202, st
            out[label] = {"p50_us": round(q(lat, 0.5)), "p99_us": round(q(lat, 0.99)),
                          "mean_us": round(statistics.mean(lat))}
        out["keyed_cost_p50_us"] = out["keyed"]["p50_us"] - out["unkeyed"]["p50_us"]
        print(json.dumps({"measure": "keyed", "requests": n, **out}))
    finally:
        sysm.stop()
        redis.cleanup()


def _first_seen(db, ids, accepted, stop, seen):
    while not stop.is_set() or len(seen) < len(accepted):
        want = [i for i in list(accepted) if i not in seen]
        if want:
            now = time.monotonic()
            for (rid,) in db.query("SELECT id FROM job_runs WHERE id = ANY(%s)", (want,)):
                seen[rid] = now
        time.sleep(0.01)
        if stop.is_set() and time.monotonic() - stop.t > 30:
            break


def window(pg, seconds=6, rate=50):
    redis = harness.Redis()
    sysm = System("redis", pg.create_database(), redis, consumers=1, tag="window")
    try:
        for load in (False, True):
            c = Client(sysm.api)
            accepted, seen = {}, {}
            stop = threading.Event()
            stop.t = None
            poller = threading.Thread(target=_first_seen,
                                      args=(sysm.db, None, accepted, stop, seen), daemon=True)
            poller.start()
            bg_stop = threading.Event()

            def bulk():
                b = Client(sysm.api)
                while not bg_stop.is_set():
                    b.post([{} for _ in range(200)])
            bg = threading.Thread(target=bulk, daemon=True)
            if load:
                bg.start()
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                st, body = c.post({})
                if st == 202:
                    accepted[body["id"]] = time.monotonic()
                time.sleep(1.0 / rate)
            bg_stop.set()
            stop.t = time.monotonic()
            stop.set()
            poller.join(60)
            lags = [(seen[i] - accepted[i]) * 1000 for i in accepted if i in seen]
            print(json.dumps({"measure": "window", "load": "bulk 200-run requests" if load else "idle",
                              "runs": len(accepted), "recorded": len(lags),
                              "p50_ms": round(q(lags, 0.5)), "p99_ms": round(q(lags, 0.99)),
                              "max_ms": round(max(lags))}))
            if load:
                bg.join(30)
    finally:
        sysm.stop()
        redis.cleanup()


def loss(pg, rate=200):
    for bulk in (False, True):
        _loss(pg, rate, bulk)


def loss_bulk(pg, rate=200):
    _loss(pg, rate, True)


def _loss(pg, rate, bulk):
    redis = harness.Redis()
    sysm = System("redis", pg.create_database(), redis, consumers=2, tag="loss")
    try:
        accepted = {}
        stop = threading.Event()

        def loop():
            c = Client(sysm.api)
            while not stop.is_set():
                try:
                    st, body = c.post({"payload": {"sleepMs": 20}})
                except OSError:
                    c = Client(sysm.api)
                    continue
                if st == 202:
                    accepted[body["id"]] = time.monotonic()
                time.sleep(1.0 / rate)

        def bulk_loop():
            c = Client(sysm.api)
            while not stop.is_set():
                try:
                    st, body = c.post([{} for _ in range(200)])
                except OSError:
                    c = Client(sysm.api)
                    continue
                if st == 202:
                    now = time.monotonic()
                    for i in body["ids"]:
                        accepted[i] = now
                time.sleep(0.05)
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        tb = threading.Thread(target=bulk_loop, daemon=True)
        if bulk:
            tb.start()
        time.sleep(4)
        t_kill = time.monotonic()
        redis.kill()
        redis.start()
        time.sleep(3)
        stop.set()
        t.join(30)
        if bulk:
            tb.join(60)
        ids = list(accepted)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = sysm.db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s)"
                                  " AND status = 'succeeded'", (ids,))
            present = {r[0] for r in sysm.db.query("SELECT id FROM job_runs WHERE id = ANY(%s)",
                                                   (ids,))}
            missing = [i for i in ids if i not in present]
            unfinished = len(ids) - done - len(missing)
            if unfinished == 0:
                break
            time.sleep(1)
        before = [(t_kill - accepted[i]) * 1000 for i in missing if accepted[i] <= t_kill]
        requeued = sum(json.loads(line).get("requeued", 0)
                       for p, _h in sysm.consumers for line in p.lines()
                       if '"redis_data_loss"' in line)
        print(json.dumps({"measure": "loss", "load": "bulk 200-run requests" if bulk else "single runs",
                          "accepted": len(ids), "lost": len(missing),
                          "lost_accepted_before_kill_max_ms": round(max(before)) if before else 0,
                          "requeued": requeued, "unfinished_after_90s": unfinished,
                          "succeeded": done}))
    finally:
        sysm.stop()
        redis.cleanup()


def hol(pg, reps=5):
    for mode in ("redis", "redisless"):
        redis = harness.Redis() if mode == "redis" else None
        sysm = System(mode, pg.create_database(), redis, consumers=1, tag="hol",
                      consumer_env={"WORKER_CONCURRENCY": 2})
        delays = []
        try:
            c = Client(sysm.api)
            for rep in range(reps):
                st, body = c.post([{} for _ in range(64)])   # quick runs: the batch grows
                time.sleep(0.5)
                long_id, short_id = "hol-%s-%d-long" % (mode, rep), "hol-%s-%d-short" % (mode, rep)
                if redis is not None:
                    p = redis.client().pipeline(transaction=True)
                    p.xadd("jr:runs", {"v": "1", "type": "run", "id": long_id, "job": "noop",
                                       "payload": '{"sleepMs":4000}'})
                    p.xadd("jr:runs", {"v": "1", "type": "run", "id": short_id, "job": "noop",
                                       "payload": '{"sleepMs":50}'})
                    p.execute()
                else:
                    sysm.db.execute(
                        "INSERT INTO job_runs (id, job, payload, run_at) VALUES"
                        " (%s, 'noop', '{\"sleepMs\":4000}', now() - interval '2 s'),"
                        " (%s, 'noop', '{\"sleepMs\":50}', now() - interval '1 s');"
                        " NOTIFY jobrunner_runs", (long_id, short_id))
                harness.wait_until(lambda: sysm.db.scalar(
                    "SELECT count(*) FROM job_runs WHERE id IN (%s, %s) AND status = 'succeeded'",
                    (long_id, short_id)) == 2, timeout=30)
                d = sysm.db.scalar("SELECT extract(epoch from s.started_at - l.started_at) * 1000"
                                   " FROM job_runs s, job_runs l WHERE s.id = %s AND l.id = %s",
                                   (short_id, long_id))
                delays.append(float(d))
            print(json.dumps({"measure": "hol", "mode": mode, "short_run_ms": 50,
                              "short_started_after_long_ms": [round(x) for x in delays],
                              "max_ms": round(max(delays))}))
        finally:
            sysm.stop()
            if redis is not None:
                redis.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="keyed,window,loss,hol")
    args = ap.parse_args()
    if not os.environ.get("JR_BIN"):
        raise SystemExit("set JR_BIN=<build>/bin")
    pg = harness.Postgres()
    try:
        for name in args.only.split(","):
            globals()[name](pg)
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
