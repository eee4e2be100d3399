"""Per-org rate limits (ORG_RATE_LIMIT, <JOB>_ORG_RATE_LIMIT) and fairness
across orgs, in both modes (docs/architecture.md, "Fairness and per-org
limits").  Assertions are on job_runs (start times, order of starts,
attempts), never on how long something took."""

import re

import pytest

import harness
import jrcli
import jrredis

MODES = ["redisless", "redis"]


@pytest.fixture(params=MODES)
def system(request, bins, db, db_url, spawn):
    """A migrated database, Redis in Redis mode; .env(**kw) and
    .consumer(name, **kw) and .enqueue(job, **kw) for the mode."""
    jrcli.migrate(bins, db_url)
    redis = None
    if request.param == "redis":
        redis = harness.Redis()
        request.addfinalizer(redis.cleanup)

    class S:
        mode = request.param

        @staticmethod
        def env(**kw):
            kw.setdefault("NO_REPLY_SCAN_ENABLED", "false")
            if redis:
                kw["REDIS_URL"] = redis.url
            return jrcli.env(db_url, **kw)

        @staticmethod
        def consumer(name, **kw):
            p = spawn("consumer", env=S.env(CONSUMER_NAME=name, **kw), name=name)
            p.wait_for_log({"event": "job_runner_started"}, timeout=20)
            return p

        @staticmethod
        def enqueue(job, **kw):
            if redis:
                kw["REDIS_URL"] = redis.url
            return jrcli.enqueue(bins, db_url, job, **kw)

    S.db = db
    return S


def starts_ms(db, ids):
    rows = db.query("SELECT (extract(epoch from started_at) * 1000)::bigint FROM job_runs"
                    " WHERE id = ANY(%s) ORDER BY started_at", (list(ids),))
    return [r[0] for r in rows]


def max_in_window(starts, window_ms):
    """The most starts in any half-open window [s, s + window_ms) opened at a start."""
    return max(sum(1 for u in starts if s <= u < s + window_ms) for s in starts)


def assert_limiter_of_the_mode(system):
    """Redis mode counts in Redis (rate.lua), not in PostgreSQL's fallback."""
    rows = system.db.scalar("SELECT count(*) FROM org_rate")
    if system.mode == "redis":
        assert rows == 0, "Redis mode used the PostgreSQL limiter"
    else:
        assert rows >= 1


# The consumer stamps started_at (its clock) just before the limiter counts
# the start (on Redis's or PostgreSQL's clock, the same host's): a window a
# little shorter than the period absorbs that gap.
SLACK_MS = 150


def test_an_org_over_its_rate_limit_is_held_to_it_across_three_consumers(system):
    n, period = 4, 1000
    for i in range(3):
        system.consumer("c%d" % i, ORG_RATE_LIMIT="%d/1s" % n, WORKER_CONCURRENCY=2)
    ids = system.enqueue("noop", org="big", count=14)
    other = system.enqueue("noop", count=6)   # no org: not limited
    rows = jrcli.wait_runs(system.db, ids + other, "succeeded", timeout=90)
    starts = starts_ms(system.db, ids)
    assert len(starts) == 14
    # held to it: never more than n starts of the org in one period ...
    assert max_in_window(starts, period - SLACK_MS) <= n, starts
    # ... and the runs were spread over the consumers, each waiting without an attempt
    assert all(rows[i]["attempts"] == 1 for i in ids), [rows[i]["attempts"] for i in ids]
    assert len({rows[i]["consumer"] for i in ids}) >= 2
    # without the limit the 14 runs start within a fraction of a second:
    # spread over at least (14 - 1) // n periods with it
    assert starts[-1] - starts[0] >= ((14 - 1) // n) * (period - SLACK_MS)
    assert_limiter_of_the_mode(system)


def test_rate_limited_runs_do_not_burn_attempts(system):
    """JOB_MAX_ATTEMPTS=1: a deferral that counted an attempt would make the
    run dead.  The job's own limit (NOOP_ORG_RATE_LIMIT) is counted apart
    from the org's (ORG_RATE_LIMIT, here far higher)."""
    system.consumer("c0", NOOP_ORG_RATE_LIMIT="2/1s", ORG_RATE_LIMIT="1000/1s",
                    JOB_MAX_ATTEMPTS=1, WORKER_CONCURRENCY=4)
    ids = system.enqueue("noop", org="small", count=7, JOB_MAX_ATTEMPTS=1)
    rows = jrcli.wait_runs(system.db, ids, "succeeded", timeout=60)
    assert all(r["attempts"] == 1 and r["error"] is None for r in rows.values())
    starts = starts_ms(system.db, ids)
    assert max_in_window(starts, 1000 - SLACK_MS) <= 2, starts
    # the limiter's own record (PostgreSQL's, in Redis-less mode) saw the job's scope
    if system.mode == "redisless":
        keys = [r[0] for r in system.db.query("SELECT key FROM org_rate")]
        assert keys == ["noop:small"], keys
    assert_limiter_of_the_mode(system)


def test_metrics_show_the_orgs_backlog_and_who_is_deferred_and_why(system, spawn):
    """The metrics JSON lists the orgs with the most queued runs and the
    orgs held back by a limit, with the reason; Prometheus has totals by
    reason and never an org id."""
    port, mport = harness.free_port(), harness.free_port()
    api = spawn("producer", env=system.env(PORT=port), name="api")
    api.wait_for_log({"event": "producer_started"}, timeout=20)
    system.consumer("c0", ORG_RATE_LIMIT="1/1m", WORKER_HTTP_PORT=mport)
    system.enqueue("noop", org="busy-org", count=4)
    system.enqueue("noop", count=2)

    def seen():
        st, _, body = harness.http("GET", "http://127.0.0.1:%d/api/integrations/jobs/metrics" % port)
        assert st == 200, body
        orgs = body["orgs"]
        back = {e["org"]: e for e in orgs["backlog"]}
        dfr = [e for e in orgs["deferred"] if e["org"] == "busy-org"]
        if "busy-org" in back and back["busy-org"]["queued"] + back["busy-org"]["delayed"] == 3 \
                and dfr and dfr[0]["runs"] == 3:
            return orgs
        return None

    orgs = harness.wait_until(seen, timeout=30, interval=0.2, msg="busy-org deferred in the metrics JSON")
    d = [e for e in orgs["deferred"] if e["org"] == "busy-org"][0]
    assert d["reason"] == "rate_limit" and d["until"], d
    assert len(orgs["backlog"]) <= 20

    def prom():
        st, _, text = harness.http("GET", "http://127.0.0.1:%d/metrics" % mport)
        m = re.search(r'^jobrunner_org_deferrals_total\{reason="rate_limit"\} (\d+)', text, re.M)
        return text if m and int(m.group(1)) >= 3 else None

    text = harness.wait_until(prom, timeout=20, interval=0.2, msg="rate_limit deferrals counted")
    assert "busy-org" not in text
    assert re.search(r'^jobrunner_org_deferrals_total\{reason="graph_throttle"\} 0', text, re.M)


def test_a_big_orgs_backlog_does_not_hold_up_a_small_org(system):
    """Org big has a backlog of 400 runs when org small (and a run without
    an org) are enqueued; each of them starts after at most a few runs of
    big, not after big's backlog.  On the order of starts in job_runs, not
    on time.  Redis-less: rows of an older producer (no rank) are claimed
    too.  Redis mode: the lanes of fair.lua (with ORG_FAIRNESS=false, 182
    of big's runs started ahead of a small org's run)."""
    db = system.db
    old = []
    if system.mode == "redisless":
        old = system.enqueue("noop", org="legacy", count=5)
        db.execute("UPDATE job_runs SET fair_seq = NULL WHERE id = ANY(%s)", (old,))
    big = system.enqueue("noop", org="big", payload='{"sleepMs": 30}', count=400)
    system.consumer("c0", WORKER_CONCURRENCY=2)
    harness.wait_until(lambda: db.scalar(
        "SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'", (big,)) >= 10,
        timeout=30, msg="big's backlog under way")
    # two commands, not six: each is a process start, slow under a
    # sanitizer, and big's backlog (some 6 s of work) must still be there
    small = system.enqueue("noop", org="small", count=3)
    small += system.enqueue("noop", count=3)   # no org: a group of its own
    jrcli.wait_runs(db, small + old, "succeeded", timeout=60)
    for k, rid in enumerate(small):
        ahead = db.scalar(
            "SELECT count(*) FROM job_runs a, job_runs s WHERE s.id = %s AND a.id = ANY(%s)"
            " AND a.started_at > s.enqueued_at AND a.started_at < s.started_at", (rid, big))
        # the n-th run of its group (n = 1..3) waits n turns: about one of
        # big's runs per turn, plus what the 2 threads had claimed
        n = k % 3 + 1
        assert ahead <= 4 + 2 * n, "run %s (#%d of its group) started after %d of big's runs" % (
            rid, n, ahead)
    # and big still had most of its backlog when the last of them started
    after = db.scalar(
        "SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND (started_at IS NULL OR started_at >"
        " (SELECT max(started_at) FROM job_runs WHERE id = ANY(%s)))", (big, small))
    assert after >= 100, after
    # nothing lost, nothing run twice, no attempt burned by the lanes
    rows = jrcli.wait_runs(db, big, "succeeded", timeout=90)
    assert all(r["attempts"] == 1 for r in rows.values())


@pytest.mark.parametrize("fairness", ["true", "false"])
def test_a_tick_is_not_held_up_by_one_orgs_backlog(fairness, bins, redis_server, db, db_url,
                                                   spawn):
    """Redis mode: one org alone has a backlog (so no second org would turn
    the lanes on); the producer's tick behind it must still start a cycle
    at once, not after the backlog.  With ORG_FAIRNESS=false the stream is
    FIFO and the tick waits: checked too, so that the test shows what the
    lanes change."""
    jrcli.migrate(bins, db_url)
    big = jrredis.enqueue(bins, db_url, redis_server, org="big", payload='{"sleepMs": 30}',
                          count=300)
    c = jrredis.consumer(spawn, db_url, redis_server, "c0", WORKER_CONCURRENCY=2,
                         ORG_FAIRNESS=fairness, JOB_RUNNER_INTERVAL_MS=300)
    harness.wait_until(lambda: db.scalar(
        "SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'", (big,)) >= 10,
        timeout=30, msg="big's backlog under way")
    spawn("producer", [], name="ticker",
          env=jrredis.env(db_url, redis_server, PORT=harness.free_port(), API_TOKEN="t" * 32,
                          JOB_RUNNER_INTERVAL_MS=300))
    harness.wait_until(lambda: jrredis.cycles(c, "tick"), timeout=60, interval=0.05,
                       msg="a tick-driven cycle")
    left = db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND started_at IS NULL",
                     (big,))
    if fairness == "true":
        # 300 runs of 30 ms on 2 threads take some 4.5 s: the cycle came long before
        assert left >= 100, left
    else:
        assert left <= 20, left
