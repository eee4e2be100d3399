#!/usr/bin/python3
"""run.py -- the benchmark suite: jobrunner side by side with BullMQ, pg-boss,
graphile-worker and the raw Redis Streams limit (`make bench`).

What it does, on this machine, in one run:
  1. checks its tools (cmake, cc, pkg-config + hiredis, node >= 20, npm,
     gnuplot, redis-server, PostgreSQL 15) and says what to install;
  2. builds the Release binaries into build-bench/ and the raw loop
     (rawloop.c) with cc; installs the pinned peers (peers/package.json,
     package-lock.json) into tests/bench/.cache/npm with `npm ci`;
  3. starts one throwaway PostgreSQL and one redis-server (the test
     harness's classes) and measures every system on those same servers:
     the raw loop, BullMQ, pg-boss, graphile-worker, jobrunner in Redis mode
     (JOB_HISTORY=all and failures) and in Redis-less mode, and the
     I/O-bound workload (jobrunner against BullMQ at concurrency 200); the
     rates in ROUNDS rounds, each round measuring every system once (so a
     slow minute on the shared machine hits all of them), best of the
     rounds kept;
  4. prints one table (absolute figures, ratio to the peer, share of the raw
     limit) and the targets, and writes docs/performance.md and
     docs/performance.png (gnuplot).

Usage:
    /usr/bin/python3 tests/bench/run.py [--quick] [--only SECTIONS] [--no-doc]
SECTIONS (comma-separated): raw, bullmq, pgboss, graphile, jr-redis, jr-pg, io,
fairness.  `--only fairness` alone rewrites only the section "Fairness across
orgs" of docs/performance.md and its rows of the targets (bench_fairness:
issue 16's backlog of one org against another org's runs, jobrunner in both
modes and BullMQ).

Method (also written into the document):
- jobrunner's processes run at their default settings (only DATABASE_URL,
  REDIS_URL, PORT/WORKER_HTTP_PORT, CONSUMER_NAME and API_TOKEN are set).
- Processing: N noop runs are enqueued first, then the consumers start; a
  run counts when job_runs says `succeeded` (a sample of the ids polled
  every POLL_S).  The rate is taken between the moments 10 % and 90 % of
  the sample had succeeded
  (linear interpolation between polls), so start-up and the history
  writer's lag (Redis mode writes job_runs behind the stream) do not count.
- Latency: single runs, one at a time with a 20-30 ms gap, to one idle
  consumer; enqueue-to-start = job_runs.started_at minus the client's
  clock just before the request (same machine, same clock).
- Memory: VmRSS of a process idle for 1 s, and VmHWM (peak resident set)
  after it worked; node peers report rss and maxRSS of their own process.

Rejected: timing with the consumers' own metrics (the issue asks that a run
count when job_runs says it succeeded); separate machines (there is one).
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "support"))

import harness  # noqa: E402

BUILD = os.path.join(ROOT, "build-bench")
BIN = os.path.join(BUILD, "bin")
RAWLOOP = os.path.join(BUILD, "bench", "rawloop")
NPM_DIR = os.path.join(HERE, ".cache", "npm")
PEERS = os.path.join(HERE, "peers")
DOC = os.path.join(ROOT, "docs", "performance.md")
KEEP_MARK = "<!-- written by tests/bench/search_bench.py: make bench keeps it -->"
PNG = os.path.join(ROOT, "docs", "performance.png")
TOKEN = "bench-token-3b8f1d0c6a9e2745"
POLL_S = 0.2
SAMPLE = 100        # run ids polled for progress: 400 cost PostgreSQL ~12 ms a poll, 100 ~1 ms
REPEAT = 3          # throughput figures: best of this many rounds (full mode)

# Sizes: (full, --quick)
SIZES = {
    "raw_n": (200000, 100000),
    "bull_enqueue": (20000, 10000),
    "bull_process": ({1: 3000, 10: 10000, 50: 20000, 200: 20000},
                     {1: 2000, 10: 5000, 50: 5000, 200: 5000}),
    "latency_samples": (100, 50),
    "boss_enqueue": (20000, 10000),
    "boss_process": ([(100, 1), (1000, 1), (100, 4)], [(1000, 1)]),
    "boss_work": ([(100, 1), (100, 4), (1000, 2)], [(100, 4)]),
    "gw_process": ([(10, 0), (50, 0), (10, 50), (50, 200)], [(10, 50)]),
    "gw_process_n": (15000, 10000),
    "gw_latency_samples": (100, 30),
    "io_n": (10000, 2000),
    "boss_process_n": (20000, 10000),
    "boss_latency_samples": (20, 8),
    "jr_cli": ({"redis": 100000, "redisless": 40000}, {"redis": 50000, "redisless": 20000}),
    "jr_bulk_requests": (6, 3),
    "jr_process": ({"redis": 60000, "redisless": 40000}, {"redis": 30000, "redisless": 20000}),
    "fair_a": (20000, 20000),
    "fair_rounds": (3, 1),
}


def size(name, quick):
    return SIZES[name][1 if quick else 0]


def best_of(fn, quick, key="per_s"):
    """One throughput measurement of this round; merge_rounds() keeps the
    fastest of the rounds: other work on a shared machine only ever slows a
    run down, so the best of a few is the figure least distorted by it (the
    same for every system)."""
    return fn()


def merge_rounds(a, b):
    """Merges round b's results into a: a measurement (a dict with per_s or
    runs_per_s) keeps the faster of the two and the list of all the rates
    (repeats); other values stay as the first round had them."""
    if a is None:
        a = b
        b = None
    if not isinstance(a, dict):
        return a
    key = "per_s" if "per_s" in a else "runs_per_s" if "runs_per_s" in a else None
    if key:
        reps = a.get("repeats", [a[key]]) + ([b[key]] if isinstance(b, dict) and key in b else [])
        if isinstance(b, dict) and b.get(key, 0) > a[key]:
            a = b
        a["repeats"] = reps
        return a
    for k, v in (b or {}).items():
        a[k] = merge_rounds(a.get(k), v)
    if b is None:
        for k in list(a):
            a[k] = merge_rounds(a[k], None)
    return a


def say(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Dependencies, build, peers
# --------------------------------------------------------------------------

def check_deps():
    """Exits 2 with the Debian packages to install when a tool is missing."""
    missing = []
    for tool, pkg in (("cmake", "cmake"), ("cc", "gcc"), ("pkg-config", "pkg-config"),
                      ("node", "nodejs"), ("npm", "npm"), ("gnuplot", "gnuplot-nox"),
                      (harness.REDIS_SERVER, "redis-server")):
        if shutil.which(tool) is None:
            missing.append(pkg)
    if not os.access(os.path.join(harness.PG_BIN, "postgres"), os.X_OK):
        missing.append("postgresql-15")
    if shutil.which("pkg-config") and subprocess.run(
            ["pkg-config", "--exists", "hiredis"]).returncode != 0:
        missing.append("libhiredis-dev")
    for mod, pkg in (("psycopg2", "python3-psycopg2"), ("redis", "python3-redis")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if shutil.which("node"):
        v = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        m = re.match(r"v(\d+)", v)
        if not m or int(m.group(1)) < 20:
            missing.append("nodejs (>= 20; found %s)" % v.strip())
    if missing:
        say("missing: %s\n  install: apt-get install %s"
            % (", ".join(missing), " ".join(p.split(" ")[0] for p in missing)))
        sys.exit(2)


def run_checked(argv, what, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        say("%s failed (exit %d):\n%s%s" % (what, p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        sys.exit(1)
    return p.stdout


def build():
    say("building Release binaries in %s" % os.path.relpath(BUILD, ROOT))
    run_checked(["cmake", "-S", ROOT, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release"], "cmake")
    run_checked(["cmake", "--build", BUILD, "-j2", "--target", "producer", "consumer"],
                "cmake --build")
    os.makedirs(os.path.dirname(RAWLOOP), exist_ok=True)
    flags = run_checked(["pkg-config", "--cflags", "--libs", "hiredis"], "pkg-config").split()
    run_checked(["cc", "-O2", "-Wall", "-Wextra", "-o", RAWLOOP,
                 os.path.join(HERE, "rawloop.c")] + flags, "cc rawloop.c")


def install_peers():
    """npm ci of the pinned peers into tests/bench/.cache/npm (skipped when
    the installed lock file is the committed one)."""
    os.makedirs(NPM_DIR, exist_ok=True)
    want = open(os.path.join(PEERS, "package-lock.json"), "rb").read()
    installed = os.path.join(NPM_DIR, "node_modules", ".package-lock.json")
    have = os.path.join(NPM_DIR, "package-lock.json")
    if (os.path.exists(installed) and os.path.exists(have)
            and open(have, "rb").read() == want):
        return
    say("installing BullMQ, pg-boss and graphile-worker (npm ci) into %s" % os.path.relpath(NPM_DIR, ROOT))
    for f in ("package.json", "package-lock.json"):
        shutil.copyfile(os.path.join(PEERS, f), os.path.join(NPM_DIR, f))
    run_checked(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], "npm ci",
                cwd=NPM_DIR)


def peer_versions():
    out = {}
    for name in ("bullmq", "pg-boss", "ioredis", "pg", "graphile-worker"):
        try:
            with open(os.path.join(NPM_DIR, "node_modules", name, "package.json")) as f:
                out[name] = json.load(f)["version"]
        except OSError:
            out[name] = "?"
    return out


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def proc_mem_mib(pid):
    """(VmRSS, VmHWM) of a process in MiB."""
    vals = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) / 1024.0
    return round(vals["VmRSS"], 1), round(vals["VmHWM"], 1)


TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid, reaped=False):
    """User + system CPU seconds of a process (all its threads), plus those
    of its children it has waited for when reaped; 0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TCK


def pg_cpu_s(pg):
    """CPU seconds of a PostgreSQL cluster so far: the postmaster, its live
    children (backends, background processes) and the ones that ended."""
    with open(os.path.join(pg.datadir, "postmaster.pid")) as f:
        pm = int(f.readline())
    total = proc_cpu_s(pm, reaped=True)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pm:
            total += proc_cpu_s(int(d))
    return total


def redis_cpu_s(redis):
    """redis-server's CPU seconds so far (INFO cpu)."""
    c = redis.client()
    try:
        info = c.info("cpu")
    finally:
        c.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def children_cpu_s():
    """CPU seconds of this process's children that have ended."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_us(n, **seconds):
    """{part: µs per item, ..., total} from CPU seconds per part."""
    out = {k: round(v * 1e6 / n, 1) for k, v in seconds.items() if v is not None}
    out["total"] = round(sum(out.values()), 1)
    return out


def node(script, args, timeout=300):
    env = dict(os.environ, NODE_PATH=os.path.join(NPM_DIR, "node_modules"))
    p = subprocess.run(["node", os.path.join(HERE, script)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError("%s %s failed (%d):\n%s" % (script, args, p.returncode, p.stderr[-3000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def rawloop(redis, *args):
    p = subprocess.run([RAWLOOP, "127.0.0.1", str(redis.port)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("rawloop %s failed: %s" % (args, p.stderr))
    return json.loads(p.stdout.strip().splitlines()[-1])


def flush(redis):
    c = redis.client()
    try:
        c.flushall()
    finally:
        c.close()


# --------------------------------------------------------------------------
# Raw limit, BullMQ, pg-boss
# --------------------------------------------------------------------------

def bench_raw(redis, quick, first=True):
    n = size("raw_n", quick)
    flush(redis)
    say("raw: XADD x%d pipelined" % n)
    xadd = best_of(lambda: rawloop(redis, "xadd", n, 1000), quick)
    say("raw: XREADGROUP+XACK x%d in batches of 100" % n)
    def drain_once():
        flush(redis)
        rawloop(redis, "xadd", n, 1000)
        r0, c0 = redis_cpu_s(redis), children_cpu_s()
        out = rawloop(redis, "drain", n, 100)
        out["cpu_us"] = cpu_us(n, client=children_cpu_s() - c0, redis=redis_cpu_s(redis) - r0)
        return out
    drain = best_of(drain_once, quick)
    out = {"xadd": xadd, "drain": drain}
    if first:
        say("raw: enqueue-to-start latency")
        out["latency"] = rawloop(redis, "latency", size("latency_samples", quick), 0)
    flush(redis)
    return out


def bench_bullmq(redis, quick, first=True):
    """BullMQ's settings as its users run them: jobs kept (its default) and
    removeOnComplete, one Worker at concurrency 1/10/50/200; keys of
    process: "CONC keep" / "CONC remove"."""
    out = {"process": {}}
    flush(redis)
    say("bullmq: addBulk")
    out["enqueue"] = best_of(lambda: node("bullmq_bench.js",
                                          [redis.port, "enqueue", size("bull_enqueue", quick)]), quick)
    for conc, n in sorted(size("bull_process", quick).items()):
        for keep in ("keep", "remove"):
            say("bullmq: Worker concurrency %d, %d jobs, %s" % (conc, n, keep))
            def once(n=n, conc=conc, keep=keep):
                flush(redis)
                return node("bullmq_bench.js", [redis.port, "process", n, conc, keep])
            out["process"]["%d %s" % (conc, keep)] = best_of(once, quick)
    flush(redis)
    if first:
        say("bullmq: latency")
        out["latency"] = node("bullmq_bench.js", [redis.port, "latency", size("latency_samples", quick)])
        flush(redis)
    return out


def bench_pgboss(pg, quick, first=True):
    """pg-boss: loops of fetch({batchSize}) + complete(ids) (keys "fetch
    BATCH/LOOPS") and work() with batchSize and localConcurrency (keys "work
    BATCH/CONC")."""
    out = {"process": {}}
    db = pg.create_database()
    say("pg-boss: insert")
    out["enqueue"] = best_of(lambda: node("pgboss_bench.js",
                                          [db.url, "enqueue", size("boss_enqueue", quick)]), quick)
    for batch, loops in size("boss_process", quick):
        say("pg-boss: fetch+complete, batch %d, %d loop(s)" % (batch, loops))
        out["process"]["fetch %d/%d" % (batch, loops)] = best_of(lambda: node(
            "pgboss_bench.js", [db.url, "process", size("boss_process_n", quick), batch, loops]),
            quick)
    for batch, conc in size("boss_work", quick):
        say("pg-boss: work(), batchSize %d, localConcurrency %d" % (batch, conc))
        out["process"]["work %d/%d" % (batch, conc)] = best_of(lambda: node(
            "pgboss_bench.js", [db.url, "work", size("boss_process_n", quick), batch, conc]),
            quick)
    if first:
        say("pg-boss: latency")
        out["latency"] = node("pgboss_bench.js", [db.url, "latency", size("boss_latency_samples", quick)])
    return out


def bench_graphile(pg, quick, first=True):
    """graphile-worker: run() at concurrency CONC, without and with its
    localQueue of BATCH jobs and batched completion (keys "CONC/BATCH")."""
    out = {"process": {}}
    db = pg.create_database()
    say("graphile-worker: addJobs")
    out["enqueue"] = best_of(lambda: node("graphile_bench.js",
                                          [db.url, "enqueue", size("boss_enqueue", quick)]), quick)
    for conc, batch in size("gw_process", quick):
        say("graphile-worker: concurrency %d, localQueue %d" % (conc, batch))
        out["process"]["%d/%d" % (conc, batch)] = best_of(lambda: node(
            "graphile_bench.js", [db.url, "process", size("gw_process_n", quick), conc, batch]),
            quick)
    if first:
        say("graphile-worker: latency")
        out["latency"] = node("graphile_bench.js", [db.url, "latency", size("gw_latency_samples", quick)])
    return out


# --------------------------------------------------------------------------
# jobrunner
# --------------------------------------------------------------------------

class Jr:
    """One jobrunner system on a fresh database (and a flushed Redis)."""

    def __init__(self, mode, pg, redis, tag, extra_env=None):
        self.mode = mode
        self.db = pg.create_database()
        self.env = dict(extra_env or {}, DATABASE_URL=self.db.url)
        if mode == "redis":
            flush(redis)
            self.env["REDIS_URL"] = redis.url
        self.tag = tag
        self.procs = []
        self.producer = None
        self.consumers = []
        self.hports = []

    def start_producer(self):
        port = harness.free_port()
        self.producer = harness.Proc([os.path.join(BIN, "producer")],
                                     env=dict(self.env, PORT=port, API_TOKEN=TOKEN),
                                     name="%s-producer" % self.tag)
        self.procs.append(self.producer)
        self.port = port

        def up():
            if self.producer.returncode is not None:
                raise RuntimeError("producer exited:\n" + self.producer.log_tail())
            try:
                return harness.http("GET", "http://127.0.0.1:%d/api/health" % port)[0] == 200
            except OSError:
                return False
        harness.wait_until(up, timeout=30, msg="producer health")

    def start_consumer(self):
        hport = harness.free_port()
        name = "%s-c%d" % (self.tag, len(self.consumers) + 1)
        p = harness.Proc([os.path.join(BIN, "consumer")],
                         env=dict(self.env, WORKER_HTTP_PORT=hport, CONSUMER_NAME=name), name=name)
        self.procs.append(p)
        self.consumers.append(p)
        self.hports.append(hport)

        def ready():
            if p.returncode is not None:
                raise RuntimeError("consumer exited:\n" + p.log_tail())
            try:
                return harness.http("GET", "http://127.0.0.1:%d/health" % hport)[0] == 200
            except OSError:
                return False
        return p, ready

    def cli_enqueue(self, n, keep_ids=False, payload=None):
        """`producer enqueue noop --count n`, timed whole; the run ids it
        printed when keep_ids."""
        t0 = time.monotonic()
        extra = ["--payload", payload] if payload else []
        p = subprocess.run([os.path.join(BIN, "producer"), "enqueue", "noop", "--count", str(n)] + extra,
                           env=dict(self.env, PATH="/usr/bin:/bin"),
                           stdout=subprocess.PIPE if keep_ids else subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=600)
        dt = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError("producer enqueue failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
        out = {"n": n, "seconds": round(dt, 3), "per_s": round(n / dt)}
        if keep_ids:
            # stdout also carries the start-up log lines (JSON): keep the ids
            out["ids"] = [w for w in p.stdout.split()
                          if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", w)]
            if len(out["ids"]) != n:
                raise RuntimeError("producer enqueue printed %d run ids, not %d" % (len(out["ids"]), n))
        return out

    def succeeded(self, ids=None):
        """How many runs job_runs shows succeeded (of ids, or all); with
        JOB_HISTORY=failures (no row per successful run), the sum of the
        consumers' jobrunner_runs_succeeded_total (GET /metrics)."""
        if self.env.get("JOB_HISTORY") == "failures":
            n = 0
            for port in self.hports:
                text = str(harness.http("GET", "http://127.0.0.1:%d/metrics" % port)[2])
                for m in re.finditer(r"^jobrunner_runs_succeeded_total(?:\{[^}]*\})? (\d+)", text, re.M):
                    n += int(m.group(1))
            return n
        if ids is not None:
            return self.db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) "
                                  "AND status = 'succeeded'", (ids,))
        return self.db.scalar("SELECT count(*) FROM job_runs WHERE status = 'succeeded'")

    def stop(self):
        for p in reversed(self.procs):
            p.cleanup()


def crossing(samples, level):
    """The time at which the count reached level (linear between polls)."""
    prev = None
    for t, c in samples:
        if c >= level:
            if prev is None or c == prev[1]:
                return t
            t0, c0 = prev
            return t0 + (t - t0) * (level - c0) / (c - c0)
        prev = (t, c)
    return None


def jr_process(mode, pg, redis, consumers, n, extra_env=None):
    """Rate of n noop runs through `consumers` consumers; a run counts once
    job_runs says succeeded.  Progress is read from a sample of the run ids
    (every n/SAMPLE-th, primary-key look-ups: a count(*) over job_runs every
    poll would cost PostgreSQL more CPU than the history it measures) and the
    end from a full count; in Redis mode also when the stream was drained
    (the consumer group had nothing pending or undelivered)."""
    jr = Jr(mode, pg, redis, "p%d" % consumers, extra_env)
    rc = redis.client() if mode == "redis" else None
    try:
        ids = jr.cli_enqueue(n, keep_ids=True)["ids"]
        sample = ids[::max(1, len(ids) // SAMPLE)]
        if jr.env.get("JOB_HISTORY") == "failures":
            sample = None   # progress: the job's runCount, out of n
        readies = [jr.start_consumer()[1] for _ in range(consumers)]
        for r in readies:
            harness.wait_until(r, timeout=30, msg="consumer health")
        cpu0 = ([proc_cpu_s(p.pid) for p in jr.consumers], pg_cpu_s(pg),
                redis_cpu_s(redis) if rc is not None else None)
        t_start = time.monotonic()
        samples = []
        drained = None
        deadline = t_start + 180
        while time.monotonic() < deadline:
            if rc is not None and drained is None:
                g = [x for x in rc.xinfo_groups("jr:runs") if x["name"] == "jr:workers"]
                if g and g[0]["pending"] == 0 and g[0].get("lag") == 0:
                    drained = time.monotonic() - t_start
            c = jr.succeeded(sample)
            samples.append((time.monotonic(), c))
            if c >= (n if sample is None else len(sample)):
                break
            # the consumers' counter is cheap to read: polled finer
            time.sleep(POLL_S if sample is not None else POLL_S / 4)
        done = harness.wait_until(lambda: (lambda c: c if c >= n else None)(jr.succeeded()),
                                  timeout=max(1, deadline - time.monotonic()), interval=0.5,
                                  msg="all %d runs to succeed" % n)
        t_all = time.monotonic() - t_start
        cpu = cpu_us(n, consumer=sum(proc_cpu_s(p.pid) for p in jr.consumers) - sum(cpu0[0]),
                     redis=redis_cpu_s(redis) - cpu0[2] if rc is not None else None,
                     postgres=pg_cpu_s(pg) - cpu0[1])
        k = n if sample is None else len(sample)
        t10, t90 = crossing(samples, 0.1 * k), crossing(samples, 0.9 * k)
        if t10 is None or t90 is None or t90 <= t10:
            per_s = round(done / t_all)
        else:
            per_s = round(0.8 * n / (t90 - t10))
        hwm = max(proc_mem_mib(p.pid)[1] for p in jr.consumers)
        out = {"consumers": consumers, "n": n, "succeeded": done, "per_s": per_s,
               "all_seconds": round(t_all, 2), "consumer_busy_hwm_mib": hwm, "cpu_us": cpu}
        if drained is not None:
            out["stream_drained_seconds"] = round(drained, 2)
        return out
    finally:
        if rc is not None:
            rc.close()
        jr.stop()


def jr_profile(mode, pg, redis, n):
    """Where the CPU goes while one consumer (default settings) works
    through n queued runs: `perf record -a -e cpu-clock` over the whole
    machine, summed by process and by symbol.  None when perf is missing or
    not permitted.  A separate pass: perf's overhead does not touch the
    measured rates."""
    if shutil.which("perf") is None:
        return None
    data = os.path.join(BUILD, "bench", "perf-%s.data" % mode)
    jr = Jr(mode, pg, redis, "prof")
    try:
        jr.cli_enqueue(n)
        p, ready = jr.start_consumer()
        rec = subprocess.Popen(["perf", "record", "-a", "-e", "cpu-clock", "-F", "499",
                                "-o", data, "--", "sleep", "60"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        harness.wait_until(ready, timeout=30, msg="consumer health")
        harness.wait_until(lambda: jr.succeeded() >= n, timeout=120, interval=0.5,
                           msg="the profiled runs to succeed")
        seconds = time.monotonic() - t0
        rec.send_signal(2)   # SIGINT: perf writes its data and exits
        rec.wait(timeout=30)
    except Exception as e:  # noqa: BLE001 -- a profile is optional
        say("profile (%s) skipped: %s" % (mode, e))
        return None
    finally:
        jr.stop()

    def report(*args):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                            "-g", "none", "--percent-limit", "0.7"] + list(args),
                           capture_output=True, text=True)
        out = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
            if m:
                out.append((float(m.group(1)), re.sub(r"\s+", " ", m.group(2))))
        return out
    return {"runs": n, "seconds": round(seconds, 1), "by_process": report("--sort", "comm")[:8],
            "by_symbol": report("--sort", "comm,dso,sym")[:25]}


def jr_latency(mode, pg, redis, samples):
    """Enqueue-to-start of single runs (POST, one at a time) to one idle
    consumer; also the idle consumer's and producer's memory."""
    jr = Jr(mode, pg, redis, "lat")
    try:
        jr.start_producer()
        p, ready = jr.start_consumer()
        harness.wait_until(ready, timeout=30, msg="consumer health")
        time.sleep(1.5)
        idle_consumer = proc_mem_mib(p.pid)[0]
        idle_producer = proc_mem_mib(jr.producer.pid)[0]
        conn = http.client.HTTPConnection("127.0.0.1", jr.port, timeout=30)
        hdrs = {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}
        sent = {}
        for _ in range(samples):
            t0 = time.time()
            conn.request("POST", "/api/integrations/jobs/noop/run", body=b"{}", headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 202:
                raise RuntimeError("POST run: %d %s" % (resp.status, data[:300]))
            sent[json.loads(data)["id"]] = t0
            time.sleep(0.02 + random.random() * 0.01)
        conn.close()
        ids = list(sent)

        def all_started():
            rows = jr.db.query("SELECT id, started_at FROM job_runs WHERE id = ANY(%s) "
                               "AND status = 'succeeded'", (ids,))
            return rows if len(rows) == len(ids) else None
        rows = harness.wait_until(all_started, timeout=60, interval=0.2,
                                  msg="the latency probes to succeed")
        lat = sorted((st.timestamp() - sent[i]) * 1000.0 for i, st in rows)
        return {"samples": len(lat), "p50_ms": round(lat[len(lat) // 2], 3),
                "p99_ms": round(lat[(len(lat) * 99) // 100], 3),
                "consumer_idle_rss_mib": idle_consumer, "producer_idle_rss_mib": idle_producer}
    finally:
        jr.stop()


def jr_enqueue(mode, pg, redis, quick):
    """producer enqueue and the bulk endpoint (no consumer running), and the
    producer's peak memory after the bulk requests."""
    import bulk_enqueue
    jr = Jr(mode, pg, redis, "enq")
    try:
        cli = jr.cli_enqueue(size("jr_cli", quick)[mode])
        jr.start_producer()
        bulk = bulk_enqueue.measure("http://127.0.0.1:%d" % jr.port, TOKEN,
                                    size("jr_bulk_requests", quick), 10000, 2)
        if bulk["failures"]:
            raise RuntimeError("bulk enqueue failures: %r" % (bulk["first_failure"],))
        bulk["producer_busy_hwm_mib"] = proc_mem_mib(jr.producer.pid)[1]
        return {"cli": cli, "bulk": bulk}
    finally:
        jr.stop()


def consumer_knows(var):
    """Whether this build's configuration table has var (the reference
    lists every variable)."""
    p = subprocess.run([os.path.join(BIN, "producer"), "--print-config-reference"],
                       capture_output=True, text=True)
    return ("`%s`" % var) in p.stdout


def bench_jr(mode, pg, redis, quick, profile=True, first=True):
    out = {"process": {}}
    say("jobrunner (%s): enqueue" % mode)
    out["enqueue"] = jr_enqueue(mode, pg, redis, quick)
    for k in (1, 2, 4):
        n = size("jr_process", quick)[mode]
        say("jobrunner (%s): %d consumer(s), %d runs" % (mode, k, n))
        out["process"][k] = best_of(lambda: jr_process(mode, pg, redis, k, n), quick)
    if mode == "redis" and consumer_knows("JOB_HISTORY"):
        n = size("jr_process", quick)[mode]
        n *= 2   # a faster pass: twice the runs for as long a window
        say("jobrunner (%s): 1 consumer, JOB_HISTORY=failures, %d runs" % (mode, n))
        out["process_failures"] = best_of(lambda: jr_process(
            mode, pg, redis, 1, n, {"JOB_HISTORY": "failures"}), quick)
    if not first:
        return out
    say("jobrunner (%s): latency" % mode)
    out["latency"] = jr_latency(mode, pg, redis, size("latency_samples", quick))
    if profile:
        say("jobrunner (%s): profile (perf record -a), 1 consumer" % mode)
        out["profile"] = jr_profile(mode, pg, redis, size("jr_process", quick)[mode])
    return out


# --------------------------------------------------------------------------
# Fairness across orgs (issue 16)
# --------------------------------------------------------------------------

FAIR_B = 20          # runs of org B, one every FAIR_GAP_S
FAIR_GAP_S = 0.1
FAIR_CONSUMERS = 2
# Each run of the fairness workload waits this long (noop {"sleepMs"}):
# no-op runs drain a 20,000-run backlog through 2 consumers in under a
# second in Redis mode (35,000 runs/s), before 20 runs 100 ms apart (2 s)
# could be enqueued behind it; 2 ms a run stretches it to several seconds.
FAIR_SLEEP_MS = 2


def percentile(vals, q):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, (len(vals) * q) // 100)]


def jr_post(conn, body):
    conn.request("POST", "/api/integrations/jobs/noop/run", body=json.dumps(body).encode(),
                 headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 202:
        raise RuntimeError("POST noop/run: %d %s" % (resp.status, data[:300]))
    return json.loads(data)


def jr_fair(mode, pg, redis, n_a, n_b):
    """n_a runs of org-a queued through the bulk endpoint, FAIR_CONSUMERS
    consumers (default settings) started, then n_b runs of org-b POSTed one
    at a time FAIR_GAP_S apart (n_b 0: org A alone).  A's rate between the
    moments 10 % and 90 % of a sample of its runs had succeeded (as
    jr_process); each B run's start minus the client's clock before its
    POST; how many of A's runs started while each B run waited, and how many
    were still to start when the last B run was enqueued."""
    import threading
    jr = Jr(mode, pg, redis, "fair")
    try:
        jr.start_producer()
        conn = http.client.HTTPConnection("127.0.0.1", jr.port, timeout=120)
        item = {"orgId": "org-a", "payload": {"sleepMs": FAIR_SLEEP_MS}}
        ids = []
        for k in range(0, n_a, 10000):
            ids += jr_post(conn, [item] * min(10000, n_a - k))["ids"]
        sample = ids[::max(1, len(ids) // SAMPLE)]
        readies = [jr.start_consumer()[1] for _ in range(FAIR_CONSUMERS)]
        for r in readies:
            harness.wait_until(r, timeout=30, msg="consumer health")
        t_ready = time.time()
        sent, errors = {}, []

        def send_b():
            try:
                c = http.client.HTTPConnection("127.0.0.1", jr.port, timeout=30)
                t0 = time.monotonic()
                for i in range(n_b):
                    time.sleep(max(0.0, t0 + i * FAIR_GAP_S - time.monotonic()))
                    t = time.time()
                    sent[jr_post(c, {"orgId": "org-b", "payload": {"sleepMs": FAIR_SLEEP_MS}})["id"]] = t
                c.close()
            except Exception as e:  # noqa: BLE001 -- raised below
                errors.append(e)
        th = threading.Thread(target=send_b)
        th.start()
        samples = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            c = jr.succeeded(sample)
            samples.append((time.monotonic(), c))
            if c >= len(sample):
                break
            time.sleep(POLL_S)
        th.join()
        if errors:
            raise errors[0]
        harness.wait_until(lambda: jr.succeeded() >= n_a + n_b, timeout=max(1, deadline - time.monotonic()),
                           interval=0.5, msg="all %d runs to succeed" % (n_a + n_b))
        t10, t90 = crossing(samples, 0.1 * len(sample)), crossing(samples, 0.9 * len(sample))
        out = {"mode": mode, "n_a": n_a, "n_b": n_b, "consumers": FAIR_CONSUMERS,
               "sleep_ms": FAIR_SLEEP_MS,
               "a_per_s": round(0.8 * n_a / (t90 - t10)) if t10 and t90 and t90 > t10 else None}
        # when A's 1,000th run started, from when both consumers answered
        # /health: how long the consumers took to get going on the backlog
        out["a_1000th_start_s"] = round(float(jr.db.scalar(
            "SELECT extract(epoch from started_at) FROM job_runs WHERE org_id = 'org-a'"
            " ORDER BY started_at OFFSET %s LIMIT 1", (min(999, n_a - 1),))) - t_ready, 3)
        if n_b:
            rows = jr.db.query(
                "SELECT b.id, extract(epoch from b.started_at), (SELECT count(*) FROM job_runs a"
                " WHERE a.org_id = 'org-a' AND a.started_at > to_timestamp(s.t)"
                " AND a.started_at < b.started_at)"
                " FROM job_runs b JOIN unnest(%s::text[], %s::float8[]) AS s(id, t) ON s.id = b.id",
                (list(sent), list(sent.values())))
            out["b"] = sorted(({"sent_s": round(sent[i] - t_ready, 3),
                                "wait_ms": round((float(st) - sent[i]) * 1000.0, 1), "a_passed": passed}
                               for i, st, passed in rows), key=lambda b: b["sent_s"])
            out["a_left_at_last_b"] = jr.db.scalar(
                "SELECT count(*) FROM job_runs WHERE org_id = 'org-a' AND started_at > to_timestamp(%s)",
                (max(sent.values()),))
        return out
    finally:
        jr.stop()


def fair_summary(rounds_alone, rounds_b):
    """The rounds of one system merged: A's best rate alone and with B
    (other work on the machine only ever slows a round down), B's waits
    over all rounds."""
    waits = [b["wait_ms"] for r in rounds_b for b in r["b"]]
    alone = max(r["a_per_s"] or 0 for r in rounds_alone)
    with_b = max(r["a_per_s"] or 0 for r in rounds_b)
    return {"b_samples": len(waits), "b_p50_ms": percentile(waits, 50), "b_p99_ms": percentile(waits, 99),
            "b_max_ms": max(waits),
            "b_a_passed_max": max(b["a_passed"] for r in rounds_b for b in r["b"]),
            "a_left_at_last_b_min": min(r["a_left_at_last_b"] for r in rounds_b),
            "a_1000th_start_s_max": max(r["a_1000th_start_s"] for r in rounds_alone + rounds_b),
            "a_per_s_alone": alone, "a_per_s_with_b": with_b,
            "a_ratio": round(with_b / alone, 3) if alone else None,
            "rounds": {"alone": rounds_alone, "with_b": rounds_b}}


def bench_fairness(pg, redis, quick, bull_best=None):
    """Fairness across orgs, side by side: jobrunner (Redis mode, Redis-less
    mode) and BullMQ (FIFO) on the same workload; each system alone (A's
    backlog only) and with B, in alternating rounds."""
    n_a = size("fair_a", quick)
    rounds = size("fair_rounds", quick)
    conc, keep = 200, "remove"   # BullMQ's best in the no-op runs so far, when not measured now
    if bull_best:
        conc, keep = (str(bull_best).split() + ["remove"])[:2]
        conc = int(conc)
    out = {"n_a": n_a, "n_b": FAIR_B, "gap_ms": int(FAIR_GAP_S * 1000), "sleep_ms": FAIR_SLEEP_MS,
           "consumers": FAIR_CONSUMERS, "bullmq_concurrency": conc, "bullmq_keep": keep,
           "bullmq_best_measured": bool(bull_best)}
    systems = [("jr-redisless", None)]
    if redis_transport_present():
        systems.insert(0, ("jr-redis", None))
    systems.append(("bullmq", None))
    for key, _ in systems:
        alone, with_b = [], []
        for rnd in range(rounds):
            for n_b, acc in ((0, alone), (FAIR_B, with_b)):
                say("fairness: %s, %d runs of org A%s (round %d of %d)"
                    % (key, n_a, ", %d of org B" % n_b if n_b else " alone", rnd + 1, rounds))
                if key == "bullmq":
                    flush(redis)
                    acc.append(node("bullmq_bench.js", [redis.port, "fair", n_a, conc, FAIR_CONSUMERS,
                                                        n_b, int(FAIR_GAP_S * 1000), FAIR_SLEEP_MS, keep]))
                    flush(redis)
                else:
                    acc.append(jr_fair("redis" if key == "jr-redis" else "redisless", pg, redis, n_a, n_b))
        out[key] = fair_summary(alone, with_b)
    return out


def redis_conns(redis):
    """Connections redis-server has accepted so far (INFO stats)."""
    c = redis.client()
    try:
        return int(c.info("stats")["total_connections_received"])
    finally:
        c.close()


def pg_sessions(db):
    """Sessions opened on db so far (pg_stat_database.sessions, flushed by
    each backend at most once a second)."""
    return db.scalar("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")


def jr_io(pg, redis, n):
    """The I/O-bound workload: n runs of noop {"sleepMs": 50} through one
    consumer with WORKER_CONCURRENCY=200 (Redis mode): rate over the first
    run's start to the last one's end (job_runs), the consumer's peak RSS, and the connections it
    opened to Redis and PostgreSQL (the servers' own counters, from before
    it started to after it finished; nothing else connects meanwhile: the
    bench's PostgreSQL connection is already open)."""
    jr = Jr("redis", pg, redis, "io", {"WORKER_CONCURRENCY": "200"})
    try:
        jr.cli_enqueue(n, payload='{"sleepMs":50}')
        time.sleep(1.2)
        r0, s0 = redis_conns(redis), pg_sessions(jr.db)
        p, ready = jr.start_consumer()
        t0 = time.monotonic()
        done = harness.wait_until(lambda: (lambda c: c if c >= n else None)(jr.succeeded()),
                                  timeout=300, interval=POLL_S, msg="the I/O-bound runs to succeed")
        wall = time.monotonic() - t0
        hwm = proc_mem_mib(p.pid)[1]
        # the processing window, as BullMQ's is timed (run() to the last
        # completed): the first run's start to the last one's end
        seconds = jr.db.scalar("SELECT extract(epoch from max(finished_at) - min(started_at)) "
                               "FROM job_runs WHERE job = 'noop'")
        seconds = float(seconds)
        time.sleep(1.2)
        return {"n": n, "succeeded": done, "seconds": round(seconds, 2), "per_s": round(n / seconds),
                "wall_seconds": round(wall, 2),
                "busy_hwm_mib": hwm, "redis_connections": redis_conns(redis) - r0,
                "pg_connections": pg_sessions(jr.db) - s0}
    finally:
        jr.stop()


def bench_io(pg, redis, quick, first=True):
    """jobrunner (one consumer, WORKER_CONCURRENCY=200) against one BullMQ
    Worker at concurrency 200 (removeOnComplete), n jobs each waiting 50 ms."""
    n = size("io_n", quick)
    say("I/O-bound: jobrunner, WORKER_CONCURRENCY=200, %d runs of 50 ms" % n)
    out = {"jobrunner": best_of(lambda: jr_io(pg, redis, n), quick)}
    say("I/O-bound: BullMQ Worker concurrency 200, %d jobs of 50 ms" % n)
    flush(redis)
    out["bullmq"] = best_of(lambda: node("bullmq_bench.js",
                                         [redis.port, "process", n, 200, "remove", 50]), quick)
    flush(redis)
    return out


# --------------------------------------------------------------------------
# The table, the targets, the document, the plot
# --------------------------------------------------------------------------

def fmt_num(v, unit):
    if v is None:
        return "—"
    if unit == "runs/s":
        return "{:,}".format(int(round(v)))
    if unit == "n":
        return "%d" % v
    if unit == "ms":
        return "%.2f" % v if v < 10 else "%.0f" % v if v >= 100 else "%.1f" % v
    return "%.1f" % v


def ratio(a, b, higher_better=True):
    """How many times better a is than b (>1: a is better)."""
    if a is None or b is None or a == 0 or b == 0:
        return None
    return a / b if higher_better else b / a


def fmt_ratio(r):
    return "—" if r is None else ("%.1f×" % r if r >= 0.995 else "%.2f×" % r)


def fmt_pct(r):
    return "—" if r is None else "%.0f %%" % (r * 100)


def best(d, key="per_s"):
    k = max(d, key=lambda x: d[x][key])
    return k, d[k][key]


def build_rows(res):
    """Rows: (section, metric, unit, jobrunner, peer name, peer value,
    higher_better, raw value or None)."""
    rows = []
    raw = res.get("raw")
    bull = res.get("bullmq")
    boss = res.get("pgboss")
    for mode, peer, pname in (("redis", bull, "BullMQ"), ("redisless", boss, "pg-boss")):
        jr = res.get("jr-" + mode)
        if jr is None:
            continue
        sect = "Redis mode" if mode == "redis" else "Redis-less mode (PostgreSQL only)"
        r_xadd = raw["xadd"]["per_s"] if raw and mode == "redis" else None
        r_drain = raw["drain"]["per_s"] if raw and mode == "redis" else None
        r_lat = raw["latency"] if raw and mode == "redis" else None
        if peer:
            p_enq = peer["enqueue"]["per_s"]
            p_enq_name = "addBulk" if mode == "redis" else "insert([...])"
            pk, p_proc = best(peer["process"])
            p_proc_name = "%s (best)" % peer_setting(pname, pk)
            procs = peer["process"].values()
            p_idle = min(x["worker_idle_rss_mib"] for x in procs)
            p_busy = max(x["worker_busy_rss_mib"] for x in procs)
            p_lat = peer["latency"]
            p_prod = (peer["enqueue"]["producer_idle_rss_mib"], peer["enqueue"]["producer_busy_rss_mib"])
        else:
            p_enq = p_proc = p_idle = p_busy = None
            p_lat = {"p50_ms": None, "p99_ms": None}
            p_prod = (None, None)
            p_enq_name = p_proc_name = ""
        e = jr["enqueue"]
        rows.append((sect, "enqueue: `producer enqueue --count`", "runs/s", e["cli"]["per_s"],
                     "%s %s" % (pname, p_enq_name), p_enq, True, r_xadd))
        rows.append((sect, "enqueue: bulk HTTP endpoint (10,000 a request, 2 clients)", "runs/s",
                     e["bulk"]["runs_per_s"], "%s %s" % (pname, p_enq_name), p_enq, True, r_xadd))
        for k in (1, 2, 4):
            pr = jr["process"].get(k) or jr["process"].get(str(k))
            rows.append((sect, "no-op processing, %d consumer%s" % (k, "s" if k > 1 else ""),
                         "runs/s", pr["per_s"], "%s %s" % (pname, p_proc_name), p_proc, True, r_drain))
            if k == 1 and jr.get("process_failures"):
                rows.append((sect, "no-op processing, 1 consumer, `JOB_HISTORY=failures`", "runs/s",
                             jr["process_failures"]["per_s"], "%s %s" % (pname, p_proc_name), p_proc,
                             True, r_drain))
            if k == 1 and mode == "redisless" and res.get("graphile"):
                gk, gv = best(res["graphile"]["process"])
                rows.append((sect, "no-op processing, 1 consumer", "runs/s", pr["per_s"],
                             "graphile-worker %s (best)" % peer_setting("graphile-worker", gk),
                             gv, True, None))
        lat = jr["latency"]
        for q in ("p50", "p99"):
            rows.append((sect, "enqueue-to-start latency %s" % q, "ms", lat[q + "_ms"],
                         pname, p_lat[q + "_ms"], False, r_lat[q + "_ms"] if r_lat else None))
            if mode == "redisless" and res.get("graphile", {}).get("latency"):
                rows.append((sect, "enqueue-to-start latency %s" % q, "ms", lat[q + "_ms"],
                             "graphile-worker", res["graphile"]["latency"][q + "_ms"], False, None))
        busy_c = max((jr["process"].get(k) or jr["process"].get(str(k)))["consumer_busy_hwm_mib"]
                     for k in (1,))
        rows.append((sect, "memory: idle consumer (RSS)", "MiB", lat["consumer_idle_rss_mib"],
                     pname + " Worker process" if mode == "redis" else pname + " worker process",
                     p_idle, False, None))
        rows.append((sect, "memory: busy consumer (peak RSS)", "MiB", busy_c,
                     pname + " worker process", p_busy, False, None))
        rows.append((sect, "memory: idle producer (RSS)", "MiB", lat["producer_idle_rss_mib"],
                     pname + " Queue process" if mode == "redis" else pname + " producer process",
                     p_prod[0], False, None))
        rows.append((sect, "memory: busy producer (peak RSS, after bulk)", "MiB",
                     e["bulk"]["producer_busy_hwm_mib"], pname + " producer process", p_prod[1],
                     False, None))
    io = res.get("io")
    if io and io.get("jobrunner") and io.get("bullmq"):
        sect = ("I/O-bound: %s runs each waiting 50 ms, one process at concurrency 200"
                % "{:,}".format(io["jobrunner"]["n"]))
        j, b = io["jobrunner"], io["bullmq"]
        peer = "BullMQ Worker, concurrency 200, removeOnComplete"
        rows.append((sect, "throughput", "runs/s", j["per_s"], peer, b["per_s"], True, None))
        rows.append((sect, "consumer peak RSS", "MiB", j["busy_hwm_mib"], peer,
                     b["worker_busy_rss_mib"], False, None))
        rows.append((sect, "connections opened to Redis", "n", j["redis_connections"], peer,
                     b.get("redis_connections"), False, None))
        rows.append((sect, "connections opened to PostgreSQL", "n", j["pg_connections"], peer,
                     None, False, None))
    return rows


def peer_setting(pname, k):
    """A peer's setting, in words, from its key in process."""
    k = str(k)
    if pname.startswith("BullMQ"):
        conc, keep = (k.split() + ["keep"])[:2]
        return "1 Worker, concurrency %s, %s" % (
            conc, "removeOnComplete" if keep == "remove" else "completed jobs kept (default)")
    if pname.startswith("pg-boss"):
        how, _, v = k.partition(" ")
        a, b = v.split("/")
        if how == "work":
            return "work(), batchSize %s, localConcurrency %s" % (a, b)
        return "fetch+complete, batchSize %s, %s loop(s)" % (a, b)
    if pname.startswith("graphile"):
        conc, batch = k.split("/")
        return "concurrency %s, %s" % (conc, "localQueue %s + batched completion" % batch
                                       if batch != "0" else "no localQueue")
    return k


def table_text(rows):
    head = ["metric", "jobrunner", "peer (what)", "peer", "vs peer", "raw limit", "of raw"]
    lines = []
    sect = None
    for s, metric, unit, jv, pname, pv, hb, rv in rows:
        if s != sect:
            lines.append(("**%s**" % s, "", "", "", "", "", ""))
            sect = s
        lines.append(("%s (%s)" % (metric, unit), fmt_num(jv, unit), pname, fmt_num(pv, unit),
                      fmt_ratio(ratio(jv, pv, hb)), fmt_num(rv, unit),
                      fmt_pct(ratio(jv, rv, hb)) if rv else "—"))
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in ln) + " |" for ln in lines]
    return "\n".join(md)


def targets(res):
    """[(target, measured text, met: True/False/None)]"""
    out = []
    raw, bull, boss = res.get("raw"), res.get("bullmq"), res.get("pgboss")
    jr, jp = res.get("jr-redis"), res.get("jr-redisless")

    def proc(j, k):
        return (j["process"].get(k) or j["process"].get(str(k)))["per_s"]

    def add(name, r, goal, higher=True, fmt=fmt_ratio):
        if r is None:
            out.append((name, "not measured", None))
        else:
            out.append((name, fmt(r), r >= goal if higher else r <= goal))
    bbest = best(bull["process"])[1] if bull else None
    jf = jr.get("process_failures") if jr else None
    gw = res.get("graphile")
    io = res.get("io") or {}
    add("no-op processing, 1 consumer, `JOB_HISTORY=all` ≥ 3× BullMQ's best",
        ratio(proc(jr, 1), bbest) if jr and bull else None, 3)
    add("no-op processing, 1 consumer, `JOB_HISTORY=failures` ≥ 6× BullMQ's best",
        ratio(jf["per_s"], bbest) if jf and bull else None, 6)
    add("no-op processing, 1 consumer, `JOB_HISTORY=failures` ≥ 30 % of raw XREADGROUP+XACK",
        ratio(jf["per_s"], raw["drain"]["per_s"]) if jf and raw else None, 0.3, fmt=fmt_pct)
    add("Redis-less processing, 1 consumer ≥ 3× pg-boss's best",
        ratio(proc(jp, 1), best(boss["process"])[1]) if jp and boss else None, 3)
    add("Redis-less processing, 1 consumer ≥ 2× graphile-worker's best",
        ratio(proc(jp, 1), best(gw["process"])[1]) if jp and gw else None, 2)
    add("enqueue-to-start p99 ≤ ½ of BullMQ's (BullMQ p99 / jobrunner p99 ≥ 2)",
        ratio(jr["latency"]["p99_ms"], bull["latency"]["p99_ms"], False) if jr and bull else None, 2)
    j, b = io.get("jobrunner"), io.get("bullmq")
    add("I/O-bound, concurrency 200: throughput ≥ BullMQ's",
        ratio(j["per_s"], b["per_s"]) if j and b else None, 1)
    add("I/O-bound, concurrency 200: peak RSS ≤ ⅓ of BullMQ's (BullMQ / jobrunner ≥ 3)",
        ratio(j["busy_hwm_mib"], b["worker_busy_rss_mib"], False) if j and b else None, 3)
    out += fair_targets(res)
    for jj, label in ((jr, "Redis mode"), (jp, "Redis-less mode")):
        v = jj["latency"]["consumer_idle_rss_mib"] if jj else None
        out.append(("idle consumer memory < 10 MiB (%s)" % label,
                    "not measured" if v is None else "%.1f MiB" % v,
                    None if v is None else v < 10))
    return out


FAIR_MARK = ("<!-- fairness: written by tests/bench/run.py "
             "(alone: run.py --only fairness rewrites this section and the fairness targets) -->")
FAIR_END = "<!-- fairness: end -->"
FAIR_TARGET = "fairness: "


def fair_targets(res):
    """The fairness targets of issue 16, for each jobrunner mode, BullMQ's
    figure beside."""
    f = res.get("fairness")
    if not f:
        return []
    out = []
    bull = f.get("bullmq")
    for key, label in (("jr-redis", "Redis mode"), ("jr-redisless", "Redis-less mode")):
        j = f.get(key)
        if not j:
            out.append((FAIR_TARGET + "(%s)" % label, "not measured", None))
            continue
        out.append((FAIR_TARGET + "B's start latency p99 ≤ 500 ms with a %s-run backlog of A (%d consumers), %s"
                    % ("{:,}".format(f["n_a"]), f["consumers"], label),
                    "%s ms (BullMQ: %s ms)" % (fmt_num(j["b_p99_ms"], "ms"),
                                              fmt_num(bull["b_p99_ms"], "ms") if bull else "—"),
                    j["b_p99_ms"] <= 500))
        out.append((FAIR_TARGET + "A's throughput within 10 %% of single-org, %s" % label,
                    "%s (BullMQ: %s)" % (fmt_pct(j["a_ratio"]), fmt_pct(bull["a_ratio"]) if bull else "—"),
                    None if j["a_ratio"] is None else j["a_ratio"] >= 0.9))
    return out


def fairness_text(res):
    """The section "Fairness across orgs" (between FAIR_MARK and FAIR_END)."""
    f = res.get("fairness")
    if not f:
        return ""
    md = [FAIR_MARK, "## Fairness across orgs", "",
          "Issue 16's target: with a backlog of %s runs of org A and %d consumers working through it, "
          "%d runs of org B enqueued one every %d ms each start within 500 ms of their enqueue (p99), "
          "while A's throughput stays within 10 %% of its rate without B. Measured %s at commit `%s`, "
          "on the servers and machine above:" % ("{:,}".format(f["n_a"]), f["consumers"], f["n_b"],
                                                  f["gap_ms"], f["date"], f["commit"]), "",
          "| system | B's start latency p50 / p99 / max (ms) | A's runs started while a B run waited "
          "(most) | A's runs still to start at the last B enqueue | A's 1,000th start (s, slowest "
          "round) | A alone (runs/s) | A with B (runs/s) | with B ÷ alone |",
          "|---|---|---|---|---|---|---|---|"]
    names = (("jr-redis", "jobrunner, Redis mode, %d consumers" % f["consumers"]),
             ("jr-redisless", "jobrunner, Redis-less mode, %d consumers" % f["consumers"]),
             ("bullmq", "BullMQ %s, %d Worker processes at concurrency %d%s"
              % (res.get("peer_versions", {}).get("bullmq", ""), f["consumers"], f["bullmq_concurrency"],
                 ", removeOnComplete" if f["bullmq_keep"] == "remove" else "")))
    for key, name in names:
        v = f.get(key)
        if not v:
            md.append("| %s | not measured | | | | | | |" % name)
            continue
        md.append("| %s | %s / %s / %s | %s | %s | %.2f | %s | %s | %s |" % (
            name, fmt_num(v["b_p50_ms"], "ms"), fmt_num(v["b_p99_ms"], "ms"), fmt_num(v["b_max_ms"], "ms"),
            "{:,}".format(v["b_a_passed_max"]), "{:,}".format(v["a_left_at_last_b_min"]),
            v["a_1000th_start_s_max"],
            "{:,}".format(v["a_per_s_alone"]), "{:,}".format(v["a_per_s_with_b"]), fmt_pct(v["a_ratio"])))
    bull_conc = "concurrency %d%s" % (f["bullmq_concurrency"],
                                      ", removeOnComplete" if f["bullmq_keep"] == "remove" else "")
    md += ["", targets_text([(n[len(FAIR_TARGET):], v, ok) for n, v, ok in fair_targets(res)]), "",
           "How it is measured:", "",
           "- **Workload**: every run is `noop {\"sleepMs\": %d}`, A's and B's alike. With no-op runs "
           "the overlap the target asks for cannot happen here: %d consumers drain 20,000 no-op runs in "
           "about a second in either mode (Redis mode at some 35,000 runs/s), before %d runs %d ms "
           "apart (%.0f s) could be enqueued behind them; %d ms a run stretches the backlog to several "
           "seconds, and the column of A's runs still to start shows it was still there when the last "
           "B run came." % (f["sleep_ms"], f["consumers"], f["n_b"], f["gap_ms"],
                             f["n_b"] * f["gap_ms"] / 1000.0, f["sleep_ms"]),
           "- **jobrunner**: a fresh database (and a flushed Redis), the producer, A's runs enqueued "
           "through the bulk endpoint (`orgId` `org-a`, 10,000 a request), then %d consumers at their "
           "default settings (`WORKER_CONCURRENCY` 4); as soon as both answer `/health`, B's runs are "
           "POSTed one at a time (`orgId` `org-b`) %d ms apart. B's latency is `job_runs.started_at` "
           "minus the client's clock just before its POST; \"A's runs started while a B run waited\" "
           "counts the A rows whose `started_at` falls between the two; \"A's 1,000th start\" is "
           "counted from when both consumers answered `/health` (how long they took to get going on "
           "the backlog: B's runs enqueued before then wait for that, not behind A's runs). A's rate is taken between the "
           "moments 10 %% and 90 %% of a sample of A's runs had succeeded, as for the processing rates "
           "above. In Redis-less mode the A runs that start while a B run waits are mostly runs the "
           "consumers had already claimed in a batch (one batch per thread in the worst case, see "
           "[architecture.md](architecture.md#fairness-across-orgs)); in a FIFO queue they are the "
           "whole backlog ahead." % (f["consumers"], f["gap_ms"]),
           "- **BullMQ**: A's jobs added with `addBulk` (1,000 at a time), %d Worker processes at its "
           "best setting in the no-op runs %s (%s), each job awaiting %d ms; once both are ready, B's "
           "jobs added with `queue.add` %d ms apart; latency `processedOn - timestamp`, A's rate "
           "between the moments 10 %% and 90 %% of A's jobs had finished. BullMQ has %d jobs in flight "
           "to jobrunner's %d, so its A backlog drains faster and its later B jobs find less of it "
           "ahead of them (see the column of A's runs still to start)."
           % (f["consumers"], "above" if f.get("bullmq_best_measured") else "of the last full run",
              bull_conc, f["sleep_ms"], f["gap_ms"], f["consumers"] * f["bullmq_concurrency"],
              f["consumers"] * 4),
           "- **Rounds**: each system runs without B and with B in %d alternating round(s); the best "
           "rate of each is kept (other work on the machine only ever slows a round down) and B's "
           "latencies are pooled over the rounds (%d samples: the p99 is the slowest of them)."
           % (f["rounds"], f["n_b"] * f["rounds"]), "",
          "Only this part (about %d s here), which rewrites this section and the fairness rows of the "
          "targets and leaves the rest of the document as it is:" % f["seconds"], "",
          "```sh", "/usr/bin/python3 tests/bench/run.py --only fairness", "```", FAIR_END]
    return "\n".join(md) + "\n"


def splice_fairness(doc, res):
    """doc with its fairness section and fairness target rows replaced by
    those of res (run.py --only fairness)."""
    sect = fairness_text(res)
    if FAIR_MARK in doc and FAIR_END in doc:
        a = doc.index(FAIR_MARK)
        b = doc.index(FAIR_END) + len(FAIR_END) + 1
        doc = doc[:a] + sect + doc[b:]
    else:
        at = doc.find("## Where the time goes")
        if at < 0:
            at = doc.find(KEEP_MARK) if KEEP_MARK in doc else len(doc)
        doc = doc[:at] + sect + "\n" + doc[at:]
    # the targets table: the old fairness rows out, the new ones after its last row
    lines = [ln for ln in doc.split("\n") if not ln.startswith("| " + FAIR_TARGET)]
    if "## Targets" not in lines:
        return "\n".join(lines)
    start = lines.index("## Targets")
    end = start + 1
    while end < len(lines) and not lines[end].startswith("|"):
        end += 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    rows = targets_text(fair_targets(res)).split("\n")[2:]
    lines[end:end] = rows
    return "\n".join(lines)


def targets_text(tg):
    md = ["| target | measured | met |", "|---|---|---|"]
    for name, val, ok in tg:
        md.append("| %s | %s | %s |" % (name, val, {True: "yes", False: "**no**", None: "—"}[ok]))
    return "\n".join(md)


def peer_details(res):
    md = []
    bull, boss, raw = res.get("bullmq"), res.get("pgboss"), res.get("raw")
    if raw:
        md.append("- raw limit (rawloop.c, hiredis): XADD pipelined 1,000 deep %s/s; "
                  "XREADGROUP COUNT 100 + XACK %s/s; latency p50 %.2f ms, p99 %.2f ms"
                  % ("{:,}".format(raw["xadd"]["per_s"]), "{:,}".format(raw["drain"]["per_s"]),
                     raw["latency"]["p50_ms"], raw["latency"]["p99_ms"]))
    if bull:
        md.append("- BullMQ %s, one Worker: " % res.get("peer_versions", {}).get("bullmq", "") + "; ".join(
            "%s: %s jobs/s" % (peer_setting("BullMQ", k)[len("1 Worker, "):], "{:,}".format(v["per_s"]))
            for k, v in sorted(bull["process"].items(),
                               key=lambda x: (int(str(x[0]).split()[0]), str(x[0])))))
    if boss:
        md.append("- pg-boss %s: " % res.get("peer_versions", {}).get("pg-boss", "") + "; ".join(
            "%s: %s jobs/s" % (peer_setting("pg-boss", k), "{:,}".format(v["per_s"]))
            for k, v in boss["process"].items()))
    gw = res.get("graphile")
    if gw:
        md.append("- graphile-worker %s, run(): " % res.get("peer_versions", {}).get("graphile-worker", "")
                  + "; ".join("%s: %s jobs/s" % (peer_setting("graphile-worker", k),
                                                 "{:,}".format(v["per_s"]))
                              for k, v in gw["process"].items())
                  + "; latency p50 %.1f ms, p99 %.1f ms" % (gw["latency"]["p50_ms"], gw["latency"]["p99_ms"]))
    io = res.get("io")
    if io and io.get("jobrunner") and io.get("bullmq"):
        j, b = io["jobrunner"], io["bullmq"]
        md.append("- I/O-bound (%s runs of 50 ms, concurrency 200): jobrunner %s runs/s, peak RSS "
                  "%.1f MiB, %d connection(s) to Redis and %d to PostgreSQL; BullMQ %s jobs/s, peak "
                  "RSS %.1f MiB, %d connection(s) to Redis"
                  % ("{:,}".format(j["n"]), "{:,}".format(j["per_s"]), j["busy_hwm_mib"],
                     j["redis_connections"], j["pg_connections"], "{:,}".format(b["per_s"]),
                     b["worker_busy_rss_mib"], b.get("redis_connections", -1)))
        md.append("- pg-boss work() latency (pollingIntervalSeconds 0.5, its minimum): p50 %.0f ms, "
                  "p99 %.0f ms" % (boss["latency"]["p50_ms"], boss["latency"]["p99_ms"]))
    for mode in ("redis", "redisless"):
        j = res.get("jr-" + mode)
        if j:
            md.append("- jobrunner (%s): processing %s" % (mode, "; ".join(
                "%s consumer(s): %s runs/s (all %s runs in %.1f s%s)"
                % (k, "{:,}".format(v["per_s"]), "{:,}".format(v["n"]), v["all_seconds"],
                   ", the stream itself drained in %.1f s" % v["stream_drained_seconds"]
                   if "stream_drained_seconds" in v else "")
                for k, v in sorted(j["process"].items(), key=lambda x: int(x[0])))))
            if j.get("process_failures"):
                v = j["process_failures"]
                md.append("- jobrunner (%s), `JOB_HISTORY=failures`, 1 consumer: %s runs/s (all %s "
                          "runs in %.1f s)" % (mode, "{:,}".format(v["per_s"]), "{:,}".format(v["n"]),
                                               v["all_seconds"]))
    return "\n".join(md)


def plot(res, path):
    """throughput against consumers (PNG via gnuplot)."""
    data = os.path.join(BUILD, "bench", "plot.dat")
    lines = ["# consumers redis redisless"]
    for k in (1, 2, 4):
        vals = []
        for mode in ("redis", "redisless"):
            j = res.get("jr-" + mode)
            v = (j["process"].get(k) or j["process"].get(str(k))) if j else None
            vals.append(str(v["per_s"]) if v else "NaN")
        lines.append("%d %s" % (k, " ".join(vals)))
    with open(data, "w") as f:
        f.write("\n".join(lines) + "\n")
    hl = []
    if res.get("raw"):
        hl.append(("raw XREADGROUP+XACK (rawloop.c)", res["raw"]["drain"]["per_s"], "#555555", 0))
    if res.get("bullmq"):
        k, v = best(res["bullmq"]["process"])
        hl.append(("BullMQ, 1 Worker, concurrency %s" % k, v, "#d62728", 0))
    if res.get("pgboss"):
        k, v = best(res["pgboss"]["process"])
        hl.append(("pg-boss, best setting", v, "#9467bd", 0))
    if res.get("graphile"):
        k, v = best(res["graphile"]["process"])
        hl.append(("graphile-worker, best setting", v, "#8c564b", 0))
    cmds = ["set terminal pngcairo size 900,560 font 'sans,10'" if _has_cairo() else
            "set terminal png size 900,560",
            "set output '%s'" % path,
            "set title 'No-op processing rate against consumers (2 cores shared by everything)'",
            "set xlabel 'jobrunner consumers (default settings)'",
            "set ylabel 'runs per second (log scale)'",
            "set logscale y", "set xrange [0.8:4.2]", "set xtics (1,2,4)", "set grid",
            "set key outside bottom center horizontal maxrows 3"]
    plots = ["'%s' using 1:2 with linespoints lw 2 pt 7 title 'jobrunner, Redis mode'" % data,
             "'%s' using 1:3 with linespoints lw 2 pt 5 title 'jobrunner, Redis-less mode'" % data]
    for name, v, color, _ in hl:
        plots.append("%d with lines dt 2 lw 2 lc rgb '%s' title '%s (%s/s)'"
                     % (v, color, name, "{:,}".format(v)))
    cmds.append("plot " + ", ".join(plots))
    p = subprocess.run(["gnuplot"], input="\n".join(cmds) + "\n", capture_output=True, text=True)
    if p.returncode != 0:
        say("gnuplot failed: %s" % p.stderr)


def _has_cairo():
    p = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in (p.stdout + p.stderr)


def machine_facts(res):
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    pv = res.get("peer_versions", {})
    return [("date", res["date"]), ("git commit", res.get("commit", "?")),
            ("cores (nproc)", cmd(["nproc"])), ("CPU", cpu), ("memory", mem),
            ("kernel", platform.release()),
            ("redis-server", cmd([harness.REDIS_SERVER, "--version"]).split(" sha=")[0]),
            ("PostgreSQL", cmd([os.path.join(harness.PG_BIN, "postgres"), "--version"])),
            ("hiredis", cmd(["pkg-config", "--modversion", "hiredis"])),
            ("node", cmd(["node", "--version"])),
            ("BullMQ / ioredis", "%s / %s" % (pv.get("bullmq"), pv.get("ioredis"))),
            ("pg-boss / pg", "%s / %s" % (pv.get("pg-boss"), pv.get("pg"))),
            ("graphile-worker", pv.get("graphile-worker", "?"))]


def cpu_text(res):
    """CPU per run of every process involved, from the processing runs (the
    best of each): the machine's ceiling is cores × 10^6 / total µs."""
    cores = os.cpu_count() or 1
    rows = []
    raw, bull = res.get("raw"), res.get("bullmq")
    for mode, label in (("redis", "jobrunner, Redis mode"), ("redisless", "jobrunner, Redis-less")):
        j = res.get("jr-" + mode)
        for k in (1, 2, 4):
            pr = j and (j["process"].get(k) or j["process"].get(str(k)))
            if pr and pr.get("cpu_us"):
                rows.append(("%s, %d consumer%s" % (label, k, "s" if k > 1 else ""),
                             "consumer", pr["cpu_us"], pr["per_s"]))
    jf = (res.get("jr-redis") or {}).get("process_failures")
    if jf and jf.get("cpu_us"):
        rows.insert(1, ("jobrunner, Redis mode, 1 consumer, JOB_HISTORY=failures", "consumer",
                        jf["cpu_us"], jf["per_s"]))
    if bull:
        for k, v in sorted(bull["process"].items(), key=lambda x: (int(str(x[0]).split()[0]), str(x[0]))):
            if v.get("cpu_us"):
                rows.append(("BullMQ, %s" % peer_setting("BullMQ", k), "node Worker", v["cpu_us"],
                             v["per_s"]))
    for name, key in (("pg-boss", "pgboss"), ("graphile-worker", "graphile")):
        peer = res.get(key)
        if peer:
            for k, v in peer["process"].items():
                if v.get("cpu_us"):
                    rows.append(("%s, %s" % (name, peer_setting(name, k)), "node worker",
                                 v["cpu_us"], v["per_s"]))
    if raw and raw["drain"].get("cpu_us"):
        rows.append(("raw XREADGROUP + XACK (rawloop.c)", "rawloop", raw["drain"]["cpu_us"],
                     raw["drain"]["per_s"]))
    if not rows:
        return ""
    md = ["CPU time per run of every process involved (user + system, from `/proc` and Redis's "
          "`INFO cpu`, over the whole processing run), and the rate that this machine's %d cores "
          "could reach at that cost if nothing else ran (%d × 10⁶ ÷ total µs):\n" % (cores, cores),
          "| what | client process | client µs | redis-server µs | postgres µs | total µs "
          "| ceiling on %d cores (runs/s) | measured (runs/s) |" % cores,
          "|---|---|---|---|---|---|---|---|"]
    for what, client, c, per_s in rows:
        c = dict(c)
        c.setdefault("total", round(sum(c.values()), 1))

        def f(key):
            return "%.1f" % c[key] if key in c else "—"
        md.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            what, client, f("client") if "client" in c else f("consumer"), f("redis"),
            f("postgres"), f("total"), "{:,}".format(int(cores * 1e6 / c["total"])) if c["total"] else "—",
            "{:,}".format(per_s)))
    j1 = (res.get("jr-redis") or {}).get("process_failures")
    if j1 and j1.get("cpu_us") and bull and raw:
        goal = max(6 * best(bull["process"])[1], 0.3 * raw["drain"]["per_s"])
        md.append("\nThe processing targets for one consumer with `JOB_HISTORY=failures` (6× BullMQ's "
                  "best, 30 %% of the raw loop) ask for %s runs/s here. On %d cores shared by every process, that leaves "
                  "at most %.1f µs of CPU per run for the consumer, Redis and PostgreSQL together; "
                  "jobrunner used %.1f µs (of which PostgreSQL %.1f µs: no row is written per run), so this machine's ceiling for it is "
                  "about %s runs/s however the time is split between the processes."
                  % ("{:,}".format(int(goal)), cores, cores * 1e6 / goal, j1["cpu_us"]["total"],
                     j1["cpu_us"].get("postgres", 0), "{:,}".format(int(cores * 1e6 / j1["cpu_us"]["total"]))))
    return "\n".join(md) + "\n"


def profile_text(res):
    out = []
    for mode, label in (("redis", "Redis mode"), ("redisless", "Redis-less mode")):
        pr = (res.get("jr-" + mode) or {}).get("profile")
        if not pr:
            continue
        out.append("**%s**, one consumer working through %s queued runs (%.1f s, whole machine, "
                   "`perf record -a -e cpu-clock`):\n" % (label, "{:,}".format(pr["runs"]), pr["seconds"]))
        out.append("- CPU by process: " + ", ".join("%s %.0f %%" % (n, v) for v, n in pr["by_process"]))
        out.append("- hottest symbols (process, object, symbol):\n")
        out.append("  | % of samples | where |\n  |---|---|")
        for v, n in pr["by_symbol"][:15]:
            out.append("  | %.1f | `%s` |" % (v, n.replace("|", "\\|")))
        out.append("")
    return "\n".join(out) if out else "(not profiled: perf missing, or `--no-profile`)"


def document(res, table, tg_text, details, facts):
    f = "\n".join("| %s | %s |" % kv for kv in facts)
    return """# Performance

Generated by `make bench` (`/usr/bin/python3 tests/bench/run.py`) on %(date)s; do not edit by
hand: run the command again.  The numbers are from one run on the machine below.

## Machine

| | |
|---|---|
%(facts)s

**Everything shares the same cores**: Redis, PostgreSQL, the consumers, the producer, the
load generator and the peers all run on this machine at the same time, so adding consumers
adds CPU demand without adding CPU.  Every system is measured in the same run, on the same
redis-server and PostgreSQL cluster, one after the other.  Whatever else runs on the machine
meanwhile moves the figures: on this (shared, virtual) machine runs a few minutes apart
differed by up to 3× in absolute rates, and ratios between systems measured a minute apart
move with it; read single figures as one sample, not as a constant.  PostgreSQL runs with the test
harness's settings (`fsync=off`, `full_page_writes=off`, `synchronous_commit=on`,
`shared_buffers=16MB`); Redis without persistence.

## Results

Ratios say how many times **better** jobrunner is (above 1×: jobrunner is better): for rates
jobrunner ÷ peer, for latency and memory peer ÷ jobrunner.  "of raw" is the share of what
the minimal hiredis loop gets out of the same Redis (for latency: raw ÷ jobrunner).

%(table)s

Details:

%(details)s

![No-op processing rate against consumers](performance.png)

## Targets

%(targets)s

%(fairness)s
## Where the time goes

%(profile)s

## How it is measured

- **jobrunner** runs at its default settings (only `DATABASE_URL`, `REDIS_URL`, `PORT`,
  `WORKER_HTTP_PORT`, `CONSUMER_NAME` and `API_TOKEN` are set), Release build.
- **Enqueue**: `producer enqueue noop --count N` (the whole command, start-up included), and
  the bulk endpoint (`POST /api/integrations/jobs/noop/run` with arrays of 10,000, two
  clients, `tests/bench/bulk_enqueue.py`), with no consumer running.  BullMQ: `addBulk` of
  1,000 jobs at a time; pg-boss: `insert()` of 1,000 jobs at a time.
- **Processing**: N noop runs are queued first, then the consumers start; a run counts when
  `job_runs` says `succeeded`.  Progress is polled every %(poll)s s on a sample of %(sample)d of
  the run ids (primary-key look-ups, about 1 ms of PostgreSQL a poll; a `count(*)` per poll, or
  a larger sample, would load PostgreSQL with the measurement itself, a load that only
  jobrunner's figures would carry), the end with a full count.  The rate is taken between the moments 10 %% and
  90 %% of the sample had succeeded, so start-up and the history writer's lag (in Redis mode
  `job_runs` is written behind the stream) are not counted.  With `JOB_HISTORY=failures`
  (no row per successful run) progress is the consumers' `jobrunner_runs_succeeded_total`
  (`/metrics`), polled the same way.  BullMQ: one Worker (its own process) at concurrency
  1, 10, 50 and 200 with a no-op processor, jobs kept (its default) and jobs added with
  `removeOnComplete: true`, timed to the last `completed` event; pg-boss: loops of
  `fetch({batchSize})` + `complete(ids)`, and `work()` with `batchSize`,
  `localConcurrency` and `burstWhenBatchFull` (counted when the handler returns: the last
  batch's completion is not timed); graphile-worker: `run()` at `concurrency` with a no-op
  task, without and with its `localQueue` and batched completion (`completeJobBatchDelay`
  0), the jobs added in one transaction once the worker is idle, timed from that commit
  to the last `job:success` event.  Each peer's best setting is the one compared.
- **I/O-bound**: %(io_n)s runs of `noop {"sleepMs": 50}` through one consumer with
  `WORKER_CONCURRENCY=200`, against %(io_n)s BullMQ jobs (`removeOnComplete`) whose
  processor awaits 50 ms, one Worker at concurrency 200; rate over the first run's
  `started_at` to the last run's `finished_at` (job_runs) / from `run()` to the last
  `completed` event;
  peak RSS (VmHWM / `maxRSS`); connections opened: Redis's `total_connections_received`
  and PostgreSQL's `pg_stat_database.sessions`, from before the consumer starts to after
  it finished.
- **Latency** (enqueue-to-start): single runs sent one at a time, 20-30 ms apart, to one idle
  consumer: jobrunner `job_runs.started_at` minus the client's clock just before its
  `POST`; BullMQ: processor start minus the time before `queue.add()`; raw: an entry's
  XADD time to its XREADGROUP BLOCK return; pg-boss: `work()` handler start minus the time
  before `send()` (one job at a time, waiting for each).
- **Repeats**: every rate (enqueue, processing, the raw loop, BullMQ, pg-boss,
  graphile-worker, the I/O-bound workload) is the best of %(repeat)d rounds, each round
  measuring every system and setting once, one after the other (so a slow minute on the
  shared machine hits every system alike; other work only ever slows a run down);
  latency and memory are one run each (the first round).
- **Memory**: resident set (VmRSS) after 1 s idle; busy = peak resident set (VmHWM, or
  node's `maxRSS`) after the work.
- **Raw limit**: `tests/bench/rawloop.c`, a minimal hiredis loop: XADD pipelined 1,000 deep;
  XREADGROUP COUNT 100 then one XACK of those ids, on one connection.
- **CPU per run**: user + system CPU time over the processing run, divided by the runs:
  jobrunner's consumer processes (`/proc/PID/stat`), PostgreSQL (the postmaster and its
  processes, live and ended; the bench's own progress look-ups are a small part of it) and
  redis-server (`INFO cpu`); BullMQ's Worker process (its own `process.cpuUsage()`) and
  redis-server over its processing; the raw loop's process and redis-server.  It moves much
  less than a rate with what else shares the cores (contention still raises it: caches, context
  switches), so it is the better figure to compare costs by.
""" % {"date": res["date"], "facts": f, "table": table, "details": details,
       "targets": tg_text, "fairness": fairness_text(res), "poll": POLL_S, "sample": SAMPLE, "profile": cpu_text(res) + "\n" + profile_text(res),
       "repeat": 1 if res.get("quick") else REPEAT,
       "io_n": "{:,}".format(SIZES["io_n"][1 if res.get("quick") else 0])}


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def redis_transport_present():
    try:
        with open(os.path.join(ROOT, "common", "queue_redis.c"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    return not ("placeholder" in text[:400] and "not built yet" in text)


def attempt(what, fn, rnd):
    """fn(), or None when it failed in a later round (said, and the first
    rounds' figures stand); a failure in the first round stops the run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        if rnd == 0:
            raise
        say("%s failed in round %d (its earlier rounds stand): %s" % (what, rnd + 1, e))
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    ap.add_argument("--only", default="raw,bullmq,pgboss,graphile,jr-redis,jr-pg,io,fairness")
    ap.add_argument("--no-doc", action="store_true", help="print only; do not write docs/")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the perf pass (where the CPU goes with one consumer)")
    ap.add_argument("--from-json", help="re-render the table and document from saved results")
    args = ap.parse_args()
    results_path = os.path.join(BUILD, "bench", "results.json")
    fair_only = set(args.only.split(",")) == {"fairness"} and not args.from_json
    if fair_only:
        results_path = os.path.join(BUILD, "bench", "fairness.json")

    check_deps()
    if args.from_json:
        with open(args.from_json) as f:
            res = json.load(f)
    else:
        build()
        install_peers()
        only = set(args.only.split(","))
        res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip() or "?",
               "peer_versions": peer_versions(), "quick": args.quick}
        t0 = time.monotonic()
        pg = harness.Postgres()
        redis = harness.Redis()
        try:
            for rnd in range(1 if args.quick else REPEAT):
                first = rnd == 0
                say("round %d of %d" % (rnd + 1, 1 if args.quick else REPEAT))
                r = {}
                if "raw" in only:
                    r["raw"] = attempt("raw", lambda: bench_raw(redis, args.quick, first), rnd)
                if "jr-redis" in only:
                    if redis_transport_present():
                        r["jr-redis"] = attempt("jr-redis", lambda: bench_jr(
                            "redis", pg, redis, args.quick, not args.no_profile, first), rnd)
                    else:
                        say("jobrunner Redis mode skipped: common/queue_redis.c is the placeholder")
                if "bullmq" in only:
                    r["bullmq"] = attempt("bullmq", lambda: bench_bullmq(redis, args.quick, first), rnd)
                if "jr-pg" in only:
                    r["jr-redisless"] = attempt("jr-redisless", lambda: bench_jr(
                        "redisless", pg, None, args.quick, not args.no_profile, first), rnd)
                if "pgboss" in only:
                    r["pgboss"] = attempt("pgboss", lambda: bench_pgboss(pg, args.quick, first), rnd)
                if "graphile" in only:
                    r["graphile"] = attempt("graphile", lambda: bench_graphile(pg, args.quick, first), rnd)
                if "io" in only:
                    r["io"] = attempt("io", lambda: bench_io(pg, redis, args.quick, first), rnd)
                for k, v in r.items():
                    if v is not None:
                        res[k] = merge_rounds(res.get(k), v)
            if "fairness" in only:
                t1 = time.monotonic()
                bull = res.get("bullmq")
                res["fairness"] = bench_fairness(pg, redis, args.quick,
                                                 best(bull["process"])[0] if bull else None)
                res["fairness"].update(
                    date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    commit=res["commit"], rounds=size("fair_rounds", args.quick),
                    seconds=round(time.monotonic() - t1))
        finally:
            redis.cleanup()
            pg.cleanup()
        res["seconds"] = round(time.monotonic() - t0)
        os.makedirs(os.path.dirname(results_path), exist_ok=True)
        with open(results_path, "w") as f:
            json.dump(res, f, indent=1)
        say("measured in %d s; raw results in %s" % (res["seconds"], os.path.relpath(results_path, ROOT)))

    if fair_only:
        print(fairness_text(res))
        if not args.no_doc:
            with open(DOC) as f:
                doc = splice_fairness(f.read(), res)
            with open(DOC, "w") as f:
                f.write(doc)
            say("wrote the fairness section of %s" % os.path.relpath(DOC, ROOT))
        return
    table = table_text(build_rows(res))
    tg = targets(res)
    print(table)
    print()
    print(targets_text(tg))
    print()
    print(cpu_text(res))
    if not args.no_doc:
        plot(res, PNG)
        # the part from KEEP_MARK on is written by other benchmarks
        # (tests/bench/search_bench.py): carried over as it is
        kept = ""
        if os.path.exists(DOC):
            with open(DOC) as f:
                old = f.read()
            if KEEP_MARK in old:
                kept = "\n" + old[old.index(KEEP_MARK):]
        with open(DOC, "w") as f:
            f.write(document(res, table, targets_text(tg), peer_details(res), machine_facts(res)) + kept)
        say("wrote %s and %s" % (os.path.relpath(DOC, ROOT), os.path.relpath(PNG, ROOT)))


if __name__ == "__main__":
    main()
