#!/usr/bin/python3
"""dashboard_bench.py -- what the dashboard costs.

1. The stats endpoint on a big history: fills job_runs with --rows finished
   runs (default 1,000,000) spread over 7 days (the default retention), and
   a second time with --busy of them (default 100,000) finished in the last
   hour, then times GET /api/integrations/jobs/stats?window=1h&step=1m
   with a new producer: its first answer (which reads the whole window),
   then --requests answers 1.1 s apart (past the one-second shared answer,
   as a dashboard asks every 2 s), p50/p95/max, with the plans of the
   window query and the queue counts.
2. Ten dashboards open (--dashboards, --seconds): headless chromium pages on
   the overview (which asks for the stats every 2 s), and the producer's CPU
   (utime+stime from /proc) and the queries per second PostgreSQL saw
   (xact_commit of the database) and Redis saw (total_commands_processed),
   against the same system left idle as long.

Against a system of its own (throwaway PostgreSQL and Redis, the producer
from JR_BIN, two idle consumers):

    JR_BIN=build/bin /usr/bin/python3 tests/bench/dashboard_bench.py

Needs puppeteer-core for part 2 (tests/integration/test_dashboard.py
installs it into tests/browser/.cache; --skip-browser leaves part 2 out).
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from apiclient import System, TOKEN  # noqa: E402

BROWSER = os.path.join(HERE, "..", "browser")


def jr_migrate(db):
    r = subprocess.run([os.path.join(os.environ["JR_BIN"], "producer"), "--migrate-only"],
                       env=dict(os.environ, DATABASE_URL=db.url), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def fill(db, rows, busy):
    """rows finished runs: rows - busy over the last 7 days, busy in the last hour."""
    db.execute("truncate job_runs")
    spread = rows - busy
    db.execute("""
        insert into job_runs (id, job, org_id, payload, source, status, attempts, run_at, enqueued_at,
                              started_at, finished_at, duration_ms, consumer, transport, updated_at)
        select 'bench-' || g,
               (array['noop','meta_spend','no_reply_scan','meta_token_refresh'])[1 + g %% 4],
               'org-' || (g %% 500), '{"n":1}'::jsonb, 'adhoc',
               case when g %% 50 = 0 then 'dead' else 'succeeded' end,
               1, t, t, t, t, 10 + g %% 90, 'bench-c' || (g %% 4), 'redis', t
          from (select g, case when g <= %s
                               then now() - (g::float8 / %s) * interval '7 days'
                               else now() - ((g - %s)::float8 / %s) * interval '1 hour' end as t
                  from generate_series(1, %s) g) s
    """, (spread, max(spread, 1), spread, max(busy, 1), rows))
    db.execute("vacuum analyze job_runs")


def one_stats(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    c.request("GET", "/api/integrations/jobs/stats?window=1h&step=1m",
              headers={"Authorization": "Bearer " + TOKEN})
    r = c.getresponse()
    r.read()
    ms = (time.perf_counter() - t0) * 1000
    c.close()
    assert r.status == 200, r.status
    return ms


def time_stats(port, n):
    """n answers, each past the producer's one-second shared answer (as a
    dashboard asks: every 2 s), so each one is computed."""
    lat = []
    for _ in range(n):
        time.sleep(1.1)
        lat.append(one_stats(port))
    lat.sort()
    return {"p50": statistics.median(lat), "p95": lat[int(len(lat) * 0.95) - 1], "max": lat[-1]}


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(db, redis, pid):
    x = db.scalar("select xact_commit from pg_stat_database where datname = current_database()")
    rc = redis.client().info("stats")["total_commands_processed"]
    return cpu_s(pid), x, rc


def rate(a, b, secs):
    return {"producerCpuPct": (b[0] - a[0]) / secs * 100, "pgXactPerS": (b[1] - a[1]) / secs,
            "redisCmdPerS": (b[2] - a[2]) / secs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000000)
    ap.add_argument("--busy", type=int, default=100000)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--dashboards", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--skip-browser", action="store_true")
    a = ap.parse_args()

    pg = harness.Postgres()
    redis = harness.Redis()
    db = pg.create_database()
    jr_migrate(db)
    out = {}
    s = None
    try:
        for name, busy in (("spread", 0), ("busyHour", a.busy)):
            if s:
                s.stop()
            t0 = time.time()
            fill(db, a.rows, busy)
            print("filled %d rows (%d in the last hour) in %.0f s" % (a.rows, busy, time.time() - t0), flush=True)
            # a new producer: its first answer reads the whole window
            s = System("redis", db, redis=redis, consumers=2, tag="bench",
                       consumer_env={"JOB_RUNNER_INTERVAL_MS": 5000})
            port = s.api.port
            cold = one_stats(port)
            out[name] = time_stats(port, a.requests)
            out[name]["first"] = cold
            plan = db.query("explain (analyze, buffers) select job, status, count(*) from job_runs"
                            " where finished_at >= now() - interval '1 hour' group by 1, 2")
            out[name]["plan"] = [r[0] for r in plan]
            plan = db.query("explain analyze select"
                            " (select count(*) from job_runs where transport = 'pg'"
                            "   and status in ('queued','failed') and run_at <= now()),"
                            " (select count(*) from job_runs where status = 'running' and transport = 'pg'),"
                            " (select count(*) from job_runs where transport = 'pg'"
                            "   and status in ('queued','failed') and run_at > now()),"
                            " (select count(*) from job_runs where status = 'dead')")
            out[name]["plan"] += [r[0] for r in plan]
            print("%s: stats first answer %.1f ms; then p50 %.1f ms, p95 %.1f ms, max %.1f ms" % (
                name, cold, out[name]["p50"], out[name]["p95"], out[name]["max"]), flush=True)
            for line in out[name]["plan"]:
                print("    " + line)

        if not a.skip_browser:
            mods = os.path.join(BROWSER, ".cache", "node_modules")
            pid = s.producer.pid
            idle0 = counters(db, redis, pid)
            time.sleep(a.seconds)
            idle1 = counters(db, redis, pid)
            out["idle"] = rate(idle0, idle1, a.seconds)
            env = dict(os.environ, NODE_PATH=mods, JR_URL="http://127.0.0.1:%d" % port, JR_TOKEN=TOKEN,
                       JR_PAGES=str(a.dashboards), JR_SECONDS=str(a.seconds + 20))
            p = subprocess.Popen(["node", os.path.join(BROWSER, "open_dashboards.js")], env=env,
                                 stdout=subprocess.PIPE, text=True)
            line = p.stdout.readline()       # "open" once every page shows the overview
            assert line.strip() == "open", line
            time.sleep(5)
            c0 = counters(db, redis, pid)
            time.sleep(a.seconds)
            c1 = counters(db, redis, pid)
            p.wait(timeout=120)
            out["dashboards"] = dict(rate(c0, c1, a.seconds), pages=a.dashboards)
            print("idle:          %s" % json.dumps({k: round(v, 2) for k, v in out["idle"].items()}))
            print("%d dashboards: %s" % (a.dashboards, json.dumps(
                {k: round(v, 2) for k, v in out["dashboards"].items()})))
    finally:
        if s:
            s.stop()
        redis.cleanup()
        pg.cleanup()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
