#!/usr/bin/python3
"""search_bench.py -- GET /api/integrations/jobs/runs on a job_runs table of
1,000,000 rows, and what the search indexes of 003_control.sql cost an
enqueue.  A benchmark, not a test: it prints figures, it asserts nothing.

    JR_BIN=build/bin /usr/bin/python3 tests/bench/search_bench.py [--rows 1000000]

What it does, on a throwaway PostgreSQL (fsync on) and a producer in
Redis-less mode with no consumer:
  1. fills job_runs with --rows rows in one INSERT ... SELECT: 30 days of
     time-ordered (UUIDv7-shaped) ids, 4 jobs (70% noop), 2,000 orgs, 95%
     succeeded and the rest dead, failed, queued, running, cancelled; then
     ANALYZE;
  2. times each search (over HTTP, end to end) --repeat times: the median
     and the 95th percentile, with the plan's index;
  3. enqueue cost: enqueues --enqueue-runs runs through the bulk endpoint
     (batches of 10,000) with the search indexes, then drops them and does
     the same: runs per second and microseconds per run, both ways.
"""

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from apiclient import System  # noqa: E402

FILL_SQL = """
insert into job_runs (id, job, org_id, payload, source, status, attempts, max_attempts,
                      run_at, enqueued_at, started_at, finished_at, duration_ms, error, transport)
select
  -- a UUIDv7 shape: 48 bits of ms, then random bits (ids sort by time)
  substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8' ||
    substr(r, 4, 3) || '-' || substr(r, 7, 12),
  case when g % 100 < 70 then 'noop' when g % 100 < 80 then 'no_reply_scan'
       when g % 100 < 95 then 'meta_spend' else 'meta_token_refresh' end,
  'org-' || (g * 7919 % 2000),
  '{}'::jsonb, 'adhoc',
  st, case when st in ('queued', 'cancelled') then 0 else 1 end, 5,
  ts, ts, case when st in ('queued', 'cancelled') then null else ts end,
  case when st in ('queued', 'running') then null else ts + interval '20 ms' end,
  case when st in ('succeeded', 'dead', 'failed') then 20 end,
  case when st = 'dead' then 'boom' end, 'pg'
from (
  select g, ts,
         lpad(to_hex((extract(epoch from ts) * 1000)::bigint), 12, '0') as h,
         md5(g::text) as r,
         case when g * 37 % 1000 < 950 then 'succeeded' when g * 37 % 1000 < 970 then 'dead'
              when g * 37 % 1000 < 975 then 'failed' when g * 37 % 1000 < 985 then 'queued'
              when g * 37 % 1000 < 990 then 'running' else 'cancelled' end as st
  from (select g, now() - interval '30 days' + (g * (interval '30 days' / ROWS)) as ts
          from generate_series(1::bigint, ROWS) g) t
) s
"""

INDEXES = {
    "job_runs_recent_idx": "create index job_runs_recent_idx on job_runs (enqueued_at, id)",
    "job_runs_job_recent_idx": "create index job_runs_job_recent_idx on job_runs (job, enqueued_at, id)",
    "job_runs_org_recent_idx": "create index job_runs_org_recent_idx on job_runs (org_id, enqueued_at, id)"
                               " where org_id is not null",
    "job_runs_status_recent_idx": "create index job_runs_status_recent_idx on job_runs (status, enqueued_at, id)"
                                  " where status <> 'succeeded'",
}


def searches(since, until_old):
    return [
        ("newest 50", "limit=50"),
        ("newest 500", "limit=500"),
        ("job=meta_token_refresh (5%)", "job=meta_token_refresh"),
        ("orgId (1 of 2000)", "orgId=org-1234"),
        ("status=queued (1%)", "status=queued"),
        ("status=cancelled (1%)", "status=cancelled"),
        ("status=dead", "status=dead"),
        ("status=succeeded", "status=succeeded"),
        ("job+status", "job=meta_spend&status=dead"),
        ("orgId+status", "orgId=org-77&status=succeeded"),
        ("since 1 day", "since=" + since),
        ("job+since", "job=no_reply_scan&since=" + since),
        ("until 29 days ago", "until=" + until_old),
        ("page 2 (cursor)", None),
        ("status=delayed (none)", "status=delayed"),
    ]


def timed(api, query, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        status, _, data = api.get("/api/integrations/jobs/runs?" + query)
        times.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit("GET runs?%s: %d %r" % (query, status, data))
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], len(data["runs"])


def plan_index(db, query_sql):
    rows = db.query("explain " + query_sql)
    text = " ".join(r[0] for r in rows)
    for name in list(INDEXES) + ["job_runs_pkey"]:
        if name in text:
            return name
    return "seq scan" if "Seq Scan" in text else "?"


def enqueue_rate(api, runs):
    body = [{} for _ in range(10000)]
    t0 = time.perf_counter()
    done = 0
    while done < runs:
        status, _, data = api.post("/api/integrations/jobs/noop/run", body, timeout=300)
        if status != 202:
            raise SystemExit("enqueue: %d %r" % (status, data))
        done += len(data["ids"])
    s = time.perf_counter() - t0
    return round(done / s), round(s * 1e6 / done, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--enqueue-runs", type=int, default=100000)
    args = ap.parse_args()
    if not os.environ.get("JR_BIN"):
        raise SystemExit("set JR_BIN=<build>/bin")
    os.environ["JR_OPENAPI_CHECK"] = "0"   # time the server, not the validator
    pg = harness.Postgres(settings={"fsync": "on", "full_page_writes": "on"})
    db = pg.create_database()
    system = System("redisless", db, None, consumers=0, tag="searchbench")
    out = {"rows": args.rows}
    try:
        t0 = time.monotonic()
        db.execute(FILL_SQL.replace("ROWS", str(int(args.rows))))
        db.execute("vacuum analyze job_runs")
        out["fill_s"] = round(time.monotonic() - t0, 1)
        out["table_mb"] = round(db.scalar("select pg_total_relation_size('job_runs')") / 2**20)
        out["index_mb"] = {n: round(db.scalar("select pg_relation_size(%s)", (n,)) / 2**20, 1)
                           for n in INDEXES}
        now = time.time()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400))
        until_old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 29 * 86400))
        api = system.api
        _, _, first = api.get("/api/integrations/jobs/runs?limit=50")
        results = []
        for name, q in searches(since, until_old):
            q = q or "limit=50&cursor=" + first["nextCursor"]
            med, p95, n = timed(api, q, args.repeat)
            results.append({"search": name, "query": q, "median_ms": round(med, 1),
                            "p95_ms": round(p95, 1), "runs": n})
        out["searches"] = results
        # what each filter's plan uses (the producer builds the same SQL)
        out["plans"] = {
            "job": plan_index(db, "select id from job_runs where job = 'meta_token_refresh' order by enqueued_at desc, id desc limit 51"),
            "org": plan_index(db, "select id from job_runs where org_id = 'org-1234' order by enqueued_at desc, id desc limit 51"),
            "status": plan_index(db, "select id from job_runs where status = 'cancelled' order by enqueued_at desc, id desc limit 51"),
            "until": plan_index(db, "select id from job_runs where enqueued_at < now() - interval '29 days'"
                                    " order by enqueued_at desc, id desc limit 51"),
        }
        # enqueue cost of the search indexes: with them, then without
        rate_with, us_with = enqueue_rate(api, args.enqueue_runs)
        for name in INDEXES:
            db.execute("drop index " + name)
        rate_without, us_without = enqueue_rate(api, args.enqueue_runs)
        out["enqueue"] = {"runs": args.enqueue_runs, "with_indexes_runs_per_s": rate_with,
                          "with_indexes_us_per_run": us_with,
                          "without_indexes_runs_per_s": rate_without,
                          "without_indexes_us_per_run": us_without,
                          "cost_us_per_run": round(us_with - us_without, 1)}
        for name, sql in INDEXES.items():
            db.execute(sql)
        print(json.dumps(out, indent=1))
    finally:
        system.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
