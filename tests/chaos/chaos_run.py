"""chaos_run.py -- jobrunner's own chaos run: real servers, real binaries,
a steady load of keyed and unkeyed enqueues through the producer's HTTP API
and through `producer enqueue`, one fault after another, then the checker.

What: `run(bin_dir, out_dir)` starts PostgreSQL, redis-server (AOF,
appendfsync always), one producer (HTTP API and ticks) and three consumers
in Redis mode (debug logs: every result is a log line), with the harness
(tests/support/harness.py).  Four load threads enqueue no-op runs whose
payload carries a tag naming the request that made them:

  http        bulks of 10 through POST /api/integrations/jobs/noop/run
  http-key    one run with an idempotencyKey, retried with the same key
              until accepted, and some keys posted once more later
  cli         `producer enqueue noop --count 5`
  cli-key     `producer enqueue noop --idempotency-key K`, retried likewise

Meanwhile the faults, in order (FAULTS): consumers killed with SIGKILL;
in Redis mode, every consumer stopped for a while, so that the fairness
lanes turn on when they resume, and one killed with runs of the lanes in
hand; a consumer stopped (SIGSTOP) for 2.5 leases; Redis killed and restarted on
its AOF; Redis stopped (SIGSTOP) for 10 s; PostgreSQL killed and restarted;
consumers killed while the test holds the legacy advisory lock; 600 slow
connections (slowloris) from another loopback address.  After each fault
the run measures its recovery: from the moment the fault is lifted until
every run accepted up to that moment is finished in job_runs.

Then the load stops, the run waits for the accepted runs to finish, and
the history (what each request was told, the job_runs rows of tagged runs,
the consumers' run_* log lines, every write of job_runner_state recorded by
a trigger, the legacy lock's hold intervals, the probes) goes to
checker.check().  The history and the figures are written to out_dir
(history.json, figures.json) so that a failed run can be examined and
re-checked.

Why these choices: the trigger on job_runner_state (installed by the test
in its own database, not a migration) records every cycle's start and
duration as the product wrote them under the cycle lock, so overlap is
judged on the product's own clock, not on log timestamps that a stopped
process prints late.  Keys and tags in the payload make every run traceable
to the request that made it, including runs the client was never told about
(an enqueue of unknown outcome that Redis applied later).

Run it alone:  JR_BUILD=build python3 tests/chaos/chaos_run.py build/bin /tmp/chaos [redis|redisless]
(CTest runs it through test_chaos.py; label `chaos`), and print the tables
of docs/guarantees.md from the figures:
  python3 tests/chaos/chaos_run.py --table build/chaos-redis/figures.json build/chaos-redisless/figures.json
"""

import datetime
import json
import os
import random
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "support"))

import checker  # noqa: E402
import harness  # noqa: E402
import jrcli  # noqa: E402

TOKEN = "c" * 32
LEASE_MS = 2000
LOCK_KEY = jrcli.DEFAULT_LOCK_KEY
# After a kill -9 the record of runs the killed consumer's history writer had
# read but not written waits for another writer to take them over
# (HISTORY_RECLAIM_IDLE_MS, 60 s, checked every 5 s): the deadline is above.
RECOVERY_DEADLINE_S = 90.0
FINAL_DEADLINE_S = 90.0

COMMON = {
    "JOB_LEASE_MS": LEASE_MS,
    "REDIS_FALLBACK_AFTER_MS": 1000,
    "JOB_RUNNER_INTERVAL_MS": 300,
}

STATE_LOG_SQL = """
CREATE TABLE chaos_state_log (
    seq bigserial PRIMARY KEY, id text NOT NULL, last_run_at timestamptz,
    duration_ms integer, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION chaos_state_log_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_state_log (id, last_run_at, duration_ms)
    VALUES (NEW.id, NEW."lastRunAt", NEW."lastRunDurationMs");
    RETURN NEW;
END $$;
CREATE TRIGGER chaos_state_log AFTER INSERT OR UPDATE ON job_runner_state
    FOR EACH ROW EXECUTE FUNCTION chaos_state_log_fn();
"""


ORGS = ("chaos-a", "chaos-b", None)   # the HTTP bulks' orgs, in turn


def log(msg):
    print("[chaos %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Cluster:
    """The servers and the jobrunner processes of the run."""

    def __init__(self, bin_dir, mode="redis"):
        bin_dir = os.path.abspath(bin_dir)
        self.producer_bin = os.path.join(bin_dir, "producer")
        self.consumer_bin = os.path.join(bin_dir, "consumer")
        self.pg = harness.Postgres()
        self.db = self.pg.create_database()
        self.redis = harness.Redis(appendonly=True) if mode == "redis" else None
        self.redis_url = self.redis.url if self.redis else None   # None: Redis-less
        self.procs = []          # every consumer Proc ever started (their logs)
        self.consumers = {}      # name -> running Proc
        self.cli_env = jrcli.env(self.db.url, REDIS_URL=self.redis_url, **COMMON)
        p = jrcli.run(self.consumer_bin, ["--migrate-only"], self.cli_env)
        assert p.returncode == 0, p.stdout + p.stderr
        self.db.execute(STATE_LOG_SQL)
        self.port = harness.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.producer = harness.Proc(
            [self.producer_bin],
            env=jrcli.env(self.db.url, REDIS_URL=self.redis_url, PORT=self.port, API_TOKEN=TOKEN,
                          CONSUMER_NAME="producer", **COMMON),
            name="producer")
        self.producer.wait_for_log({"event": "producer_started"}, timeout=30)

    def start_consumer(self, name):
        p = harness.Proc([self.consumer_bin], name=name, env=jrcli.env(
            self.db.url, REDIS_URL=self.redis_url, CONSUMER_NAME=name, LOG_LEVEL="debug",
            **COMMON))
        self.procs.append(p)
        self.consumers[name] = p
        p.wait_for_log({"event": "job_runner_started"}, timeout=30)
        return p

    def kill9(self, name):
        p = self.consumers.pop(name)
        p.kill9()

    def events(self):
        out = []
        for p in self.procs:
            for e in p.json_lines():
                if str(e.get("event", "")).startswith("run_") and e.get("runId"):
                    e = {k: e.get(k) for k in ("event", "runId", "attempt", "maxAttempts",
                                                "consumer")}
                    e["proc"] = p.name
                    out.append(e)
        return out

    def skipped_cycle_times(self):
        """Epoch seconds of every job_runner_cycle_skipped line (a consumer
        tried a cycle and found the lock held elsewhere)."""
        out = []
        for p in self.procs:
            for e in p.json_lines():
                if e.get("event") == "job_runner_cycle_skipped" and e.get("ts"):
                    t = datetime.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
                    out.append(t.replace(tzinfo=datetime.timezone.utc).timestamp())
        return out

    def runs(self):
        cols = ("id", "tag", "status", "attempts", "max_attempts", "consumer",
                "idempotency_key", "transport", "enqueued_at", "started_at")
        rows = self.db.query(
            "SELECT id, payload->>'tag', status, attempts, max_attempts, consumer,"
            " idempotency_key, transport, extract(epoch from enqueued_at)::float8,"
            " extract(epoch from started_at)::float8 FROM job_runs WHERE payload ? 'tag'")
        return [dict(zip(cols, r)) for r in rows]

    def state_writes(self):
        rows = self.db.query("SELECT seq, id, extract(epoch from last_run_at)::float8, duration_ms"
                             " FROM chaos_state_log ORDER BY seq")
        return [{"seq": s, "id": i, "lastRunAt": t, "durationMs": d} for s, i, t, d in rows]

    def cleanup(self):
        for p in list(self.procs) + [self.producer]:
            p.cleanup()
        if self.redis:
            self.redis.cleanup()
        self.pg.cleanup()


# --------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------

class Load:
    """The four load threads and what each request was told."""

    def __init__(self, cl):
        self.cl = cl
        self.requests = []             # checker's "requests"
        self.accepted = []             # (t, id) of every accepted id
        self.mu = threading.Lock()
        self.stop_ev = threading.Event()
        self.reposts = []              # (not before t, request) keys to post again
        self.threads = [threading.Thread(target=f, daemon=True, name=f.__name__)
                        for f in (self.http_loop, self.http_key_loop, self.cli_loop,
                                  self.cli_key_loop)]
        self.seq = 0
        self.n_http = 0

    def _tag(self, prefix):
        with self.mu:
            self.seq += 1
            return "%s-%d" % (prefix, self.seq)

    def _record(self, req, outcome, ids=()):
        t = time.time()
        with self.mu:
            req["tries"].append({"t": t, "outcome": outcome, "ids": list(ids)})
            for i in ids:
                self.accepted.append((t, i))

    def _new(self, tag, via, key, n):
        req = {"tag": tag, "via": via, "key": key, "n": n, "tries": []}
        with self.mu:
            self.requests.append(req)
        return req

    @staticmethod
    def _payload(tag):
        return {"tag": tag, "sleepMs": random.choice((0, 0, 5, 20, 50))}

    def _post(self, body):
        try:
            status, _h, data = harness.http(
                "POST", self.cl.url + "/api/integrations/jobs/noop/run", body,
                headers={"Authorization": "Bearer " + TOKEN}, timeout=20)
        except OSError as e:
            return "unknown", [], repr(e)
        if status == 202:
            return "accepted", data["ids"] if "ids" in data else [data["id"]], None
        code = data.get("error", {}).get("code") if isinstance(data, dict) else None
        if 400 <= status < 500 or code == "queue_unavailable":
            return "refused", [], code
        return "unknown", [], code

    def http_loop(self):
        while not self.stop_ev.is_set():
            tag = self._tag("hu")
            req = self._new(tag, "http", None, 10)
            # two orgs and the runs without one: whenever a backlog builds
            # up (consumers killed or stopped), the fairness lanes of Redis
            # mode turn on and every fault also hits runs moved into them
            org = ORGS[self.n_http % len(ORGS)]
            self.n_http += 1
            item = {"payload": self._payload(tag)}
            if org:
                item["orgId"] = org
            outcome, ids, _ = self._post([item] * 10)
            self._record(req, outcome, ids)
            time.sleep(0.05 if outcome == "accepted" else 0.3)

    def _keyed(self, req, attempt):
        """Tries req until accepted (or the load stops); attempt() -> (outcome, ids)."""
        while True:
            outcome, ids = attempt()
            self._record(req, outcome, ids)
            if outcome == "accepted":
                if random.random() < 0.3:
                    with self.mu:
                        self.reposts.append((time.time() + 6.0, req, attempt))
                return
            if self.stop_ev.is_set():
                return
            time.sleep(0.3)

    def _repost_due(self):
        now = time.time()
        with self.mu:
            due = [r for r in self.reposts if r[0] <= now]
            self.reposts = [r for r in self.reposts if r[0] > now]
        for _t, req, attempt in due:
            outcome, ids = attempt()
            self._record(req, outcome, ids)

    def http_key_loop(self):
        while not self.stop_ev.is_set():
            key = self._tag("hk")
            req = self._new(key, "http", key, 1)
            body = {"idempotencyKey": key, "payload": self._payload(key)}
            self._keyed(req, lambda body=body: self._post(body)[:2])
            self._repost_due()
            time.sleep(0.05)

    def _cli(self, args):
        try:
            p = jrcli.run(self.cl.producer_bin, ["enqueue", "noop"] + args, self.cl.cli_env,
                          timeout=30)
        except Exception:   # a timeout: the process was killed, outcome unknown
            return "unknown", []
        if p.returncode == 0:
            return "accepted", p.stdout.split()
        if p.returncode == 2:
            return "refused", []
        return "unknown", []

    def cli_loop(self):
        while not self.stop_ev.is_set():
            tag = self._tag("cu")
            req = self._new(tag, "cli", None, 5)
            outcome, ids = self._cli(["--count", "5", "--org", "chaos-cli",
                                      "--payload", json.dumps(self._payload(tag))])
            self._record(req, outcome, ids)
            time.sleep(0.05)

    def cli_key_loop(self):
        while not self.stop_ev.is_set():
            key = self._tag("ck")
            req = self._new(key, "cli", key, 1)
            args = ["--idempotency-key", key, "--payload", json.dumps(self._payload(key))]
            self._keyed(req, lambda args=args: self._cli(args))
            self._repost_due()
            time.sleep(0.05)

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(120)
        for t in self.threads:
            assert not t.is_alive(), "load thread %s did not stop" % t.name
        self._repost_due_all()

    def _repost_due_all(self):
        with self.mu:
            pending, self.reposts = self.reposts, []
        for _t, req, attempt in pending:
            self._record(req, *attempt())

    def accepted_until(self, t):
        with self.mu:
            return [i for (ta, i) in self.accepted if ta <= t]


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------

def wait_finished(db, ids, deadline_s, why=None):
    """Polls job_runs until every id is succeeded or dead; returns the
    seconds it took, or None past the deadline (then why, a list, gets
    what was not finished)."""
    t0 = time.monotonic()
    ids = list(set(ids))
    while True:
        try:
            n = db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s)"
                          " AND status IN ('succeeded','dead')", (ids,))
        except Exception:
            n = -1
        if n == len(ids):
            return time.monotonic() - t0
        if time.monotonic() - t0 > deadline_s:
            try:
                rows = db.query(
                    "SELECT status, transport, count(*), min(id), min(consumer),"
                    " min(attempts), max(attempts) FROM job_runs WHERE id = ANY(%s)"
                    " AND status NOT IN ('succeeded','dead') GROUP BY 1, 2", (ids,))
                absent = len(ids) - db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s)",
                                              (ids,))
                text = "%s; %d without a row" % (
                    ", ".join("%d %s on %s (oldest %s, attempts %s-%s)" % (n, st, tr, rid, a0, a1)
                              for st, tr, n, rid, _c, a0, a1 in rows), absent)
            except Exception as e:
                text = "could not tell (%r)" % (e,)
            log("not finished after %.0f s: %s" % (deadline_s, text))
            try:
                for r in db.query(
                        "SELECT id, status, transport, attempts, consumer, payload->>'tag',"
                        " enqueued_at, started_at, updated_at, error FROM job_runs"
                        " WHERE id = ANY(%s) AND status NOT IN ('succeeded','dead')"
                        " ORDER BY id LIMIT 3", (ids,)):
                    log("  e.g. %s" % (r,))
            except Exception:
                pass
            if why is not None:
                why.append(text)
            return None
        time.sleep(0.25)


class Run:
    def __init__(self, cl, load):
        self.cl = cl
        self.load = load
        self.faults = []
        self.probes = []
        self.legacy_holds = []

    def fault(self, name, inject):
        """inject() returns when the fault is lifted; the recovery is measured
        from then until everything accepted so far is finished."""
        log("fault %s" % name)
        self.started = start = time.time()
        after = inject()
        start = self.started      # inject() may set it later (after its preparation)
        end = time.time()
        why = []
        rec = wait_finished(self.cl.db, self.load.accepted_until(end), RECOVERY_DEADLINE_S, why)
        if rec is None:
            self.diagnose(self.load.accepted_until(end))
        if rec is None and self.cl.redis:
            try:
                r = self.cl.redis.client()
                log("  jr:runs pending: %s; groups: %s" % (
                    r.xpending("jr:runs", "jr:workers"),
                    [(g["name"], g["pending"], g.get("lag")) for g in r.xinfo_groups("jr:runs")]))
                r.close()
            except Exception as e:
                log("  (Redis: %r)" % (e,))
        if after:
            after()
        log("fault %s: %.1f s, recovered %s" % (
            name, end - start, "in %.1f s" % rec if rec is not None else
            "NOT within %.0f s" % RECOVERY_DEADLINE_S))
        self.faults.append({"name": name, "start": start, "end": end, "recovery_s": rec,
                            "deadline_s": RECOVERY_DEADLINE_S,
                            "unfinished": why[0] if why else None})
        time.sleep(2.0)   # normal load between faults

    def diagnose(self, ids):
        """What the logs and Redis say of the first unfinished run."""
        try:
            rid = self.cl.db.scalar(
                "SELECT min(id) FROM job_runs WHERE id = ANY(%s)"
                " AND status NOT IN ('succeeded','dead')", (list(set(ids)),))
            if not rid:
                return
            for p in self.cl.procs + [self.cl.producer]:
                for line in p.lines():
                    if rid in line:
                        log("  %s: %s" % (p.name, line[:400]))
            if self.cl.redis:
                r = self.cl.redis.client()
                for m, score in r.zrange("jr:delayed", 0, -1, withscores=True):
                    if rid in m:
                        log("  jr:delayed due %.3f: %s" % (score / 1000.0, m[:300]))
                for eid, fields in r.xrange("jr:runs", "-", "+"):
                    if fields.get("id") == rid:
                        log("  jr:runs %s: %s" % (eid, fields))
                log("  jr:runs length %d, first %s; jr:delayed %d members" % (
                    r.xlen("jr:runs"), (r.xrange("jr:runs", "-", "+", count=1) or [("-",)])[0][0],
                    r.zcard("jr:delayed")))
                r.close()
        except Exception as e:
            log("  (diagnosis failed: %r)" % (e,))

    # ---- the faults ----

    def consumers_kill9(self):
        # c1 comes back at once under its name (takes its entries back);
        # c2's runs wait for their lease and go to the others; a consumer
        # under a new name replaces c2 once that is measured
        self.cl.kill9("c1")
        self.cl.kill9("c2")
        self.cl.start_consumer("c1")
        return lambda: self.cl.start_consumer("c2b")

    def lanes_kill9(self):
        # every consumer stopped (SIGSTOP, shorter than a lease) while the
        # load goes on: a backlog of the two orgs and of the runs without
        # one builds up, so when they resume the fairness lanes turn on
        # (Redis mode); then a consumer is killed with runs of the lanes in
        # hand and comes back under its name
        procs = list(self.cl.consumers.values())
        for p in procs:
            p.signal(signal.SIGSTOP)
        time.sleep(0.75 * LEASE_MS / 1000.0)
        for p in procs:
            p.signal(signal.SIGCONT)
        try:
            r = self.cl.redis.client()
            harness.wait_until(lambda: r.hget("jr:fair", "on") == b"1", timeout=2,
                               interval=0.01, ignore=(Exception,))
            r.close()
        except AssertionError:
            log("lanes_kill9: the lanes were not seen on")
        self.cl.kill9("c1")
        self.cl.start_consumer("c1")

    def consumer_sigstop(self):
        # a bulk of slow runs first, so that c3 is stopped with runs in hand
        # (the point is a result that comes back after the lease: fenced)
        tag = self.load._tag("slow")
        req = self.load._new(tag, "http", None, 6)
        outcome, ids, _ = self.load._post([{"payload": {"tag": tag, "sleepMs": 1000}}] * 6)
        self.load._record(req, outcome, ids)
        name = "c3"
        try:
            name = harness.wait_until(lambda: self.cl.db.scalar(
                "SELECT consumer FROM job_runs WHERE id = ANY(%s) AND status = 'running'"
                " AND consumer = ANY(%s) LIMIT 1", (ids, list(self.cl.consumers))),
                timeout=10, ignore=(Exception,))
        except AssertionError:
            log("consumer_sigstop: no slow run seen running; stopping c3 anyway")
        log("consumer_sigstop: stopping %s" % name)
        p = self.cl.consumers[name]
        self.started = time.time()
        p.signal(signal.SIGSTOP)
        time.sleep(2.5 * LEASE_MS / 1000.0)
        p.signal(signal.SIGCONT)

    def redis_kill_aof(self):
        self.cl.redis.kill()
        time.sleep(3.0)
        self.cl.redis.start()

    def redis_sigstop(self):
        self.cl.redis.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(10.0)
        finally:
            self.cl.redis.proc.send_signal(signal.SIGCONT)

    def pg_restart(self):
        self.cl.pg.kill()
        time.sleep(2.0)
        self.cl.pg.start()

    def legacy_lock_kills(self):
        conn = self.cl.db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            t1 = time.time()
            # the ticks keep coming: every consumer tries cycles, and the
            # consumers are killed and replaced under the held lock
            time.sleep(1.0)
            self.cl.kill9("c1")
            self.cl.start_consumer("c1")
            time.sleep(1.5)
            self.cl.kill9("c3")
            self.cl.start_consumer("c3b")
            time.sleep(1.5)
            t2 = time.time()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        finally:
            conn.close()
        self.legacy_holds.append([t1, t2])

        def cycle_after():
            return self.cl.db.scalar(
                "SELECT count(*) FROM chaos_state_log WHERE id = 'job_runner'"
                " AND last_run_at > to_timestamp(%s)", (t2,))
        try:
            harness.wait_until(cycle_after, timeout=20, ignore=(Exception,),
                               msg="a cycle after the legacy lock was released")
            self.probes.append({"fault": "legacy_lock_kills", "ok": True,
                                "detail": "cycles resumed after the release"})
        except AssertionError as e:
            self.probes.append({"fault": "legacy_lock_kills", "ok": False, "detail": str(e)})

    def slowloris(self, n=600, seconds=8.0):
        """n connections from 127.0.0.2 that send a request line and then one
        header byte every 2 s; meanwhile /api/health from 127.0.0.1 is probed."""
        socks = []
        try:
            for _ in range(n):
                s = socket.socket()
                s.settimeout(2)
                try:
                    s.bind(("127.0.0.2", 0))
                    s.connect(("127.0.0.1", self.cl.port))
                    s.send(b"POST /api/integrations/jobs/noop/run HTTP/1.1\r\nHost: x\r\n")
                except OSError:
                    s.close()
                    continue
                socks.append(s)
            end = time.monotonic() + seconds
            answered = tried = 0
            next_trickle = time.monotonic() + 2
            while time.monotonic() < end:
                tried += 1
                try:
                    st, _h, _d = harness.http("GET", self.cl.url + "/api/health", timeout=2)
                    answered += st == 200
                except OSError:
                    pass
                if time.monotonic() >= next_trickle:
                    for s in socks:
                        try:
                            s.send(b"X")
                        except OSError:
                            pass
                    next_trickle += 2
                time.sleep(0.5)
            self.probes.append({
                "fault": "slowloris", "ok": answered > 0,
                "detail": "%d slow connections held; /api/health answered %d of %d probes"
                          % (len(socks), answered, tried)})
            log("slowloris: %d connections, health answered %d/%d" % (len(socks), answered, tried))
        finally:
            for s in socks:
                s.close()


FAULTS = {
    "redis": ("consumers_kill9", "lanes_kill9", "consumer_sigstop", "redis_kill_aof",
              "redis_sigstop",
              "pg_restart", "legacy_lock_kills", "slowloris"),
    "redisless": ("consumers_kill9", "consumer_sigstop", "pg_restart", "legacy_lock_kills"),
}


def run(bin_dir, out_dir, mode="redis", faults=None):
    """The whole run in `mode` ("redis" or "redisless"); returns the
    checker's Report (its figures include the mode and the wall time)."""
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()
    cl = Cluster(bin_dir, mode)
    try:
        for name in ("c1", "c2", "c3"):
            cl.start_consumer(name)
        load = Load(cl)
        r = Run(cl, load)
        load.start()
        time.sleep(3.0)
        for name in faults or FAULTS[mode]:
            r.fault(name, getattr(r, name))
        load.stop()
        t_stop = time.time()
        log("load stopped; waiting for the accepted runs")
        final = wait_finished(cl.db, load.accepted_until(t_stop), FINAL_DEADLINE_S)
        # runs no one was told about (enqueues of unknown outcome) settle too
        harness.wait_until(lambda: cl.db.scalar(
            "SELECT count(*) FROM job_runs WHERE payload ? 'tag'"
            " AND status NOT IN ('succeeded','dead')") == 0, timeout=15, ignore=(Exception,),
            msg="tagged runs to settle") if final is not None else None
        time.sleep(2.0)   # the history writer's last rows
        history = {"requests": load.requests, "runs": cl.runs(), "events": cl.events(),
                   "state_writes": cl.state_writes(), "legacy_holds": r.legacy_holds,
                   "faults": r.faults, "probes": r.probes}
        skipped = cl.skipped_cycle_times()
        # how often the fairness lanes turned on (Redis mode): the faults hit
        # runs in lanes only if they did
        lanes_on = sum(1 for p in cl.procs for e in p.json_lines()
                       if e.get("event") == "fair_lanes_on")
        # every process the run did not kill is still alive, and no
        # sanitizer said anything (in an ASan/UBSan build)
        for p in list(cl.consumers.values()) + [cl.producer]:
            if p.returncode is not None:
                r.probes.append({"fault": "end", "ok": False,
                                 "detail": "%s exited with %s" % (p.name, p.returncode)})
        for p in cl.procs + [cl.producer]:
            bad = [ln for ln in p.lines() if "AddressSanitizer" in ln or "runtime error:" in ln
                   or "LeakSanitizer" in ln]
            if bad:
                r.probes.append({"fault": "end", "ok": False,
                                 "detail": "%s: %s" % (p.name, bad[0][:300])})
    except BaseException:
        sys.stderr.write("chaos: failed; logs:\n%s\n" % harness.failure_report())
        raise
    finally:
        cl.cleanup()
    rep = checker.check(history)
    rep.figures["mode"] = mode
    # evidence that the legacy-lock check was exercised: cycles were tried
    # (and skipped) while the lock was held
    rep.figures["cycles_skipped_under_legacy_lock"] = sum(
        1 for t in skipped for t1, t2 in r.legacy_holds if t1 <= t <= t2)
    rep.figures["final_drain_s"] = None if final is None else round(final, 1)
    rep.figures["fair_lanes_on"] = lanes_on
    rep.figures["wall_s"] = round(time.time() - t_start, 1)
    rep.figures["violations"] = {k: rep.count(k) for k in rep.kinds()}
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, default=str)
    with open(os.path.join(out_dir, "figures.json"), "w") as f:
        json.dump(rep.figures, f, indent=1)
    log("figures: %s" % json.dumps(rep.figures))
    log("checker: %s" % rep.summary())
    return rep


def markdown(figures):
    """The tables of docs/guarantees.md from figures.json dicts (one per
    mode): the totals, then the recovery time of each fault per mode."""
    def cell(v):
        return "—" if v is None else str(v)
    rows = [("accepted runs", "accepted_runs"), ("requests (keyed)", None),
            ("enqueues of unknown outcome", "outcome_unknown_requests"),
            ("lost", "lost"), ("stuck", "stuck"), ("duplicated", "duplicated"),
            ("results recorded twice", "results_twice"), ("fenced results", "fenced"),
            ("runs executed again", "executed_again"), ("dead", "dead"),
            ("enqueue to start, p99 / max, s", None),
            ("cycles (tried and skipped under the legacy lock)", None),
            ("faults not recovered within 90 s", "faults_not_recovered"),
            ("violations", None), ("wall time, s", "wall_s")]
    out = ["| | " + " | ".join(f["mode"] for f in figures) + " |",
           "|---|" + "---|" * len(figures)]
    for label, key in rows:
        vals = []
        for f in figures:
            if label.startswith("requests"):
                vals.append("%d (%d)" % (f["requests"], f["keyed_requests"]))
            elif label.startswith("enqueue to start"):
                vals.append("%s / %s" % (f.get("start_wait_p99_s"), f.get("start_wait_max_s")))
            elif label.startswith("cycles"):
                vals.append("%d (%d)" % (f["cycles"], f["cycles_skipped_under_legacy_lock"]))
            elif label == "violations":
                vals.append(", ".join("%s %d" % kv for kv in sorted(f["violations"].items()))
                            or "none")
            else:
                vals.append(cell(f.get(key)))
        out.append("| %s | %s |" % (label, " | ".join(vals)))
    out += ["", "| fault | " + " | ".join("%s: lasted, s | recovered in, s" % f["mode"]
                                          for f in figures) + " |",
            "|---|" + "---|---|" * len(figures)]
    names = []
    for f in figures:
        names += [x["name"] for x in f["faults"] if x["name"] not in names]
    for n in names:
        vals = []
        for f in figures:
            x = [x for x in f["faults"] if x["name"] == n]
            vals += [cell(x[0]["duration_s"]), cell(x[0]["recovery_s"]) if x[0]["recovery_s"]
                     is not None else "not within 90"] if x else ["", ""]
        out.append("| %s | %s |" % (n, " | ".join(vals)))
    return "\n".join(out)


def main(argv):
    if len(argv) > 1 and argv[1] == "--table":
        figs = []
        for path in argv[2:]:
            with open(path) as f:
                figs.append(json.load(f))
        print(markdown(figs))
        return 0
    if len(argv) < 2:
        sys.stderr.write("usage: chaos_run.py BIN_DIR [OUT_DIR [redis|redisless [FAULT...]]]\n")
        return 2
    out = argv[2] if len(argv) > 2 else harness.make_tmpdir("chaos-out")
    mode = argv[3] if len(argv) > 3 else "redis"
    rep = run(argv[1], out, mode, tuple(argv[4:]) or None)
    print("history and figures in %s" % out)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
